"""Benchmark: the batched torch degradation library vs a per-image PIL/numpy loop of the same distortions.

    python bench/bench_degradations.py [--device cuda] [--batch 64] [--size 224] [--kinds jpeg,pixelate]

Degrades ``--batch`` crops (``--size`` square) of real photos shipped in installed packages, once per kind at
level 3, and prints images/s of both paths and their ratio, plus the machine. The reference loop below is a
straightforward single-image implementation (numpy, scipy.ndimage, scikit-image colour conversions, Pillow
codecs), written independently of the library; it is a speed baseline, not a bit-exact twin.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage
from scipy.interpolate import CubicSpline
from skimage import color as skcolor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._machine import describe_machine  # noqa: E402
from iqa_plugin.data.degradations import KINDS, LEVEL_PARAMS, degrade  # noqa: E402
from iqa_plugin.data.degradations.blur import disk_kernel, motion_kernels  # noqa: E402
from iqa_plugin.testing import real_photo_paths  # noqa: E402

LEVEL = 3



def crops(batch: int, size: int) -> np.ndarray:
    """``batch`` random crops (seeded) of the packaged photos: uint8 [B, size, size, 3]."""
    rng = np.random.default_rng(0)
    photos = [np.asarray(Image.open(p).convert("RGB")) for p in real_photo_paths()]
    out = []
    for i in range(batch):
        img = photos[i % len(photos)]
        if min(img.shape[:2]) < size:
            img = np.asarray(Image.fromarray(img).resize((size * 2, size * 2), Image.BICUBIC))
        top = rng.integers(0, img.shape[0] - size + 1)
        left = rng.integers(0, img.shape[1] - size + 1)
        out.append(img[top : top + size, left : left + size])
    return np.stack(out)


# ---------------------------------------------------------------- per-image reference loop (float HWC)
def _spline(x, kx, ky):
    return np.clip(CubicSpline(kx, ky, bc_type="not-a-knot")(x), 0, 1)


def _gauss(sigma, size=None):
    size = size or 2 * math.ceil(2 * sigma) + 1
    r = np.arange(size) - (size - 1) / 2
    k = np.exp(-(r**2) / (2 * sigma**2))
    return k / k.sum()


def _sep(img, taps):
    out = ndimage.correlate1d(img, taps, axis=0, mode="nearest")
    return ndimage.correlate1d(out, taps, axis=1, mode="nearest")


def _conv2(img, k):
    return np.stack([ndimage.correlate(img[..., c], k, mode="nearest") for c in range(img.shape[-1])], -1)


def _codec(img, **save):
    buf = io.BytesIO()
    Image.fromarray((img * 255).round().astype(np.uint8)).save(buf, **save)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32) / 255


def ref_one(kind: str, img: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    h, w, _ = img.shape
    if kind == "gaussian_blur":
        return _sep(img, _gauss(p)[:, None][:, 0])
    if kind == "lens_blur":
        return _conv2(img, disk_kernel(p).numpy())
    if kind == "motion_blur":
        return _conv2(img, motion_kernels(p, torch.tensor([rng.random() * math.pi]))[0].numpy())
    if kind == "color_diffusion":
        lab = skcolor.rgb2lab(img)
        lab[..., 1:] = _sep(lab[..., 1:], _gauss(1.5 * p + 2)) * p
        return skcolor.lab2rgb(lab)
    if kind == "color_shift":
        gray = img @ np.array([0.299, 0.587, 0.114])
        gx = np.zeros_like(gray)
        gy = np.zeros_like(gray)
        gx[:, :-1] = np.diff(gray, axis=1)
        gy[:-1] = np.diff(gray, axis=0)
        e = _sep(np.sqrt(gx**2 + gy**2), _gauss(4.0))
        e = (e - e.min()) / max(e.max() - e.min(), 1e-12)
        e = np.clip(e, np.percentile(e, 1), np.percentile(e, 99))
        d = rng.random(2)
        dy, dx = np.round(d / np.linalg.norm(d) * p).astype(int)
        rows = np.clip(np.arange(h) - dy, 0, h - 1)
        cols = np.clip(np.arange(w) - dx, 0, w - 1)
        out = img.copy()
        out[..., 1] = img[rows][:, cols, 1] * e + img[..., 1] * (1 - e)
        return out
    if kind == "color_saturation1":
        hsv = skcolor.rgb2hsv(img)
        hsv[..., 1] *= p
        return skcolor.hsv2rgb(np.clip(hsv, 0, 1))
    if kind == "color_saturation2":
        lab = skcolor.rgb2lab(img)
        lab[..., 1:] *= p
        return skcolor.lab2rgb(lab)
    if kind == "jpeg2000":
        return _codec(img, format="JPEG2000", quality_mode="rates", quality_layers=[p], irreversible=True)
    if kind == "jpeg":
        return _codec(img, format="JPEG", quality=int(p))
    if kind == "white_noise":
        return img + rng.normal(0, math.sqrt(p), img.shape)
    if kind == "white_noise_cc":
        ycc = skcolor.rgb2ycbcr(img) / 255
        return skcolor.ycbcr2rgb((ycc + rng.normal(0, math.sqrt(p), img.shape)) * 255)
    if kind == "impulse_noise":
        u = rng.random(img.shape)
        return np.where(u < p, (u < p / 2).astype(img.dtype), img)
    if kind == "multiplicative_noise":
        return img + img * rng.normal(0, math.sqrt(p), img.shape)
    if kind == "brighten":
        lab = skcolor.rgb2lab(img)
        lab[..., 0] = _spline(lab[..., 0] / 100, [0, 0.5, 1], [0, 0.5 + p / 2, 1]) * 100
        return (2 * _spline(img, [0, 0.5, 1], [0, 0.5 + p / 2, 1]) + np.clip(skcolor.lab2rgb(lab), 0, 1)) / 3
    if kind == "darken":
        return _spline(img, [0, 0.5, 1], [0, 0.5 - p / 2, 1])
    if kind == "mean_shift":
        return img + p
    if kind == "jitter":
        out = img
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
        for _ in range(5):
            s = rng.normal(0, p, (2, h, w))
            coords = [yy - s[0], xx - s[1]]
            out = np.stack([ndimage.map_coordinates(out[..., c], coords, order=1, mode="nearest")
                            for c in range(3)], -1)
        return out
    if kind == "non_eccentricity_patch":
        out = img.copy()
        for _ in range(int(p)):
            t, left = rng.integers(16, h - 32 + 1), rng.integers(16, w - 32 + 1)
            dt, dl = np.round((rng.random(2) - 0.5) * 16).astype(int)
            out[t + dt : t + dt + 16, left + dl : left + dl + 16] = out[t : t + 16, left : left + 16].copy()
        return out
    if kind == "pixelate":
        z = 0.95 - p**0.6
        pil = Image.fromarray((img * 255).round().astype(np.uint8))
        small = pil.resize((int(w * z), int(h * z)), Image.BOX)
        return np.asarray(small.resize((w, h), Image.NEAREST), dtype=np.float32) / 255
    if kind == "quantization":
        n = int(p)
        return (np.clip(np.floor(img * n), 0, n - 1) + 0.5) / n
    if kind == "color_block":
        out = img.copy()
        for _ in range(int(p)):
            t, left = rng.integers(0, h - 32 + 1), rng.integers(0, w - 32 + 1)
            out[t : t + 32, left : left + 32] = rng.random(3)
        return out
    if kind == "high_sharpen":
        lab = skcolor.rgb2lab(img)
        lum = lab[..., 0]
        lab[..., 0] = lum + p * (lum - _sep(lum, _gauss(6.0, 13)))
        return skcolor.lab2rgb(lab)
    if kind == "linear_contrast":
        return _spline(img, [0, 0.25, 0.5, 0.75, 1], [0, 0.25 - p / 4, 0.5, 0.75 + p / 4, 1])
    if kind == "nonlinear_contrast":
        return 0.5 + (img - 0.5) * 2 * p
    raise KeyError(kind)


def ref_loop(kind: str, images: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(0)
    p = LEVEL_PARAMS[kind][LEVEL - 1]
    return np.stack([np.clip(ref_one(kind, im.astype(np.float32) / 255, p, rng), 0, 1) for im in images])


# ---------------------------------------------------------------- timing
def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_both(kind: str, batch: torch.Tensor, images: np.ndarray, device: str, repeats: int) -> tuple[float, float]:
    """images/s of the torch path and of the reference loop, each the best of ``repeats`` runs taken in
    alternation (torch, loop, torch, loop, ...) after a warm-up of each, so load drift hits both alike."""
    degrade(batch, kind, LEVEL, seed=0)
    ref_loop(kind, images[:2])
    _sync(device)
    best_torch = best_loop = float("inf")
    for r in range(repeats):
        start = time.perf_counter()
        degrade(batch, kind, LEVEL, seed=r)
        _sync(device)
        best_torch = min(best_torch, time.perf_counter() - start)
        start = time.perf_counter()
        ref_loop(kind, images)
        best_loop = min(best_loop, time.perf_counter() - start)
    return batch.shape[0] / best_torch, images.shape[0] / best_loop


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", message=".*negative Z values.*")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="device of the torch path (cpu, cuda, cuda:1)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each path, alternating (the best of each is kept)")
    parser.add_argument("--kinds", default="", help="comma-separated subset of kinds (default: all)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default); 1 compares both paths on one core")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    kinds = [k for k in args.kinds.split(",") if k] or list(KINDS)
    images = crops(args.batch, args.size)
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255).contiguous().to(args.device)
    print(f"machine: {describe_machine()}")
    print(f"batch {args.batch} x {args.size}x{args.size}, level {LEVEL}, torch path on {args.device}, "
          f"reference loop per image on CPU (numpy/scipy/scikit-image/Pillow)")
    print(f"{'kind':<24}{'torch img/s':>13}{'loop img/s':>12}{'ratio':>8}")
    ratios = []
    for kind in kinds:
        fast, slow = time_both(kind, batch, images, args.device, args.repeats)
        ratios.append(fast / slow)
        print(f"{kind:<24}{fast:>13.1f}{slow:>12.1f}{fast / slow:>7.2f}x", flush=True)
    geo = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    print(f"min ratio {min(ratios):.2f}x ({kinds[ratios.index(min(ratios))]}), geometric mean {geo:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
