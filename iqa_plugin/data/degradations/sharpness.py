"""Sharpness and contrast kinds: high sharpen (unsharp mask on Lab L), linear and non-linear contrast."""

from __future__ import annotations

import torch

from iqa_plugin.data.degradations._ops import (
    gaussian_kernel1d,
    lab_to_rgb,
    rgb_to_lab,
    separable_filter,
    tone_curve,
)

_UNSHARP_SIGMA = 6.0  # KADID: radius 3, Gaussian sigma ceil(2 * 3) on a 13x13 support


def high_sharpen(x: torch.Tensor, amount: float, gen: torch.Generator) -> torch.Tensor:
    """Unsharp masking of the Lab lightness: L + amount (L - G * L)."""
    lab = rgb_to_lab(x)
    lightness = lab[:, :1].contiguous()
    blurred = separable_filter(lightness, gaussian_kernel1d(_UNSHARP_SIGMA, size=13))
    sharpened = lightness + amount * (lightness - blurred)
    return lab_to_rgb(torch.cat((sharpened, lab[:, 1:]), dim=1))


def linear_contrast(x: torch.Tensor, amount: float, gen: torch.Generator) -> torch.Tensor:
    """Tone curve through (0.25, 0.25 - a/4), (0.5, 0.5), (0.75, 0.75 + a/4): a > 0 raises contrast,
    a < 0 lowers it, a = 0 is the identity (so |a| is the severity)."""
    return tone_curve(x, (0.0, 0.25, 0.5, 0.75, 1.0), (0.0, 0.25 - amount / 4, 0.5, 0.75 + amount / 4, 1.0))


def nonlinear_contrast(x: torch.Tensor, half_range: float, gen: torch.Generator) -> torch.Tensor:
    """Compress [0, 1] into [0.5 - half_range, 0.5 + half_range] (KADID's contrast change, as ported)."""
    return x.mul(2 * half_range).add_(0.5 - half_range)
