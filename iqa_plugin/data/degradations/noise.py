"""Noise kinds: white (RGB), white in YCbCr, impulse (salt and pepper) and multiplicative (speckle)."""

from __future__ import annotations

import math

import torch

from iqa_plugin.data.degradations._ops import rgb_to_ycbcr, ycbcr_to_rgb


def _randn(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)


def white_noise(x: torch.Tensor, var: float, gen: torch.Generator) -> torch.Tensor:
    """Add zero-mean Gaussian noise of variance ``var`` to every RGB sample."""
    return x + _randn(x, gen) * math.sqrt(var)


def white_noise_cc(x: torch.Tensor, var: float, gen: torch.Generator) -> torch.Tensor:
    """Add Gaussian noise of variance ``var`` to the Y, Cb and Cr components."""
    return ycbcr_to_rgb(rgb_to_ycbcr(x) + _randn(x, gen) * math.sqrt(var))


def impulse_noise(x: torch.Tensor, density: float, gen: torch.Generator) -> torch.Tensor:
    """Set ``density`` x (samples per image) randomly chosen samples of each image (with replacement,
    as KADID) to 1 (first half) or 0 (second half)."""
    b = x.shape[0]
    per_image = x[0].numel()
    count = int(density * per_image)
    out = x.clone()
    if count == 0:
        return out
    index = torch.randint(per_image, (b, count), generator=gen, device=x.device)
    index += torch.arange(b, device=x.device)[:, None] * per_image
    flat = out.view(-1)
    half = count // 2
    flat[index[:, :half].reshape(-1)] = 1
    flat[index[:, half:].reshape(-1)] = 0
    return out


def multiplicative_noise(x: torch.Tensor, var: float, gen: torch.Generator) -> torch.Tensor:
    """Speckle: x + x n with n Gaussian of variance ``var``."""
    return x + x * _randn(x, gen) * math.sqrt(var)
