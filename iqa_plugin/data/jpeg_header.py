"""Which encoded images a GPU JPEG decoder may take: read from the header bytes, no pixel decoded.

nvjpeg (``torchvision.io.decode_jpeg(..., device="cuda")``) decodes baseline 8-bit colour JPEGs in
batches, but it applies no EXIF orientation (torchvision does that on CPU only), and PNG, WebP, GIF,
16-bit, CMYK/Adobe-RGB, grayscale, progressive, arithmetic-coded and lossless JPEGs, and files cut short
must give exactly the rows the CPU decoder gives (:func:`iqa_plugin.data.images.decode_image_array`).
:func:`device_fallback` reads the marker segments up to the frame header (a few hundred bytes for a
camera JPEG) and answers ``None`` (the device may decode it) or why the CPU decoder must. Anything this
module cannot read with certainty goes to the CPU: a wrong "yes" would change a row, a wrong "no" only
costs CPU time.

>>> device_fallback(b"\\x89PNG\\r\\n\\x1a\\n....", max_pixels=None, min_side=32)
'not_jpeg'
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

#: Why an image goes to the CPU decoder instead of the device (the values :func:`device_fallback` returns).
FALLBACKS: dict[str, str] = {
    "not_jpeg": "not a JPEG (PNG, WebP, GIF, ... or not an image): the CPU decoder reads it or gives the reason",
    "unreadable_header": "the JPEG marker segments cannot be followed to a frame header (cut or corrupt file)",
    "not_baseline": "progressive, lossless, hierarchical or arithmetic-coded JPEG (nvjpeg's batched path "
                    "takes baseline and extended-sequential Huffman only)",
    "not_8_bit": "12- or 16-bit samples",
    "not_ycbcr": "grayscale, CMYK/YCCK or Adobe RGB components (the CPU decoder's colour conversion is the "
                 "reference)",
    "exif_orientation": "an EXIF Orientation other than 1, or EXIF that cannot be read (orientation is "
                        "applied by the CPU decoder only)",
    "no_end_marker": "the file does not end with the JPEG end marker (cut download, or trailing bytes)",
    "size_limits": "a side below min_side, more pixels than max_pixels, or a size given later in the file "
                   "(the CPU decoder gives the reason code)",
}

_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # DHT, JPG and DAC share the range
_DEVICE_SOF = frozenset({0xC0, 0xC1})  # baseline and extended sequential, Huffman-coded
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM and RST0-7 carry no length


@dataclass(frozen=True)
class JpegHeader:
    """What the segments before the first scan say about a JPEG.

    ``orientation`` is the EXIF Orientation (1 when there is no EXIF; 0 when EXIF is present but
    unreadable); ``adobe_transform`` the APP14 colour transform flag (None without an Adobe segment).
    """

    width: int
    height: int
    precision: int
    components: int
    sof_marker: int
    orientation: int
    adobe_transform: int | None


def _exif_orientation(payload: bytes) -> int:
    """EXIF Orientation of an APP1 payload starting ``Exif\\0\\0``; 1 without the tag, 0 when unreadable."""
    tiff = payload[6:]
    if tiff[:4] == b"II*\x00":
        order = "<"
    elif tiff[:4] == b"MM\x00*":
        order = ">"
    else:
        return 0
    try:
        (ifd,) = struct.unpack_from(order + "I", tiff, 4)
        (count,) = struct.unpack_from(order + "H", tiff, ifd)
        for index in range(count):
            tag, kind, _, value = struct.unpack_from(order + "HHI4s", tiff, ifd + 2 + 12 * index)
            if tag == 0x0112:
                return struct.unpack_from(order + "H", value)[0] if kind == 3 else 0
    except struct.error:
        return 0
    return 1


def read_jpeg_header(data: bytes) -> JpegHeader | None:
    """The :class:`JpegHeader` of JPEG bytes, or ``None`` when they are no JPEG or the segments before
    the frame header cannot be followed."""
    if not data.startswith(b"\xff\xd8"):
        return None
    pos, end = 2, len(data)
    orientation, adobe = 1, None
    while pos < end:
        if data[pos] != 0xFF:
            return None
        while pos < end and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= end:
            return None
        marker = data[pos]
        pos += 1
        if marker in _STANDALONE:
            continue
        if marker in (0xD8, 0xD9, 0xDA) or pos + 2 > end:  # SOI again, EOI or a scan before any frame
            return None
        (length,) = struct.unpack_from(">H", data, pos)
        if length < 2 or pos + length > end:
            return None
        payload = data[pos + 2 : pos + length]
        if marker == 0xE1 and payload.startswith(b"Exif\x00\x00"):
            found = _exif_orientation(payload)
            orientation = found if orientation == 1 else orientation
        elif marker == 0xEE and payload.startswith(b"Adobe") and len(payload) >= 12:
            adobe = payload[11]
        elif marker in _SOF_MARKERS:
            if len(payload) < 6:
                return None
            precision, height, width, components = struct.unpack_from(">BHHB", payload)
            return JpegHeader(width=width, height=height, precision=precision, components=components,
                              sof_marker=marker, orientation=orientation, adobe_transform=adobe)
        pos += length
    return None


def route_jpeg(data: bytes, *, max_pixels: int | None, min_side: int) -> tuple[JpegHeader | None, str | None]:
    """``(header, None)`` when a GPU JPEG decoder may decode ``data`` with the CPU decoder's result,
    else ``(header or None, key of FALLBACKS)`` that sends it to the CPU decoder."""
    header = read_jpeg_header(data)
    if header is None:
        return None, "not_jpeg" if not data.startswith(b"\xff\xd8\xff") else "unreadable_header"
    if header.sof_marker not in _DEVICE_SOF:
        return header, "not_baseline"
    if header.precision != 8:
        return header, "not_8_bit"
    if header.components != 3 or header.adobe_transform == 0:
        return header, "not_ycbcr"
    if header.orientation != 1:
        return header, "exif_orientation"
    if not data.endswith(b"\xff\xd9"):
        return header, "no_end_marker"
    if min(header.width, header.height) < min_side or (
            max_pixels is not None and header.width * header.height > max_pixels):
        return header, "size_limits"
    return header, None


def device_fallback(data: bytes, *, max_pixels: int | None, min_side: int) -> str | None:
    """``None`` when a GPU JPEG decoder may decode ``data``, else why the CPU decoder must (a key of
    :data:`FALLBACKS`)."""
    return route_jpeg(data, max_pixels=max_pixels, min_side=min_side)[1]
