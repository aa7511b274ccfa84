"""Compression kinds, through an image codec library (torch has no JPEG / JPEG2000 encoder on every device).

* ``jpeg``: Pillow's JPEG codec (libjpeg / libjpeg-turbo), 4:2:0 chroma subsampling (Pillow's default),
  at the level's quality.
* ``jpeg2000``: Pillow's JPEG 2000 plugin (OpenJPEG), irreversible 9/7 wavelet,
  ``quality_mode='rates'`` with one layer at the level's compression ratio.

Each image is rounded to 8 bits, encoded and decoded on the CPU (images run on a small thread pool: both
codecs release the GIL), and the result goes back to the input's device. Both codecs are deterministic.
"""

from __future__ import annotations

import io
import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image

_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1)))
    return _POOL


def _roundtrip(x: torch.Tensor, encode) -> torch.Tensor:
    """Encode and decode each image of [B, 3, H, W] with ``encode(PIL image, buffer)``, in threads.

    Each thread converts its own image to 8 bits and back (numpy, small buffers that the allocator
    reuses) around the codec calls, which release the GIL.
    """
    source = x.detach().to("cpu", torch.float32).contiguous().numpy()
    out = np.empty(source.shape, dtype=np.float32)

    def one(i: int) -> None:
        pixels = np.rint(np.clip(source[i], 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)
        buffer = io.BytesIO()
        encode(Image.fromarray(np.ascontiguousarray(pixels), "RGB"), buffer)
        buffer.seek(0)
        with Image.open(buffer) as image:
            decoded = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
        np.multiply(decoded.transpose(2, 0, 1), np.float32(1 / 255), out=out[i], casting="unsafe")

    if source.shape[0] == 1:
        one(0)
    else:
        list(_pool().map(one, range(source.shape[0])))
    return torch.from_numpy(out).to(device=x.device, dtype=x.dtype)


def jpeg(x: torch.Tensor, quality: float, gen: torch.Generator) -> torch.Tensor:
    """JPEG round trip at ``quality`` (1..95) with Pillow."""
    q = int(round(quality))
    return _roundtrip(x, lambda img, buf: img.save(buf, format="JPEG", quality=q))


def jpeg2000(x: torch.Tensor, ratio: float, gen: torch.Generator) -> torch.Tensor:
    """JPEG 2000 round trip at compression ``ratio`` with Pillow / OpenJPEG."""
    resolutions = max(1, min(6, int(math.log2(min(x.shape[-2:]))) - 1))

    def encode(img: Image.Image, buf: io.BytesIO) -> None:
        img.save(
            buf,
            format="JPEG2000",
            quality_mode="rates",
            quality_layers=[float(ratio)],
            irreversible=True,
            num_resolutions=resolutions,
        )

    return _roundtrip(x, encode)
