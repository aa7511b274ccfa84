"""QualiCLIP training throughput of the full CLIP RN50 at 224 px with bf16 autocast on one CUDA GPU.

    python bench/gpu_train_qualiclip.py [--batch-sizes 16 32 64] [--steps 20] [--checkpointing]

Ray-free on purpose (the lent GPU machine has no Ray; the Ray Train harness adds one report barrier per
``report_every`` steps on top): the recipe of ``iqa train qualiclip`` with ``arch: rn50`` (random init,
fixed prompt features, so nothing is downloaded), one optimiser step per batch of ``B`` samples, each
sample 2 overlapping 224 px crops x 5 levels = 10 images. Crops come from the package photos, degraded on
the GPU with a different distortion per sample (as the workers materialise shards). Prints samples/s
and images/s per batch size, the degradation cost separately, peak memory, and the machine line.
Needs: torch with CUDA, open_clip_torch, pydantic, pillow (no pyiqa, no Ray).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _pristine_pairs(count: int, crop: int, device: str):
    """``[count, 2, 3, crop, crop]`` overlapping crop pairs of the package photos, on ``device``."""
    import torch

    from iqa_plugin.data.images import load_image, resize_short_side
    from iqa_plugin.testing import real_photo_paths

    photos = [resize_short_side(load_image(p), crop + 64) for p in real_photo_paths()]
    generator = torch.Generator().manual_seed(0)
    pairs = []
    for index in range(count):
        image = photos[index % len(photos)]
        _, h, w = image.shape
        y = int(torch.randint(0, max(1, h - crop - 32), (1,), generator=generator))
        x = int(torch.randint(0, max(1, w - crop - 32), (1,), generator=generator))
        a = image[:, y : y + crop, x : x + crop]
        b = image[:, y + 16 : y + 16 + crop, x + 16 : x + 16 + crop]
        pairs.append(torch.stack([a, b]))
    return torch.stack(pairs).to(device)


def _degraded_batch(pairs, kinds, device: str):
    import torch

    from iqa_plugin.data.degradations import degrade

    out = torch.empty(pairs.shape[0], 2, 5, *pairs.shape[2:], device=device)
    for i in range(pairs.shape[0]):
        for level in range(1, 6):
            out[i, :, level - 1] = degrade(pairs[i], kinds[i % len(kinds)], level, seed=i * 10 + level)
    return out


def measure(batch: int, steps: int, crop: int, device: str = "cuda", checkpointing: bool = False,
            arch: str = "rn50") -> dict[str, float | None]:
    """Samples/s, images/s and step time of ``steps`` timed steps (after 3 warm-up steps) at ``batch``."""
    import torch

    from iqa_plugin.data.degradations import KINDS
    from iqa_plugin.training.qualiclip import QualiCLIPRecipe, QualiCLIPRecipeConfig

    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    config = QualiCLIPRecipeConfig(arch=arch, prompts="random", precision="bf16", logit_scale=100.0,
                                   gradient_checkpointing=checkpointing)  # fmt: skip
    recipe = QualiCLIPRecipe(config, total_steps=steps + 3, device=device)
    recipe.net.to(memory_format=torch.channels_last)
    pairs = _pristine_pairs(batch, crop, device)
    sync()
    start = time.perf_counter()
    crops = _degraded_batch(pairs, KINDS, device)
    sync()
    degrade_s = time.perf_counter() - start
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for _ in range(3):
        recipe.step(crops)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        recipe.step(crops)
    sync()
    seconds = (time.perf_counter() - start) / steps
    return {"batch": batch, "crop": crop, "steps_per_s": 1 / seconds, "samples_per_s": batch / seconds,
            "images_per_s": batch * 10 / seconds, "step_ms": seconds * 1000, "degrade_batch_ms": degrade_s * 1000,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per batch size (after 3 warm-up steps)")
    parser.add_argument("--crop", type=int, default=224)
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing on")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("gpu_train_qualiclip: no CUDA device here (torch.cuda.is_available() is False); this benchmark "
              "measures RN50 training on a GPU. Run it on a machine with an NVIDIA GPU.", file=sys.stderr)  # fmt: skip
        return 2
    from bench._machine import describe_machine

    torch.backends.cudnn.benchmark = True
    print(f"machine: {describe_machine()}")
    for batch in args.batch_sizes:
        m = measure(batch, args.steps, args.crop, "cuda", args.checkpointing)
        print(f"batch {batch:>3} samples ({batch * 10} images of {args.crop} px): {m['samples_per_s']:7.1f} samples/s, "
              f"{m['images_per_s']:7.0f} images/s, step {m['step_ms']:.0f} ms; materialising the batch's "
              f"degradations {m['degrade_batch_ms']:.0f} ms; peak memory {m['peak_gib']:.1f} GiB")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
