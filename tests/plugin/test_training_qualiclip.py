"""The Ray-free QualiCLIP recipe: a step trains, checkpoints resume exactly, the export is served by the builder."""

from __future__ import annotations

import fsspec
import pytest
import torch
from pydantic import ValidationError

from iqa_plugin.data.degradations import degrade
from iqa_plugin.data.images import load_image
from iqa_plugin.training.qualiclip import QualiCLIPRecipe, QualiCLIPRecipeConfig


@pytest.fixture(scope="module")
def crops(photos):
    """[2, 2, 3, 3, 48, 48]: two samples (two overlapping crops each) at levels 1, 3, 5."""
    image = load_image(photos[0])
    samples = []
    for index, kind in enumerate(("gaussian_blur", "white_noise")):
        pair = torch.stack([image[:, 10 + index : 58 + index, 20:68], image[:, 18 + index : 66 + index, 28:76]])
        samples.append(torch.stack([degrade(pair, kind, level, seed=level) for level in (1, 3, 5)], dim=1))
    return torch.stack(samples)


def _recipe(**options) -> QualiCLIPRecipe:
    torch.manual_seed(0)
    return QualiCLIPRecipe(QualiCLIPRecipeConfig(arch="tiny", **options), total_steps=10)


def test_a_step_trains_the_image_tower_only(crops):
    recipe = _recipe()
    before = {k: v.clone() for k, v in recipe.net.state_dict().items()}
    metrics = recipe.step(crops)
    assert set(metrics) == {"loss", "consistency", "positive", "negative", "lr", "grad_norm"}
    assert all(isinstance(v, float) and v == v for v in metrics.values())
    after = recipe.net.state_dict()
    assert torch.equal(before["prompt_features"], after["prompt_features"])  # frozen prompts
    assert not torch.equal(before["tower.visual.conv1.weight"], after["tower.visual.conv1.weight"])
    assert recipe.step_count == 1


def test_state_dict_resumes_bit_for_bit(crops, tmp_path):
    straight = _recipe()
    straight.step(crops)
    torch.save(straight.state_dict(), tmp_path / "state.pt")
    expected = straight.step(crops)
    resumed = _recipe(seed=5)  # another init: everything must come from the checkpoint
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert resumed.step(crops) == expected
    assert resumed.step_count == 2


def test_export_is_served_by_the_builder_with_the_same_scores(crops, tmp_path, monkeypatch):
    from iqa_plugin.build import build_network
    from iqa_plugin.hub.cards import load_card_file
    from iqa_plugin.training.export import qualiclip_card, write_export

    recipe = _recipe()
    for _ in range(2):
        recipe.step(crops)
    fs = fsspec.filesystem("file", auto_mkdir=True)

    def card_for(uri, sha256, size):
        return qualiclip_card("qualiclip-test-tiny", uri, sha256, size, recipe.arch_options("qualiclip-test-tiny"), {"steps": 2})

    # weights named relative to the card (as the shipped demo card does): found from any working directory
    weights, card_uri = write_export(
        fs, str(tmp_path / "export"), "qualiclip-test-tiny", recipe.export_state(), card_for, lambda p: p.rsplit("/", 1)[-1]
    )
    assert weights == "qualiclip-test-tiny.safetensors"
    monkeypatch.chdir(tmp_path)
    card = load_card_file(tmp_path / "export" / card_uri)
    assert card.weights["model"].format == "safetensors"
    assert card.weights["model"].urls == [str(tmp_path / "export" / weights)]
    network = build_network(card)
    images = crops[:, 0, :, :].flatten(0, 1)
    torch.testing.assert_close(network(images).view(-1), recipe.score(images), rtol=1e-5, atol=1e-5)


def test_config_rejects_unknown_and_bad_values():
    with pytest.raises(ValidationError, match="extra"):
        QualiCLIPRecipeConfig(archh="tiny")
    with pytest.raises(ValidationError, match="unknown distortion kinds"):
        QualiCLIPRecipeConfig(exclude_distortions=("blurr",))
    with pytest.raises(ValueError, match="needs arch='rn50'"):
        QualiCLIPRecipe(QualiCLIPRecipeConfig(arch="tiny", prompts="text_tower"), total_steps=1)
    with pytest.raises(ValueError, match=r"expected \[B, 2 crops"):
        _recipe().step(torch.zeros(1, 3, 2, 3, 32, 32))


def test_gradient_checkpointing_gives_the_same_step(crops):
    plain = _recipe().step(crops)
    checkpointed = _recipe(gradient_checkpointing=True).step(crops)
    assert checkpointed == pytest.approx(plain, rel=1e-5, abs=1e-7)
