"""Super-resolution degradations: antialiased bicubic downscaling and a Real-ESRGAN-style second-order
pipeline (blur -> resize -> noise -> JPEG, twice, then resize to HR / scale) with configurable ranges.

Departures from Real-ESRGAN, kept simple on purpose: Gaussian kernels only (isotropic or anisotropic,
no generalised / plateau / sinc kernels), Poisson noise at a fixed 8-bit photon scale, and the final
resize is followed by nothing (no sinc filter). JPEG goes through Pillow (libjpeg) on the CPU.
"""

from __future__ import annotations

import io
import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator

from iqa_plugin.data.degradations._ops import rgb_to_gray

ResizeMode = Literal["area", "bilinear", "bicubic"]


def downscale_bicubic(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """Antialiased bicubic downscaling by an integer ``scale`` (2 or 4 for SR), output clamped to [0, 1].

    ``hr`` is [B, 3, H, W] or [3, H, W]; the output is [..., H // scale, W // scale].
    """
    from iqa_plugin.data.degradations import check_images

    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive int (2 or 4 for SR), got {scale!r}")
    batch = check_images(hr, name="hr", min_size=scale)
    h, w = batch.shape[-2:]
    out = F.interpolate(
        batch.float(), size=(h // scale, w // scale), mode="bicubic", antialias=True, align_corners=False
    )
    out = out.clamp(0, 1).to(hr.dtype)
    return out if hr.dim() == 4 else out[0]


def _range(default: tuple[float, float], description: str):
    return Field(default=default, description=description)


class RealSRStage(BaseModel):
    """One blur -> resize -> noise -> JPEG round. Every (low, high) range is sampled uniformly."""

    model_config = ConfigDict(extra="forbid")

    blur_prob: float = Field(1.0, ge=0, le=1, description="probability of blurring")
    blur_kernel_size: tuple[int, int] = Field((7, 21), description="odd kernel sizes drawn from [lo, hi]")
    blur_sigma: tuple[float, float] = _range((0.2, 3.0), "Gaussian sigma range, px (per axis)")
    anisotropic_prob: float = Field(0.5, ge=0, le=1, description="probability of an anisotropic kernel")
    resize_probs: tuple[float, float, float] = Field(
        (0.2, 0.7, 0.1), description="probabilities of up / down / keep for the intermediate resize"
    )
    resize_up: tuple[float, float] = _range((1.0, 1.5), "upscale factor range")
    resize_down: tuple[float, float] = _range((0.15, 1.0), "downscale factor range")
    resize_modes: tuple[ResizeMode, ...] = Field(("area", "bilinear", "bicubic"), description="modes, uniform")
    gaussian_noise_prob: float = Field(0.5, ge=0, le=1, description="Gaussian (else Poisson) noise probability")
    noise_sigma: tuple[float, float] = _range((1.0, 30.0), "Gaussian noise sigma range, in 8-bit levels")
    poisson_scale: tuple[float, float] = _range((0.05, 3.0), "Poisson noise scale range")
    gray_noise_prob: float = Field(0.4, ge=0, le=1, description="probability that the noise is grey")
    jpeg_quality: tuple[float, float] = _range((30.0, 95.0), "JPEG quality range")

    @model_validator(mode="after")
    def _ranges_ordered(self) -> RealSRStage:
        for name in ("blur_kernel_size", "blur_sigma", "resize_up", "resize_down", "noise_sigma",
                     "poisson_scale", "jpeg_quality"):
            lo, hi = getattr(self, name)
            if lo > hi or lo < 0:
                raise ValueError(f"{name} must be (low, high) with 0 <= low <= high, got {(lo, hi)}")
        if abs(sum(self.resize_probs) - 1) > 1e-6 or min(self.resize_probs) < 0:
            raise ValueError(f"resize_probs must be 3 non-negative numbers summing to 1, got {self.resize_probs}")
        if not (1 <= self.jpeg_quality[0] and self.jpeg_quality[1] <= 100):
            raise ValueError(f"jpeg_quality must lie in [1, 100], got {self.jpeg_quality}")
        if not self.resize_modes:
            raise ValueError("resize_modes must name at least one of area, bilinear, bicubic")
        return self


class RealSRConfig(BaseModel):
    """Second-order real-world degradation (Real-ESRGAN's defaults where it has them)."""

    model_config = ConfigDict(extra="forbid")

    stage1: RealSRStage = Field(default_factory=RealSRStage, description="first round")
    stage2: RealSRStage = Field(
        default_factory=lambda: RealSRStage(
            blur_prob=0.8,
            blur_sigma=(0.2, 1.5),
            resize_probs=(0.3, 0.4, 0.3),
            resize_up=(1.0, 1.2),
            resize_down=(0.3, 1.0),
            noise_sigma=(1.0, 25.0),
            poisson_scale=(0.05, 2.5),
        ),
        description="second round (milder blur and noise, as in Real-ESRGAN)",
    )
    scale: int = Field(4, ge=1, le=8, description="final LR size is HR size // scale")
    final_resize_mode: ResizeMode = Field("bicubic", description="mode of the final resize to HR / scale")


class _Draw:
    """Uniform draws from a CPU torch.Generator (parameters), kept apart from on-device noise draws."""

    def __init__(self, seed: int) -> None:
        self.gen = torch.Generator().manual_seed(seed)

    def uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=self.gen, dtype=torch.float64))

    def chance(self, p: float) -> bool:
        return float(torch.rand((), generator=self.gen, dtype=torch.float64)) < p

    def choice(self, n: int) -> int:
        return int(torch.randint(n, (), generator=self.gen))

    def seed(self) -> int:
        return int(torch.randint(2**62, (), generator=self.gen))


