"""Load, decode and validate image inputs; every failure is an :class:`ImageInputError` with a stable reason.

One decoder serves the metrics (``load_image``) and the Ray scoring job (``decode_image_array`` on fetched
bytes, recording ``error.reason`` per row). Decoding never touches PIL's process-wide switches
(``Image.MAX_IMAGE_PIXELS``, ``ImageFile.LOAD_TRUNCATED_IMAGES``): the pixel limit is checked from the header
before any pixel is decoded, and JPEG/PNG truncation is detected from the file structure, so a library that
flips ``LOAD_TRUNCATED_IMAGES`` (pyiqa's AVA dataset does) cannot make truncated files decode as grey.

>>> import io, numpy
>>> from PIL import Image
>>> buf = io.BytesIO(); Image.new("L", (40, 32), 200).save(buf, "PNG")
>>> decode_image_array(buf.getvalue()).shape
(32, 40, 3)
>>> try:
...     decode_image_array(b"", source="s3://bucket/empty.jpg")
... except ImageInputError as error:
...     print(error.reason, "|", error)
empty | [empty] s3://bucket/empty.jpg: got zero bytes; expected the bytes of an image file. Fix: check the download or the file on disk; it is empty
"""

from __future__ import annotations

import io
import math
import os
import re
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

EMPTY = "empty"
NOT_AN_IMAGE = "not_an_image"
TRUNCATED = "truncated"
TOO_MANY_PIXELS = "too_many_pixels"
TOO_SMALL = "too_small"
MISSING = "missing"
BAD_VALUES = "bad_values"
BAD_SHAPE = "bad_shape"
UNSUPPORTED_TYPE = "unsupported_type"
DECODE_ERROR = "decode_error"

REASONS: dict[str, str] = {
    EMPTY: "the input has zero bytes",
    NOT_AN_IMAGE: "the bytes are not an image format PIL can identify",
    TRUNCATED: "the image file ends before its pixel data does (cut download or partial write)",
    TOO_MANY_PIXELS: "width x height above max_pixels (decompression-bomb guard, read from the header)",
    TOO_SMALL: "a side is shorter than min_side (default 32 px)",
    MISSING: "the path does not exist or is not a readable file",
    BAD_VALUES: "pixel values are NaN/inf, outside [0, 1], or integers where floats in [0, 1] are expected",
    BAD_SHAPE: "wrong tensor/array rank or channel count",
    UNSUPPORTED_TYPE: "the input's Python type or dtype is not supported",
    DECODE_ERROR: "the decoder failed for another reason (corrupt data, unsupported pixel mode)",
}

MIN_SIDE = 32
DEFAULT_MAX_PIXELS = 89_478_485  # PIL's own default, restated so nobody depends on its global
_TOLERANCE = 1e-6


class ImageInputError(ValueError):
    """An image input that cannot be used. ``reason`` is one of :data:`REASONS` (stable, for tables)."""

    def __init__(self, reason: str, message: str, source: str | None = None) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown ImageInputError reason {reason!r}; expected one of {sorted(REASONS)}")
        super().__init__(f"[{reason}] {message}")
        self.reason = reason
        self.message = message
        self.source = source

    def __reduce__(self):  # keeps reason/source when pickled across processes (Ray workers)
        return (type(self), (self.reason, self.message, self.source))


class UnsupportedImageTypeError(ImageInputError, TypeError):
    """Raised for input types that are not images at all; also catchable as ``TypeError``."""


def _fail(reason: str, source: str, got: str, expected: str, fix: str) -> ImageInputError:
    cls = UnsupportedImageTypeError if reason == UNSUPPORTED_TYPE else ImageInputError
    return cls(reason, f"{source}: {got}; expected {expected}. Fix: {fix}", source)


def _check_size(width: int, height: int, source: str, max_pixels: int | None, min_side: int) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise _fail(TOO_MANY_PIXELS, source, f"{width}x{height} = {width * height:,} pixels",
                    f"at most max_pixels={max_pixels:,} (decompression-bomb guard)",
                    "pass a larger max_pixels (or None) if the image is trusted, or downscale it first")
    if min(width, height) < min_side:
        raise _fail(TOO_SMALL, source, f"{width}x{height} pixels", f"both sides >= {min_side} px",
                    "upsample the image, skip it, or pass min_side=0 to accept it as is")


# --------------------------------------------------------------------------- file structure

