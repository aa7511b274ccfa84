"""Shared, session-scoped test fixtures: real photos, fabricated checkpoints, a loopback HTTP server,
a moto S3 server and one local Ray. Nothing here touches the network."""

from __future__ import annotations

import functools
import http.server
import logging
import os
import socket
import threading
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
os.environ.setdefault("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required")
os.environ.pop("AWS_PROFILE", None)
# The moto server's dummy credentials, set before any Ray starts: workers take credentials from their own
# environment (inherited from this process), never from task arguments (ray_jobs.runtime).
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")

from iqa_plugin.testing import real_photo_paths  # noqa: E402

_LOCAL_NAMES = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "", None, socket.gethostname()}


@pytest.fixture(autouse=True)
def _no_internet(monkeypatch):
    """Tests never touch the network: resolving any name but this machine's fails loudly."""
    real = socket.getaddrinfo

    def local_only(host, *args, **kwargs):
        if host not in _LOCAL_NAMES and not str(host).startswith("127."):
            raise OSError(f"test tried to reach {host!r}: tests must stay offline (loopback servers only)")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", local_only)


@pytest.fixture(autouse=True)
def _isolated_weights_cache(tmp_path, monkeypatch):
    """Every test gets its own weights cache and never downloads from the real internet."""
    monkeypatch.setenv("IQA_PLUGIN_CACHE", str(tmp_path / "weights-cache"))
    monkeypatch.delenv("IQA_PLUGIN_OFFLINE", raising=False)


@pytest.fixture(scope="session")
def photos() -> list[Path]:
    """Real photos shipped inside installed packages (scikit-image, scikit-learn, matplotlib)."""
    return real_photo_paths()


@pytest.fixture(scope="session")
def fabricated(tmp_path_factory):
    """Fabricated checkpoints in the published layouts (seeded random tensors)."""
    from iqa_plugin.testing import fabricate_qualiclip_checkpoint, fabricate_qualiclip_plus_params

    root = tmp_path_factory.mktemp("fabricated")
    base = fabricate_qualiclip_checkpoint(root / "QualiCLIP.pth", seed=0)
    plus = fabricate_qualiclip_plus_params(root / "QualiCLIP+_koniq.pth", seed=1)
    return {"qualiclip": base, "qualiclip+": plus, "root": root}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - signature fixed by the base class
        pass


@pytest.fixture(scope="session")
def http_server(tmp_path_factory):
    """A static HTTP server on 127.0.0.1 serving ``root``; yields (base_url, root, stats)."""
    root = tmp_path_factory.mktemp("http-root")
    stats: dict[str, int] = {}

    class Handler(_QuietHandler):
        def do_GET(self):  # noqa: N802
            stats[self.path] = stats.get(self.path, 0) + 1
            return super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root, stats
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def s3_server():
    """One moto S3 server on loopback per session; yields its endpoint URL and sets dummy credentials."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")}
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_ENDPOINT_URL=endpoint,
        AWS_DEFAULT_REGION="us-east-1",
    )
    try:
        yield endpoint
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def s3(s3_server):
    """An s3fs filesystem on the moto server, reset before each test."""
    import requests
    import s3fs

    requests.post(f"{s3_server}/moto-api/reset", timeout=10)
    fs = s3fs.S3FileSystem(key="testing", secret="testing", client_kwargs={"endpoint_url": s3_server})
    fs.invalidate_cache()
    return fs


@pytest.fixture(scope="session")
def ray_local():
    """One small local Ray per session (4 logical CPUs so actors and tasks never starve each other)."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(num_cpus=4, include_dashboard=False, object_store_memory=256 * 1024 * 1024, log_to_driver=False)
    yield ray
    ray.shutdown()
