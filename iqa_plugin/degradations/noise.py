"""Noise kinds: white (RGB), white in YCbCr, impulse (salt and pepper) and multiplicative (speckle)."""

from __future__ import annotations

import math

import torch

from iqa_plugin.degradations._ops import rgb_to_ycbcr, ycbcr_to_rgb


def _randn(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)


def white_noise(x: torch.Tensor, var: float, gen: torch.Generator) -> torch.Tensor:
    """Add zero-mean Gaussian noise of variance ``var`` to every RGB sample."""
    return x + _randn(x, gen) * math.sqrt(var)


def white_noise_cc(x: torch.Tensor, var: float, gen: torch.Generator) -> torch.Tensor:
    """Add Gaussian noise of variance ``var`` to the Y, Cb and Cr components."""
    return ycbcr_to_rgb(rgb_to_ycbcr(x) + _randn(x, gen) * math.sqrt(var))


def impulse_noise(x: torch.Tensor, density: float, gen: torch.Generator) -> torch.Tensor:
    """Set a fraction ``density`` of the samples to 0 or 1 (half each on average)."""
    u = torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    hit = u < density
    salt = u < density / 2
    return torch.where(hit, salt.to(x.dtype), x)


def multiplicative_noise(x: torch.Tensor, var: float, gen: torch.Generator) -> torch.Tensor:
    """Speckle: x + x n with n Gaussian of variance ``var``."""
    return x + x * _randn(x, gen) * math.sqrt(var)