# In JPEG entropy-coded data 0xFF is followed only by 0x00 (stuffing), RST0-7 or fill 0xFF; anything else
# is the next marker.
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def structure_is_complete(data: bytes, fmt: str | None) -> bool:
    """False when a JPEG ends before its EOI marker or a PNG before its last image data, whatever
    ``ImageFile.LOAD_TRUNCATED_IMAGES`` says. Other formats (and odd layouts) return True: PIL decides."""
    if fmt in ("JPEG", "MPO"):
        return _jpeg_is_complete(data)
    if fmt == "PNG":
        return _png_is_complete(data)
    return True


def _jpeg_is_complete(data: bytes) -> bool:
    pos, end = 2, len(data)
    while pos + 1 < end:
        if data[pos] != 0xFF:  # junk between segments: resynchronise on the next marker
            found = _JPEG_MARKER.search(data, pos)
            if found is None:
                return False
            pos = found.start()
            continue
        marker = data[pos + 1]
        if marker == 0xD9:  # EOI
            return True
        if marker == 0xFF:
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # segments without a length
            pos += 2
            continue
        if pos + 4 > end:
            return False
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker == 0xDA:  # SOS: skip the entropy-coded scan
            found = _JPEG_MARKER.search(data, pos)
            if found is None:
                return False
            pos = found.start()
    return False


def _png_is_complete(data: bytes) -> bool:
    pos, end, idat = 8, len(data), []
    while pos + 8 <= end:
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        if kind == b"IEND":
            return True
        if pos + 12 + length > end:
            return False  # a chunk runs past the end of the file
        if kind == b"IDAT":
            idat.append(data[pos + 8:pos + 8 + length])
        pos += 12 + length
    # No IEND: complete only if the compressed image stream itself ended (a cut between IDAT chunks).
    stream = zlib.decompressobj()
    try:
        for part in idat:
            while part and not stream.eof:
                stream.decompress(part, 1 << 20)  # capped: we only need to know whether the stream ends
                part = stream.unconsumed_tail
    except zlib.error:
        return True  # corrupt, not short: let the decoder report it
    return stream.eof


def png_wide_rawmode(im: Image.Image) -> str | None:
    """The raw mode of a 16-bit colour PNG that PIL would cut to 8 bits, else None."""
    if im.format != "PNG" or len(im.tile) != 1:
        return None
    raw = im.tile[0].args
    raw = raw if isinstance(raw, str) else (raw[0] if raw else None)
    return raw if raw in ("RGB;16B", "RGBA;16B", "LA;16B") else None


# --------------------------------------------------------------------------- bytes -> array


