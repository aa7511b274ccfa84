"""Decode JPEGs in batches on the scoring device and resize them there, as the CPU path would.

The scoring job's actors use this for the images :func:`iqa_plugin.data.jpeg_header.device_fallback`
lets through (baseline 8-bit YCbCr JPEGs, no EXIF rotation, complete): one
``torchvision.io.decode_jpeg(list, device=...)`` call per block (nvjpeg on CUDA), then the resize of
``short:N``. Everything else, and every image the device decoder refuses, is decoded by the CPU decoder
(:func:`iqa_plugin.data.images.decode_image_array`), which stays the reference for rows and reasons.

The decoder is injectable (:data:`JpegBatchDecoder`): on a machine without CUDA, the same code runs
with ``device="cpu"`` (libjpeg-turbo, the CPU path's own decoder), which is how the tests check that
the GPU path's structure gives the CPU path's rows.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch

from iqa_plugin.data.tensors import short_side_size

#: ``list of 1-D uint8 CPU tensors (encoded JPEGs) -> list of [3, H, W] uint8 tensors``; raises
#: ``RuntimeError`` when any image of the list cannot be decoded (torchvision's batched contract).
JpegBatchDecoder = Callable[[list[torch.Tensor]], list[torch.Tensor]]

_TORCHVISION_DEPRECATION = ".*image decoding and encoding capabilities of TorchVision are deprecated"


def torchvision_jpeg_decoder(device: str | torch.device) -> JpegBatchDecoder:
    """torchvision's batched JPEG decoder on ``device`` (nvjpeg on CUDA, libjpeg-turbo on CPU), RGB out."""
    from torchvision.io import ImageReadMode, decode_jpeg

    target = torch.device(device)

    def decode(encoded: list[torch.Tensor]) -> list[torch.Tensor]:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_TORCHVISION_DEPRECATION)
            out = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=target)
        return list(out) if isinstance(out, (list, tuple)) else [out]

    return decode


def decode_jpegs(blobs: Sequence[bytes], decoder: JpegBatchDecoder,
                 expected_sizes: Sequence[tuple[int, int]] | None = None) -> list[torch.Tensor | None]:
    """Decode ``blobs`` with one batched call; when it fails, one call per image. ``None`` marks an image
    the decoder refused or returned in another size than its header's ``(height, width)`` (when
    ``expected_sizes`` is given): the caller decodes those on the CPU."""
    if not blobs:
        return []
    encoded = [torch.frombuffer(bytearray(blob), dtype=torch.uint8) for blob in blobs]
    try:
        decoded: list[torch.Tensor | None] = list(decoder(encoded))
        if len(decoded) != len(encoded):
            raise RuntimeError(f"the decoder returned {len(decoded)} images for {len(encoded)} inputs")
    except RuntimeError:  # one bad image fails the whole batched call: find it
        decoded = []
        for one in encoded:
            try:
                decoded.append(decoder([one])[0])
            except RuntimeError:
                decoded.append(None)
    if expected_sizes is not None:
        decoded = [image if image is not None and image.ndim == 3 and image.shape[0] == 3
                   and tuple(image.shape[1:]) == tuple(size) else None
                   for image, size in zip(decoded, expected_sizes, strict=True)]
    return decoded


def _resize_axis(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    out = torch.nn.functional.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
    return out.round_().clamp_(0, 255)


def resize_uint8_short_side(image: torch.Tensor, short: int) -> torch.Tensor:
    """Resize a ``[3, H, W]`` uint8 image (any device) so its shorter side is ``short``, uint8 back.

    Antialiased bicubic in two passes, width first, rounded to 8 bits in between: the way PIL resamples
    (:func:`iqa_plugin.data.images.resize_array_short_side`, the CPU path), so the two differ by at most
    one level in a few pixels (checked on the package photos) instead of up to four for a one-pass
    float resize.
    """
    height, width = int(image.shape[-2]), int(image.shape[-1])
    new_height, new_width = short_side_size(height, width, short)
    if (new_height, new_width) == (height, width):
        return image
    x = image.unsqueeze(0).float()
    if new_width != width:
        x = _resize_axis(x, (height, new_width))
    if new_height != height:
        x = _resize_axis(x, (new_height, new_width))
    return x[0].to(torch.uint8)
