"""BatchScorer: mixed sizes and input kinds, input order, equality with one-at-a-time scores."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from iqa_plugin.inference.scorer import BatchScorer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scorer(fabricated):
    return BatchScorer("qualiclip", device="cpu", batch_size=3, pretrained_model_path=str(fabricated["qualiclip"]))


def _small(path, size):
    return Image.open(path).convert("RGB").resize(size, Image.BICUBIC)


def test_mixed_inputs_keep_order_and_match_single_scores(scorer, photos, tmp_path):
    sizes = [(96, 64), (64, 96), (96, 64), (75, 50), (96, 64), (64, 96), (96, 64)]
    images = [_small(photos[i % len(photos)], size) for i, size in enumerate(sizes)]
    path = tmp_path / "p.png"
    images[0].save(path)
    buffer = io.BytesIO()
    images[1].save(buffer, format="PNG")
    tensor = torch.from_numpy(np.asarray(images[2]).copy()).permute(2, 0, 1).float() / 255
    inputs = [str(path), buffer.getvalue(), tensor, np.asarray(images[3]), *images[4:]]
    batched = scorer.score(inputs)
    single = [scorer.score([x])[0] for x in inputs]
    assert len(batched) == len(inputs)
    np.testing.assert_allclose(batched, single, atol=1e-5, rtol=0)
    assert np.ptp(batched) > 1e-4  # different images, different scores: order is observable


def test_score_arrays_equals_score(scorer, photos):
    arrays = [np.asarray(_small(p, (64, 64))) for p in photos[:4]]
    np.testing.assert_allclose(scorer.score_arrays(arrays), scorer.score(arrays), atol=1e-6)


def test_bf16_close_to_fp32(fabricated, photos):
    fp32 = BatchScorer("qualiclip", device="cpu", pretrained_model_path=str(fabricated["qualiclip"]))
    bf16 = BatchScorer("qualiclip", device="cpu", dtype="bf16", pretrained_model_path=str(fabricated["qualiclip"]))
    images = [_small(p, (96, 64)) for p in photos[:4]]
    a, b = np.array(fp32.score(images)), np.array(bf16.score(images))
    assert np.abs(a - b).max() < 2e-2, (a, b)
    assert fp32.weights_sha256 == bf16.weights_sha256 and len(fp32.weights_sha256) == 64


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="dtype"):
        BatchScorer("qualiclip", dtype="int8", pretrained=False)
    with pytest.raises(ValueError, match="batch_size"):
        BatchScorer("qualiclip", batch_size=0, pretrained=False)
    with pytest.raises(ValueError, match="not a metric of iqa_plugin"):
        BatchScorer("psnr")


def test_scorer_fast_path_equals_the_pyiqa_network(scorer, fabricated, photos):
    """BatchNorm folding and channels_last in the scorer leave the scores of the plain network."""
    from iqa_plugin.build import build_network

    network = build_network("qualiclip", pretrained_model_path=str(fabricated["qualiclip"]))
    images = [_small(p, (96, 64)) for p in photos[:3]]
    tensors = [torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 255 for im in images]
    with torch.inference_mode():
        expected = [network(t.unsqueeze(0)).item() for t in tensors]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in scorer.network.modules())
    np.testing.assert_allclose(scorer.score_tensors(tensors), expected, atol=1e-5, rtol=0)
