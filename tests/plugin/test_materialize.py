"""Shard rows -> degraded training tensors (no Ray): recipes reproduce bytes, per-sample independence,
agreement with the degradation library, and errors that name the problem."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from iqa_plugin.data.degradations import KINDS, RealSRConfig, degrade, degrade_realworld, downscale_bicubic
from iqa_plugin.data.materialize import decode_png_stack, materialize_qualiclip_batch, materialize_sr_batch
from ray_jobs.shards.config import ShardsJobConfig
from ray_jobs.shards.sampling import image_seed, sample_rows


def _rows(photos, kind: str, **changes) -> list[dict]:
    fields = dict(source="unused", out="unused", kind=kind, crop=48, hr_size=64, samples_per_image=2)
    fields.update(changes)
    config = ShardsJobConfig(**fields)
    rows = []
    for photo in photos[:3]:
        pixels = np.asarray(Image.open(photo).convert("RGB"))
        rng = np.random.default_rng(image_seed(config.seed, photo.name))
        rows += sample_rows(pixels, image_id=photo.name, uri=str(photo), config=config, rng=rng, kinds=KINDS)
    return rows


def _columns(rows: list[dict]) -> dict[str, np.ndarray]:
    """The numpy column batch Ray Data's iter_batches would give for these rows."""
    out = {}
    for name in rows[0]:
        values = [row[name] for row in rows]
        out[name] = np.array(values, dtype=object) if isinstance(values[0], (bytes, list)) else np.array(values)
    return out


def test_same_recipe_gives_same_tensors_and_samples_do_not_depend_on_the_batch(photos):
    rows = _rows(photos, "qualiclip")
    full = materialize_qualiclip_batch(_columns(rows), "cpu")
    again = materialize_qualiclip_batch(rows, "cpu")  # list of rows, as take() returns
    assert full.shape == (6, 2, 5, 3, 48, 48) and full.dtype == torch.float32
    assert torch.equal(full, again)
    alone = materialize_qualiclip_batch(rows[3:4], "cpu")
    assert torch.equal(alone[0], full[3])
    assert float(full.min()) >= 0.0 and float(full.max()) <= 1.0


def test_each_level_is_the_library_distortion_with_the_recorded_seed(photos):
    row = _rows(photos, "qualiclip")[0]
    out = materialize_qualiclip_batch([row], "cpu")[0]
    pair = decode_png_stack([row["crop_a"], row["crop_b"]]).float() / 255
    for j, (level, seed) in enumerate(zip(row["levels"], row["seeds"], strict=True)):
        assert torch.equal(out[:, j], degrade(pair, row["distortion"], level, seed))


def test_levels_grow_in_severity_for_a_fixed_distortion(photos):
    rows = [dict(row, distortion="gaussian_blur") for row in _rows(photos, "qualiclip")]
    out = materialize_qualiclip_batch(rows, "cpu")
    pristine = torch.stack([decode_png_stack([r["crop_a"], r["crop_b"]]) for r in rows]).float() / 255
    error = (out - pristine[:, :, None]).abs().mean(dim=(0, 1, 3, 4, 5))
    assert torch.all(error[1:] > error[:-1]), error


def test_sr_batch_matches_bicubic_and_realworld_recipes(photos):
    rows = _rows(photos, "sr", realworld_fraction=0.5, seed=5)
    kinds = [row["degradation"] for row in rows]
    assert "bicubic" in kinds and "realworld" in kinds
    hr, lr = materialize_sr_batch(_columns(rows), "cpu")
    assert hr.shape == (6, 3, 64, 64) and lr.shape == (6, 3, 16, 16)
    for i, row in enumerate(rows):
        pixels = decode_png_stack([row["hr"]]).float() / 255
        assert torch.equal(hr[i : i + 1], pixels)
        if row["degradation"] == "bicubic":
            want = downscale_bicubic(pixels, 4)
        else:
            want = degrade_realworld(pixels, row["seed"], RealSRConfig.model_validate_json(row["realsr_config"]))
        assert torch.equal(lr[i : i + 1], want)
    hr2, lr2 = materialize_sr_batch(rows, "cpu")
    assert torch.equal(hr, hr2) and torch.equal(lr, lr2)


def test_bad_batches_are_explained(photos):
    rows = _rows(photos, "qualiclip")
    with pytest.raises(ValueError, match=r"lacks the columns \['hr'"):
        materialize_sr_batch(rows, "cpu")
    with pytest.raises(ValueError, match="same number of levels"):
        materialize_qualiclip_batch([rows[0], dict(rows[1], levels=[1, 2], seeds=[1, 2])], "cpu")
    with pytest.raises(TypeError, match="mapping of column"):
        materialize_qualiclip_batch("not a batch", "cpu")
    sr = _rows(photos, "sr", realworld_fraction=0.0)
    with pytest.raises(ValueError, match="share one scale"):
        materialize_sr_batch([sr[0], dict(sr[1], scale=2)], "cpu")
    with pytest.raises(ValueError, match="unknown SR degradation"):
        materialize_sr_batch([dict(sr[0], degradation="nearest")], "cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_materialises_on_the_gpu(photos):
    rows = [dict(row, distortion="white_noise") for row in _rows(photos, "qualiclip")]
    on_gpu = materialize_qualiclip_batch(rows, "cuda")
    assert on_gpu.device.type == "cuda" and torch.equal(on_gpu, materialize_qualiclip_batch(rows, "cuda"))
    hr, lr = materialize_sr_batch(_rows(photos, "sr"), "cuda")
    assert hr.device.type == lr.device.type == "cuda"
