"""Colour kinds: colour diffusion, colour shift, saturation in HSV (1) and in Lab (2)."""

from __future__ import annotations

import math

import torch

from iqa_plugin.data.degradations._ops import (
    gaussian_kernel1d,
    lab_to_rgb,
    rgb_to_gray,
    rgb_to_lab,
    separable_filter,
)


def color_diffusion(x: torch.Tensor, amount: float, gen: torch.Generator) -> torch.Tensor:
    """Blur the Lab chroma (a, b) with sigma 1.5 amount + 2 and scale it by ``amount`` (colour bleeding)."""
    lab = rgb_to_lab(x)
    ab = separable_filter(lab[:, 1:3].contiguous(), gaussian_kernel1d(1.5 * amount + 2)) * amount
    return lab_to_rgb(torch.cat((lab[:, :1], ab), dim=1))


def shift_replicate(img: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Translate each image of [B, C, H, W] by integer (dy[b], dx[b]) pixels, replicating the borders."""
    b, _, h, w = img.shape
    rows = (torch.arange(h, device=img.device)[None, :] - dy[:, None]).clamp(0, h - 1)
    cols = (torch.arange(w, device=img.device)[None, :] - dx[:, None]).clamp(0, w - 1)
    batch = torch.arange(b, device=img.device)[:, None, None]
    out = img[batch, :, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]
    return out.permute(0, 3, 1, 2)


def color_shift(x: torch.Tensor, amount: float, gen: torch.Generator) -> torch.Tensor:
    """Shift the green channel by ``amount`` pixels in a random direction, blended in near edges."""
    b = x.shape[0]
    gray = rgb_to_gray(x)
    gx = torch.zeros_like(gray)
    gy = torch.zeros_like(gray)
    gx[..., :, :-1] = gray[..., :, 1:] - gray[..., :, :-1]
    gy[..., :-1, :] = gray[..., 1:, :] - gray[..., :-1, :]
    edges = separable_filter(torch.sqrt(gx**2 + gy**2), gaussian_kernel1d(4.0)).view(b, -1)
    lo, hi = edges.amin(dim=1, keepdim=True), edges.amax(dim=1, keepdim=True)
    edges = (edges - lo) / (hi - lo).clamp_min(1e-12)
    # Clip the weight map to its 1st..99th percentiles (KADID), per image.
    n = edges.shape[1]
    # kthvalue is a selection (O(n)), not a full sort; same values as sorting.
    p_lo = edges.kthvalue(max(1, math.ceil(0.01 * n)), dim=1, keepdim=True).values
    p_hi = edges.kthvalue(max(1, math.ceil(0.99 * n)), dim=1, keepdim=True).values
    weight = torch.maximum(torch.minimum(edges, p_hi), p_lo).view_as(gray)

    direction = torch.rand(b, 2, generator=gen, device=x.device)
    direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
    shift = torch.round(direction * amount).long()
    green = x[:, 1:2]
    shifted = shift_replicate(green, shift[:, 1], shift[:, 0])
    out = x.clone()
    out[:, 1:2] = shifted * weight + green * (1 - weight)
    return out


def color_saturation1(x: torch.Tensor, factor: float, gen: torch.Generator) -> torch.Tensor:
    """Multiply the HSV saturation by ``factor`` keeping hue and value: c' = v - factor (v - c)."""
    value = x.amax(dim=1, keepdim=True)
    return value - factor * (value - x)


def color_saturation2(x: torch.Tensor, factor: float, gen: torch.Generator) -> torch.Tensor:
    """Multiply the Lab chroma channels (a, b) by ``factor``."""
    lab = rgb_to_lab(x)
    return lab_to_rgb(torch.cat((lab[:, :1], lab[:, 1:3] * factor), dim=1))
