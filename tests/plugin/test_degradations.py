"""Tests of iqa_plugin.data.degradations on real photos: every kind gets strictly worse level by level under a
weight-free full-reference metric from pyiqa, level 1 is already visible, outputs are well-formed and
reproducible, bad inputs fail with a useful message; plus the SR degradations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from iqa_plugin.data.degradations import (
    KINDS,
    LEVEL_PARAMS,
    LEVELS,
    RANDOM_KINDS,
    RealSRConfig,
    degrade,
    degrade_realworld,
    downscale_bicubic,
)

CROP = 128

# GMSD (gradient-magnitude similarity deviation, weight-free, fast on CPU) ranks most kinds. It works on
# luma gradients, so these kinds use PSNR on RGB (weight-free) instead:
# * mean_shift: a uniform offset leaves gradients unchanged except where clipping flattens them;
# * color_shift: only the green channel moves, and the edge-weighted blend saturates in luma from 6 px;
# * pixelate: at block sizes of 1.1-1.8 px the density of block edges, which GMSD sees, is not monotone.
PSNR_KINDS = {"mean_shift", "color_shift", "pixelate"}
GMSD_LEVEL1_MIN = 5e-4  # identity gives exactly 0
PSNR_LEVEL1_MAX = 45.0  # identity gives ~inf (pyiqa caps at 10 log10(1 / 1e-10))


def _center_crop(path, size: int = CROP) -> torch.Tensor:
    img = Image.open(path).convert("RGB")
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    array = np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8).copy()
    return torch.from_numpy(array).permute(2, 0, 1).float() / 255


@pytest.fixture(scope="module")
def batch(photos) -> torch.Tensor:
    """Three real photos, centre-cropped to 128x128, [3, 3, 128, 128] in [0, 1]."""
    return torch.stack([_center_crop(p) for p in photos[:3]])


@pytest.fixture(scope="module")
def metrics():
    """Weight-free FR metrics from pyiqa (nothing to download): GMSD (lower is better) and RGB PSNR."""
    import pyiqa

    return {name: pyiqa.create_metric(name, device="cpu") for name in ("gmsd", "psnr")}


def test_kinds_and_levels_table():
    assert len(KINDS) == 24 and len(set(KINDS)) == 24
    assert set(LEVEL_PARAMS) == set(KINDS)
    assert all(len(v) == LEVELS == 5 for v in LEVEL_PARAMS.values())
    # Reordered by absolute change so that level 1 is mildest.
    for kind in ("mean_shift", "linear_contrast"):
        magnitudes = [abs(v) for v in LEVEL_PARAMS[kind]]
        assert magnitudes == sorted(magnitudes) and len(set(magnitudes)) == 5 and magnitudes[0] > 0


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_metric_worsens_strictly_with_level(kind, batch, metrics):
    name = "psnr" if kind in PSNR_KINDS else "gmsd"
    metric = metrics[name]
    degraded = torch.cat([degrade(batch, kind, level, seed=7) for level in range(1, LEVELS + 1)])
    per_image = metric(degraded, batch.repeat(LEVELS, 1, 1, 1)).view(LEVELS, len(batch))
    badness = per_image.mean(dim=1).tolist()
    if name == "psnr":
        badness = [-v for v in badness]
    for level in range(LEVELS - 1):
        assert badness[level] < badness[level + 1], (
            f"{kind}: {name} not strictly worse at level {level + 2} than at {level + 1}: {badness}"
        )
    if name == "gmsd":
        assert badness[0] > GMSD_LEVEL1_MIN, f"{kind}: level 1 indistinguishable from pristine: {badness[0]}"
    else:
        assert -badness[0] < PSNR_LEVEL1_MAX, f"{kind}: level 1 indistinguishable from pristine: {-badness[0]}"


@pytest.mark.parametrize("kind", KINDS)
def test_output_range_shape_dtype_and_reproducible(kind, batch):
    small = batch[:2, :, :64, :64].contiguous()
    out = degrade(small, kind, 5, seed=3)
    assert out.shape == small.shape and out.dtype == small.dtype and out.device == small.device
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    again = degrade(small, kind, 5, seed=3)
    assert torch.equal(out, again), "same seed must give identical bytes"
    single = degrade(small[0], kind, 2, seed=1)
    assert single.shape == small[0].shape
    if kind in RANDOM_KINDS:
        assert not torch.equal(out, degrade(small, kind, 5, seed=4)), "different seeds must differ"
    # The input is never modified in place.
    assert torch.equal(small, batch[:2, :, :64, :64])


def test_other_float_dtypes_keep_their_dtype(batch):
    for dtype in (torch.float64, torch.float16, torch.bfloat16):
        out = degrade(batch[:1, :, :48, :48].to(dtype), "white_noise", 3, seed=0)
        assert out.dtype == dtype and out.shape == (1, 3, 48, 48)


def test_random_kinds_vary_within_a_batch(batch):
    twins = batch[:1].expand(2, -1, -1, -1).contiguous()
    out = degrade(twins, "motion_blur", 5, seed=0)
    assert not torch.equal(out[0], out[1]), "each image of a batch gets its own random draws"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "gausian_blur"}, "did you mean 'gaussian_blur'"),
        ({"kind": "nope"}, "not a known distortion"),
        ({"level": 0}, "level must be an int in 1..5"),
        ({"level": 6}, "level must be an int in 1..5"),
        ({"level": 2.0}, "level must be an int"),
        ({"seed": "0"}, "seed must be an int"),
        ({"images": torch.rand(1, 1, 32, 32)}, r"\[B, 3, H, W\]"),
        ({"images": torch.rand(2, 32, 32)}, r"\[B, 3, H, W\]"),
        ({"images": torch.randint(0, 255, (1, 3, 32, 32), dtype=torch.uint8)}, "/ 255"),
        ({"images": torch.rand(1, 3, 32, 32) * 255}, r"values in \[0, 1\]"),
        ({"images": np.zeros((3, 32, 32))}, "torch.Tensor"),
    ],
)
def test_bad_inputs_raise_value_error(kwargs, message):
    args = {"images": torch.rand(1, 3, 32, 32), "kind": "jpeg", "level": 1, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        degrade(**args)


def test_downscale_bicubic_shape_and_antialias(batch):
    for scale in (2, 4):
        lr = downscale_bicubic(batch, scale)
        assert lr.shape == (3, 3, CROP // scale, CROP // scale) and lr.dtype == batch.dtype
        assert downscale_bicubic(batch[0], scale).shape == (3, CROP // scale, CROP // scale)
    # A one-pixel checkerboard is pure aliasing: antialiased downscaling averages it to flat grey,
    # plain bicubic sampling would keep full-contrast values.
    checker = ((torch.arange(64)[:, None] + torch.arange(64)[None, :]) % 2).float().expand(3, 64, 64)
    lr = downscale_bicubic(checker, 4)
    assert torch.allclose(lr, torch.full_like(lr, 0.5), atol=0.02)
    with pytest.raises(ValueError, match="scale must be a positive int"):
        downscale_bicubic(batch, 0)


def test_degrade_realworld_shape_determinism_and_config(batch):
    lr = degrade_realworld(batch, seed=5)
    assert lr.shape == (3, 3, CROP // 4, CROP // 4) and lr.dtype == batch.dtype
    assert float(lr.min()) >= 0 and float(lr.max()) <= 1
    assert torch.equal(lr, degrade_realworld(batch, seed=5))
    assert not torch.equal(lr, degrade_realworld(batch, seed=6))
    x2 = degrade_realworld(batch[0], seed=5, config=RealSRConfig(scale=2))
    assert x2.shape == (3, CROP // 2, CROP // 2)
    with pytest.raises(ValueError):
        RealSRConfig(unknown_field=1)
    with pytest.raises(ValueError, match="blur_sigma"):
        RealSRConfig.model_validate({"stage1": {"blur_sigma": (3.0, 1.0)}})


@pytest.mark.parametrize("quality", [(30, 250), (0, 90), (-5, 50)])
def test_realsr_jpeg_quality_outside_1_100_is_rejected(quality):
    from pydantic import ValidationError

    from iqa_plugin.data.degradations import RealSRStage

    with pytest.raises(ValidationError, match="jpeg_quality"):
        RealSRStage(jpeg_quality=quality)
    assert RealSRStage(jpeg_quality=(1, 100)).jpeg_quality == (1.0, 100.0)
