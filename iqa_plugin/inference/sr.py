"""Super-resolution front door: ``create_sr_model(name)`` from a model card of kind ``sr``, and tiled upscaling.

>>> from iqa_plugin.inference.sr import SRModel
>>> from iqa_plugin.archs.rrdbnet import RRDBNet
>>> import numpy
>>> model = SRModel(RRDBNet(scale=2, features=8, blocks=1, growth=4), tile=16, tile_overlap=4)
>>> model.upscale(numpy.zeros((20, 30, 3), numpy.uint8)).shape
(40, 60, 3)

Tiling: the image is cut into ``tile`` x ``tile`` low-resolution tiles; each is run with ``tile_overlap``
pixels of real neighbouring context on every side (zero padding only at the image border, as without
tiling) and only its centre is kept, so working memory depends on the tile size, not the image size, and
the result approaches the untiled one as the overlap grows (bench/bench_sr.py measures both).
"""

from __future__ import annotations

import io
import os
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image
from torch import nn

from iqa_plugin.data.images import load_image

__all__ = ["DEFAULT_TILE", "DEFAULT_TILE_OVERLAP", "SRModel", "create_sr_model"]

#: Low-resolution tile side. 256 px keeps a full RRDBNet x4 tile under ~1.5 GB of activations in fp32.
DEFAULT_TILE = 256
#: Context on each side of a tile, in low-resolution pixels (see bench/bench_sr.py for the PSNR it gives).
DEFAULT_TILE_OVERLAP = 32

Img = TypeVar("Img")


