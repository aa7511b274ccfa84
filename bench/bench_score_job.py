"""Score job benchmarks on this machine, measured side by side in one run.

1. Throughput: the Ray Data job on a local Ray over N real-photo JPEGs vs the in-process
   ``BatchScorer`` (same images, same weights, same decode, same resolution). Target: job >= 0.7x.
   Both are timed after model loading ("steady") and end to end (startup included).
2. Driver memory: peak RSS of the job's driver process (``python -m ray_jobs.score``, sampled every
   0.1 s) while scoring collections of tiny images at two sizes, the driver's weights check included
   (it imports torch and opens the checkpoint before Ray starts), and the peak of that check alone.
   Target: < 1 GiB and flat in N.

Weights: a fabricated checkpoint in the real QualiCLIP layout (real size, seeded random values), so the
compute is the real network's. Run: ``python bench/bench_score_job.py [--n 400] [--rss-sizes 5000 20000]``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench._machine import describe_machine  # noqa: E402


def write_photos(folder: Path, count: int, size: tuple[int, int], seed: int = 0) -> list[Path]:
    """``count`` JPEG crops of the packaged real photos, all ``size`` (w, h)."""
    from iqa_plugin.testing import real_photo_paths

    rng = np.random.default_rng(seed)
    sources = [Image.open(p).convert("RGB") for p in real_photo_paths()]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    w, h = size
    for index in range(count):
        photo = sources[index % len(sources)]
        scale = max(w / photo.width, h / photo.height) * 1.2
        big = photo.resize((int(photo.width * scale) + 1, int(photo.height * scale) + 1))
        left, top = int(rng.integers(0, big.width - w)), int(rng.integers(0, big.height - h))
        path = folder / f"img-{index:06d}.jpg"
        big.crop((left, top, left + w, top + h)).save(path, quality=90)
        paths.append(path)
    return paths


def in_process(paths: list[Path], weights: str, resolution: str, batch_size: int, threads: int) -> dict[str, float]:
    """Decode + score in this process, like one actor would, without Ray."""
    import torch

    torch.set_num_threads(threads)

    from iqa_plugin.data.images import decode_image_array, resize_array_short_side
    from iqa_plugin.inference.scorer import BatchScorer

    t0 = time.perf_counter()
    scorer = BatchScorer("qualiclip", device="cpu", batch_size=batch_size, pretrained_model_path=weights)
    loaded = time.perf_counter()
    short = None if resolution == "native" else int(resolution.split(":")[1])
    arrays = []
    for path in paths:
        array = decode_image_array(path.read_bytes(), max_pixels=None, source=str(path))
        arrays.append(resize_array_short_side(array, short) if short else array)
    scores = scorer.score_arrays(arrays)
    end = time.perf_counter()
    assert len(scores) == len(paths)
    return {"steady": len(paths) / (end - loaded), "end_to_end": len(paths) / (end - t0),
            "load_s": loaded - t0, "threads": torch.get_num_threads()}


def run_job_subprocess(src: Path, out: Path, weights: str, extra: list[str]) -> tuple[dict, int, str]:
    """Run ``python -m ray_jobs.score`` and sample the driver's RSS; return (run record, peak bytes, log)."""
    import psutil

    shutil.rmtree(out, ignore_errors=True)  # a fresh run, not a resume
    command = [sys.executable, "-m", "ray_jobs.score", str(src), "--out", str(out), "--weights", weights,
               "--no-progress-bars", "--no-report", *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    handle = psutil.Process(process.pid)
    while process.poll() is None:
        try:
            peak = max(peak, handle.memory_info().rss)
        except psutil.Error:
            break
        time.sleep(0.1)
    reader.join(timeout=10)
    log = "".join(lines)
    if process.returncode != 0:
        raise RuntimeError(f"job failed ({process.returncode}):\n{log[-3000:]}")
    return json.loads((out / "_iqa" / "job.json").read_text()), peak, log


# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the (large) parent across fork + exec
_WEIGHTS_CHECK = """
import sys
from ray_jobs.score.config import ScoreJobConfig
from ray_jobs.score.weights import check_weights
check_weights(ScoreJobConfig(src="/unused", out="/unused", weights=sys.argv[1]), log=lambda line: None)
peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(int(peak.split()[1]) * 1024)
"""


def weights_check_rss(weights: str) -> int:
    """Peak RSS (bytes) of a process that only runs the score driver's weights check."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", _WEIGHTS_CHECK, weights], capture_output=True, text=True,
                            env=env, check=True)
    return int(result.stdout.strip().splitlines()[-1])


def throughput(work: Path, weights: str, n: int, size: tuple[int, int], resolution: str, batch: int,
               threads: int) -> None:
    paths = write_photos(work / "photos", n, size)
    cpus_per_actor = str(threads)  # the actor runs as many torch threads as it has CPUs
    before = in_process(paths, weights, resolution, batch, threads)
    job, _, log = run_job_subprocess(work / "photos", work / "scores", weights,
                                     ["--resolution", resolution, "--batch-size", str(batch), "--block-size", "32",
                                      "--cpus-per-actor", cpus_per_actor])
    after = in_process(paths, weights, resolution, batch, threads)
    steady_base = (before["steady"] + after["steady"]) / 2
    e2e_base = (before["end_to_end"] + after["end_to_end"]) / 2
    print(f"\n[throughput] N={n} JPEG {size[0]}x{size[1]}, resolution {resolution}, batch {batch}, fp32 CPU")
    print(f"  in-process BatchScorer (decode+score, {before['threads']} torch threads): steady "
          f"{before['steady']:.2f} / {after['steady']:.2f} img/s (before/after the job), end to end "
          f"{e2e_base:.2f} img/s (model load {before['load_s']:.1f} s)")
    print(f"  Ray job (local Ray, 1 CPU actor with {cpus_per_actor} CPUs + decode tasks): steady "
          f"{job['steady_images_per_s']:.2f} img/s, pipeline {job['images_per_s']:.2f} img/s incl. actor start, "
          f"end to end {n / job['elapsed_s']:.2f} img/s ({job['elapsed_s']:.1f} s)")
    print(f"  RATIO job/in-process: steady {job['steady_images_per_s'] / steady_base:.2f}x (target >= 0.7x), "
          f"end to end {(n / job['elapsed_s']) / e2e_base:.2f}x")
    assert job["n_scored"] == n, log[-2000:]


def driver_rss(work: Path, weights: str, sizes: list[int], threads: int) -> None:
    print("\n[driver memory] tiny 40x32 JPEGs scored at short:32 by 1 CPU actor; driver = python -m ray_jobs.score "
          "(weights check included)")
    check = weights_check_rss(weights)
    print(f"  weights check alone (import torch + open the {Path(weights).stat().st_size / 2**20:.0f} MiB checkpoint): "
          f"peak RSS {check / 2**20:7.1f} MiB")
    results = []
    for size in sizes:
        folder = work / f"tiny-{size}"
        if not folder.exists():
            rng = np.random.default_rng(size)
            folder.mkdir(parents=True)
            for index in range(size):
                buffer = io.BytesIO()
                Image.fromarray(rng.integers(0, 255, (32, 40, 3), dtype=np.uint8)).save(buffer, "JPEG", quality=80)
                (folder / f"t-{index:06d}.jpg").write_bytes(buffer.getvalue())
        job, peak, _ = run_job_subprocess(folder, work / f"tiny-scores-{size}", weights,
                                          ["--resolution", "short:32", "--batch-size", "64", "--block-size", "256",
                                           "--cpus-per-actor", str(threads)])
        results.append((size, peak, job))
        print(f"  N={size:>6}: driver peak RSS {peak / 2**20:7.1f} MiB, {job['n_scored']} scored, "
              f"{job['images_per_s']:.1f} img/s, {job['elapsed_s']:.1f} s")
    if len(results) >= 2:
        (n0, p0, _), (n1, p1, _) = results[0], results[-1]
        print(f"  RSS growth from N={n0} to N={n1}: {(p1 - p0) / 2**20:+.1f} MiB "
              f"({p1 / p0:.2f}x for {n1 / n0:.0f}x the objects); peak {max(p for _, p, _ in results) / 2**30:.2f} GiB "
              f"(target < 1 GiB)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400, help="images for the throughput comparison (>= 200)")
    parser.add_argument("--size", default="128x96", help="WxH of the throughput JPEGs")
    parser.add_argument("--resolution", default="native")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads, in process and in the actor (= its CPUs); 1 is fastest on 2 cores")
    parser.add_argument("--rss-sizes", type=int, nargs="*", default=[5000, 20000])
    parser.add_argument("--work", help="working folder (default: a temporary one)")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    from iqa_plugin.testing import fabricate_qualiclip_checkpoint

    print(f"machine: {describe_machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        weights = work / "QualiCLIP.pth"
        if not weights.exists():
            fabricate_qualiclip_checkpoint(weights, seed=0)
        w, h = (int(v) for v in args.size.split("x"))
        if not args.skip_throughput:
            throughput(work, str(weights), args.n, (w, h), args.resolution, args.batch_size, args.threads)
        if args.rss_sizes:
            driver_rss(work, str(weights), args.rss_sizes, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
