"""Shared batched building blocks: filters with replicate borders, colour spaces, tone curves.

Every function takes and returns float tensors shaped [B, C, H, W] on any device.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

# sRGB (D65) <-> CIE XYZ, and the D65 white point used by CIE Lab.
_RGB_TO_XYZ = (
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)
_WHITE = (0.950456, 1.0, 1.088754)


def gaussian_kernel1d(sigma: float, size: int | None = None) -> torch.Tensor:
    """Normalised 1-D Gaussian taps; size defaults to ``2 * ceil(2 sigma) + 1`` (KADID's choice)."""
    if size is None:
        size = 2 * math.ceil(2 * sigma) + 1
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return (k / k.sum()).float()


_SHIFT_TAPS_MAX = 25  # up to this many taps, shifted sums beat conv2d and matmul on CPU and GPU alike


@functools.lru_cache(maxsize=64)
def _border_matrix(n: int, taps: tuple[float, ...], device: str, dtype: torch.dtype) -> torch.Tensor:
    """[n, n] matrix M with (row @ M) = the row filtered by ``taps`` with replicated borders."""
    k = len(taps)
    r = k // 2
    src = (torch.arange(n)[None, :] + torch.arange(k)[:, None] - r).clamp(0, n - 1)  # [k, n_out]
    out = torch.arange(n)[None, :].expand(k, n)
    weights = torch.tensor(taps, dtype=torch.float64)[:, None].expand(k, n)
    matrix = torch.zeros(n, n, dtype=torch.float64)
    matrix.index_put_((src.reshape(-1), out.reshape(-1)), weights.reshape(-1), accumulate=True)
    return matrix.to(device=device, dtype=dtype)


def _filter_last_axis(x: torch.Tensor, taps: tuple[float, ...]) -> torch.Tensor:
    n = x.shape[-1]
    if len(taps) > _SHIFT_TAPS_MAX:
        return x @ _border_matrix(n, taps, str(x.device), x.dtype)
    r = len(taps) // 2
    padded = torch.cat((x[..., :1].expand(*x.shape[:-1], r), x, x[..., -1:].expand(*x.shape[:-1], r)), dim=-1)
    out = padded[..., 0:n] * taps[0]
    for i in range(1, len(taps)):
        out.add_(padded[..., i : i + n], alpha=taps[i])
    return out


def separable_filter(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Filter every channel with ``taps`` along rows then columns, replicating the borders.

    Short filters run as shifted sums, long ones (colour diffusion's sigma-20 Gaussian) as one matmul by a
    banded matrix with the border replication folded in: both far faster than a 1-channel conv2d on CPU.
    """
    taps_t = tuple(float(t) for t in taps.flatten())
    rows = _filter_last_axis(x, taps_t)
    return _filter_last_axis(rows.transpose(-1, -2), taps_t).transpose(-1, -2).contiguous()


def filter2d(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Filter with a [kh, kw] kernel shared by all images, or [B, kh, kw] one per image (odd sizes),
    replicating the borders; computed as a sum of shifted copies (zero taps skipped)."""
    b, c, h, w = x.shape
    kh, kw = kernel.shape[-2:]
    kernel = kernel.to(device=x.device, dtype=x.dtype)
    padded = F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2), mode="replicate")
    shared = kernel.dim() == 2
    taps = kernel if shared else kernel.view(b, 1, kh, kw)
    used = (kernel != 0) if shared else (kernel != 0).any(dim=0)
    out = torch.zeros_like(x)
    for i, j in used.nonzero().tolist():
        window = padded[..., i : i + h, j : j + w]
        if shared:
            out.add_(window, alpha=float(taps[i, j]))
        else:
            out.addcmul_(window, taps[:, :, i : i + 1, j : j + 1])
    return out


def _matrix(rows, device, dtype) -> torch.Tensor:
    return torch.tensor(rows, device=device, dtype=dtype)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] -> CIE Lab (L in [0, 100]), D65."""
    rgb = rgb.clamp(0, 1)
    lin = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = torch.einsum("ij,bjhw->bihw", _matrix(_RGB_TO_XYZ, rgb.device, rgb.dtype), lin)
    xyz = xyz / _matrix(_WHITE, rgb.device, rgb.dtype).view(1, 3, 1, 1)
    eps = (6 / 29) ** 3
    f = torch.where(xyz > eps, xyz.clamp_min(eps) ** (1 / 3), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    lum = 116 * f[:, 1] - 16
    a = 500 * (f[:, 0] - f[:, 1])
    b = 200 * (f[:, 1] - f[:, 2])
    return torch.stack((lum, a, b), dim=1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIE Lab (D65) -> sRGB clamped to [0, 1]."""
    fy = (lab[:, 0] + 16) / 116
    f = torch.stack((fy + lab[:, 1] / 500, fy, fy - lab[:, 2] / 200), dim=1)
    delta = 6 / 29
    xyz = torch.where(f > delta, f**3, 3 * delta**2 * (f - 4 / 29))
    xyz = xyz * _matrix(_WHITE, lab.device, lab.dtype).view(1, 3, 1, 1)
    inv = torch.linalg.inv(_matrix(_RGB_TO_XYZ, lab.device, torch.float64)).to(lab.dtype)
    lin = torch.einsum("ij,bjhw->bihw", inv, xyz).clamp(0, 1)
    rgb = torch.where(lin > 0.0031308, 1.055 * lin.clamp_min(0.0031308) ** (1 / 2.4) - 0.055, 12.92 * lin)
    return rgb.clamp(0, 1)


