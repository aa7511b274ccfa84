"""Turn shard samples (lossless crops + degradation recipes) into degraded tensors on a training device.

The shards job stores pristine crops as PNG plus a recipe; a training worker calls these functions on its
own device, so degradations run on its GPU and the shards stay small and reusable. Pure torch + Pillow
(no Ray): a batch is either a mapping of column -> sequence (what ``iter_batches(batch_format='numpy')``
yields) or a list of row mappings (what ``take``/``iter_rows`` yield). Column names are those of
``ray_jobs.shards.data``'s schema.

>>> import io
>>> from PIL import Image
>>> png = io.BytesIO(); Image.new("RGB", (32, 32), (120, 80, 40)).save(png, "PNG")
>>> row = {"crop_a": png.getvalue(), "crop_b": png.getvalue(), "distortion": "gaussian_blur",
...        "levels": [1, 3, 5], "seeds": [11, 12, 13]}
>>> materialize_qualiclip_batch([row], "cpu").shape  # [B, 2 crops, L levels, 3, crop, crop]
torch.Size([1, 2, 3, 3, 32, 32])
>>> sr_row = {"hr": png.getvalue(), "degradation": "bicubic", "seed": 0, "scale": 4, "realsr_config": ""}
>>> hr, lr = materialize_sr_batch([sr_row], "cpu")
>>> tuple(hr.shape), tuple(lr.shape)
((1, 3, 32, 32), (1, 3, 8, 8))

Determinism: each level of each sample is degraded with its own recorded seed, applied to that sample's
two crops together, so a sample's tensors depend only on its row (not on the rest of the batch): the
same recipe gives the same bytes on CPU (and on a given GPU and torch build).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

QUALICLIP_COLUMNS: tuple[str, ...] = ("crop_a", "crop_b", "distortion", "levels", "seeds")
SR_COLUMNS: tuple[str, ...] = ("hr", "degradation", "seed", "scale", "realsr_config")

Batch = Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]]


def _columns(batch: Batch, needed: tuple[str, ...], what: str) -> tuple[dict[str, list[Any]], int]:
    """The needed columns as lists, and the batch size; accepts column mappings or lists of rows."""
    if isinstance(batch, Mapping):
        source = batch
        missing = [name for name in needed if name not in source]
        columns = {name: list(source[name]) for name in needed if name in source}
    elif isinstance(batch, Sequence) and all(isinstance(row, Mapping) for row in batch):
        missing = [name for name in needed if any(name not in row for row in batch)]
        columns = {name: [row[name] for row in batch] for name in needed if not missing}
    else:
        raise TypeError(
            f"{what} batch must be a mapping of column -> values or a list of row mappings, got "
            f"{type(batch).__name__}; pass what iter_batches(batch_format='numpy') or take() returns."
        )
    if missing:
        raise ValueError(
            f"{what} batch lacks the columns {missing} (it has {sorted(_names(batch))}): read it with "
            f"ray_jobs.shards.data.shards_dataset(..., kind='{what.lower()}') from {what} shards."
        )
    sizes = {len(values) for values in columns.values()}
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError(f"{what} batch columns must be non-empty and of equal length, got lengths {sorted(sizes)}")
    return columns, sizes.pop()


def _names(batch: Batch) -> set[str]:
    if isinstance(batch, Mapping):
        return set(batch)
    return {name for row in batch for name in row}


def decode_png_stack(blobs: Sequence[bytes]) -> torch.Tensor:
    """Decode PNG (or any Pillow-readable) bytes of equal-size RGB images into uint8 ``[N, 3, H, W]``."""
    from PIL import Image

    arrays = []
    for index, blob in enumerate(blobs):
        if not isinstance(blob, (bytes, bytearray, memoryview, np.bytes_)):
            raise TypeError(f"image {index} of the batch is {type(blob).__name__}, expected PNG bytes from a shard")
        with Image.open(io.BytesIO(bytes(blob))) as image:
            arrays.append(np.asarray(image.convert("RGB")))
    shapes = {array.shape for array in arrays}
    if len(shapes) != 1:
        raise ValueError(f"crops of one batch must share a size, got {sorted(shapes)}: mix only shards of one config")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def _to_unit_float(pixels: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    return pixels.to(device, non_blocking=True).float().div_(255.0)


def materialize_qualiclip_batch(batch: Batch, device: torch.device | str = "cpu") -> torch.Tensor:
    """QualiCLIP training tensors of a batch of shard rows, degraded on ``device``.

    Args:
        batch: rows with ``crop_a``, ``crop_b`` (PNG bytes), ``distortion``, ``levels`` and ``seeds``.
        device: where the crops are decoded to and degraded (e.g. ``"cuda"``; JPEG/JPEG2000 pass via CPU).

    Returns:
        float32 ``[B, 2, L, 3, crop, crop]`` in [0, 1]: both crops of each sample at each of its L levels
        (increasing severity along dim 2), the sample's distortion applied with the level's recorded seed.

    Raises:
        ValueError / TypeError: missing columns, unequal crop sizes or level counts across the batch.
    """
    from iqa_plugin.data.degradations import degrade

    columns, size = _columns(batch, QUALICLIP_COLUMNS, "QualiCLIP")
    levels = [[int(v) for v in row] for row in columns["levels"]]
    seeds = [[int(v) for v in row] for row in columns["seeds"]]
    counts = {len(row) for row in levels} | {len(row) for row in seeds}
    if len(counts) != 1:
        raise ValueError(
            f"QualiCLIP samples of one batch must all have the same number of levels and seeds, got {sorted(counts)}"
        )
    pixels = decode_png_stack([blob for pair in zip(columns["crop_a"], columns["crop_b"], strict=True) for blob in pair])
    crops = _to_unit_float(pixels, device).view(size, 2, *pixels.shape[1:])
    out = torch.empty(size, 2, counts.pop(), *crops.shape[2:], device=crops.device, dtype=torch.float32)
    for i in range(size):
        kind = str(columns["distortion"][i])
        for j, (level, seed) in enumerate(zip(levels[i], seeds[i], strict=True)):
            out[i, :, j] = degrade(crops[i], kind, level, seed)
    return out


def materialize_sr_batch(batch: Batch, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """SR training pairs of a batch of shard rows, the LR images synthesised on ``device``.

    Args:
        batch: rows with ``hr`` (PNG bytes), ``degradation`` (``bicubic`` | ``realworld``), ``seed``,
            ``scale`` and ``realsr_config`` (JSON of ``RealSRConfig``; empty for bicubic rows).
        device: where HR patches are decoded to and LR images made.

    Returns:
        ``(hr, lr)``: float32 ``[B, 3, h, w]`` and ``[B, 3, h / scale, w / scale]`` in [0, 1]. Bicubic rows
        are downscaled together (antialiased); realworld rows each with their own seed and config.

    Raises:
        ValueError / TypeError: missing columns, mixed scales or patch sizes, an unknown degradation.
    """
    from iqa_plugin.data.degradations import RealSRConfig, degrade_realworld, downscale_bicubic

    columns, size = _columns(batch, SR_COLUMNS, "SR")
    scales = {int(v) for v in columns["scale"]}
    if len(scales) != 1:
        raise ValueError(f"SR samples of one batch must share one scale, got {sorted(scales)}")
    scale = scales.pop()
    hr = _to_unit_float(decode_png_stack(columns["hr"]), device)
    lr = torch.empty(size, 3, hr.shape[-2] // scale, hr.shape[-1] // scale, device=hr.device, dtype=torch.float32)
    kinds = [str(v) for v in columns["degradation"]]
    unknown = sorted(set(kinds) - {"bicubic", "realworld"})
    if unknown:
        raise ValueError(f"unknown SR degradation(s) {unknown}: expected 'bicubic' or 'realworld'")
    bicubic = [i for i, kind in enumerate(kinds) if kind == "bicubic"]
    if bicubic:
        index = torch.tensor(bicubic, device=hr.device)
        lr[index] = downscale_bicubic(hr[index], scale)
    configs: dict[str, RealSRConfig] = {}
    for i, kind in enumerate(kinds):
        if kind != "realworld":
            continue
        text = str(columns["realsr_config"][i])
        if text not in configs:
            configs[text] = RealSRConfig.model_validate_json(text) if text else RealSRConfig(scale=scale)
        lr[i] = degrade_realworld(hr[i : i + 1], int(columns["seed"][i]), configs[text])[0]
    return hr, lr
