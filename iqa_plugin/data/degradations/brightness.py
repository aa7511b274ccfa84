"""Brightness kinds: brighten and darken (KADID tone curves) and mean shift."""

from __future__ import annotations

import torch

from iqa_plugin.data.degradations._ops import lab_to_rgb, midpoint_curve, rgb_to_lab


def brighten(x: torch.Tensor, amount: float, gen: torch.Generator) -> torch.Tensor:
    """Average of a brightening curve on RGB (weight 2) and on Lab lightness (weight 1)."""
    mid = 0.5 + amount / 2
    lab = rgb_to_lab(x)
    lightness = midpoint_curve(lab[:, :1] / 100, mid) * 100
    via_lab = lab_to_rgb(torch.cat((lightness, lab[:, 1:]), dim=1))
    return (2 * midpoint_curve(x, mid) + via_lab) / 3


def darken(x: torch.Tensor, amount: float, gen: torch.Generator) -> torch.Tensor:
    """Darkening tone curve on RGB through (0.5, 0.5 - amount / 2)."""
    return midpoint_curve(x, 0.5 - amount / 2)


def mean_shift(x: torch.Tensor, shift: float, gen: torch.Generator) -> torch.Tensor:
    """Add ``shift`` to every sample (clamped to [0, 1] by the caller)."""
    return x + shift