class SRModel:
    """A generator ready for inference: ``upscale(image)`` returns the same kind of object it was given.

    Args:
        network: any module mapping ``[B, 3, h, w]`` in [0, 1] to ``[B, 3, s*h, s*w]`` (an arch, or the
            :class:`~iqa_plugin.inference.contract.CardNetwork` of a card); its ``scale`` attribute (or that
            of the arch it wraps, or the ``scale`` argument) gives ``s``.
        tile: low-resolution tile side; ``0`` disables tiling.
        tile_overlap: context pixels around each tile (low resolution).
        device: where the network runs (default: CUDA when available, else CPU).
        precision: ``'auto'`` (bf16 on CUDA, fp32 on CPU), ``'fp32'`` or ``'bf16'``.
        name: shown in errors and ``repr``.
    """

    def __init__(self, network: nn.Module, *, scale: int | None = None, tile: int = DEFAULT_TILE,
                 tile_overlap: int = DEFAULT_TILE_OVERLAP, device: str | torch.device | None = None,
                 precision: str = "auto", name: str = "sr") -> None:
        inner = getattr(network, "network", network)  # a CardNetwork wraps the arch
        self.scale = int(scale if scale is not None else getattr(network, "scale", getattr(inner, "scale", 0)))
        if self.scale < 1:
            raise ValueError(f"{name}: the network has no 'scale' attribute; pass scale= (e.g. 4)")
        if tile < 0 or tile_overlap < 0:
            raise ValueError(f"tile={tile}, tile_overlap={tile_overlap}: expected tile >= 0 (0 = no tiling) "
                             "and tile_overlap >= 0, e.g. tile=256, tile_overlap=32")
        if precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision={precision!r}: expected 'auto', 'fp32' or 'bf16'")
        self.device = torch.device(device) if device is not None else torch.device(
            "cuda" if torch.cuda.is_available() else "cpu")
        self.network = network.to(self.device).eval().requires_grad_(False)
        self.tile, self.tile_overlap, self.name = tile, tile_overlap, name
        self.bf16 = precision == "bf16" or (precision == "auto" and self.device.type == "cuda")

    def __repr__(self) -> str:
        return (f"SRModel({self.name!r}, x{self.scale}, tile={self.tile}, overlap={self.tile_overlap}, "
                f"device={self.device}, {'bf16' if self.bf16 else 'fp32'})")

    @torch.inference_mode()
    def upscale_batch(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, h, w]`` float in [0, 1] -> ``[B, 3, s*h, s*w]`` float32 in [0, 1] on the input's device."""
        out = torch.empty(x.shape[0], 3, x.shape[2] * self.scale, x.shape[3] * self.scale, device=x.device)
        for i in range(x.shape[0]):
            out[i] = self._upscale_one(x[i : i + 1])[0].to(x.device)
        return out

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, torch.float32)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return self.network(x).float().clamp_(0, 1)

    def _upscale_one(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if not self.tile or (h <= self.tile and w <= self.tile):
            return self._run(x)
        s, t, pad = self.scale, self.tile, self.tile_overlap
        out = torch.empty(1, 3, h * s, w * s, device=self.device)
        for top in range(0, h, t):
            for left in range(0, w, t):
                bottom, right = min(top + t, h), min(left + t, w)
                y0, x0 = max(top - pad, 0), max(left - pad, 0)
                y1, x1 = min(bottom + pad, h), min(right + pad, w)
                sr = self._run(x[..., y0:y1, x0:x1])
                oy, ox = (top - y0) * s, (left - x0) * s
                out[..., top * s : bottom * s, left * s : right * s] = sr[
                    ..., oy : oy + (bottom - top) * s, ox : ox + (right - left) * s]
        return out

    def upscale(self, image: Img, *, out: str | os.PathLike | None = None) -> Img | Any:
        """Upscale one image (or a tensor batch) and return it as the type it came in.

        Accepts what the metrics accept: a path, file bytes, a ``PIL.Image``, a numpy array (HxW or HxWxC;
        uint8, uint16 or float in [0, 1]) or a tensor (``[C, H, W]``, ``[H, W]`` or ``[B, C, H, W]``; uint8 or
        float in [0, 1]). Returns: PIL -> PIL (RGB); array -> HxWx3 array of the same dtype; tensor -> tensor
        of the same rank, dtype and device; bytes -> PNG bytes; a path -> a PIL image, or the path ``out``
        when given (the format follows its suffix). Grey and RGBA inputs come back as RGB.
        """
        if isinstance(image, torch.Tensor) and image.ndim == 4 and image.shape[0] != 1:
            batch = torch.stack([load_image(img, min_side=1) for img in image])
            return _like_tensor(self.upscale_batch(batch), image)
        lr = load_image(image, min_side=1).unsqueeze(0)
        sr = self.upscale_batch(lr)[0]
        if isinstance(image, torch.Tensor):
            return _like_tensor(sr if image.ndim != 4 else sr.unsqueeze(0), image)
        pixels = (sr.permute(1, 2, 0).cpu().numpy() * 255.0).round().astype(np.uint8)
        if isinstance(image, np.ndarray):
            if image.dtype == np.uint16:
                return (sr.permute(1, 2, 0).cpu().numpy() * 65535.0).round().astype(np.uint16)
            if np.issubdtype(image.dtype, np.floating):
                return sr.permute(1, 2, 0).cpu().numpy().astype(image.dtype)
            return pixels
        result = Image.fromarray(pixels, "RGB")
        if isinstance(image, (bytes, bytearray, memoryview)):
            buffer = io.BytesIO()
            result.save(buffer, "PNG")
            return buffer.getvalue()
        if out is not None:
            result.save(out)
            return out
        return result


def _like_tensor(sr: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    sr = sr.to(like.device)
    if like.dtype == torch.uint8:
        return (sr * 255.0).round().to(torch.uint8)
    return sr.to(like.dtype)


def create_sr_model(name: str, pretrained_model_path: str | os.PathLike | None = None, *, pretrained: bool = True,
                    tile: int = DEFAULT_TILE, tile_overlap: int = DEFAULT_TILE_OVERLAP,
                    device: str | torch.device | None = None, precision: str = "auto", **arch_options: Any) -> SRModel:
    """An :class:`SRModel` for the card ``name`` (kind ``sr``), built by :func:`iqa_plugin.build.build_network`.

    ``pretrained_model_path`` (a path or URL) replaces the card's weights, e.g. a generator from the
    authors' Google Drive or one exported by ``iqa train sfd``; the ESRGAN/SFD and BasicSR layouts both
    load. ``pretrained=False`` keeps random weights. ``arch_options`` (``features``, ``blocks``, ...) update
    the card's when a file has another configuration.

    Raises:
        UnknownCardError: no card called ``name``. ValueError: the card is not an SR card, or the file is
        not a generator of the card's configuration. WeightsError: the weights cannot be had (the message
        says how to get them).
    """
    from iqa_plugin.build import build_network
    from iqa_plugin.hub.cards import get_card

    card = get_card(name)
    if card.kind != "sr":
        raise ValueError(f"{name!r} is a {card.kind} card, not an SR model; use pyiqa.create_metric({name!r}) for "
                         "metrics, or pick a card of kind 'sr'")
    built = build_network(card, pretrained=pretrained, pretrained_model_path=pretrained_model_path, **arch_options)
    return SRModel(built, tile=tile, tile_overlap=tile_overlap, device=device,
                   precision=precision, name=name)
