"""Image loading, decoding and validation: every supported input kind from real photos, and a table of
bad inputs matched to their reason code and the text of their message."""

from __future__ import annotations

import io
import pickle
import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile, features

from iqa_plugin.data import images
from iqa_plugin.data.images import (
    DEFAULT_MAX_PIXELS,
    MIN_SIDE,
    REASONS,
    ImageInputError,
    array_to_tensor,
    decode_image_array,
    decode_image_bytes,
    load_image,
    resize_array_short_side,
    resize_short_side,
    validate_batch,
)

# ----------------------------------------------------------------------------------------- helpers


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def _png16(arr: np.ndarray) -> bytes:
    """A 16-bit PNG (gray+alpha, RGB or RGBA) that cycles through all five row filters; PIL cannot write these."""
    height, width, channels = arr.shape
    raw = arr.astype(">u2").view(np.uint8).reshape(height, width * channels * 2).astype(np.int32)
    bpp = 2 * channels
    left = np.zeros_like(raw)
    left[:, bpp:] = raw[:, :-bpp]
    up = np.zeros_like(raw)
    up[1:] = raw[:-1]
    up_left = np.zeros_like(raw)
    up_left[1:, bpp:] = raw[:-1, :-bpp]
    filtered = [raw, raw - left, raw - up, raw - (left + up) // 2, raw - _paeth(left, up, up_left)]
    rows = b"".join(bytes([y % 5]) + (filtered[y % 5][y] % 256).astype(np.uint8).tobytes() for y in range(height))
    color_type = {2: 4, 3: 2, 4: 6}[channels]
    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows))
            + _chunk(b"IEND", b""))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height but carries almost no data (decompression-bomb shape)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\0" * 1000))
            + _chunk(b"IEND", b""))


def _by_name(photos, name: str):
    return next(p for p in photos if p.name == name)


@pytest.fixture(scope="module")
def photo(photos) -> Image.Image:
    """A real RGB photo (640x427), loaded once."""
    with Image.open(_by_name(photos, "china.jpg")) as im:
        return im.convert("RGB")


@pytest.fixture(scope="module")
def jpeg_bytes(photos) -> bytes:
    return _by_name(photos, "rocket.jpg").read_bytes()


@pytest.fixture(scope="module")
def png_bytes(photos) -> bytes:
    return _by_name(photos, "astronaut.png").read_bytes()


# ----------------------------------------------------------------------------------------- bad inputs


def _corrupt_idat(png: bytes) -> bytes:
    data = bytearray(png)
    start = png.index(b"IDAT") + 100
    data[start:start + 40] = bytes(b ^ 0x55 for b in data[start:start + 40])
    return bytes(data)


def _bad_sof(jpeg: bytes) -> bytes:
    data = bytearray(jpeg)
    sof = max(jpeg.find(b"\xff\xc0"), jpeg.find(b"\xff\xc2"))
    data[sof + 9] = 7  # seven colour components: no JPEG has that
    return bytes(data)


