"""Differential test: our QualiCLIP vs pyiqa 0.1.16's own QualiCLIP on the same fabricated weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import iqa_plugin  # noqa: F401  (registers the plugin)
from iqa_plugin.build import build_network
from iqa_plugin.testing import build_native_qualiclip

pytestmark = pytest.mark.slow


def _photo_tensor(path) -> torch.Tensor:
    """The photo at half size (keeps CI fast; sizes stay distinct, odd and portrait as in the originals)."""
    image = Image.open(path).convert("RGB")
    rgb = np.asarray(image.resize((image.width // 2, image.height // 2), Image.BICUBIC))
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).float().div(255).unsqueeze(0)


@pytest.fixture(scope="module")
def parity_photos(photos):
    sizes = {(w // 2, h // 2) for w, h in (Image.open(p).size for p in photos)}
    assert len(photos) >= 6 and len(sizes) >= 5, "need >= 6 real photos of different sizes"
    assert any(w % 32 or h % 32 for w, h in sizes), "need a size that is not a multiple of 32"
    assert any(h > w for w, h in sizes), "need a portrait photo"
    return photos


@pytest.mark.parametrize("model_type", ["qualiclip", "qualiclip+"])
def test_scores_equal_pyiqa_native(model_type, fabricated, parity_photos):
    plus = model_type != "qualiclip"
    native = build_native_qualiclip(
        model_type, fabricated["qualiclip"], fabricated["qualiclip+"] if plus else None
    )
    ours = build_network(
        model_type,
        pretrained_model_path=fabricated["qualiclip+" if plus else "qualiclip"],
        base_model_path=fabricated["qualiclip"] if plus else None,
    )
    ours_scores, native_scores = [], []
    with torch.inference_mode():
        for path in parity_photos:
            x = _photo_tensor(path)
            ours_scores.append(ours(x).item())
            native_scores.append(native(x).item())
    diff = np.abs(np.array(ours_scores) - np.array(native_scores))
    assert diff.max() <= 1e-5, f"max |diff| {diff.max():.2e}: ours {ours_scores} vs pyiqa {native_scores}"
    # the fabricated weights must give photo-dependent scores, or the comparison proves little
    assert np.ptp(native_scores) > 20 * 1e-5, native_scores
