"""Load, decode and validate image inputs; every failure is an :class:`ImageInputError` with a stable reason.

One decoder serves the metrics (``load_image``) and the Ray scoring job (``decode_image_array`` on fetched
bytes, recording ``error.reason`` per row); reason codes come from the one table,
:mod:`iqa_plugin.data.reasons`. JPEG goes through ``torchvision.io.decode_jpeg`` (libjpeg-turbo: EXIF
orientation, CMYK, and truncation reported as an error whatever PIL's switches say); everything else
through PIL. Decoding never touches PIL's process-wide switches (``Image.MAX_IMAGE_PIXELS``,
``ImageFile.LOAD_TRUNCATED_IMAGES``): the pixel limit is checked from the header before any pixel is
decoded, and PNG truncation is detected from the file structure, so a library that flips
``LOAD_TRUNCATED_IMAGES`` (pyiqa's AVA dataset does) cannot make truncated files decode as grey.

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
import os
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from iqa_plugin.data.image_checks import (  # noqa: F401  (re-exported: callers import them from here)
    DEFAULT_MAX_PIXELS,
    IMAGE_REASONS,
    MIN_SIDE,
    ImageInputError,
    UnsupportedImageTypeError,
    check_size,
    fail,
)
from iqa_plugin.data.reasons import (  # noqa: F401  (REASONS re-exported)
    BAD_VALUES,
    DECODE_ERROR,
    EMPTY,
    MISSING,
    NOT_AN_IMAGE,
    REASONS,
    TOO_MANY_PIXELS,
    TRUNCATED,
    UNSUPPORTED_TYPE,
)
from iqa_plugin.data.tensors import (  # noqa: F401  (re-exported: callers import them from here)
    array_to_tensor,
    resize_short_side,
    short_side_size,
    tensor_to_chw3,
    validate_batch,
)

# --------------------------------------------------------------------------- file structure

# PIL reads a cut PNG as grey when some library turned ``ImageFile.LOAD_TRUNCATED_IMAGES`` on, and no
# library answers "is this PNG complete?" without decoding it through that same switch (torchvision's
# decode_png would, but it crashes the process on corrupt data, see _decode_jpeg): so the chunks are
# walked here, which reads no pixel.
def png_is_complete(data: bytes) -> bool:
    """False when a PNG ends before its last image data (a cut download), whatever PIL's switches say."""
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

    - EXIF orientation is applied (by torchvision for JPEG, ``ImageOps.exif_transpose`` otherwise);
      unreadable EXIF is ignored.
    - CMYK JPEG (Adobe's inverted CMYK included) becomes RGB in the JPEG decoder.
    - 16-bit grayscale, RGB, RGBA and gray+alpha PNG keep all 16 bits (PIL alone would cut RGB to 8).
    - Grayscale (``1``, ``L``) and palette (``P``) are replicated/expanded to RGB.
    - Alpha (``RGBA``, ``LA``, ``PA``) is DROPPED without compositing, exactly like pyiqa's
      ``.convert('RGB')``, so scores match pyiqa on the same file.
    - Animated GIF/WebP/APNG: the first frame.

    ``max_pixels`` is checked from the header before decoding (``None`` disables it; images above twice
    PIL's global ``Image.MAX_IMAGE_PIXELS`` are still refused by PIL and reported as ``too_many_pixels``).
    A JPEG or PNG that ends early is ``truncated`` even when ``ImageFile.LOAD_TRUNCATED_IMAGES`` is on;
    for other formats that switch, when someone turned it on, still lets PIL fill the missing part.
    Raises :class:`ImageInputError` with a reason from :data:`IMAGE_REASONS`.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise fail(UNSUPPORTED_TYPE, source, f"got {type(data).__name__}", "the bytes of an image file",
                    "read the file first (Path(p).read_bytes()) or call load_image(path)")
    data = bytes(data) if not isinstance(data, bytes) else data
    if not data:
        raise fail(EMPTY, source, "got zero bytes", "the bytes of an image file",
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
        raise fail(DECODE_ERROR, source, f"{type(exc).__name__}: {exc}", "a readable image header",
                    "re-encode the file (e.g. save it again as PNG or JPEG)") from exc
    with im:
        check_size(im.width, im.height, source, max_pixels, min_side)
        if im.format in ("JPEG", "MPO"):
            try:
                return _decode_jpeg(data, source)
            except ImageInputError as error:
                if error.reason == TRUNCATED:
                    raise
                # libjpeg-turbo refused it for another reason (a variant torchvision's wrapper does not
                # take): PIL decides below, as it did for every JPEG before
        if im.format == "PNG" and not png_is_complete(data):
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
        return fail(NOT_AN_IMAGE, source, f"{len(data):,} bytes PIL cannot identify (they start {data[:8]!r})",
                     "a JPEG, PNG, WebP, GIF, TIFF or BMP file",
                     "check that the object is an image and not HTML, JSON or an error page")
    detail = "PIL cannot parse it"
    if fmt == "JPEG":
        try:
            _decode_jpeg(data, source)
        except ImageInputError as error:
            if error.reason == TRUNCATED:
                return _truncated(source, f"{len(data):,} bytes of a JPEG file that end inside its header")
            detail = error.message
    elif fmt == "PNG" and not png_is_complete(data):
        return _truncated(source, f"{len(data):,} bytes of a PNG file that end inside its header")
    return fail(DECODE_ERROR, source, f"a {fmt} file whose header cannot be parsed ({detail})",
                 "a valid image header", "re-encode the file; its header is corrupt or uses an unsupported variant")


_TORCHVISION_DEPRECATION = ".*image decoding and encoding capabilities of TorchVision are deprecated"


def _decode_jpeg(data: bytes, source: str) -> np.ndarray:
    """JPEG bytes -> HxWx3 uint8 via libjpeg-turbo (torchvision), EXIF orientation applied; failures are
    ``truncated`` or ``decode_error``. Only JPEG goes this way: torchvision
    0.29's PNG decoder kills the process (segfault) on corrupt pixel data (reproduced with a bit-flipped
    IDAT; pytorch/vision#3613), which an object-store scan must survive. torchvision marks its image I/O
    deprecated in favour of TorchCodec; this function is the one place to switch.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_TORCHVISION_DEPRECATION)
        try:
            image = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB,
                                apply_exif_orientation=True)
        except RuntimeError as exc:
            text = str(exc).rsplit(", ", 1)[-1]
            if "truncated" in text or "incomplete" in text:
                raise _truncated(source, f"{len(data):,} bytes that end before the image data does ({text})") from exc
            raise fail(DECODE_ERROR, source, text, "decodable JPEG data", "re-encode the file") from exc
    return np.ascontiguousarray(image.permute(1, 2, 0).numpy())


def _bomb(source: str, exc: Exception) -> ImageInputError:
    return fail(TOO_MANY_PIXELS, source, f"PIL refused the size ({exc})",
                 f"at most 2 x PIL.Image.MAX_IMAGE_PIXELS={Image.MAX_IMAGE_PIXELS}",
                 "downscale the image, or (trusted inputs only) raise PIL.Image.MAX_IMAGE_PIXELS")


def _truncated(source: str, detail: str) -> ImageInputError:
    return fail(TRUNCATED, source, detail, "a complete image file",
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
        raise fail(DECODE_ERROR, source, f"{type(exc).__name__}: {text}", "decodable pixel data",
                    "re-encode the file; it is corrupt or uses a codec variant PIL cannot read") from exc
    except MemoryError:
        raise
    except Exception as exc:
        raise fail(DECODE_ERROR, source, f"{type(exc).__name__}: {exc}", "decodable pixel data",
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
            raise fail(BAD_VALUES, source, f"32-bit integer pixels in [{gray.min()}, {gray.max()}]",
                        "integers in [0, 65535]", "rescale the image to 16 bits before saving")
        gray = gray.astype(np.uint16)
    elif im.mode == "F":
        gray = np.asarray(im)
        if gray.size and not (np.isfinite(gray).all() and gray.min() >= 0.0 and gray.max() <= 1.0):
            raise fail(BAD_VALUES, source, f"float pixels in [{gray.min()}, {gray.max()}]",
                        "finite floats in [0, 1]", "rescale to [0, 1] (or save as 8/16-bit integers)")
        gray = np.round(gray.astype(np.float64) * 65535.0).astype(np.uint16)
    else:
        try:
            rgb = im if im.mode == "RGB" else im.convert("RGB")
        except Exception as exc:
            raise fail(DECODE_ERROR, source, f"pixel mode {im.mode!r} cannot be converted to RGB ({exc})",
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
    size = short_side_size(height, width, short)
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
        check_size(src.width, src.height, source, max_pixels, min_side)
        _load(src, source)
        return array_to_tensor(_pil_to_array(_apply_exif(src), source), source=source)
    if isinstance(src, np.ndarray):
        source = f"<numpy {src.dtype} {src.shape}>"
        t = array_to_tensor(src, source=source)
    elif isinstance(src, torch.Tensor):
        source = f"<tensor {src.dtype} {tuple(src.shape)}>"
        t = tensor_to_chw3(src, source)
    else:
        raise fail(UNSUPPORTED_TYPE, f"<{type(src).__module__}.{type(src).__qualname__}>",
                    f"an object of type {type(src).__qualname__}",
                    "a path, bytes, PIL.Image.Image, numpy.ndarray or torch.Tensor",
                    "read the image into one of those types first")
    check_size(t.shape[-1], t.shape[-2], source, max_pixels, min_side)
    return t


def _read_file(src: str | os.PathLike) -> bytes:
    path = os.fspath(src)
    if isinstance(path, str) and "://" in path:
        raise fail(MISSING, path, "a URL", "a local file path",
                    "download it first (fsspec.open(url).read()) and pass the bytes, or use `iqa score`")
    try:
        return Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise fail(MISSING, os.fsdecode(path), "no such file", "an existing image file",
                    f"check the path (relative paths start at {os.getcwd()})") from exc
    except IsADirectoryError as exc:
        raise fail(MISSING, os.fsdecode(path), "a directory", "an image file",
                    "pass one file; for folders use the `iqa score` job") from exc
    except PermissionError as exc:
        raise fail(MISSING, os.fsdecode(path), "permission denied", "a readable image file",
                    "fix the file permissions") from exc
