"""Score job throughput on one GPU (made for the lent H100; not run on the 2-core CPU machine).

Writes N JPEGs at 1024x768 (real packaged photos, cropped and jittered) to local disk, then measures
side by side, bf16 + channels_last:

* in-process ``BatchScorer.score_arrays`` on pre-decoded arrays (the GPU ceiling),
* the Ray job end to end (``python -m ray_jobs.score``, local Ray, 1 GPU actor, PIL decode on CPU tasks)
  at ``--resolution native`` and ``short:224``; targets 1,000 and 6,000 images/s.

Ray is not in the device image: install the wheel first (see REFERENCE.md, "Running on the lent GPU
machine"). Without Ray the script still measures decode (process pool) and GPU scoring separately and
says so. Run: ``python bench/gpu_score_job.py --n 4000 [--compile]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _write_one(args: tuple[str, int, str, int, int]) -> None:
    from PIL import Image

    source, index, target, width, height = args
    rng = np.random.default_rng(index)
    photo = Image.open(source).convert("RGB")
    scale = max(width / photo.width, height / photo.height) * float(rng.uniform(1.0, 1.3))
    big = photo.resize((int(photo.width * scale) + 1, int(photo.height * scale) + 1))
    left, top = int(rng.integers(0, big.width - width + 1)), int(rng.integers(0, big.height - height + 1))
    big.crop((left, top, left + width, top + height)).save(target, quality=int(rng.integers(70, 95)))


def write_collection(folder: Path, n: int, size=(1024, 768)) -> list[Path]:
    """``n`` baseline JPEGs cropped from the package photos; ``size`` is ``(width, height)`` or a function
    of the image index giving one."""
    from iqa_plugin.testing import real_photo_paths

    sources = [str(p) for p in real_photo_paths()]
    folder.mkdir(parents=True, exist_ok=True)
    targets = [folder / f"img-{i:06d}.jpg" for i in range(n)]
    size_of = size if callable(size) else (lambda index: size)
    todo = [(sources[i % len(sources)], i, str(t), *size_of(i)) for i, t in enumerate(targets) if not t.exists()]
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        list(pool.map(_write_one, todo, chunksize=32))
    return targets


def _decode(path: str) -> np.ndarray:
    from iqa_plugin.data.images import decode_image_array

    with open(path, "rb") as handle:
        return decode_image_array(handle.read(), max_pixels=None, source=path)


def decode_rate(paths: list[Path]) -> float:
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        count = sum(1 for _ in pool.map(_decode, [str(p) for p in paths], chunksize=16))
    return count / (time.perf_counter() - start)


def gpu_rate(paths: list[Path], weights: str, short: int | None, batch: int, compile_: bool) -> float:
    import torch

    from iqa_plugin.data.images import resize_array_short_side
    from iqa_plugin.inference.scorer import BatchScorer

    scorer = BatchScorer("qualiclip", device="cuda", dtype="bf16", batch_size=batch, compile=compile_,
                         pretrained_model_path=weights)
    arrays = [_decode(str(p)) for p in paths[: batch * 8]]
    if short:
        arrays = [resize_array_short_side(a, short) for a in arrays]
    scorer.score_arrays(arrays[:batch])  # warm-up (and compilation)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(3):
        scorer.score_arrays(arrays)
    torch.cuda.synchronize()
    return 3 * len(arrays) / (time.perf_counter() - start)


def job_rate(folder: Path, out: Path, weights: str, resolution: str, batch: int, block: int) -> dict:
    command = [sys.executable, "-m", "ray_jobs.score", str(folder), "--out", str(out), "--weights", weights,
               "--dtype", "bf16", "--resolution", resolution, "--batch-size", str(batch), "--block-size", str(block),
               "--actors", "1", "--gpus-per-actor", "1", "--no-report", "--no-progress-bars"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    print(result.stdout[-1500:])
    if result.returncode != 0:
        print(result.stderr[-3000:])
        return {}
    return json.loads((out / "_iqa" / "job.json").read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--work", default=None)
    args = parser.parse_args()
    import torch

    from iqa_plugin.testing import fabricate_qualiclip_checkpoint

    if not torch.cuda.is_available():
        print("no CUDA device: this benchmark is for the GPU machine")
        return 2
    print(f"device: {torch.cuda.get_device_name(0)}; {os.cpu_count()} CPUs; torch {torch.__version__}")
    work = Path(args.work or tempfile.mkdtemp(prefix="gpu-score-"))
    weights = work / "QualiCLIP.pth"
    if not weights.exists():
        fabricate_qualiclip_checkpoint(weights, seed=0)
    paths = write_collection(work / "photos", args.n)
    print(f"PIL decode, {os.cpu_count()} processes, 1024x768 JPEG: {decode_rate(paths[:2000]):.0f} img/s")
    for short in (None, 224):
        label = "native 1024x768" if short is None else f"short:{short}"
        print(f"GPU scoring only ({label}, bf16, batch {args.batch_size}, compile={args.compile}): "
              f"{gpu_rate(paths, str(weights), short, args.batch_size, args.compile):.0f} img/s")
    try:
        import ray  # noqa: F401
    except ImportError:
        print("ray is not installed here: the end-to-end job was not measured (stages above measured without Ray)")
        return 0
    for resolution, block, target in (("native", 32, 1000), ("short:224", 256, 6000)):
        record = job_rate(work / "photos", work / f"scores-{resolution.replace(':', '-')}", str(weights), resolution,
                          args.batch_size, block)
        if record:
            print(f"JOB {resolution}: {record['images_per_s']:.0f} img/s incl. actor start, steady "
                  f"{record['steady_images_per_s'] or 0:.0f} img/s, {record['n_scored']}/{record['n_inputs']} "
                  f"scored in {record['elapsed_s']:.1f} s (target >= {target})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