# (case, builder(ctx) -> zero-arg call that must raise, reason, substring of the message)
BAD_INPUTS = [
    ("empty", lambda c: lambda: decode_image_array(b""), "empty", "zero bytes"),
    ("random_bytes", lambda c: lambda: decode_image_array(np.random.default_rng(0).bytes(5000)),
     "not_an_image", "cannot identify"),
    ("html_page", lambda c: lambda: load_image(b"<html><body>404 Not Found</body></html>"),
     "not_an_image", "not HTML"),
    ("truncated_jpeg", lambda c: lambda: decode_image_array(c["jpeg"][: len(c["jpeg"]) // 2]),
     "truncated", "re-download"),
    ("truncated_png", lambda c: lambda: decode_image_array(c["png"][: len(c["png"]) // 2]),
     "truncated", "complete image file"),
    ("jpeg_cut_in_header", lambda c: lambda: decode_image_array(c["jpeg"][:20]), "truncated", "header"),
    ("corrupt_png_data", lambda c: lambda: decode_image_array(_corrupt_idat(c["png"])),
     "decode_error", "re-encode"),
    ("corrupt_jpeg_header", lambda c: lambda: decode_image_array(_bad_sof(c["jpeg"])),
     "decode_error", "JPEG file whose header"),
    ("bomb_header_400mpx", lambda c: lambda: decode_image_array(_png_header_only(20000, 20000)),
     "too_many_pixels", "decompression bomb"),
    ("bomb_header_120mpx", lambda c: lambda: decode_image_array(_png_header_only(12000, 10000)),
     "too_many_pixels", "max_pixels=89,478,485"),
    ("max_pixels_low", lambda c: lambda: decode_image_array(c["jpeg"], max_pixels=10_000),
     "too_many_pixels", "273,280 pixels"),
    ("one_pixel_png", lambda c: lambda: decode_image_array(_encode(Image.new("RGB", (1, 1)), "PNG")),
     "too_small", ">= 32 px"),
    ("narrow_png", lambda c: lambda: load_image(_encode(Image.new("L", (200, 31)), "PNG")),
     "too_small", "min_side=0"),
    ("missing_path", lambda c: lambda: load_image(c["tmp"] / "nope.jpg"), "missing", "no such file"),
    ("directory", lambda c: lambda: load_image(str(c["tmp"])), "missing", "a directory"),
    ("url", lambda c: lambda: load_image("s3://bucket/photo.jpg"), "missing", "fsspec"),
    ("float_tiff_0_255", lambda c: lambda: decode_image_array(
        _encode(Image.fromarray(np.full((40, 40), 200.0, np.float32), mode="F"), "TIFF")),
     "bad_values", "[0, 1]"),
    ("numpy_float_1.5", lambda c: lambda: load_image(np.full((40, 40, 3), 1.5)), "bad_values", "x / 255"),
    ("numpy_nan", lambda c: lambda: load_image(np.full((40, 40, 3), np.nan)), "bad_values", "NaN"),
    ("numpy_5_channels", lambda c: lambda: load_image(np.zeros((40, 40, 5), np.uint8)), "bad_shape",
     "5 channels"),
    ("numpy_chw", lambda c: lambda: load_image(np.zeros((3, 40, 40), np.uint8)), "bad_shape", "transpose"),
    ("numpy_int64", lambda c: lambda: load_image(np.zeros((40, 40, 3), np.int64)), "unsupported_type",
     "int64"),
    ("tensor_rank5", lambda c: lambda: load_image(torch.zeros(1, 1, 3, 40, 40)), "bad_shape", "[C, H, W]"),
    ("tensor_hwc", lambda c: lambda: load_image(torch.zeros(40, 40, 3)), "bad_shape", "permute(2, 0, 1)"),
    ("tensor_int64", lambda c: lambda: load_image(torch.zeros(3, 40, 40, dtype=torch.int64)),
     "unsupported_type", "torch.int64"),
    ("tensor_negative", lambda c: lambda: load_image(torch.full((3, 40, 40), -0.5)), "bad_values",
     "mean/std"),
    ("int_object", lambda c: lambda: load_image(123), "unsupported_type", "type int"),
    ("str_to_decoder", lambda c: lambda: decode_image_array("photo.jpg"), "unsupported_type", "read_bytes"),
]


@pytest.mark.parametrize(("case", "build", "reason", "text"), BAD_INPUTS, ids=[row[0] for row in BAD_INPUTS])
def test_bad_input_raises_its_reason_and_teaches(case, build, reason, text, jpeg_bytes, png_bytes, tmp_path):
    call = build({"jpeg": jpeg_bytes, "png": png_bytes, "tmp": tmp_path})
    with pytest.raises(ImageInputError) as info:
        call()
    assert info.value.reason == reason, str(info.value)
    assert text in str(info.value)
    assert "Fix:" in str(info.value) and f"[{reason}]" in str(info.value)
    assert reason in REASONS


def test_reason_table_lists_every_code():
    from iqa_plugin.data import reasons

    codes = {getattr(reasons, name) for name in ("EMPTY", "NOT_AN_IMAGE", "TRUNCATED", "TOO_MANY_PIXELS",
                                                "TOO_SMALL", "MISSING", "BAD_VALUES", "BAD_SHAPE",
                                                "UNSUPPORTED_TYPE", "DECODE_ERROR")}
    assert codes == images.IMAGE_REASONS and len(codes) == 10
    assert REASONS is reasons.REASONS and codes <= set(REASONS)  # one reason-code table, not a restatement
    assert MIN_SIDE == 32 and DEFAULT_MAX_PIXELS == 89_478_485


def test_unsupported_type_is_also_a_type_error():
    with pytest.raises(TypeError, match=r"list"):
        load_image([1, 2, 3])


def test_error_survives_pickling_with_its_reason():
    with pytest.raises(ImageInputError) as info:
        decode_image_array(b"", source="s3://b/k.jpg")
    copy = pickle.loads(pickle.dumps(info.value))
    assert (copy.reason, copy.source, str(copy)) == ("empty", "s3://b/k.jpg", str(info.value))


def test_bomb_is_refused_from_the_header_without_decoding(monkeypatch):
    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither PIL's DecompressionBombWarning nor anything else leaks
        for width, height in ((20000, 20000), (12000, 10000)):
            with pytest.raises(ImageInputError) as info:
                decode_image_array(_png_header_only(width, height))
            assert info.value.reason == "too_many_pixels"
    assert Image.MAX_IMAGE_PIXELS == DEFAULT_MAX_PIXELS  # the global is left alone


@pytest.mark.parametrize("flag", [False, True], ids=["pil_default", "load_truncated_images_on"])
def test_truncation_is_detected_even_when_pil_is_told_to_accept_it(flag, jpeg_bytes, png_bytes, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", flag)  # pyiqa's AVA dataset sets it to True
    cut_between_chunks = png_bytes[: png_bytes.index(b"IDAT", len(png_bytes) // 2) - 4]
    for data in (jpeg_bytes[:-2], jpeg_bytes[: len(jpeg_bytes) // 2], png_bytes[: len(png_bytes) // 3],
                 cut_between_chunks):
        with pytest.raises(ImageInputError) as info:
            decode_image_array(data)
        assert info.value.reason == "truncated"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is flag
    # a PNG missing only its IEND chunk carries all of its pixels: accepted, as PIL does
    assert decode_image_array(png_bytes[:-12]).shape == (512, 512, 3)


# ----------------------------------------------------------------------------------------- decoding


def test_real_photos_decode_like_pil_convert_rgb(photos):
    for path in photos:
        arr = decode_image_array(path.read_bytes(), source=str(path))
        with Image.open(path) as im:
            expected = np.asarray(im.convert("RGB"))
        assert arr.dtype == np.uint8 and arr.shape == expected.shape and arr.flags.c_contiguous
        np.testing.assert_array_equal(arr, expected)


def test_grayscale_and_bilevel_are_replicated(photo):
    gray = photo.convert("L")
    for im in (gray, gray.convert("1")):
        arr = decode_image_array(_encode(im, "PNG"))
        expected = np.asarray(im.convert("L"))
        for channel in range(3):
            np.testing.assert_array_equal(arr[..., channel], expected)


def test_alpha_is_dropped_like_pyiqa(photo):
    rgba = photo.copy()
    rgba.putalpha(Image.linear_gradient("L").resize(photo.size))
    np.testing.assert_array_equal(decode_image_array(_encode(rgba, "PNG")), np.asarray(photo))
    la = photo.convert("L")
    la.putalpha(128)
    np.testing.assert_array_equal(decode_image_array(_encode(la, "PNG"))[..., 1], np.asarray(photo.convert("L")))


def test_palette_becomes_rgb(photo):
    palette = photo.quantize(64)
    arr = decode_image_array(_encode(palette, "PNG"))
    np.testing.assert_array_equal(arr, np.asarray(palette.convert("RGB")))
    assert np.abs(arr.astype(int) - np.asarray(photo)).mean() < 12  # still the photo


def test_cmyk_jpeg_becomes_the_same_photo(photo):
    data = _encode(photo.convert("CMYK"), "JPEG", quality=95)
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "CMYK"
    arr = decode_image_array(data)
    assert arr.shape == (427, 640, 3) and arr.dtype == np.uint8
    assert np.abs(arr.astype(int) - np.asarray(photo)).mean() < 4


def test_16bit_gray_png_keeps_all_16_bits(photo):
    gray = np.asarray(photo.convert("L")).astype(np.uint16) * 256 + np.arange(427 * 640).reshape(427, 640) % 251
    data = _encode(Image.fromarray(gray.astype(np.uint16)), "PNG")
    arr = decode_image_array(data)
    assert arr.dtype == np.uint16
    for channel in range(3):
        np.testing.assert_array_equal(arr[..., channel], gray)
    tensor = decode_image_bytes(data)
    torch.testing.assert_close(tensor[0], torch.from_numpy(gray.astype(np.float32) / 65535), rtol=0, atol=1e-7)


@pytest.mark.parametrize("channels", [3, 4, 2], ids=["rgb48", "rgba64", "gray_alpha32"])
def test_16bit_colour_png_keeps_all_16_bits(photo, channels):
    base = np.asarray(photo.resize((96, 64))).astype(np.uint16) * 257
    noise = np.random.default_rng(channels).integers(0, 256, base.shape, dtype=np.uint16)
    rgb16 = base + noise
    source = {3: rgb16, 4: np.dstack([rgb16, rgb16[..., :1]]), 2: rgb16[..., :2]}[channels]
    arr = decode_image_array(_png16(source))
    expected = rgb16 if channels != 2 else np.repeat(rgb16[..., :1], 3, axis=2)
    assert arr.dtype == np.uint16
    np.testing.assert_array_equal(arr, expected)


def test_exif_orientation_is_applied(photo):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    upright = decode_image_array(_encode(photo, "JPEG", quality=90))
    rotated = decode_image_array(_encode(photo, "JPEG", quality=90, exif=exif.tobytes()))
    assert rotated.shape == (640, 427, 3)
    np.testing.assert_array_equal(rotated, np.rot90(upright, k=-1))
    with Image.open(io.BytesIO(_encode(photo, "JPEG", quality=90, exif=exif.tobytes()))) as im:
        np.testing.assert_array_equal(load_image(im), load_image(rotated))
        assert im.size == (640, 427)  # the caller's image is not rotated in place


def _two_frames(photo):
    return [photo, Image.fromarray(255 - np.asarray(photo))]


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_animation_gives_its_first_frame(photo, fmt):
    if fmt == "WEBP" and not features.check("webp"):
        pytest.skip("PIL built without WebP")
    first, second = _two_frames(photo.resize((160, 107)))
    kw = {"lossless": True} if fmt == "WEBP" else {}
    data = _encode(first, fmt, save_all=True, append_images=[second], duration=100, **kw)
    with Image.open(io.BytesIO(data)) as im:
        assert getattr(im, "n_frames", 1) == 2
        expected = np.asarray(im.convert("RGB"))
    arr = decode_image_array(data)
    np.testing.assert_array_equal(arr, expected)
    assert np.abs(arr.astype(int) - np.asarray(first)).mean() < 10  # the first frame, not the inverted one


def test_min_side_zero_accepts_tiny_images():
    arr = decode_image_array(_encode(Image.new("RGB", (1, 1), (10, 20, 30)), "PNG"), min_side=0)
    np.testing.assert_array_equal(arr, [[[10, 20, 30]]])


def test_float_tiff_in_unit_range_becomes_uint16():
    values = np.linspace(0, 1, 40 * 40, dtype=np.float32).reshape(40, 40)
    arr = decode_image_array(_encode(Image.fromarray(values, mode="F"), "TIFF"))
    assert arr.dtype == np.uint16
    np.testing.assert_array_equal(arr[..., 2], np.round(values.astype(np.float64) * 65535).astype(np.uint16))


# ----------------------------------------------------------------------------------------- load_image


def test_every_input_kind_loads_to_the_same_tensor(photos, photo, tmp_path):
    path = _by_name(photos, "china.jpg")
    expected = torch.from_numpy(np.asarray(photo).astype(np.float32) / 255).permute(2, 0, 1)
    data = path.read_bytes()
    rgb = np.asarray(photo)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])
    inputs = {
        "str": str(path), "path": path, "bytes": data, "bytearray": bytearray(data),
        "memoryview": memoryview(data), "pil": photo, "pil_rgba": Image.fromarray(rgba), "uint8": rgb,
        "rgba": rgba, "uint16": rgb.astype(np.uint16) * 257, "float64": rgb / 255.0,
        "tensor_uint8": torch.from_numpy(np.array(photo)).permute(2, 0, 1).contiguous(),
        "tensor_float": expected.clone(), "tensor_batch1": expected.unsqueeze(0),
        "tensor_rgba": torch.cat([expected, torch.ones(1, 427, 640)]),
    }
    for kind, src in inputs.items():
        out = load_image(src)
        assert out.dtype == torch.float32 and out.shape == (3, 427, 640), kind
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-6, msg=kind)


def test_gray_inputs_are_replicated(photo):
    gray = np.array(photo.convert("L"))
    expected = torch.from_numpy(gray.astype(np.float32) / 255).expand(3, -1, -1)
    for src in (gray, gray[:, :, None], torch.from_numpy(gray), torch.from_numpy(gray)[None]):
        torch.testing.assert_close(load_image(src), expected, rtol=0, atol=1e-6)


def test_array_to_tensor_scales_by_dtype():
    assert array_to_tensor(np.full((2, 2, 3), 255, np.uint8)).max().item() == 1.0
    assert array_to_tensor(np.full((2, 2, 3), 65535, np.uint16)).min().item() == 1.0
    assert array_to_tensor(np.full((2, 2), 0.25, np.float64)).shape == (3, 2, 2)


def test_tensor_input_stays_differentiable():
    x = torch.rand(1, 40, 40, requires_grad=True)
    load_image(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, 3.0))


# ----------------------------------------------------------------------------------------- validate_batch


def _batch(**kw):
    return torch.rand(2, 3, 40, 48, generator=torch.Generator().manual_seed(0), **kw)


def _with(value):
    x = _batch()
    x[1, 2, 5, 7] = value
    return x


BAD_BATCHES = [
    ("nan", lambda: _with(float("nan")), "bad_values", "1 NaN"),
    ("inf", lambda: _with(float("inf")), "bad_values", "1 infinite"),
    ("above_one", lambda: _with(1.5), "bad_values", "1.5]"),
    ("uint8_range_as_float", lambda: _batch() * 255, "bad_values", "x / 255"),
    ("negative", lambda: _with(-0.2), "bad_values", "[-0.2,"),
    ("rank2", lambda: torch.rand(40, 40), "bad_shape", "rank 2"),
    ("five_channels", lambda: torch.rand(1, 5, 40, 40), "bad_shape", "5 channels"),
    ("channels_last", lambda: torch.rand(1, 40, 40, 3), "bad_shape", "permute(0, 3, 1, 2)"),
    ("uint8_tensor", lambda: (_batch() * 255).to(torch.uint8), "bad_values", "/ 255"),
    ("16x16", lambda: torch.rand(1, 3, 16, 16), "too_small", "upsample"),
    ("empty_batch", lambda: torch.rand(0, 3, 40, 40), "bad_shape", "empty batch"),
    ("numpy", lambda: np.zeros((1, 3, 40, 40), np.float32), "unsupported_type", "ndarray"),
]


@pytest.mark.parametrize(("case", "build", "reason", "text"), BAD_BATCHES, ids=[row[0] for row in BAD_BATCHES])
def test_validate_batch_rejects(case, build, reason, text):
    with pytest.raises(ImageInputError) as info:
        validate_batch(build(), name="img")
    assert info.value.reason == reason, str(info.value)
    assert text in str(info.value) and str(info.value).startswith(f"[{reason}] img:")


def test_validate_batch_normalises_channels_and_keeps_gradients():
    x = _batch(requires_grad=True)
    assert validate_batch(x) is x
    assert validate_batch(x[0]).shape == (1, 3, 40, 48)
    gray = torch.rand(2, 1, 40, 48, requires_grad=True)
    out = validate_batch(gray)
    assert out.shape == (2, 3, 40, 48) and torch.equal(out[:, 2], gray[:, 0])
    out.sum().backward()
    torch.testing.assert_close(gray.grad, torch.full_like(gray, 3.0))
    rgba = torch.rand(2, 4, 40, 48, requires_grad=True)
    out = validate_batch(rgba)
    assert torch.equal(out, rgba[:, :3])
    out.sum().backward()
    assert rgba.grad[:, :3].eq(1).all() and rgba.grad[:, 3].eq(0).all()
    validate_batch(torch.full((1, 3, 40, 40), 1 + 1e-7))  # float rounding at the edge is tolerated
    validate_batch(torch.rand(1, 3, 40, 40, dtype=torch.float16))


# ----------------------------------------------------------------------------------------- resizing


def test_resize_short_side_keeps_aspect_and_range(photo):
    t = load_image(photo)
    small = resize_short_side(t, 224)
    assert small.shape == (3, 224, 336) and 0 <= small.min() and small.max() <= 1 + 1e-6
    assert resize_short_side(small, 224) is small
    assert resize_short_side(t.unsqueeze(0).expand(2, -1, -1, -1), 100).shape == (2, 3, 100, 150)
    flat = resize_short_side(torch.full((3, 427, 640), 0.3), 64)
    torch.testing.assert_close(flat, torch.full_like(flat, 0.3))
    with pytest.raises(ValueError, match="positive int"):
        resize_short_side(t, 0)


def test_resize_array_short_side_keeps_dtype_and_precision(photo):
    rgb = np.asarray(photo)
    small = resize_array_short_side(rgb, 100)
    assert small.shape == (100, 150, 3) and small.dtype == np.uint8
    assert np.abs(small.astype(int).mean() - rgb.mean()) < 2
    deep = resize_array_short_side(np.full((60, 90, 3), 12345, np.uint16), 40)
    assert deep.shape == (40, 60, 3) and deep.dtype == np.uint16 and (deep == 12345).all()
    assert resize_array_short_side(rgb, 427) is rgb
