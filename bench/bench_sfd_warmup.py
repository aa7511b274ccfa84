"""Learning smoke check of the SFD recipe in one process: the pixel warm-up of a small generator beats
bicubic on held-out photos, a few GAN steps stay finite, and tiling does not change the trained output.

    python bench/bench_sfd_warmup.py                  # about 6 minutes on 2 threads
    python bench/bench_sfd_warmup.py --minutes 2 --gan-steps 5

Setup (REFERENCE.md's probe): RRDBNet 32 features, 2 blocks, growth 16, x4; L1, Adam lr 1e-3, betas
(0.9, 0.99); batches of 8 random 96-px HR patches from the 6 package photos other than flower.jpg and
grace_hopper.jpg, LR made by antialiased bicubic downscaling; PSNR (RGB, peak 1) on the central 384-px crops
of the two held-out photos, against bicubic upscaling of the same LR. The GAN steps use a random-weight
CLIP (no CLIP file can be downloaded here), so they show stability, not SFD's quality.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._machine import describe_machine  # noqa: E402
from iqa_plugin.data.degradations.sr import downscale_bicubic  # noqa: E402
from iqa_plugin.inference.sr import DEFAULT_TILE, DEFAULT_TILE_OVERLAP, SRModel  # noqa: E402
from iqa_plugin.testing import real_photo_paths  # noqa: E402
from iqa_plugin.training.sfd import SFDConfig, SFDTrainer  # noqa: E402

HELD_OUT = ("flower.jpg", "grace_hopper.jpg")


def load(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy()).permute(2, 0, 1).float().div(255)


def center_crop(x: torch.Tensor, side: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    top, left = (h - side) // 2, (w - side) // 2
    return x[..., top : top + side, left : left + side]


def psnr(a: torch.Tensor, b: torch.Tensor, border: int = 4) -> float:
    if border:
        a, b = a[..., border:-border, border:-border], b[..., border:-border, border:-border]
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse))


def patches(images: list[torch.Tensor], n: int, side: int, generator: torch.Generator) -> torch.Tensor:
    out = []
    for _ in range(n):
        img = images[int(torch.randint(len(images), (1,), generator=generator))]
        h, w = img.shape[-2:]
        top = int(torch.randint(h - side + 1, (1,), generator=generator))
        left = int(torch.randint(w - side + 1, (1,), generator=generator))
        out.append(img[:, top : top + side, left : left + side])
    return torch.stack(out)


def evaluate(generator: torch.nn.Module, held_out: list[torch.Tensor]) -> tuple[float, float]:
    """Mean PSNR of the generator and of bicubic upscaling on the held-out crops."""
    ours, bicubic = [], []
    generator.eval()
    with torch.inference_mode():
        for hr in held_out:
            lr = downscale_bicubic(hr.unsqueeze(0), 4)
            ours.append(psnr(generator(lr).clamp(0, 1), hr.unsqueeze(0)))
            up = F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1)
            bicubic.append(psnr(up, hr.unsqueeze(0)))
    generator.train()
    return float(np.mean(ours)), float(np.mean(bicubic))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=6.0, help="warm-up time budget")
    parser.add_argument("--max-steps", type=int, default=3000)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--gan-steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(describe_machine())
    paths = real_photo_paths()
    train = [load(p) for p in paths if p.name not in HELD_OUT]
    held_out = [center_crop(load(p), 384) for p in paths if p.name in HELD_OUT]
    print(f"train photos: {len(train)}, held out: {len(held_out)} (384-px crops)")
    config = SFDConfig(features=32, blocks=2, growth=16, lr_g=1e-3, warmup_steps=args.max_steps, clip=None,
                       perceptual_backbone="clip", ema_decay=None, feat_hidden=64, n_ctx=4)
    trainer = SFDTrainer(config)
    rng = torch.Generator().manual_seed(0)
    ours, bicubic = evaluate(trainer.generator, held_out)
    print(f"step {0:>5}  {0.0:6.1f} s  PSNR ours {ours:.2f} dB  bicubic {bicubic:.2f} dB  margin {ours - bicubic:+.2f} dB")
    start, step = time.perf_counter(), 0
    while step < args.max_steps and time.perf_counter() - start < args.minutes * 60:
        metrics = trainer.step({"hr": patches(train, 8, 96, rng)})
        step += 1
        if step % args.eval_every == 0:
            ours, bicubic = evaluate(trainer.generator, held_out)
            print(f"step {step:>5}  {time.perf_counter() - start:6.1f} s  L1 {metrics['loss_pixel']:.4f}  "
                  f"PSNR ours {ours:.2f} dB  bicubic {bicubic:.2f} dB  margin {ours - bicubic:+.2f} dB", flush=True)
    ours, bicubic = evaluate(trainer.generator, held_out)
    print(f"warm-up end: {step} steps in {time.perf_counter() - start:.0f} s: PSNR {ours:.2f} dB vs bicubic "
          f"{bicubic:.2f} dB (margin {ours - bicubic:+.2f} dB)")

    trainer.config.warmup_steps = step  # switch to the GAN phase now
    finite = True
    for i in range(args.gan_steps):
        metrics = trainer.step({"hr": patches(train, 4, 96, rng)})
        finite &= all(np.isfinite(v) for v in metrics.values())
        if i in (0, args.gan_steps - 1):
            print("GAN step", i + 1, {k: round(v, 4) for k, v in metrics.items() if k.startswith(("loss", "d_"))})
    ours, _ = evaluate(trainer.generator, held_out)
    print(f"after {args.gan_steps} GAN steps (random CLIP): all losses finite: {finite}; PSNR {ours:.2f} dB")

    full = load(next(p for p in paths if p.name == "flower.jpg")).unsqueeze(0)  # 640x427 as LR: 3x2 tiles
    generator = trainer.export_generator()
    untiled = SRModel(generator, tile=0, device="cpu").upscale_batch(full)
    tiled = SRModel(generator, device="cpu").upscale_batch(full)
    print(f"tiled (tile {DEFAULT_TILE}, overlap {DEFAULT_TILE_OVERLAP}) vs untiled, trained generator, LR "
          f"{full.shape[-1]}x{full.shape[-2]}: PSNR {psnr(tiled, untiled, border=0):.1f} dB, "
          f"max |diff| {(tiled - untiled).abs().max().item():.2e}")


if __name__ == "__main__":
    main()
