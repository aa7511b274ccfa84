"""Arrays and tensors as image inputs: conversion to ``[3, H, W]`` floats, batch validation, resizing.

Everything here is torch-level and autograd-safe; decoding files is :mod:`iqa_plugin.data.images`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from iqa_plugin.data.image_checks import MIN_SIDE, fail
from iqa_plugin.data.reasons import BAD_SHAPE, BAD_VALUES, TOO_SMALL, UNSUPPORTED_TYPE

_TOLERANCE = 1e-6


def _fix_channels(channels: int, source: str, layout: str, hint: str = "") -> None:
    if channels not in (1, 3, 4):
        raise fail(BAD_SHAPE, source, f"{channels} channels ({layout})", "1 (gray), 3 (RGB) or 4 (RGBA)",
                    "pass an RGB image" + hint)


def array_to_tensor(arr: np.ndarray, *, source: str = "<array>") -> torch.Tensor:
    """HxW or HxWxC (C in 1, 3, 4) array -> [3, H, W] float32 in [0, 1].

    uint8 is divided by 255, uint16 by 65535, floats must already lie in [0, 1]. Gray is replicated,
    alpha dropped.
    """
    if not isinstance(arr, np.ndarray):
        raise fail(UNSUPPORTED_TYPE, source, f"got {type(arr).__name__}", "a numpy.ndarray",
                    "convert with numpy.asarray(...) or call load_image, which accepts more types")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise fail(BAD_SHAPE, source, f"array of shape {arr.shape}", "HxW or HxWxC",
                    "pass a single image, not a batch or a vector")
    _fix_channels(arr.shape[2], source, f"shape {arr.shape}",
                  "; CHW arrays need arr.transpose(1, 2, 0)" if arr.shape[0] in (1, 3, 4) else "")
    if arr.dtype == np.uint8:
        scale = 255.0
    elif arr.dtype == np.uint16:
        scale = 65535.0
    elif np.issubdtype(arr.dtype, np.floating):
        scale = None
    else:
        raise fail(UNSUPPORTED_TYPE, source, f"array dtype {arr.dtype}", "uint8, uint16 or float in [0, 1]",
                    "convert with arr.astype(numpy.uint8) (0..255) or arr / arr.max() (floats)")
    t = torch.from_numpy(arr.astype(np.float32)).permute(2, 0, 1)  # astype: a fresh, writable copy
    if scale is None:
        _check_values(t, source)
    else:
        t.div_(scale)
    return _to_three_channels(t.unsqueeze(0))[0].contiguous()


def _to_three_channels(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x.repeat(1, 3, 1, 1)
    return x[:, :3] if x.shape[1] == 4 else x


def _check_values(x: torch.Tensor, name: str, *, unit_range: bool = True) -> None:
    """Finite values, and (``unit_range``) within [0, 1]. One reduction and one device sync: aminmax
    propagates NaN, and inf shows up as the min or max."""
    if x.numel() == 0:
        return
    lo, hi = torch.stack(torch.aminmax(x.detach())).tolist()
    if not (math.isfinite(lo) and math.isfinite(hi)):
        d = x.detach()
        raise fail(BAD_VALUES, name, f"{int(torch.isnan(d).sum())} NaN and {int(torch.isinf(d).sum())} "
                    f"infinite values of {d.numel()}", "finite values in [0, 1]",
                    "find where the NaN/inf come from (a division by zero, a bad normalisation) or use "
                    "torch.nan_to_num(x).clamp(0, 1)")
    if unit_range and (lo < -_TOLERANCE or hi > 1.0 + _TOLERANCE):
        fix = "for 0..255 data divide by 255 (x / 255); for a small overshoot clamp with x.clamp(0, 1)"
        if lo < -_TOLERANCE:
            fix = "undo any mean/std normalisation (metrics normalise internally); " + fix
        raise fail(BAD_VALUES, name, f"values in [{lo:.6g}, {hi:.6g}]", "floats in [0, 1]", fix)


def validate_batch(x: torch.Tensor, *, name: str = "input", min_side: int = MIN_SIDE,
                   unit_range: bool = True) -> torch.Tensor:
    """Check a float image batch for a network and return it as [B, 3, H, W] (autograd-safe, no copy
    unless gray is replicated): [C, H, W] gains a batch dim, 1 channel becomes 3, RGBA drops alpha.

    NaN and inf are always ``bad_values``; values outside [0, 1] too unless ``unit_range=False``, which
    the networks use: pyiqa's metrics accept such input on the loss path (a generator that overshoots,
    ``torch.randn`` in pyiqa's own tests).

    Raises :class:`ImageInputError` (``bad_shape``, ``bad_values``, ``too_small``, ``unsupported_type``).
    """
    if not isinstance(x, torch.Tensor):
        raise fail(UNSUPPORTED_TYPE, name, f"got {type(x).__name__}", "a torch.Tensor [B, 3, H, W]",
                    "convert with iqa_plugin.data.images.load_image(...) or torch.as_tensor(...)")
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4:
        raise fail(BAD_SHAPE, name, f"tensor of shape {tuple(x.shape)} (rank {x.ndim})",
                    "[B, C, H, W] or [C, H, W]", "stack images into one batch with torch.stack")
    _fix_channels(x.shape[1], name, f"shape {tuple(x.shape)}",
                  "; channels-last tensors need x.permute(0, 3, 1, 2)" if x.shape[-1] in (1, 3, 4) else "")
    if x.shape[0] == 0:
        raise fail(BAD_SHAPE, name, "an empty batch (B=0)", "at least one image", "skip empty batches")
    if not x.is_floating_point():
        raise fail(BAD_VALUES, name, f"dtype {x.dtype}", "a floating tensor with values in [0, 1]",
                    "use x.float() / 255 for 8-bit images")
    height, width = x.shape[-2:]
    if min(height, width) < min_side:
        raise fail(TOO_SMALL, name, f"{width}x{height} pixels (W x H)", f"both sides >= {min_side} px",
                    "upsample (torch.nn.functional.interpolate) or skip the image")
    _check_values(x, name, unit_range=unit_range)
    return _to_three_channels(x)


def tensor_to_chw3(t: torch.Tensor, source: str) -> torch.Tensor:
    """One image tensor ([C, H, W], [H, W] or [1, C, H, W]; uint8 or float in [0, 1]) -> [3, H, W] float."""
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    if t.ndim == 2:
        t = t.unsqueeze(0)
    if t.ndim != 3:
        raise fail(BAD_SHAPE, source, f"tensor of shape {tuple(t.shape)}", "[C, H, W], [H, W] or [1, C, H, W]",
                    "pass one image; for batches use validate_batch")
    _fix_channels(t.shape[0], source, f"shape {tuple(t.shape)}",
                  "; HWC tensors need t.permute(2, 0, 1)" if t.shape[-1] in (1, 3, 4) else "")
    if t.dtype == torch.uint8:
        t = t.float() / 255.0
    elif t.is_floating_point():
        _check_values(t, source)
        t = t.float()
    else:
        raise fail(UNSUPPORTED_TYPE, source, f"tensor dtype {t.dtype}", "uint8 or float in [0, 1]",
                    "use t.to(torch.uint8) for 0..255 data or t.float() / t.max() for other ranges")
    return _to_three_channels(t.unsqueeze(0))[0]


def resize_short_side(t: torch.Tensor, short: int) -> torch.Tensor:
    """Antialiased bilinear resize of [3, H, W] or [B, 3, H, W] float so the shorter side is ``short``."""
    if not isinstance(short, int) or short < 1:
        raise ValueError(f"short={short!r}: expected a positive int side length. Fix: pass e.g. short=224")
    if t.ndim not in (3, 4):
        raise fail(BAD_SHAPE, "resize_short_side input", f"tensor of shape {tuple(t.shape)}",
                    "[3, H, W] or [B, 3, H, W]", "pass one image or a batch")
    size = short_side_size(t.shape[-2], t.shape[-1], short)
    if size == tuple(t.shape[-2:]):
        return t
    batch = t if t.ndim == 4 else t.unsqueeze(0)
    out = torch.nn.functional.interpolate(batch, size=size, mode="bilinear", align_corners=False, antialias=True)
    return out if t.ndim == 4 else out[0]


def short_side_size(height: int, width: int, short: int) -> tuple[int, int]:
    """``(height, width)`` with the shorter side ``short`` and the aspect ratio kept."""
    if height <= width:
        return short, max(1, round(width * short / height))
    return max(1, round(height * short / width)), short