_YCBCR = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))


def rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] -> full-range YCbCr in [0, 1] (chroma centred on 0.5)."""
    out = torch.einsum("ij,bjhw->bihw", _matrix(_YCBCR, rgb.device, rgb.dtype), rgb)
    return out + _matrix((0.0, 0.5, 0.5), rgb.device, rgb.dtype).view(1, 3, 1, 1)


def ycbcr_to_rgb(ycc: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_ycbcr` (not clamped)."""
    inv = torch.linalg.inv(_matrix(_YCBCR, ycc.device, torch.float64)).to(ycc.dtype)
    centred = ycc - _matrix((0.0, 0.5, 0.5), ycc.device, ycc.dtype).view(1, 3, 1, 1)
    return torch.einsum("ij,bjhw->bihw", inv, centred)


def rgb_to_gray(rgb: torch.Tensor) -> torch.Tensor:
    """ITU-R BT.601 luma, [B, 1, H, W]."""
    weights = _matrix((0.299, 0.587, 0.114), rgb.device, rgb.dtype).view(1, 3, 1, 1)
    return (rgb * weights).sum(dim=1, keepdim=True)


_LUT_SIZE = 65536  # tone curves are evaluated through a table: error < 2e-5, far below one 8-bit step


@functools.lru_cache(maxsize=256)
def _curve_table(knots_x: tuple[float, ...], knots_y: tuple[float, ...]) -> torch.Tensor:
    from scipy.interpolate import CubicSpline

    spline = CubicSpline(np.array(knots_x), np.array(knots_y), bc_type="not-a-knot")
    return torch.from_numpy(np.clip(spline(np.linspace(0, 1, _LUT_SIZE)), 0, 1))


def tone_curve(x: torch.Tensor, knots_x: tuple[float, ...], knots_y: tuple[float, ...]) -> torch.Tensor:
    """Not-a-knot cubic spline through the knots (MATLAB ``spline``, KADID's ``curves``), clamped to [0, 1].

    ``x`` must lie in [0, 1]; the spline is tabulated once per curve and looked up (nearest of 65,536)."""
    table = _curve_table(tuple(map(float, knots_x)), tuple(map(float, knots_y))).to(x.device, x.dtype)
    index = x.clamp(0, 1).mul_(_LUT_SIZE - 1).round_().long()
    return table[index]


def midpoint_curve(x: torch.Tensor, mid: float) -> torch.Tensor:
    """KADID's single-knot ``curves``: the spline through (0, 0), (0.5, mid), (1, 1), clamped."""
    return tone_curve(x, (0.0, 0.5, 1.0), (0.0, mid, 1.0))
