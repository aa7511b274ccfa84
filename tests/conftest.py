"""Shared, session-scoped test fixtures: real photos, fabricated checkpoints, a loopback HTTP server,
a moto S3 server and one local Ray. Nothing here touches the network."""

from __future__ import annotations

import functools
import http.server
import logging
import os
import socket
import tempfile
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
# The default user registry (iqa models add) of this test session: a fresh folder, set before any Ray starts
# so that its workers look there too; the real user's registry is never read or written by tests.
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="iqa-tests-data-")
os.environ.pop("IQA_PLUGIN_REGISTRY", None)

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


# --------------------------------------------------------------------------- fresh installs of the project

_ROOT = Path(__file__).resolve().parents[1]


def _fresh_venv(root: Path) -> Path:
    """A real ``python -m venv --system-site-packages`` whose third-party dependencies are this test
    environment's site-packages, appended by a plain ``.pth`` (plain path lines do not run that
    directory's own ``.pth`` files, so an install of this project there stays inert)."""
    import site
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(root)],
                   check=True, timeout=300)
    python = root / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    (Path(purelib) / "zz_test_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return python


def _pip_install(python: Path, *args: str) -> None:
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                    "--no-build-isolation", "-q", *args], check=True, timeout=600)


@pytest.fixture(scope="session")
def wheel_env_python(tmp_path_factory) -> Path:
    """Python of a fresh venv with this project's wheel installed (``pip install --no-deps``)."""
    import subprocess
    import sys

    pytest.importorskip("hatchling")
    root = tmp_path_factory.mktemp("wheel-env")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(root / "dist"), str(_ROOT)], check=True, timeout=300)
    python = _fresh_venv(root / "venv")
    _pip_install(python, str(next((root / "dist").glob("iqa_plugin-*.whl"))))
    return python


@pytest.fixture(scope="session")
def editable_env_python(tmp_path_factory) -> Path:
    """Python of a fresh venv with this checkout installed editable (``pip install --no-deps -e``)."""
    pytest.importorskip("hatchling")
    python = _fresh_venv(tmp_path_factory.mktemp("editable-env") / "venv")
    _pip_install(python, "-e", str(_ROOT))
    return python
