"""Helpers shared by several test modules (tests never import each other): test images, fast configs,
reading a score job's output, fault-injecting scorers for the score job, an S3 server that checks
credentials, and real fsspec filesystems whose listing or writes fail (for environments where chmod
does not stop root).

The fault hooks live here, not in the production config: :func:`faulty_scorer` returns a subclass of
the job's :class:`~ray_jobs.score.stages.BlockScorer` for ``run_job(config, scorer_cls=...)``, and
:func:`kill_rank_once` a train job hook for ``run(config, before_step=...)``; Ray ships both to the workers
by value (they are defined in a function), so the workers need not import this module.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import posixpath
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from fsspec.implementations.local import LocalFileSystem
from PIL import Image, ImageFilter

from ray_jobs.io import iter_part_columns, list_parts
from ray_jobs.score.config import ScoreJobConfig
from ray_jobs.score.stages import OUTPUT_SCHEMA, BlockScorer

ROOT = Path(__file__).resolve().parents[1]
"""The repository root (``PYTHONPATH`` of a job subprocess)."""


def encode(image: Image.Image, fmt: str, **kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def good_images(photos: list[Path], count: int, seed: int = 0) -> dict[str, bytes]:
    """``count`` JPEGs of 96x64 crops of real photos, clean or degraded (one shape: batches fill up)."""
    rng = np.random.default_rng(seed)
    sources = [Image.open(p).convert("RGB") for p in photos]
    images: dict[str, bytes] = {}
    for index in range(count):
        photo = sources[index % len(sources)]
        left, top = int(rng.integers(0, photo.width - 192)), int(rng.integers(0, photo.height - 128))
        crop = photo.crop((left, top, left + 192, top + 128)).resize((96, 64), Image.Resampling.LANCZOS)
        kind = index % 4
        if kind == 1:
            crop = crop.filter(ImageFilter.GaussianBlur(2))
        elif kind == 2:
            noisy = np.asarray(crop, np.float32) + rng.normal(0, 25, (64, 96, 3))
            crop = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
        images[f"good/{index:04d}.jpg"] = encode(crop, "JPEG", quality=10 if kind == 3 else 90)
    return images


def read_output(dst: str) -> pa.Table:
    """Every row of a score job's output (``part-*.parquet``) as one table."""
    tables = list(iter_part_columns(dst, OUTPUT_SCHEMA.names))
    return pa.concat_tables(tables) if tables else OUTPUT_SCHEMA.empty_table()


def fast_config(**values: Any) -> ScoreJobConfig:
    """A config that keeps CPU scoring quick: short side 64, small blocks, no progress bars."""
    defaults = {"resolution": "short:64", "block_size": 16, "batch_size": 16, "progress_bars": False,
                "report": False, "progress_interval_s": 2.0}
    return ScoreJobConfig(**{**defaults, **values})


def faulty_scorer(*, exit_after_blocks: int | None = None, marker: str | None = None,
                  sleep_per_block_s: float = 0.0) -> type[BlockScorer]:
    """A :class:`BlockScorer` that sleeps before each block and/or kills its actor once.

    Args:
        exit_after_blocks: the actor calls ``os._exit(1)`` after scoring this many blocks ...
        marker: ... and first creates this file; while it exists no actor exits again (once per job).
        sleep_per_block_s: extra seconds per block (slows a job so a test can interrupt it).
    """

    class FaultyBlockScorer(BlockScorer):
        blocks_done = 0

        def __call__(self, batch: pa.Table) -> pa.Table:
            if exit_after_blocks is not None and self.blocks_done >= exit_after_blocks and marker \
                    and not os.path.exists(marker):
                Path(marker).write_text(f"actor pid {os.getpid()} exited after {self.blocks_done} blocks\n")
                os._exit(1)
            if sleep_per_block_s:
                time.sleep(sleep_per_block_s)
            self.blocks_done += 1
            return super().__call__(batch)

    return FaultyBlockScorer


def kill_rank_once(at_step: int, marker: str) -> Any:
    """A ``before_step`` hook for ``ray_jobs.train.job.run(config, before_step=...)``: rank 1 (rank 0 when
    alone) creates ``marker`` and exits abruptly (``os._exit``, like a killed process) before optimiser step
    ``at_step``; while ``marker`` exists no rank exits again (once per run, also after the restart)."""

    def before_step(step: int, rank: int, world: int) -> None:
        if step != at_step or rank != min(1, world - 1) or os.path.exists(marker):
            return
        Path(marker).write_text(f"rank {rank} (pid {os.getpid()}) killed itself before step {step}\n")
        os._exit(1)

    return before_step


def score_cli_with_faults(argv: list[str], **faults: Any) -> int:
    """``python -m ray_jobs.score ARGV`` (the same wrapper and exit codes) with :func:`faulty_scorer`."""
    from ray_jobs.cli import job_main
    from ray_jobs.score import job

    scorer_cls = faulty_scorer(**faults)
    job.run = lambda config: job.run_job(config, scorer_cls=scorer_cls) and 0
    return job_main("score", argv)


