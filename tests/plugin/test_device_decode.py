"""GPU decoding's CPU-testable parts: header routing, batched decode with per-image fallback, resizing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from iqa_plugin.data.device_decode import decode_jpegs, resize_uint8_short_side, torchvision_jpeg_decoder
from iqa_plugin.data.images import decode_image_array, resize_array_short_side
from iqa_plugin.data.jpeg_header import FALLBACKS, device_fallback, read_jpeg_header, route_jpeg
from tests.helpers import encode


def _rgb(photos, size=(96, 64)) -> Image.Image:
    return Image.open(photos[0]).convert("RGB").resize(size)


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "camera"
    return exif


def _patched_sof(jpeg: bytes, *, marker: int | None = None, precision: int | None = None) -> bytes:
    """The same JPEG with its frame header claiming another coding process or sample precision."""
    pos = jpeg.index(b"\xff\xc0")
    data = bytearray(jpeg)
    if marker is not None:
        data[pos + 1] = marker
    if precision is not None:
        data[pos + 4] = precision
    return bytes(data)


def mixed_inputs(photos) -> dict[str, tuple[bytes, str | None]]:
    """name -> (bytes, expected device_fallback)."""
    rgb = _rgb(photos)
    jpeg = encode(rgb, "JPEG", quality=90)
    gray16 = np.asarray(rgb.convert("L")).astype(np.uint16) * 257
    return {
        "baseline.jpg": (jpeg, None),
        "package-photo.jpg": (next(p for p in photos if p.suffix == ".jpg").read_bytes(), None),
        "exif-upright.jpg": (encode(rgb, "JPEG", exif=_exif(1)), None),
        "progressive.jpg": (encode(rgb, "JPEG", progressive=True), "not_baseline"),
        "arithmetic.jpg": (_patched_sof(jpeg, marker=0xC9), "not_baseline"),
        "twelve-bit.jpg": (_patched_sof(jpeg, precision=12), "not_8_bit"),
        "cmyk.jpg": (encode(rgb.convert("CMYK"), "JPEG"), "not_ycbcr"),
        "gray.jpg": (encode(rgb.convert("L"), "JPEG"), "not_ycbcr"),
        "exif-rotated.jpg": (encode(rgb, "JPEG", exif=_exif(6)), "exif_orientation"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "no_end_marker"),
        "trailing-bytes.jpg": (jpeg + b"\x00garbage", "no_end_marker"),
        "tiny.jpg": (encode(rgb.resize((20, 16)), "JPEG"), "size_limits"),
        "bomb.jpg": (encode(Image.new("RGB", (1200, 1000)), "JPEG"), "size_limits"),
        "broken-segments.jpg": (b"\xff\xd8\xff\xe0\x00\x10JFIF" + b"\x00" * 4, "unreadable_header"),
        "photo.png": (encode(rgb, "PNG"), "not_jpeg"),
        "gray16.png": (encode(Image.fromarray(gray16), "PNG"), "not_jpeg"),
        "empty.jpg": (b"", "not_jpeg"),
        "notes.txt": (b"not an image at all", "not_jpeg"),
    }


def test_routing_sends_only_what_the_device_decodes_like_the_cpu(photos):
    for name, (data, expected) in mixed_inputs(photos).items():
        assert device_fallback(data, max_pixels=1_000_000, min_side=32) == expected, name
        assert expected is None or expected in FALLBACKS
    header = read_jpeg_header(encode(_rgb(photos), "JPEG", exif=_exif(8)))
    assert header is not None and (header.width, header.height, header.orientation) == (96, 64, 8)
    assert route_jpeg(b"\xff\xd8\xff\xe0\x00", max_pixels=None, min_side=1) == (None, "unreadable_header")
    # without a pixel limit, the big JPEG goes to the device
    assert device_fallback(mixed_inputs(photos)["bomb.jpg"][0], max_pixels=None, min_side=32) is None


def test_batched_device_decode_gives_the_cpu_decoders_pixels(photos):
    inputs = mixed_inputs(photos)
    names = [name for name, (_, expected) in inputs.items() if expected is None]
    decoded = decode_jpegs([inputs[n][0] for n in names], torchvision_jpeg_decoder("cpu"))
    for name, image in zip(names, decoded, strict=True):
        assert image is not None and image.dtype == torch.uint8
        np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), decode_image_array(inputs[name][0]))


def test_one_refused_image_falls_back_alone(photos):
    rgb = _rgb(photos)
    good = [encode(rgb, "JPEG", quality=q) for q in (70, 80, 90)]
    corrupt = good[1][:600] + bytes(len(good[1]) - 602) + b"\xff\xd9"  # scan data zeroed, end marker kept
    real = torchvision_jpeg_decoder("cpu")
    calls: list[int] = []

    def refuses_corrupt(encoded: list[torch.Tensor]) -> list[torch.Tensor]:
        calls.append(len(encoded))
        if any(bytes(t.numpy()) == corrupt for t in encoded):
            raise RuntimeError("nvjpeg: bitstream error")
        return real(encoded)

    decoded = decode_jpegs([good[0], corrupt, good[2]], refuses_corrupt)
    assert calls == [3, 1, 1, 1]  # the batch, then one call per image
    assert decoded[1] is None and decoded[0] is not None and decoded[2] is not None
    np.testing.assert_array_equal(decoded[2].permute(1, 2, 0).numpy(), decode_image_array(good[2]))
    # a decoder answering in another size than the header's is not trusted either
    assert decode_jpegs([good[0]], real, expected_sizes=[(96, 64)]) == [None]
    assert decode_jpegs([], real) == []


@pytest.mark.parametrize("short", [64, 224])
def test_device_resize_matches_the_cpu_resize_within_one_level(photos, short):
    for path in photos:
        array = decode_image_array(path.read_bytes())
        cpu = resize_array_short_side(array, short)
        device = resize_uint8_short_side(torch.from_numpy(array).permute(2, 0, 1).contiguous(), short)
        assert device.dtype == torch.uint8 and tuple(device.shape) == (3, *cpu.shape[:2])
        diff = np.abs(device.permute(1, 2, 0).numpy().astype(int) - cpu.astype(int))
        assert diff.max() <= 1 and diff.mean() < 0.01, path.name
    image = torch.zeros(3, 64, 80, dtype=torch.uint8)
    assert resize_uint8_short_side(image, 64) is image
