"""SR generator on this CPU: throughput at x4 with tiling, peak memory vs image size, tiled vs untiled PSNR.

    python bench/bench_sr.py                  # all three parts, 2 threads
    python bench/bench_sr.py --part memory    # one part: throughput | memory | psnr | psnr-trained
    python bench/bench_sr.py --part psnr-trained --train-minutes 3

* throughput: the full SFD generator (RRDBNet 64/23/32, x4, ESRGAN-init random weights) on a real photo
  crop, untiled vs tiled (small tiles, to show the tiling overhead), output megapixels/s side by side.
* memory: each configuration in a fresh subprocess; peak RSS growth (``resource.getrusage`` ru_maxrss)
  during one upscale, untiled vs tiled, for growing LR sizes. A full-width generator (64 features) with
  2 blocks: activation memory depends on the width and the pixels, not on the depth (blocks run one after
  another), so this measures what the 23-block model needs in a tenth of the time. The children run with
  ``MALLOC_MMAP_THRESHOLD_=65536``: glibc otherwise raises its mmap threshold as large blocks are freed and
  keeps them in the heap, so RSS would count allocator retention; with it every tensor of 64 KB or more is
  its own mapping, returned when freed, and peak RSS growth is the peak of live memory.
* psnr: tiled (default tile and overlap) vs untiled output of the full generator at an LR size above one
  tile (LR 288x96: two tiles, one seam, to fit this CPU's time). Random weights give outputs far from [0, 1], so both outputs go through the same fixed affine map
  (untiled output's range -> [0, 1]) before PSNR at peak 1; bench/bench_sfd_warmup.py gives the figure for
  a trained (small) generator too.
* psnr-trained: the same comparison on a TRAINED generator, at the default tile and overlap: a small
  RRDBNet (32 features, 2 blocks, growth 16, x4, ``residual: bicubic``) trained Ray-free by
  :class:`~iqa_plugin.training.sfd.SFDTrainer`'s L1 warm-up for ``--train-minutes`` on the package photos
  (bench/bench_sfd_warmup.py's setup, flower.jpg and grace_hopper.jpg held out), then flower.jpg at LR
  320x224 (two tiles side by side, one seam) upscaled tiled and untiled; PSNR at peak 1, no remapping.

Weights are random (no real file can be downloaded here): speed and memory do not depend on the values.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._machine import describe_machine  # noqa: E402
from iqa_plugin.archs.rrdbnet import RRDBNet  # noqa: E402
from iqa_plugin.inference.sr import DEFAULT_TILE, DEFAULT_TILE_OVERLAP, SRModel  # noqa: E402
from iqa_plugin.testing import real_photo_paths  # noqa: E402


def lr_photo(width: int, height: int) -> torch.Tensor:
    """A real photo (flower.jpg when installed) resized to ``width`` x ``height``, [1, 3, H, W] in [0, 1]."""
    paths = real_photo_paths()
    path = next((p for p in paths if p.name == "flower.jpg"), paths[0])
    image = Image.open(path).convert("RGB").resize((width, height), Image.BICUBIC)
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float().div(255).unsqueeze(0)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def throughput(size: tuple[int, int], tile: int, overlap: int, repeats: int) -> None:
    torch.manual_seed(0)
    net = RRDBNet(scale=4)
    x = lr_photo(*size)
    paths = {"untiled": SRModel(net, tile=0, device="cpu"),
             f"tiled {tile}/{overlap}": SRModel(net, tile=tile, tile_overlap=overlap, device="cpu")}
    seconds = dict.fromkeys(paths, 0.0)
    for model in paths.values():
        model.upscale_batch(x)  # warm-up
    for _ in range(repeats):  # interleaved so drifting load hits both alike
        for name, model in paths.items():
            start = time.perf_counter()
            model.upscale_batch(x)
            seconds[name] += (time.perf_counter() - start) / repeats
    out_mp = size[0] * size[1] * 16 / 1e6
    print(f"\n## throughput: full RRDBNet x4, LR {size[0]}x{size[1]} -> {4 * size[0]}x{4 * size[1]}, fp32")
    base = seconds["untiled"]
    for name, s in seconds.items():
        print(f"{name:>18}: {s:6.2f} s/image  {out_mp / s:.4f} output MP/s  ({base / s:.2f}x untiled)")


def _measure_child(side: int, tile: int, overlap: int) -> None:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = SRModel(RRDBNet(scale=4, features=64, blocks=2, growth=32), tile=tile, tile_overlap=overlap, device="cpu")
    x = torch.rand(1, 3, side, side)
    model.upscale_batch(torch.rand(1, 3, 16, 16))  # allocator and kernels warm, before the baseline
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = model.upscale_batch(x)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"growth_mb": (after - before) / 1024, "output_mb": out.numel() * 4 / 2**20}))


def memory(sides: list[int], tile: int, overlap: int) -> None:
    print(f"\n## peak memory: RRDBNet 64 features (2 blocks) x4, fresh process per row, tile {tile}/{overlap}")
    print("LR side | untiled: peak RSS growth | tiled: peak RSS growth | output tensor")
    for side in sides:
        row = []
        for t in (0, tile):
            code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from bench.bench_sr import _measure_child; "
                    f"_measure_child({side}, {t}, {overlap})")
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
            row.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{side:>7} | {row[0]['growth_mb']:>10.0f} MB | {row[1]['growth_mb']:>10.0f} MB | "
              f"{row[0]['output_mb']:.0f} MB")


def tiled_psnr(size: tuple[int, int], tile: int, overlap: int) -> None:
    torch.manual_seed(0)
    net = RRDBNet(scale=4).eval()
    x = lr_photo(*size)
    with torch.inference_mode():
        raw = net(x)
    low, high = raw.min().item(), raw.max().item()

    class Affine(torch.nn.Module):  # fixed map of the untiled range onto [0, 1], so clamping cuts nothing
        scale = 4

        def forward(self, lr: torch.Tensor) -> torch.Tensor:
            return (net(lr) - low) / (high - low)

    untiled = ((raw - low) / (high - low)).clamp(0, 1)  # what SRModel(Affine(), tile=0) returns
    tiled = SRModel(Affine(), tile=tile, tile_overlap=overlap, device="cpu").upscale_batch(x)
    tiles = -(-size[0] // tile) * -(-size[1] // tile)
    print(f"\n## tiled vs untiled: full RRDBNet x4 (random ESRGAN init), LR {size[0]}x{size[1]}, "
          f"tile {tile}, overlap {overlap} ({tiles} tiles)")
    print(f"PSNR tiled vs untiled: {psnr(tiled, untiled):.1f} dB (outputs mapped by the untiled range "
          f"[{low:.3f}, {high:.3f}] -> [0, 1]); max |diff| {(tiled - untiled).abs().max().item():.2e}")


def trained_psnr(size: tuple[int, int], tile: int, overlap: int, minutes: float) -> None:
    from bench.bench_sfd_warmup import HELD_OUT, load, patches
    from iqa_plugin.training.sfd import SFDConfig, SFDTrainer

    torch.manual_seed(0)
    train = [load(p) for p in real_photo_paths() if p.name not in HELD_OUT]
    config = SFDConfig(features=32, blocks=2, growth=16, residual="bicubic", lr_g=1e-3, warmup_steps=10**6,
                       clip=None, perceptual_backbone="clip", ema_decay=None, feat_hidden=8, n_ctx=2)
    trainer = SFDTrainer(config)
    rng = torch.Generator().manual_seed(0)
    start, step = time.perf_counter(), 0
    while time.perf_counter() - start < minutes * 60:
        loss = trainer.step({"hr": patches(train, 8, 96, rng)})["loss_pixel"]
        step += 1
    generator = trainer.export_generator().eval()
    x = lr_photo(*size)
    untiled = SRModel(generator, tile=0, device="cpu").upscale_batch(x)
    tiled = SRModel(generator, tile=tile, tile_overlap=overlap, device="cpu").upscale_batch(x)
    bicubic = torch.nn.functional.interpolate(x, scale_factor=4, mode="bicubic").clamp(0, 1)
    tiles = -(-size[0] // tile) * -(-size[1] // tile)
    print(f"\n## tiled vs untiled: TRAINED RRDBNet 32/2/16 x4 residual bicubic ({step} L1 warm-up steps in "
          f"{time.perf_counter() - start:.0f} s, last L1 {loss:.4f}), LR {size[0]}x{size[1]}, tile {tile}, "
          f"overlap {overlap} ({tiles} tiles)")
    print(f"PSNR tiled vs untiled: {psnr(tiled, untiled):.1f} dB; max |diff| {(tiled - untiled).abs().max().item():.2e}"
          f"; untiled vs bicubic {psnr(untiled, bicubic):.1f} dB (the generator is not bicubic)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=["all", "throughput", "memory", "psnr", "psnr-trained"], default="all")
    parser.add_argument("--train-minutes", type=float, default=3.0, help="psnr-trained: L1 warm-up time")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(describe_machine())
    if args.part in ("all", "throughput"):
        throughput((96, 64), tile=48, overlap=16, repeats=args.repeats)
    if args.part in ("all", "memory"):
        memory([64, 128, 256, 384], tile=64, overlap=16)
    if args.part in ("all", "psnr"):
        tiled_psnr((DEFAULT_TILE + 32, 96), DEFAULT_TILE, DEFAULT_TILE_OVERLAP)  # one seam, 2 tiles
    if args.part in ("all", "psnr-trained"):
        trained_psnr((320, 224), DEFAULT_TILE, DEFAULT_TILE_OVERLAP, args.train_minutes)


if __name__ == "__main__":
    main()
