"""SFD-IQA's Feat-D real-probability map drawn over the image: what a report shows next to a score.

Blue where Feat-D judges the image real (probability 1), white at 0.5, red where it judges it generated
(probability 0): a diverging scale, so the eye finds the regions that pull the score down.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

__all__ = ["feat_map_overlay", "sfd_heatmaps"]

_FAKE = np.array([215.0, 48.0, 39.0])
_MIDDLE = np.array([255.0, 255.0, 255.0])
_REAL = np.array([69.0, 117.0, 180.0])


def _colour(prob: np.ndarray) -> np.ndarray:
    p = np.clip(prob, 0.0, 1.0)[..., None]
    low = _FAKE + (_MIDDLE - _FAKE) * (p / 0.5)
    high = _MIDDLE + (_REAL - _MIDDLE) * ((p - 0.5) / 0.5)
    return np.where(p < 0.5, low, high)


def feat_map_overlay(image: Image.Image, prob_map: np.ndarray, alpha: float = 0.55) -> Image.Image:
    """``image`` with the ``[h, w]`` probability map (upsampled bilinearly to its size) blended over it."""
    if prob_map.ndim != 2:
        raise ValueError(f"prob_map of shape {prob_map.shape}: expected one [h, w] map in [0, 1].")
    rgb = image.convert("RGB")
    grid = Image.fromarray(prob_map.astype(np.float32), mode="F").resize(rgb.size, Image.Resampling.BILINEAR)
    colour = _colour(np.asarray(grid))
    blended = (1 - alpha) * np.asarray(rgb, dtype=np.float64) + alpha * colour
    return Image.fromarray(blended.round().clip(0, 255).astype(np.uint8))


@torch.no_grad()
def sfd_heatmaps(model: torch.nn.Module, images: Sequence[Image.Image], short_side: int = 256) -> list[Image.Image]:
    """For each PIL image: itself (shorter side resized to ``short_side``, as scored here) with SFD-IQA
    ``model``'s Feat-D real-probability map over it (``model``: a network from ``build_network`` or a pyiqa
    metric of an ``IqaPluginSFDIQA`` card)."""
    from iqa_plugin.archs.sfd_iqa import sfd_iqa_parts

    out = []
    for image in images:
        rgb = image.convert("RGB")
        scale = short_side / min(rgb.size)
        rgb = rgb.resize((max(32, round(rgb.width * scale)), max(32, round(rgb.height * scale))),
                         Image.Resampling.BILINEAR)
        x = torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1).float().div(255)[None]
        parts = sfd_iqa_parts(model, x)
        out.append(feat_map_overlay(rgb, parts.feat_map[0, 0].float().cpu().numpy()))
    return out
