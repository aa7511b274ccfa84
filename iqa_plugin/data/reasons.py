"""The one table of per-input reason codes: why an input has no score.

Every producer (image decoding, fetching, scoring) and every consumer (the jobs' Parquet ``error``
column, the HTML report, the summaries, the rerun logic) reads this table; nothing restates it.

``transient`` says whether the cause can change without the input changing (a network fault, a
permission fixed later, a file that appears again): a rerun of a job retries those rows; the others are
final for the same bytes. This module imports nothing heavy (the Ray driver reads it without torch).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reason:
    """One reason code: its text for people and whether a rerun should try the input again."""

    code: str
    description: str
    transient: bool = False


_TABLE: tuple[Reason, ...] = (
    Reason("missing", "the object or path does not exist (deleted, or a manifest entry pointing nowhere)", True),
    Reason("access_denied", "the object exists but these credentials may not read it", True),
    Reason("fetch_error", "reading the object failed after the storage client's own retries", True),
    Reason("empty", "the input has zero bytes"),
    Reason("not_an_image", "the bytes are not an image format the decoders recognise"),
    Reason("truncated", "the image data ends before its pixels do (cut download or partial write)"),
    Reason("too_many_pixels", "width x height above max_pixels (decompression-bomb guard, read from the header)"),
    Reason("too_small", "a side is shorter than the model's minimum (min_side, 32 px by default)"),
    Reason("bad_values", "pixel values are NaN/inf, or not floats where floats are expected"),
    Reason("bad_shape", "wrong tensor/array rank or channel count"),
    Reason("unsupported_type", "the input's Python type, dtype or pixel mode is not supported"),
    Reason("decode_error", "the decoder failed for another reason (corrupt data)"),
    Reason("score_error", "the model failed on this image or returned a non-finite score", True),
    Reason("no_image", "the sample has no image: a WebDataset key without an image member, or an empty (null) "
           "image cell of a dataset row"),
    Reason("truncated_archive", "the WebDataset tar ends inside this sample (a cut upload or copy); nothing after "
           "it exists"),
    Reason("corrupt_archive", "the WebDataset tar is damaged here (not a tar, a bad header): this sample and the rest "
           "of the tar cannot be read"),
)

#: code -> :class:`Reason`, in the order above.
REASONS: dict[str, Reason] = {reason.code: reason for reason in _TABLE}

MISSING = "missing"
ACCESS_DENIED = "access_denied"
FETCH_ERROR = "fetch_error"
EMPTY = "empty"
NOT_AN_IMAGE = "not_an_image"
TRUNCATED = "truncated"
TOO_MANY_PIXELS = "too_many_pixels"
TOO_SMALL = "too_small"
BAD_VALUES = "bad_values"
BAD_SHAPE = "bad_shape"
UNSUPPORTED_TYPE = "unsupported_type"
DECODE_ERROR = "decode_error"
SCORE_ERROR = "score_error"
NO_IMAGE = "no_image"
TRUNCATED_ARCHIVE = "truncated_archive"
CORRUPT_ARCHIVE = "corrupt_archive"

#: codes a rerun retries (their cause can change while the input stays the same).
TRANSIENT: frozenset[str] = frozenset(code for code, reason in REASONS.items() if reason.transient)


def describe(code: str) -> str:
    """The description of ``code`` (the code itself for one this table does not know)."""
    reason = REASONS.get(code)
    return reason.description if reason else code