def decode_image_array(data: bytes, *, max_pixels: int | None = DEFAULT_MAX_PIXELS, source: str = "<bytes>",
                       min_side: int = MIN_SIDE) -> np.ndarray:
    """Decode image file bytes to an HxWx3 RGB array: ``uint16`` for 16-bit sources, ``uint8`` otherwise.

    - EXIF orientation is applied (``ImageOps.exif_transpose``); unreadable EXIF is ignored.
    - CMYK JPEG becomes RGB through PIL's conversion; Adobe's inverted CMYK is un-inverted by PIL itself.
    - 16-bit grayscale, RGB, RGBA and gray+alpha PNG keep all 16 bits (PIL alone would cut RGB to 8).
    - Grayscale (``1``, ``L``) and palette (``P``) are replicated/expanded to RGB.
    - Alpha (``RGBA``, ``LA``, ``PA``) is DROPPED without compositing, exactly like pyiqa's
      ``.convert('RGB')``, so scores match pyiqa on the same file.
    - Animated GIF/WebP/APNG: the first frame.

    ``max_pixels`` is checked from the header before decoding (``None`` disables it; images above twice
    PIL's global ``Image.MAX_IMAGE_PIXELS`` are still refused by PIL and reported as ``too_many_pixels``).
    A JPEG or PNG that ends early is ``truncated`` even when ``ImageFile.LOAD_TRUNCATED_IMAGES`` is on;
    for other formats that switch, when someone turned it on, still lets PIL fill the missing part.
    Raises :class:`ImageInputError` with a reason from :data:`REASONS`.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise _fail(UNSUPPORTED_TYPE, source, f"got {type(data).__name__}", "the bytes of an image file",
                    "read the file first (Path(p).read_bytes()) or call load_image(path)")
    data = bytes(data) if not isinstance(data, bytes) else data
    if not data:
        raise _fail(EMPTY, source, "got zero bytes", "the bytes of an image file",
                    "check the download or the file on disk; it is empty")
    try:
        with warnings.catch_warnings():
            # Our header check below replaces PIL's warning (its hard error is mapped further down). The
            # filter is process-wide for this instant before Python 3.14; only this warning is touched.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise _bomb(source, exc) from exc
    except UnidentifiedImageError as exc:
        raise _unidentified(data, source) from exc
    except Exception as exc:  # a recognised header that PIL still cannot parse
        raise _fail(DECODE_ERROR, source, f"{type(exc).__name__}: {exc}", "a readable image header",
                    "re-encode the file (e.g. save it again as PNG or JPEG)") from exc
    with im:
        _check_size(im.width, im.height, source, max_pixels, min_side)
        if not structure_is_complete(data, im.format):
            raise _truncated(source, f"{len(data):,} bytes that end before the image data does")
        wide = png_wide_rawmode(im)
        if wide is not None:
            return _decode_png16(data, im, wide, source)
        _load(im, source)
        return _pil_to_array(_apply_exif(im), source)


_SIGNATURES = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF8", "GIF"), (b"BM", "BMP"),
               (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))


def _unidentified(data: bytes, source: str) -> ImageInputError:
    """PIL could not open the bytes: a cut or broken file of a known format, or not an image at all."""
    fmt = next((name for magic, name in _SIGNATURES if data.startswith(magic)), None)
    if fmt is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        fmt = "WEBP"
    if fmt is None:
        return _fail(NOT_AN_IMAGE, source, f"{len(data):,} bytes PIL cannot identify (they start {data[:8]!r})",
                     "a JPEG, PNG, WebP, GIF, TIFF or BMP file",
                     "check that the object is an image and not HTML, JSON or an error page")
    if not structure_is_complete(data, fmt):
        return _truncated(source, f"{len(data):,} bytes of a {fmt} file that end inside its header")
    return _fail(DECODE_ERROR, source, f"a {fmt} file whose header PIL cannot parse", "a valid image header",
                 "re-encode the file; its header is corrupt or uses a variant PIL does not support")


def _bomb(source: str, exc: Exception) -> ImageInputError:
    return _fail(TOO_MANY_PIXELS, source, f"PIL refused the size ({exc})",
                 f"at most 2 x PIL.Image.MAX_IMAGE_PIXELS={Image.MAX_IMAGE_PIXELS}",
                 "downscale the image, or (trusted inputs only) raise PIL.Image.MAX_IMAGE_PIXELS")


def _truncated(source: str, detail: str) -> ImageInputError:
    return _fail(TRUNCATED, source, detail, "a complete image file",
                 "re-download or re-export the file; a partial upload or interrupted copy cuts files short")


def _load(im: Image.Image, source: str) -> None:
    try:
        im.load()
    except Image.DecompressionBombError as exc:
        raise _bomb(source, exc) from exc
    except EOFError as exc:
        raise _truncated(source, f"decoding stopped early ({exc})") from exc
    except OSError as exc:
        text = str(exc)
        if "truncated" in text:
            raise _truncated(source, f"decoding stopped early ({text})") from exc
        raise _fail(DECODE_ERROR, source, f"{type(exc).__name__}: {text}", "decodable pixel data",
                    "re-encode the file; it is corrupt or uses a codec variant PIL cannot read") from exc
    except MemoryError:
        raise
    except Exception as exc:
        raise _fail(DECODE_ERROR, source, f"{type(exc).__name__}: {exc}", "decodable pixel data",
                    "re-encode the file; it is corrupt or uses a codec variant PIL cannot read") from exc


def _apply_exif(im: Image.Image) -> Image.Image:
    """Rotate/flip per EXIF Orientation; a copy only when the tag asks for one (never mutates ``im``)."""
    try:
        if im.getexif().get(0x0112, 1) in (2, 3, 4, 5, 6, 7, 8):
            return ImageOps.exif_transpose(im)
    except Exception:  # corrupt EXIF is common in the wild; the pixels are still fine
        pass
    return im


def _pil_to_array(im: Image.Image, source: str) -> np.ndarray:
    """A loaded PIL image -> HxWx3 uint8 (8-bit modes) or uint16 (16/32-bit integer and float modes)."""
    if im.mode.startswith("I;16"):
        gray = np.asarray(im).astype(np.uint16)
    elif im.mode == "I":
        gray = np.asarray(im)
        if gray.size and (gray.min() < 0 or gray.max() > 65535):
            raise _fail(BAD_VALUES, source, f"32-bit integer pixels in [{gray.min()}, {gray.max()}]",
                        "integers in [0, 65535]", "rescale the image to 16 bits before saving")
        gray = gray.astype(np.uint16)
    elif im.mode == "F":
        gray = np.asarray(im)
        if gray.size and not (np.isfinite(gray).all() and gray.min() >= 0.0 and gray.max() <= 1.0):
            raise _fail(BAD_VALUES, source, f"float pixels in [{gray.min()}, {gray.max()}]",
                        "finite floats in [0, 1]", "rescale to [0, 1] (or save as 8/16-bit integers)")
        gray = np.round(gray.astype(np.float64) * 65535.0).astype(np.uint16)
    else:
        try:
            rgb = im if im.mode == "RGB" else im.convert("RGB")
        except Exception as exc:
            raise _fail(DECODE_ERROR, source, f"pixel mode {im.mode!r} cannot be converted to RGB ({exc})",
                        "an RGB, grayscale, palette or CMYK image", "re-encode the image as RGB") from exc
        return np.asarray(rgb, dtype=np.uint8).copy()
    return np.repeat(gray[:, :, None], 3, axis=2)


def _decode_png16(data: bytes, im: Image.Image, raw: str, source: str) -> np.ndarray:
    """PIL unpacks 16-bit colour PNG to 8 bits. Decode the same file again with the little-endian
    unpacker (which then picks the low bytes) or as raw bytes, and join high and low bytes."""
    if raw == "LA;16B":  # 16-bit gray + alpha: 4 bytes/pixel read as RGBA 8-bit = (G_hi, G_lo, A_hi, A_lo)
        im.tile = [im.tile[0]._replace(args="RGBA")]
        _load(im, source)
        quad = np.asarray(_apply_exif(im)).astype(np.uint16)
        gray = (quad[..., 0] << 8) | quad[..., 1]
        return np.repeat(gray[:, :, None], 3, axis=2)
    _load(im, source)
    high = np.asarray(_apply_exif(im))[..., :3].astype(np.uint16)
    with Image.open(io.BytesIO(data)) as low_im:
        low_im.tile = [low_im.tile[0]._replace(args=raw.replace(";16B", ";16L"))]
        _load(low_im, source)
        low = np.asarray(_apply_exif(low_im))[..., :3].astype(np.uint16)
    return (high << 8) | low


def resize_array_short_side(arr: np.ndarray, short: int) -> np.ndarray:
    """Resize an HxWx3 array so its shorter side is ``short`` (aspect kept), same dtype back.

    uint8 goes through PIL bicubic; uint16/float per channel through PIL's float mode (bicubic), so
    16-bit precision is kept. No copy when the short side already equals ``short``.
    """
    if not isinstance(short, int) or short < 1:
        raise ValueError(f"short={short!r}: expected a positive int side length. Fix: pass e.g. short=224")
    height, width = arr.shape[:2]
    size = _target_size(height, width, short)
    if size == (height, width):
        return arr
    pil_size = (size[1], size[0])
    if arr.dtype == np.uint8:
        return np.asarray(Image.fromarray(arr).resize(pil_size, Image.Resampling.BICUBIC))
    planes = [np.asarray(Image.fromarray(arr[..., c].astype(np.float32), mode="F")
                         .resize(pil_size, Image.Resampling.BICUBIC)) for c in range(arr.shape[2])]
    out = np.stack(planes, axis=2)
    if np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(arr.dtype)
        out = np.clip(np.round(out), info.min, info.max)
    return out.astype(arr.dtype)


def _target_size(height: int, width: int, short: int) -> tuple[int, int]:
    if height <= width:
        return short, max(1, round(width * short / height))
    return max(1, round(height * short / width)), short


# --------------------------------------------------------------------------- arrays and tensors


def _fix_channels(channels: int, source: str, layout: str, hint: str = "") -> None:
    if channels not in (1, 3, 4):
        raise _fail(BAD_SHAPE, source, f"{channels} channels ({layout})", "1 (gray), 3 (RGB) or 4 (RGBA)",
                    "pass an RGB image" + hint)


def array_to_tensor(arr: np.ndarray, *, source: str = "<array>") -> torch.Tensor:
    """HxW or HxWxC (C in 1, 3, 4) array -> [3, H, W] float32 in [0, 1].

    uint8 is divided by 255, uint16 by 65535, floats must already lie in [0, 1]. Gray is replicated,
    alpha dropped.
    """
    if not isinstance(arr, np.ndarray):
        raise _fail(UNSUPPORTED_TYPE, source, f"got {type(arr).__name__}", "a numpy.ndarray",
                    "convert with numpy.asarray(...) or call load_image, which accepts more types")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise _fail(BAD_SHAPE, source, f"array of shape {arr.shape}", "HxW or HxWxC",
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
        raise _fail(UNSUPPORTED_TYPE, source, f"array dtype {arr.dtype}", "uint8, uint16 or float in [0, 1]",
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
        raise _fail(BAD_VALUES, name, f"{int(torch.isnan(d).sum())} NaN and {int(torch.isinf(d).sum())} "
                    f"infinite values of {d.numel()}", "finite values in [0, 1]",
                    "find where the NaN/inf come from (a division by zero, a bad normalisation) or use "
                    "torch.nan_to_num(x).clamp(0, 1)")
    if unit_range and (lo < -_TOLERANCE or hi > 1.0 + _TOLERANCE):
        fix = "for 0..255 data divide by 255 (x / 255); for a small overshoot clamp with x.clamp(0, 1)"
        if lo < -_TOLERANCE:
            fix = "undo any mean/std normalisation (metrics normalise internally); " + fix
        raise _fail(BAD_VALUES, name, f"values in [{lo:.6g}, {hi:.6g}]", "floats in [0, 1]", fix)


def validate_batch(x: torch.Tensor, *, name: str = "input", min_side: int = MIN_SIDE) -> torch.Tensor:
    """Check a float image batch for a network and return it as [B, 3, H, W] (autograd-safe, no copy
    unless gray is replicated): [C, H, W] gains a batch dim, 1 channel becomes 3, RGBA drops alpha.

    Values are nominally in [0, 1], but finite values outside are accepted, as pyiqa's metrics accept
    them on the loss path (a generator that overshoots, ``torch.randn`` in pyiqa's own tests); NaN and
    inf are ``bad_values``. The scoring front doors (:func:`load_image`) still require [0, 1].

    Raises :class:`ImageInputError` (``bad_shape``, ``bad_values``, ``too_small``, ``unsupported_type``).
    """
    if not isinstance(x, torch.Tensor):
        raise _fail(UNSUPPORTED_TYPE, name, f"got {type(x).__name__}", "a torch.Tensor [B, 3, H, W]",
                    "convert with iqa_plugin.data.images.load_image(...) or torch.as_tensor(...)")
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4:
        raise _fail(BAD_SHAPE, name, f"tensor of shape {tuple(x.shape)} (rank {x.ndim})",
                    "[B, C, H, W] or [C, H, W]", "stack images into one batch with torch.stack")
    _fix_channels(x.shape[1], name, f"shape {tuple(x.shape)}",
                  "; channels-last tensors need x.permute(0, 3, 1, 2)" if x.shape[-1] in (1, 3, 4) else "")
    if x.shape[0] == 0:
        raise _fail(BAD_SHAPE, name, "an empty batch (B=0)", "at least one image", "skip empty batches")
    if not x.is_floating_point():
        raise _fail(BAD_VALUES, name, f"dtype {x.dtype}", "a floating tensor with values in [0, 1]",
                    "use x.float() / 255 for 8-bit images")
    height, width = x.shape[-2:]
    if min(height, width) < min_side:
        raise _fail(TOO_SMALL, name, f"{width}x{height} pixels (W x H)", f"both sides >= {min_side} px",
                    "upsample (torch.nn.functional.interpolate) or skip the image")
    _check_values(x, name, unit_range=False)
    return _to_three_channels(x)


def _tensor_to_chw3(t: torch.Tensor, source: str) -> torch.Tensor:
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    if t.ndim == 2:
        t = t.unsqueeze(0)
    if t.ndim != 3:
        raise _fail(BAD_SHAPE, source, f"tensor of shape {tuple(t.shape)}", "[C, H, W], [H, W] or [1, C, H, W]",
                    "pass one image; for batches use validate_batch")
    _fix_channels(t.shape[0], source, f"shape {tuple(t.shape)}",
                  "; HWC tensors need t.permute(2, 0, 1)" if t.shape[-1] in (1, 3, 4) else "")
    if t.dtype == torch.uint8:
        t = t.float() / 255.0
    elif t.is_floating_point():
        _check_values(t, source)
        t = t.float()
    else:
        raise _fail(UNSUPPORTED_TYPE, source, f"tensor dtype {t.dtype}", "uint8 or float in [0, 1]",
                    "use t.to(torch.uint8) for 0..255 data or t.float() / t.max() for other ranges")
    return _to_three_channels(t.unsqueeze(0))[0]


def resize_short_side(t: torch.Tensor, short: int) -> torch.Tensor:
    """Antialiased bilinear resize of [3, H, W] or [B, 3, H, W] float so the shorter side is ``short``."""
    if not isinstance(short, int) or short < 1:
        raise ValueError(f"short={short!r}: expected a positive int side length. Fix: pass e.g. short=224")
    if t.ndim not in (3, 4):
        raise _fail(BAD_SHAPE, "resize_short_side input", f"tensor of shape {tuple(t.shape)}",
                    "[3, H, W] or [B, 3, H, W]", "pass one image or a batch")
    size = _target_size(t.shape[-2], t.shape[-1], short)
    if size == tuple(t.shape[-2:]):
        return t
    batch = t if t.ndim == 4 else t.unsqueeze(0)
    out = torch.nn.functional.interpolate(batch, size=size, mode="bilinear", align_corners=False, antialias=True)
    return out if t.ndim == 4 else out[0]


# --------------------------------------------------------------------------- front door


def decode_image_bytes(data: bytes, *, max_pixels: int | None = DEFAULT_MAX_PIXELS, source: str = "<bytes>",
                       min_side: int = MIN_SIDE) -> torch.Tensor:
    """:func:`decode_image_array` then [3, H, W] float32 in [0, 1] (uint8 / 255, uint16 / 65535)."""
    arr = decode_image_array(data, max_pixels=max_pixels, source=source, min_side=min_side)
    return array_to_tensor(arr, source=source)


def load_image(src: object, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               min_side: int = MIN_SIDE) -> torch.Tensor:
    """Any supported image input -> [3, H, W] float32 in [0, 1].

    Accepts a path (``str``/``os.PathLike``), file bytes (``bytes``/``bytearray``/``memoryview``), a
    ``PIL.Image.Image``, a numpy array (HxW or HxWxC, uint8/uint16/float in [0, 1]) or a ``torch.Tensor``
    ([C, H, W], [H, W] or [1, C, H, W]; uint8 or float in [0, 1]; kept on its device and differentiable).
    """
    if isinstance(src, (str, os.PathLike)):
        return decode_image_bytes(_read_file(src), max_pixels=max_pixels, source=os.fspath(src), min_side=min_side)
    if isinstance(src, (bytes, bytearray, memoryview)):
        return decode_image_bytes(bytes(src), max_pixels=max_pixels, min_side=min_side)
    if isinstance(src, Image.Image):
        source = f"<PIL.Image {src.mode} {src.width}x{src.height}>"
        _check_size(src.width, src.height, source, max_pixels, min_side)
        _load(src, source)
        return array_to_tensor(_pil_to_array(_apply_exif(src), source), source=source)
    if isinstance(src, np.ndarray):
        source = f"<numpy {src.dtype} {src.shape}>"
        t = array_to_tensor(src, source=source)
    elif isinstance(src, torch.Tensor):
        source = f"<tensor {src.dtype} {tuple(src.shape)}>"
        t = _tensor_to_chw3(src, source)
    else:
        raise _fail(UNSUPPORTED_TYPE, f"<{type(src).__module__}.{type(src).__qualname__}>",
                    f"an object of type {type(src).__qualname__}",
                    "a path, bytes, PIL.Image.Image, numpy.ndarray or torch.Tensor",
                    "read the image into one of those types first")
    _check_size(t.shape[-1], t.shape[-2], source, max_pixels, min_side)
    return t


def _read_file(src: str | os.PathLike) -> bytes:
    path = os.fspath(src)
    if isinstance(path, str) and "://" in path:
        raise _fail(MISSING, path, "a URL", "a local file path",
                    "download it first (fsspec.open(url).read()) and pass the bytes, or use `iqa score`")
    try:
        return Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise _fail(MISSING, os.fsdecode(path), "no such file", "an existing image file",
                    f"check the path (relative paths start at {os.getcwd()})") from exc
    except IsADirectoryError as exc:
        raise _fail(MISSING, os.fsdecode(path), "a directory", "an image file",
                    "pass one file; for folders use the `iqa score` job") from exc
    except PermissionError as exc:
        raise _fail(MISSING, os.fsdecode(path), "permission denied", "a readable image file",
                    "fix the file permissions") from exc