def upscale_cli_with_faults(argv: list[str], *, sleep_per_block_s: float) -> int:
    """``python -m ray_jobs.upscale ARGV`` (the same wrapper and exit codes) with an upscaler that sleeps
    ``sleep_per_block_s`` before each block (slows a job so a test can interrupt it)."""
    from ray_jobs.cli import job_main
    from ray_jobs.upscale import job
    from ray_jobs.upscale.stages import BlockUpscaler

    class SlowBlockUpscaler(BlockUpscaler):
        def __call__(self, batch: pa.Table) -> pa.Table:
            time.sleep(sleep_per_block_s)
            return super().__call__(batch)

    job.run = lambda config: job.run_job(config, upscaler_cls=SlowBlockUpscaler) and 0
    return job_main("upscale", argv)


def kill_slow_job_when(cli: str, job: Path, gcs_address: str, ready: Callable[[], bool],
                       timeout: float = 300) -> dict[str, str]:
    """Run ``python -c <cli>(argv, sleep_per_block_s=0.5) --config JOB`` (``cli``: ``score_cli_with_faults`` or
    ``upscale_cli_with_faults``) on the running Ray, kill it (like a lost driver) once ``ready()`` is true;
    fail if it ends first. Returns the environment for the rerun (``PYTHONPATH``, ``RAY_ADDRESS``)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": gcs_address}
    slow = [sys.executable, "-c", f"import sys; from tests.helpers import {cli}; "
            f"sys.exit({cli}(sys.argv[1:], sleep_per_block_s=0.5))", "--config", str(job)]
    first = subprocess.Popen(slow, env=env, cwd=job.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.2)
    finally:
        first.kill()
        first.wait()
    return env


def settle_parts(out: str, interval_s: float = 2.0) -> int:
    """Wait until the part count of ``out`` stops changing (writes in flight of a killed driver's workers
    land); return it."""
    previous = -1
    while previous != (current := len(list_parts(out))):
        previous = current
        time.sleep(interval_s)
    return current


def wds_tar(members: list[tuple[str, bytes]]) -> bytes:
    """A WebDataset shard in the standard layout (``<key>.<ext>`` members, a sample's members adjacent),
    written by Python's own ``tarfile`` as the webdataset writers do."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def write_images(folder: Path, images: dict[str, bytes]) -> list[str]:
    """Write ``{relative name: bytes}`` under ``folder``; return the names sorted."""
    for name, data in images.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return sorted(images)


_S3_SERVER = """
import logging, os, sys
if sys.argv[1] == "auth":
    os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"  # every request is authenticated
logging.getLogger("werkzeug").setLevel(logging.ERROR)
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
host, port = server.get_host_and_port()
print(f"ENDPOINT http://{host}:{port}", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def s3_server_process(*, authenticate: bool = False) -> Iterator[str]:
    """A moto S3 server in its own process (its memory is not the caller's); yields its endpoint. With
    ``authenticate`` it checks every request's credentials."""
    server = subprocess.Popen([sys.executable, "-c", _S3_SERVER, "auth" if authenticate else "open"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = ""
        while not line.startswith("ENDPOINT"):
            line = server.stdout.readline() if server.stdout else ""
            assert line, "the S3 server did not start"
        yield line.split()[1]
    finally:
        server.kill()
        server.wait()


def authenticating_s3() -> contextlib.AbstractContextManager[str]:
    """A moto S3 server (own process) that checks every request's credentials; yields its endpoint."""
    return s3_server_process(authenticate=True)


class UnlistableFolderFS(LocalFileSystem):
    """The local filesystem, except that listing a folder named ``locked`` fails as it does without
    permission (what ``chmod 000`` does for any user but root)."""

    protocol = ("unlistable",)
    root_marker = "/"

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(str(path).replace("unlistable://", "", 1))

    def ls(self, path, detail=False, **kwargs):
        if posixpath.basename(str(path).rstrip("/")) == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return super().ls(path, detail=detail, **kwargs)


class ReadOnlyFS(LocalFileSystem):
    """The local filesystem mounted read-only: every write fails with EROFS (root cannot bypass that)."""

    protocol = ("readonly",)
    root_marker = "/"

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(str(path).replace("readonly://", "", 1))

    def _open(self, path, mode="rb", **kwargs):
        if any(flag in mode for flag in "wax+"):
            raise OSError(errno.EROFS, "Read-only file system", path)
        return super()._open(path, mode=mode, **kwargs)

    def makedirs(self, path, exist_ok=False):
        if not os.path.isdir(path):
            raise OSError(errno.EROFS, "Read-only file system", path)


def register_test_filesystems() -> None:
    """Register :class:`UnlistableFolderFS` (``unlistable://``) and :class:`ReadOnlyFS` (``readonly://``)."""
    import fsspec

    fsspec.register_implementation("unlistable", UnlistableFolderFS, clobber=True)
    fsspec.register_implementation("readonly", ReadOnlyFS, clobber=True)
