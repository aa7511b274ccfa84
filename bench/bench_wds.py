"""WebDataset shards vs loose files as a score job's source, measured side by side in one run.

1. Throughput: the score job (local Ray, 1 actor) over N small real-photo JPEGs on a local S3 server
   (moto, its own process), once as N loose objects and once as the same images packed into WebDataset
   shards of ``--shard-size`` samples; samples/s end to end and after the first block, and their ratio.
2. Driver memory: peak RSS of the job's driver process (sampled every 0.05 s) reading shards at two
   sample counts: the driver lists shards, never samples, so it should stay flat.

The model is replaced by a mean-brightness stand-in (:class:`BrightnessScorer`) so that the figures are
those of what differs between the two sources (listing, reading, decoding, writing), not of the
network; the driver still opens the shipped demo model's weights as every run does.
Run: ``python bench/bench_wds.py [--n 4000] [--rss-sizes 1000 4000]``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench._machine import describe_machine  # noqa: E402
from ray_jobs.score.stages import BlockScorer  # noqa: E402


class BrightnessScorer(BlockScorer):
    """A scoring actor without a network: the score is the image's mean brightness in [0, 1]."""

    def __init__(self, scorer_kwargs: dict[str, Any], torch_threads: int | None = None) -> None:
        self.model_name, self.weights_sha256 = "brightness", "0" * 64

    def _score(self, arrays: list[np.ndarray]) -> list[float | None]:
        return [float(array.mean()) / 255.0 for array in arrays]


def small_jpegs(count: int, size: tuple[int, int] = (64, 48), seed: int = 0) -> list[bytes]:
    """``count`` JPEG crops of the packaged real photos."""
    from PIL import Image

    from iqa_plugin.testing import real_photo_paths

    rng = np.random.default_rng(seed)
    sources = [Image.open(p).convert("RGB") for p in real_photo_paths()]
    images = []
    for index in range(count):
        photo = sources[index % len(sources)]
        left, top = int(rng.integers(0, photo.width - 4 * size[0])), int(rng.integers(0, photo.height - 4 * size[1]))
        crop = photo.crop((left, top, left + 4 * size[0], top + 4 * size[1])).resize(size)
        buffer = io.BytesIO()
        crop.save(buffer, format="JPEG", quality=90)
        images.append(buffer.getvalue())
    return images


def shard_bytes(images: list[bytes], first: int) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for index, data in enumerate(images, first):
            for name, payload in ((f"{index:08d}.jpg", data), (f"{index:08d}.json", b'{"source": "bench"}')):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def upload(fs: Any, n: int, shard_size: int) -> tuple[str, str]:
    """The same N images as loose objects and as shards; returns (loose prefix, shard pattern)."""
    images = small_jpegs(n)
    fs.mkdir(f"bench-{n}")
    fs.pipe({f"bench-{n}/loose/{i:08d}.jpg": data for i, data in enumerate(images)})
    shards = [images[i: i + shard_size] for i in range(0, n, shard_size)]
    fs.pipe({f"bench-{n}/wds/shard-{k:04d}.tar": shard_bytes(chunk, k * shard_size) for k, chunk in enumerate(shards)})
    return f"s3://bench-{n}/loose/", f"s3://bench-{n}/wds/shard-{{0000..{len(shards) - 1:04d}}}.tar"


def drive(src: str, out: str) -> None:
    """The driver process: one score job with :class:`BrightnessScorer`; prints its record."""
    from ray_jobs.score.config import ScoreJobConfig
    from ray_jobs.score.demo import DEMO_MODEL
    from ray_jobs.score.job import run_job

    config = ScoreJobConfig(src=src, out=out, model=DEMO_MODEL, block_size=64, report=False, progress_bars=False,
                            progress_interval_s=30)
    record = run_job(config, log=lambda line: None, scorer_cls=BrightnessScorer)
    print("RECORD " + json.dumps(record), flush=True)


def timed_driver(src: str, out: str, env: dict[str, str]) -> tuple[dict[str, Any], int, float]:
    """Run :func:`drive` in its own process; return (run record, peak RSS bytes, wall seconds)."""
    import psutil

    command = [sys.executable, "-c", "import sys; from bench.bench_wds import drive; drive(sys.argv[1], sys.argv[2])",
               src, out]
    started = time.monotonic()
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True)
    peak, handle, stop = 0, psutil.Process(process.pid), threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.wait(0.05):
            try:
                peak = max(peak, handle.memory_info().rss)
            except psutil.Error:
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = process.communicate()
    stop.set()
    sampler.join()
    wall = time.monotonic() - started
    line = next((item for item in output.splitlines() if item.startswith("RECORD ")), None)
    if process.returncode or line is None:
        raise RuntimeError(f"driver failed ({process.returncode}): {output[-2000:]}")
    return json.loads(line[len("RECORD "):]), peak, wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000, help="images in the throughput comparison")
    parser.add_argument("--shard-size", type=int, default=500, help="samples per WebDataset shard")
    parser.add_argument("--rss-sizes", type=int, nargs="*", default=[1000, 4000])
    args = parser.parse_args()
    os.environ.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled", AWS_ACCESS_KEY_ID="bench",
                      AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
                      AWS_REQUEST_CHECKSUM_CALCULATION="when_required", AWS_RESPONSE_CHECKSUM_VALIDATION="when_required",
                      PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    from tests.helpers import s3_server_process

    with s3_server_process() as endpoint:  # its own process: the objects are not in the driver's memory
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        return measure(args)


def measure(args: argparse.Namespace) -> int:
    import ray
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": os.environ["AWS_ENDPOINT_URL"]})
    print(describe_machine())
    ray.init(num_cpus=4, include_dashboard=False, object_store_memory=256 * 2**20, log_to_driver=False)
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    sizes = sorted({args.n, *args.rss_sizes})
    sources = {n: upload(fs, n, args.shard_size) for n in sizes}
    with tempfile.TemporaryDirectory() as work:
        loose, shards = sources[args.n]
        results = {}
        for name, src in (("loose files", loose), ("WebDataset", shards)):
            record, peak, wall = timed_driver(src, f"{work}/{name.replace(' ', '-')}-{args.n}", env)
            results[name] = (record, peak, wall)
            print(f"{name:>12}: N={record['n_inputs']} ({record['n_scored']} scored), "
                  f"{record['n_inputs'] / wall:7.1f} samples/s end to end ({wall:.1f} s), "
                  f"{record['steady_images_per_s'] or float('nan'):7.1f} samples/s after the first block, "
                  f"driver peak RSS {peak / 2**20:.0f} MiB")
        (loose_record, _, loose_wall), (wds_record, _, wds_wall) = results["loose files"], results["WebDataset"]
        print(f"ratio WebDataset / loose files: {loose_wall / wds_wall:.2f}x end to end, "
              f"{(wds_record['steady_images_per_s'] or 0) / max(loose_record['steady_images_per_s'] or 1e-9, 1e-9):.2f}x "
              "after the first block")
        peaks = {}
        for n in args.rss_sizes:
            if n == args.n:
                peaks[n] = results["WebDataset"][1]
            else:
                peaks[n] = timed_driver(sources[n][1], f"{work}/wds-rss-{n}", env)[1]
            print(f"driver RSS, WebDataset N={n:>6}: {peaks[n] / 2**20:.0f} MiB")
        if len(peaks) >= 2:
            (n0, p0), (n1, p1) = sorted(peaks.items())[0], sorted(peaks.items())[-1]
            print(f"driver RSS growth from N={n0} to N={n1}: {(p1 - p0) / 2**20:+.1f} MiB")
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
