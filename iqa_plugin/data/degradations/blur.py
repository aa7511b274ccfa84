"""Blur kinds: Gaussian, lens (disk) and motion (line at a random angle per image)."""

from __future__ import annotations

import functools
import math

import torch

from iqa_plugin.data.degradations._ops import filter2d, gaussian_kernel1d, separable_filter


def gaussian_blur(x: torch.Tensor, sigma: float, gen: torch.Generator) -> torch.Tensor:
    """Gaussian blur with standard deviation ``sigma`` (kernel size 2 ceil(2 sigma) + 1)."""
    return separable_filter(x, gaussian_kernel1d(sigma))


@functools.lru_cache(maxsize=32)
def disk_kernel(radius: float, supersample: int = 16) -> torch.Tensor:
    """MATLAB ``fspecial('disk')``-like kernel: the area of each pixel covered by a disk, normalised."""
    r = int(math.ceil(radius - 0.5))
    offsets = (torch.arange(supersample, dtype=torch.float64) + 0.5) / supersample - 0.5
    centres = torch.arange(-r, r + 1, dtype=torch.float64)
    coords = (centres[:, None] + offsets[None, :]).reshape(-1)  # sub-pixel sample positions
    inside = (coords[:, None] ** 2 + coords[None, :] ** 2) <= radius**2
    size = 2 * r + 1
    area = inside.double().view(size, supersample, size, supersample).sum(dim=(1, 3))
    return (area / area.sum()).float()


def lens_blur(x: torch.Tensor, radius: float, gen: torch.Generator) -> torch.Tensor:
    """Defocus blur: convolution with a disk of ``radius`` pixels."""
    return filter2d(x, disk_kernel(radius))


def motion_kernels(radius: float, angles: torch.Tensor, samples: int = 64) -> torch.Tensor:
    """One line kernel of length ``radius + 1`` per angle (radians), drawn with bilinear splats: [B, k, k]."""
    length = radius + 1.0
    half = int(math.ceil(length / 2))
    size = 2 * half + 1
    t = torch.linspace(-length / 2, length / 2, samples, dtype=torch.float64, device=angles.device)
    px = half + t[None, :] * torch.cos(angles.double())[:, None]  # [B, S]
    py = half - t[None, :] * torch.sin(angles.double())[:, None]
    kernels = torch.zeros(angles.shape[0], size * size, dtype=torch.float64, device=angles.device)
    x0, y0 = px.floor(), py.floor()
    for dx in (0, 1):
        for dy in (0, 1):
            wx = (1 - (px - x0)) if dx == 0 else (px - x0)
            wy = (1 - (py - y0)) if dy == 0 else (py - y0)
            xi = (x0 + dx).clamp(0, size - 1).long()
            yi = (y0 + dy).clamp(0, size - 1).long()
            kernels.scatter_add_(1, yi * size + xi, wx * wy)
    kernels = kernels / kernels.sum(dim=1, keepdim=True)
    return kernels.view(-1, size, size).float()


def motion_blur(x: torch.Tensor, radius: float, gen: torch.Generator) -> torch.Tensor:
    """Linear motion blur along a random direction drawn per image from ``gen``."""
    angles = torch.rand(x.shape[0], generator=gen, device=x.device) * math.pi
    return filter2d(x, motion_kernels(radius, angles))
