"""Synthetic degradations: the 24 KADID-10k / KADIS-700k distortion kinds x 5 levels, and SR degradations.

Everything runs in torch on batches [B, 3, H, W] on the images' device, except ``jpeg`` and ``jpeg2000``,
which round-trip each image through Pillow's codecs on the CPU (libjpeg and OpenJPEG; see
:mod:`.compression`). Randomness comes only from a ``torch.Generator`` seeded with ``seed`` and created on
the images' device, so the same inputs and seed give the same bytes (on CPU; on GPU the same bytes for
the same device and torch build).

>>> import torch
>>> from iqa_plugin.data.degradations import KINDS, LEVELS, degrade
>>> x = torch.rand(2, 3, 64, 64)
>>> y = degrade(x, "gaussian_blur", level=3, seed=0)
>>> y.shape == x.shape and len(KINDS) == 24 and LEVELS == 5
True

Levels are ordered by severity (level 1 mildest); see :mod:`.registry` for the parameters and the few
places they depart from KADID's table (mean shift and linear contrast reordered by absolute change).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

import torch

from iqa_plugin.data.degradations import blur, brightness, color, compression, noise, sharpness, spatial
from iqa_plugin.data.degradations.registry import GROUPS, KINDS, LEVEL_PARAMS, LEVELS, RANDOM_KINDS
from iqa_plugin.data.degradations.sr import RealSRConfig, RealSRStage, degrade_realworld, downscale_bicubic

__all__ = [
    "GROUPS",
    "KINDS",
    "LEVELS",
    "LEVEL_PARAMS",
    "RANDOM_KINDS",
    "RealSRConfig",
    "RealSRStage",
    "degrade",
    "degrade_realworld",
    "downscale_bicubic",
    "check_images",
]

DistortionFn = Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]

_FUNCTIONS: dict[str, DistortionFn] = {
    "gaussian_blur": blur.gaussian_blur,
    "lens_blur": blur.lens_blur,
    "motion_blur": blur.motion_blur,
    "color_diffusion": color.color_diffusion,
    "color_shift": color.color_shift,
    "color_saturation1": color.color_saturation1,
    "color_saturation2": color.color_saturation2,
    "jpeg2000": compression.jpeg2000,
    "jpeg": compression.jpeg,
    "white_noise": noise.white_noise,
    "white_noise_cc": noise.white_noise_cc,
    "impulse_noise": noise.impulse_noise,
    "multiplicative_noise": noise.multiplicative_noise,
    "brighten": brightness.brighten,
    "darken": brightness.darken,
    "mean_shift": brightness.mean_shift,
    "jitter": spatial.jitter,
    "non_eccentricity_patch": spatial.non_eccentricity_patch,
    "pixelate": spatial.pixelate,
    "quantization": spatial.quantization,
    "color_block": spatial.color_block,
    "high_sharpen": sharpness.high_sharpen,
    "linear_contrast": sharpness.linear_contrast,
    "nonlinear_contrast": sharpness.nonlinear_contrast,
}
assert tuple(_FUNCTIONS) == KINDS  # internal invariant, not user input


# CPU chunk size (elements); ~4 images of 224x224. The chunking is a function of the shape only, so the
# same inputs and seed still give the same bytes.
_CPU_CHUNK_ELEMENTS = 4 * 3 * 224 * 224
# Kinds whose work is a per-image codec call or one or two cheap elementwise passes: chunking would only
# add overhead there (measured with bench/bench_degradations.py).
_WHOLE_BATCH_KINDS = frozenset({"jpeg", "jpeg2000", "non_eccentricity_patch", "color_block", "mean_shift", "quantization", "nonlinear_contrast"})


def check_images(images: object, name: str = "images", min_size: int = 1) -> torch.Tensor:
    """Validate a float image tensor [B, 3, H, W] or [3, H, W] in [0, 1]; return it as [B, 3, H, W]."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(
            f"{name} must be a torch.Tensor [B, 3, H, W] or [3, H, W] of floats in [0, 1], "
            f"got {type(images).__name__}; convert with torchvision.transforms.functional.to_tensor"
        )
    if not images.is_floating_point():
        raise ValueError(
            f"{name} must be a floating-point tensor in [0, 1], got dtype {images.dtype}; "
            f"for uint8 images use images.float() / 255"
        )
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(
            f"{name} must have shape [B, 3, H, W] or [3, H, W] (RGB, channels first), got "
            f"{tuple(images.shape)}; for HWC arrays use .permute(2, 0, 1), for grey images repeat the channel"
        )
    if images.shape[-1] < min_size or images.shape[-2] < min_size or images.shape[0] == 0:
        raise ValueError(f"{name} must be non-empty and at least {min_size}x{min_size}, got {tuple(images.shape)}")
    if images.numel():
        lo, hi = torch.aminmax(images.detach())
        if bool(lo < -1e-6) or bool(hi > 1 + 1e-6) or bool(torch.isnan(lo)) or bool(torch.isnan(hi)):
            raise ValueError(
                f"{name} must hold values in [0, 1], got min {float(lo):.4g} and max {float(hi):.4g}; "
                f"divide 8-bit data by 255 and clamp"
            )
    return images


