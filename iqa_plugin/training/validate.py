"""Validation of a quality model on held-out photos: Spearman correlation between score and degradation level.

Each held-out photo gives ``crops`` square crops (a fixed grid); each crop is scored pristine (level 0) and
degraded with every validation kind at levels 1..5 (fixed seeds). The figure is the SRCC between the score
and the *negated* level, so that a model whose score falls as the damage grows gets a positive value
(1 = perfectly ordered); ``pooled`` pools every (crop, kind, level) of every photo, ``per_kind`` pools one
kind's rows. The untrained model sits near 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["ValidationSet", "build_validation_set", "degradation_srcc"]


@dataclass(frozen=True)
class ValidationSet:
    """Degraded crops and their labels: ``images`` ``[N, 3, crop, crop]`` in [0, 1], and per row the
    ``level`` (0 = pristine), ``kind`` ('' for pristine) and ``group`` (index of the source crop)."""

    images: torch.Tensor
    levels: np.ndarray
    kinds: tuple[str, ...]
    groups: np.ndarray


def _grid_crops(image: torch.Tensor, crop: int, count: int) -> list[torch.Tensor]:
    """``count`` crops spread along the image's longer side (one crop: the centre)."""
    _, height, width = image.shape
    if min(height, width) < crop:
        raise ValueError(f"validation image of {width}x{height} px is smaller than the crop {crop}: lower the crop")
    y0, x0 = (height - crop) // 2, (width - crop) // 2
    out = []
    for k in range(count):
        t = (k + 1) / (count + 1)
        if width >= height:
            x, y = int(round(t * (width - crop))), y0
        else:
            x, y = x0, int(round(t * (height - crop)))
        out.append(image[:, y : y + crop, x : x + crop])
    return out


def build_validation_set(
    images: Sequence[torch.Tensor], kinds: Sequence[str], *, crop: int = 96, crops: int = 2, seed: int = 0
) -> ValidationSet:
    """Degrade every crop of every image with every kind at levels 1..5 (plus the pristine crop).

    Args:
        images: float ``[3, H, W]`` RGB in [0, 1] (e.g. from :func:`iqa_plugin.data.images`).
        kinds: the distortion kinds to validate on (names of ``iqa_plugin.data.degradations.KINDS``).
        crop: crop side in pixels (close to the training crop: the model is scored at that size).
        crops: crops per image.
        seed: seeds the random kinds (noise, jitter...), so a validation set is the same on every run.
    """
    from iqa_plugin.data.degradations import LEVELS, degrade

    rows, levels, row_kinds, groups = [], [], [], []
    group = 0
    for image in images:
        for piece in _grid_crops(image.float(), crop, crops):
            piece = piece.contiguous()
            rows.append(piece)
            levels.append(0)
            row_kinds.append("")
            groups.append(group)
            for k, kind in enumerate(kinds):
                for level in range(1, LEVELS + 1):
                    rows.append(degrade(piece, kind, level, seed + 1000 * group + 10 * k + level))
                    levels.append(level)
                    row_kinds.append(kind)
                    groups.append(group)
            group += 1
    return ValidationSet(torch.stack(rows), np.asarray(levels), tuple(row_kinds), np.asarray(groups))


def _srcc(scores: np.ndarray, levels: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if np.ptp(scores) == 0:
        return 0.0  # a constant score ranks nothing (scipy would return nan)
    return float(spearmanr(scores, -levels).statistic)


@torch.no_grad()
def degradation_srcc(
    score_fn: Callable[[torch.Tensor], torch.Tensor], validation: ValidationSet, batch_size: int = 64
) -> dict[str, object]:
    """Score the validation set and return ``{'pooled': srcc, 'per_kind': {kind: srcc}, 'pristine_above':
    fraction}`` where ``pristine_above`` is the share of (pristine crop, degraded copy) pairs whose pristine
    crop scores higher."""
    scores = torch.cat([score_fn(validation.images[i : i + batch_size]).reshape(-1).float().cpu()
                        for i in range(0, len(validation.images), batch_size)]).numpy()  # fmt: skip
    kinds = np.asarray(validation.kinds)
    per_kind = {}
    for kind in dict.fromkeys(k for k in validation.kinds if k):
        rows = (kinds == kind) | (validation.levels == 0)
        per_kind[kind] = _srcc(scores[rows], validation.levels[rows])
    pristine = {int(g): scores[i] for i, g in enumerate(validation.groups) if validation.levels[i] == 0}
    degraded = validation.levels > 0
    above = np.asarray([pristine[int(g)] for g in validation.groups[degraded]]) > scores[degraded]
    return {
        "pooled": _srcc(scores, validation.levels),
        "per_kind": per_kind,
        "pristine_above": float(above.mean()) if above.size else float("nan"),
    }
