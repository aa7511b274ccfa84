"""Validation of a super-resolution generator on held-out photos: PSNR and SSIM next to bicubic upscaling.

The protocol is BasicSR's for classical SR (Set5/Set14 tables): the HR image is a crop of the held-out
photo (side rounded down to a multiple of the scale), the LR input its antialiased bicubic downscaling
(:func:`iqa_plugin.data.degradations.sr.downscale_bicubic`, the same as the SR shards' bicubic rows), the
output is clamped and quantised to 8 bits, and both figures are computed on the **Y channel of YCbCr**
(ITU-R BT.601, BasicSR's ``test_y_channel``) with ``scale`` pixels cropped off every border, by pyiqa's
weight-free ``psnr`` and ``ssim`` metrics. Bicubic upscaling (PyTorch's, ``align_corners=False``) of the
same LR is measured the same way, so every figure comes with its baseline.

>>> import torch
>>> from iqa_plugin.training.sr_validate import SRValidation
>>> check = SRValidation([torch.rand(3, 40, 48)], crop=32, scale=4)
>>> bicubic = lambda lr: torch.nn.functional.interpolate(lr, scale_factor=4, mode="bicubic")
>>> figures = check(bicubic)
>>> round(figures["val_psnr"] - figures["val_psnr_bicubic"], 6)
0.0
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = ["SRValidation", "central_crop"]


def central_crop(image: torch.Tensor, side: int, multiple: int = 1) -> torch.Tensor:
    """The central ``side`` x ``side`` crop of ``[..., H, W]`` (smaller when the image is; both sides
    rounded down to a multiple of ``multiple``)."""
    h, w = image.shape[-2:]
    ch, cw = min(side, h) // multiple * multiple, min(side, w) // multiple * multiple
    if ch == 0 or cw == 0:
        raise ValueError(f"image of {w}x{h} px is smaller than the scale {multiple}: use larger validation photos")
    top, left = (h - ch) // 2, (w - cw) // 2
    return image[..., top : top + ch, left : left + cw]


def _quantise(x: torch.Tensor) -> torch.Tensor:
    return (x.float().clamp(0, 1) * 255.0).round() / 255.0


class SRValidation:
    """PSNR / SSIM (Y channel, border ``scale``) of a generator on fixed held-out crops, and of bicubic.

    Args:
        images: held-out RGB ``[3, H, W]`` in [0, 1].
        crop: HR crop side (the central crop of each image).
        scale: upscaling factor (2 or 4).
    """

    def __init__(self, images: Sequence[torch.Tensor], crop: int, scale: int) -> None:
        import pyiqa

        from iqa_plugin.data.degradations.sr import downscale_bicubic

        if not images:
            raise ValueError("SRValidation needs at least one held-out image")
        self.scale = scale
        self.hr = [central_crop(image.float(), crop, scale).unsqueeze(0) for image in images]
        self.lr = [downscale_bicubic(hr, scale) for hr in self.hr]
        self.psnr = pyiqa.create_metric("psnr", test_y_channel=True, color_space="ycbcr", crop_border=scale, device="cpu")
        self.ssim = pyiqa.create_metric("ssim", test_y_channel=True, color_space="ycbcr", crop_border=scale, device="cpu")
        self.bicubic = self._figures(
            [F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False) for lr in self.lr]
        )

    def _figures(self, outputs: Sequence[torch.Tensor]) -> tuple[float, float]:
        psnr = [float(self.psnr(_quantise(sr), hr)) for sr, hr in zip(outputs, self.hr, strict=True)]
        ssim = [float(self.ssim(_quantise(sr), hr)) for sr, hr in zip(outputs, self.hr, strict=True)]
        return sum(psnr) / len(psnr), sum(ssim) / len(ssim)

    @torch.no_grad()
    def __call__(self, upscale: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, float]:
        """Figures of ``upscale`` (``[1, 3, h, w]`` -> ``[1, 3, s*h, s*w]``, run on each LR crop):
        ``val_psnr``, ``val_ssim``, their bicubic baselines and ``val_psnr_margin`` (ours - bicubic, dB)."""
        psnr, ssim = self._figures([upscale(lr).cpu() for lr in self.lr])
        return {"val_psnr": psnr, "val_ssim": ssim, "val_psnr_bicubic": self.bicubic[0],
                "val_ssim_bicubic": self.bicubic[1], "val_psnr_margin": psnr - self.bicubic[0]}
