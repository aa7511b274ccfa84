"""Spatial kinds: jitter, non-eccentricity patches, pixelation, quantisation and colour blocks."""

from __future__ import annotations

import torch
import torch.nn.functional as F

_PATCH = 16  # non-eccentricity patch side, and the radius patches move within (KADID)
_BLOCK = 32  # colour block side (KADID)
# Random draws are made for at least this many patches / blocks and the first ``count`` are used, so with
# one seed a higher level adds patches to the lower level's instead of drawing new ones: severity is
# nested level by level, not just larger on average.
_MIN_DRAWS = 100


def jitter(x: torch.Tensor, amount: float, gen: torch.Generator, passes: int = 5) -> torch.Tensor:
    """Scatter pixels: ``passes`` times resample at positions displaced by N(0, amount^2) per pixel."""
    b, _, h, w = x.shape
    rows = torch.arange(h, device=x.device, dtype=x.dtype).view(1, h, 1)
    cols = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, w)
    y = x
    for _ in range(passes):
        shift = torch.randn(b, 2, h, w, generator=gen, device=x.device, dtype=x.dtype) * amount
        gx = (cols - shift[:, 1]) * (2 / max(w - 1, 1)) - 1
        gy = (rows - shift[:, 0]) * (2 / max(h - 1, 1)) - 1
        grid = torch.stack((gx, gy), dim=-1)
        y = F.grid_sample(y, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return y


def _uniform_int(gen: torch.Generator, device: torch.device, shape, low: int, high: int) -> torch.Tensor:
    """Integers uniform in [low, high] (inclusive), from ``gen``."""
    return torch.randint(low, high + 1, shape, generator=gen, device=device)


def _patch_index(b: int, top: torch.Tensor, left: torch.Tensor, size: int, device) -> tuple:
    offsets = torch.arange(size, device=device)
    batch = torch.arange(b, device=device)[:, None, None]
    rows = (top[:, None] + offsets)[:, :, None]
    cols = (left[:, None] + offsets)[:, None, :]
    return batch, rows, cols


def non_eccentricity_patch(x: torch.Tensor, count: float, gen: torch.Generator) -> torch.Tensor:
    """Copy ``count`` 16x16 patches, one after another, to a random nearby position (within 8 px)."""
    b, _, h, w = x.shape
    if h < 2 * _PATCH or w < 2 * _PATCH:
        raise ValueError(f"non_eccentricity_patch needs images of at least {2 * _PATCH} px, got {h}x{w}")
    margin_h = min(_PATCH, (h - _PATCH) // 2)
    margin_w = min(_PATCH, (w - _PATCH) // 2)
    n = int(count)
    draws = max(n, _MIN_DRAWS)
    src_top = _uniform_int(gen, x.device, (draws, b), margin_h, h - _PATCH - margin_h)
    src_left = _uniform_int(gen, x.device, (draws, b), margin_w, w - _PATCH - margin_w)
    jump = torch.round((torch.rand(draws, b, 2, generator=gen, device=x.device) - 0.5) * _PATCH).long()
    dst_top = (src_top + jump[..., 0]).clamp(0, h - _PATCH)
    dst_left = (src_left + jump[..., 1]).clamp(0, w - _PATCH)
    y = x.clone()
    for i in range(n):
        batch, rows, cols = _patch_index(b, src_top[i], src_left[i], _PATCH, x.device)
        patch = y[batch, :, rows, cols]  # [B, 16, 16, C]
        batch, rows, cols = _patch_index(b, dst_top[i], dst_left[i], _PATCH, x.device)
        y[batch, :, rows, cols] = patch
    return y


def pixelate(x: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    """Box-average downscale by 0.95 - strength^0.6, then nearest upscale back (blocks of mean colour).

    Averaging (rather than KADID's nearest) keeps the severity monotone in the strength: nearest
    subsampling at non-integer factors only drops or repeats rows, which looks alike from 0.7 to 0.57."""
    h, w = x.shape[-2:]
    z = 0.95 - strength**0.6
    small = F.interpolate(x, size=(max(1, int(h * z)), max(1, int(w * z))), mode="area")
    return F.interpolate(small, size=(h, w), mode="nearest")


def quantization(x: torch.Tensor, levels: float, gen: torch.Generator) -> torch.Tensor:
    """Uniform quantisation of every channel into ``levels`` bins, each sample set to its bin's centre."""
    n = int(levels)
    # Inputs are validated to [0, 1]; the factor just below n sends 1.0 to the top bin instead of bin n.
    return x.mul(n * (1 - 1e-6)).floor_().mul_(1 / n).add_(0.5 / n)


def color_block(x: torch.Tensor, count: float, gen: torch.Generator) -> torch.Tensor:
    """Paint ``count`` 32x32 blocks of uniform random colour at random positions."""
    b, c, h, w = x.shape
    size_h, size_w = min(_BLOCK, h), min(_BLOCK, w)
    n = int(count)
    draws = max(n, _MIN_DRAWS)
    tops = _uniform_int(gen, x.device, (draws, b), 0, h - size_h)
    lefts = _uniform_int(gen, x.device, (draws, b), 0, w - size_w)
    colours = torch.rand(draws, b, c, generator=gen, device=x.device, dtype=x.dtype)
    y = x.clone()
    rows_off = torch.arange(size_h, device=x.device)
    cols_off = torch.arange(size_w, device=x.device)
    batch = torch.arange(b, device=x.device)[:, None, None]
    for i in range(n):
        rows = (tops[i][:, None] + rows_off)[:, :, None]
        cols = (lefts[i][:, None] + cols_off)[:, None, :]
        y[batch, :, rows, cols] = colours[i][:, None, None, :].expand(b, size_h, size_w, c)
    return y