def _gaussian_kernel(stage: RealSRStage, draw: _Draw) -> torch.Tensor:
    lo, hi = stage.blur_kernel_size
    size = int(round(draw.uniform(lo, hi)))
    size += 1 - size % 2
    sx = draw.uniform(*stage.blur_sigma)
    sy = draw.uniform(*stage.blur_sigma) if draw.chance(stage.anisotropic_prob) else sx
    theta = draw.uniform(0, math.pi)
    r = torch.arange(size, dtype=torch.float64) - size // 2
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    u = xx * math.cos(theta) + yy * math.sin(theta)
    v = -xx * math.sin(theta) + yy * math.cos(theta)
    k = torch.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))
    return (k / k.sum()).float()


def _resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    if mode == "area":
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=True)


def _jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    array = (x[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    buffer = io.BytesIO()
    Image.fromarray(array, "RGB").save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as img:
        decoded = np.asarray(img.convert("RGB"))
    return torch.from_numpy(decoded.copy()).to(x.device).permute(2, 0, 1)[None].float() / 255


def _stage(x: torch.Tensor, stage: RealSRStage, draw: _Draw, base: tuple[int, int]) -> torch.Tensor:
    if draw.chance(stage.blur_prob):
        k = _gaussian_kernel(stage, draw).to(x.device)
        pad = k.shape[-1] // 2
        x = F.conv2d(F.pad(x, (pad,) * 4, mode="reflect" if min(x.shape[-2:]) > pad else "replicate")
                     .view(3, 1, x.shape[-2] + 2 * pad, x.shape[-1] + 2 * pad), k[None, None]).view_as(x)
    which = draw.choice(1000) / 1000
    up, down, _ = stage.resize_probs
    factor = draw.uniform(*stage.resize_up) if which < up else (
        draw.uniform(*stage.resize_down) if which < up + down else 1.0)
    mode = stage.resize_modes[draw.choice(len(stage.resize_modes))]
    size = (max(4, int(base[0] * factor)), max(4, int(base[1] * factor)))
    x = _resize(x, size, mode).clamp(0, 1)
    gen = torch.Generator(device=x.device).manual_seed(draw.seed())
    gray = draw.chance(stage.gray_noise_prob)
    if draw.chance(stage.gaussian_noise_prob):
        sigma = draw.uniform(*stage.noise_sigma) / 255
        shape = (1, 1, *x.shape[-2:]) if gray else x.shape
        x = x + torch.randn(shape, generator=gen, device=x.device) * sigma
    else:
        scale = draw.uniform(*stage.poisson_scale)
        source = rgb_to_gray(x) if gray else x
        noise = torch.poisson(source.clamp(0, 1) * 255, generator=gen) / 255 - source.clamp(0, 1)
        x = x + noise * scale
    quality = int(round(draw.uniform(*stage.jpeg_quality)))
    return _jpeg(x.clamp(0, 1), quality)


def degrade_realworld(hr: torch.Tensor, seed: int, config: RealSRConfig | None = None) -> torch.Tensor:
    """Second-order real-world degradation of HR images into LR images of size HR // config.scale.

    Args:
        hr: float [B, 3, H, W] or [3, H, W] in [0, 1], any device (JPEG runs on the CPU via Pillow).
        seed: every random choice (kernel, resize factor and mode, noise, JPEG quality) derives from it;
            each image gets its own draws. Same inputs and seed give the same bytes on CPU.
        config: ranges; :class:`RealSRConfig` defaults when None.

    Returns:
        [B, 3, H // scale, W // scale] (or [3, ...]) in [0, 1], same dtype and device as ``hr``.
    """
    from iqa_plugin.data.degradations import check_images

    config = config or RealSRConfig()
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    batch = check_images(hr, name="hr", min_size=4 * config.scale)
    h, w = batch.shape[-2:]
    draw = _Draw(seed)
    outputs = []
    with torch.no_grad():
        for image in batch.float():
            x = _stage(image[None], config.stage1, draw, (h, w))
            x = _stage(x, config.stage2, draw, (h // config.scale, w // config.scale))
            x = _resize(x, (h // config.scale, w // config.scale), config.final_resize_mode)
            outputs.append(x.clamp(0, 1))
    out = torch.cat(outputs).to(hr.dtype)
    return out if hr.dim() == 4 else out[0]
