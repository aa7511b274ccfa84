"""Per-image sampling of the shards job: seeds, overlapping crop pairs, HR patches, recipes and PNG bytes.

Everything here is a pure function of (config, image id, decoded pixels): the per-image seed is derived
from the job seed and the image id with sha256 (never Python's salted ``hash``), and all draws use numpy's
PCG64 generator in a fixed order, so the same inputs always give the same rows.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

import numpy as np

from ray_jobs.shards.config import ShardsJobConfig

_MAX_SEED = 2**63 - 1


def image_seed(seed: int, image_id: str) -> int:
    """Deterministic 63-bit seed of one image from the job seed and the image id."""
    digest = hashlib.sha256(f"{seed}\x00{image_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & _MAX_SEED


def decode_pristine(data: bytes, *, uri: str, max_pixels: int, min_side: int) -> np.ndarray | dict[str, str]:
    """Decoded ``H x W x 3`` uint8 pixels, or ``{'reason': ..., 'detail': ...}`` when the image is skipped.

    Reasons are those of ``iqa_plugin.data.images.ImageInputError`` (``empty``, ``not_an_image``,
    ``truncated``, ``too_many_pixels``, ``too_small``, ...). 16-bit images are rounded to 8 bits (the
    crops are stored as 8-bit PNG).
    """
    from iqa_plugin.data.images import ImageInputError, decode_image_array

    try:
        pixels = decode_image_array(data, max_pixels=max_pixels, source=uri, min_side=min_side)
    except ImageInputError as error:
        return {"reason": error.reason, "detail": str(error)}
    if pixels.dtype == np.uint16:
        pixels = ((pixels.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    return np.ascontiguousarray(pixels)


def encode_png(pixels: np.ndarray, compress_level: int) -> bytes:
    """Lossless PNG bytes of an ``H x W x 3`` uint8 array (deterministic for a given zlib)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def overlapping_boxes(
    height: int, width: int, crop: int, max_shift: float, rng: np.random.Generator
) -> tuple[list[int], list[int]]:
    """Two ``[x, y, w, h]`` boxes of ``crop`` px inside the image that overlap.

    The first box is uniform over the image; the second is shifted from it by at most
    ``floor(max_shift * crop)`` (< crop) px on each axis and clipped to stay inside, so they always share
    at least ``(1 - max_shift)^2`` of their area (QualiCLIP's two random overlapping crops).
    """
    shift = int(max_shift * crop)
    xa = int(rng.integers(0, width - crop + 1))
    ya = int(rng.integers(0, height - crop + 1))
    xb = int(rng.integers(max(0, xa - shift), min(width - crop, xa + shift) + 1))
    yb = int(rng.integers(max(0, ya - shift), min(height - crop, ya + shift) + 1))
    return [xa, ya, crop, crop], [xb, yb, crop, crop]


def _cut(pixels: np.ndarray, box: list[int]) -> np.ndarray:
    x, y, w, h = box
    return np.ascontiguousarray(pixels[y : y + h, x : x + w])


def _qualiclip_rows(
    pixels: np.ndarray, image_id: str, uri: str, config: ShardsJobConfig, rng: np.random.Generator, kinds: tuple
) -> list[dict[str, Any]]:
    height, width = pixels.shape[:2]
    all_levels = np.arange(1, 6)
    rows = []
    for k in range(config.samples_per_image):
        box_a, box_b = overlapping_boxes(height, width, config.crop, config.max_shift, rng)
        distortion = kinds[int(rng.integers(len(kinds)))]
        levels = sorted(int(v) for v in rng.choice(all_levels, size=config.levels, replace=False))
        seeds = [int(v) for v in rng.integers(0, _MAX_SEED, size=config.levels)]
        rows.append(
            {
                "sample_id": f"{image_id}#{k}",
                "image_id": image_id,
                "source_uri": uri,
                "sample_index": k,
                "crop_a": encode_png(_cut(pixels, box_a), config.png_compress_level),
                "crop_b": encode_png(_cut(pixels, box_b), config.png_compress_level),
                "box_a": box_a,
                "box_b": box_b,
                "distortion": distortion,
                "levels": levels,
                "seeds": seeds,
            }
        )
    return rows


def _sr_rows(
    pixels: np.ndarray, image_id: str, uri: str, config: ShardsJobConfig, rng: np.random.Generator, realsr_json: str
) -> list[dict[str, Any]]:
    height, width = pixels.shape[:2]
    size = config.hr_size
    rows = []
    for k in range(config.samples_per_image):
        box = [int(rng.integers(0, width - size + 1)), int(rng.integers(0, height - size + 1)), size, size]
        realworld = bool(rng.random() < config.realworld_fraction)
        rows.append(
            {
                "sample_id": f"{image_id}#{k}",
                "image_id": image_id,
                "source_uri": uri,
                "sample_index": k,
                "hr": encode_png(_cut(pixels, box), config.png_compress_level),
                "box": box,
                "degradation": "realworld" if realworld else "bicubic",
                "seed": int(rng.integers(0, _MAX_SEED)),
                "scale": config.scale,
                "realsr_config": realsr_json if realworld else "",
            }
        )
    return rows


def realsr_config_json(config: ShardsJobConfig) -> str:
    """The JSON of the RealSRConfig recorded in realworld SR rows (validated; defaults filled in)."""
    from iqa_plugin.data.degradations import RealSRConfig

    return RealSRConfig.model_validate({"scale": config.scale, **(config.realsr or {})}).model_dump_json()


def sample_rows(
    pixels: np.ndarray,
    *,
    image_id: str,
    uri: str,
    config: ShardsJobConfig,
    rng: np.random.Generator,
    kinds: tuple[str, ...],
    realsr_json: str = "",
) -> list[dict[str, Any]]:
    """The shard rows of one decoded image (``config.samples_per_image`` of them), see ``ray_jobs.shards.data.SCHEMAS``."""
    if config.kind == "qualiclip":
        return _qualiclip_rows(pixels, image_id, uri, config, rng, kinds)
    return _sr_rows(pixels, image_id, uri, config, rng, realsr_json or realsr_config_json(config))
