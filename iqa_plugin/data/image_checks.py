"""The image input contract shared by decoding and tensor checks: limits, the error type, the size check.

Reason codes are those of the one table, :mod:`iqa_plugin.data.reasons`; :data:`IMAGE_REASONS` are the
ones an image input can fail with.
"""

from __future__ import annotations

from iqa_plugin.data import reasons
from iqa_plugin.data.reasons import TOO_MANY_PIXELS, TOO_SMALL, UNSUPPORTED_TYPE

#: The reason codes an :class:`ImageInputError` carries (a subset of :data:`reasons.REASONS`).
IMAGE_REASONS: frozenset[str] = frozenset(
    getattr(reasons, name)
    for name in ("EMPTY", "NOT_AN_IMAGE", "TRUNCATED", "TOO_MANY_PIXELS", "TOO_SMALL", "MISSING", "BAD_VALUES",
                 "BAD_SHAPE", "UNSUPPORTED_TYPE", "DECODE_ERROR")
)

MIN_SIDE = 32
DEFAULT_MAX_PIXELS = 89_478_485  # PIL's own default, restated so nobody depends on its global


class ImageInputError(ValueError):
    """An image input that cannot be used. ``reason`` is one of :data:`IMAGE_REASONS` (stable codes of
    :mod:`iqa_plugin.data.reasons`, for tables)."""

    def __init__(self, reason: str, message: str, source: str | None = None) -> None:
        if reason not in IMAGE_REASONS:
            raise ValueError(f"unknown ImageInputError reason {reason!r}; expected one of {sorted(IMAGE_REASONS)}")
        super().__init__(f"[{reason}] {message}")
        self.reason = reason
        self.message = message
        self.source = source

    def __reduce__(self):  # keeps reason/source when pickled across processes (Ray workers)
        return (type(self), (self.reason, self.message, self.source))


class UnsupportedImageTypeError(ImageInputError, TypeError):
    """Raised for input types that are not images at all; also catchable as ``TypeError``."""


def fail(reason: str, source: str, got: str, expected: str, fix: str) -> ImageInputError:
    """The error for ``source``: what came, what was expected, and the fix, in one line."""
    cls = UnsupportedImageTypeError if reason == UNSUPPORTED_TYPE else ImageInputError
    return cls(reason, f"{source}: {got}; expected {expected}. Fix: {fix}", source)


def check_size(width: int, height: int, source: str, max_pixels: int | None, min_side: int) -> None:
    """``too_many_pixels`` above ``max_pixels`` (None: no limit), ``too_small`` below ``min_side``."""
    if max_pixels is not None and width * height > max_pixels:
        raise fail(TOO_MANY_PIXELS, source, f"{width}x{height} = {width * height:,} pixels",
                    f"at most max_pixels={max_pixels:,} (decompression-bomb guard)",
                    "pass a larger max_pixels (or None) if the image is trusted, or downscale it first")
    if min(width, height) < min_side:
        raise fail(TOO_SMALL, source, f"{width}x{height} pixels", f"both sides >= {min_side} px",
                    "upsample the image, skip it, or pass min_side=0 to accept it as is")
