"""SFD training throughput of the paper's generator (RRDBNet 64/23/32, x4) with both CLIP RN50
discriminators on one CUDA GPU, bf16 autocast against fp32.

    python bench/gpu_train_sfd.py [--batch-size 16] [--hr-size 256] [--steps 10] [--precisions bf16 fp32]

Ray-free on purpose (the lent GPU machine has no Ray; the Ray Train harness adds one report barrier per
``report_every`` steps on top): the recipe of ``iqa train sfd`` (:class:`iqa_plugin.training.sfd.SFDTrainer`)
with random weights (``clip: null``, perceptual on the CLIP's stages; nothing is downloaded), HR patches
cut from the package photos, LR made on the GPU by antialiased bicubic downscaling, as the workers do.
Prints, per precision, warm-up steps/s (generator only) and GAN steps/s (generator + Feat-D + TG-D steps),
HR patches/s, peak memory, and the machine line. Needs: torch with CUDA, open_clip_torch, pydantic,
pillow (no Ray; pyiqa only for the validation module, not imported here).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _patches(count: int, side: int, device: str):
    from bench.bench_train_sfd import random_patches
    from iqa_plugin.data.images import load_image, resize_short_side
    from iqa_plugin.testing import real_photo_paths

    photos = [resize_short_side(load_image(p), max(side + 1, 400)) for p in real_photo_paths()]
    return random_patches(photos, count, seed=0, side=side).to(device)


def _rate(trainer, pool, batch: int, steps: int) -> float:
    import torch

    for i in range(2):  # warm-up of kernels and allocator, not timed
        trainer.step({"hr": pool[(i * batch) % len(pool) :][:batch]})
    torch.cuda.synchronize()
    started = time.perf_counter()
    for i in range(steps):
        start = (i * batch) % (len(pool) - batch + 1)
        trainer.step({"hr": pool[start : start + batch]})
    torch.cuda.synchronize()
    return steps / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16, help="HR patches per step (BasicSR's ESRGAN: 16)")
    parser.add_argument("--hr-size", type=int, default=256, help="HR patch side (BasicSR's ESRGAN gt_size: 128-256)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per phase and precision")
    parser.add_argument("--precisions", nargs="+", default=["bf16", "fp32"], choices=["bf16", "fp32"])
    args = parser.parse_args()

    import torch

    from bench._machine import describe_machine
    from iqa_plugin.training.sfd import SFDConfig, SFDTrainer

    if not torch.cuda.is_available():
        print("no CUDA device: this script measures the GPU path only")
        return 1
    torch.backends.cudnn.benchmark = True
    print(f"machine: {describe_machine()}")
    pool = _patches(4 * args.batch_size, args.hr_size, "cuda")
    for precision in args.precisions:
        for phase, warmup in (("warm-up", 10**9), ("GAN", 0)):
            torch.cuda.reset_peak_memory_stats()
            torch.manual_seed(0)
            trainer = SFDTrainer(SFDConfig(clip=None, perceptual_backbone="clip", warmup_steps=warmup,
                                           precision=precision), device="cuda")  # fmt: skip
            rate = _rate(trainer, pool, args.batch_size, args.steps)
            peak = torch.cuda.max_memory_allocated() / 2**30
            print(f"{precision:<5} {phase:<8} batch {args.batch_size} x {args.hr_size} px: {rate:.2f} steps/s, "
                  f"{rate * args.batch_size:.1f} HR patches/s, peak {peak:.1f} GiB", flush=True)
            del trainer
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