def _check_kind_level(kind: object, level: object) -> None:
    if not isinstance(kind, str) or kind not in _FUNCTIONS:
        close = difflib.get_close_matches(str(kind), KINDS, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"kind {kind!r} is not a known distortion{hint} Known kinds: {', '.join(KINDS)}")
    if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= LEVELS:
        raise ValueError(f"level must be an int in 1..{LEVELS} (1 mildest), got {level!r}")


def degrade(images: torch.Tensor, kind: str, level: int, seed: int) -> torch.Tensor:
    """Apply distortion ``kind`` at ``level`` (1..5, 1 mildest) to a batch of RGB images.

    Args:
        images: float tensor [B, 3, H, W] or [3, H, W] in [0, 1], on any device.
        kind: one of :data:`KINDS`.
        level: severity 1..:data:`LEVELS`; parameters in :data:`LEVEL_PARAMS`.
        seed: seeds the ``torch.Generator`` (on the images' device) behind every random draw; each image of
            the batch gets its own draws (random angle, noise, patch positions...).

    Returns:
        The degraded images, same shape, dtype and device, clamped to [0, 1].

    Raises:
        ValueError: unknown kind (close names suggested), level outside 1..5, a non-int seed, or images
            that are not float [B, 3, H, W] / [3, H, W] in [0, 1].
    """
    _check_kind_level(kind, level)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    batch = check_images(images, min_size=32 if kind in ("non_eccentricity_patch",) else 1)
    work_dtype = torch.float64 if batch.dtype == torch.float64 else torch.float32
    x = batch.detach()
    gen = torch.Generator(device=x.device)
    gen.manual_seed(seed)
    function, param = _FUNCTIONS[kind], LEVEL_PARAMS[kind][level - 1]
    with torch.no_grad():
        if x.device.type != "cpu" or kind in _WHOLE_BATCH_KINDS:
            y = function(x.to(work_dtype).contiguous(), param, gen).clamp_(0, 1).to(images.dtype)
        else:
            # On CPU, work in chunks of a few images: temporaries stay small and are reused by the
            # allocator instead of being page-faulted in afresh for every op (which dominated run time).
            y = torch.empty(x.shape, dtype=images.dtype)
            step = max(1, _CPU_CHUNK_ELEMENTS // x[0].numel())
            for start in range(0, x.shape[0], step):
                chunk = x[start : start + step].to(work_dtype).contiguous()
                result = function(chunk, param, gen)
                if result.dtype == y.dtype:
                    torch.clamp(result, 0, 1, out=y[start : start + step])
                else:
                    y[start : start + step] = result.clamp_(0, 1)
    return y if images.dim() == 4 else y[0]
