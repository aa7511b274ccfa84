"""The one builder: card -> arch table -> weights -> input contract -> eval network."""

from __future__ import annotations

import pytest
import torch

from iqa_plugin import archs
from iqa_plugin.build import build_network
from iqa_plugin.hub.cards import ModelCard
from iqa_plugin.hub.weights import sha256_file
from iqa_plugin.testing import TinyQualityNet, fabricate_tiny_checkpoint


@pytest.fixture
def tiny_arch(monkeypatch):
    """A later arch is one table entry: nothing else in the plugin changes."""
    monkeypatch.setitem(archs.ARCHS, "TestTinyQualityNet", "iqa_plugin.testing:TinyQualityNet")


def _card(path, **contract) -> ModelCard:
    return ModelCard.model_validate(
        {
            "name": "tiny-test",
            "kind": "metric",
            "arch": "TestTinyQualityNet",
            "arch_options": {"width": 4},
            "weights": {"model": {"urls": [str(path)], "sha256": sha256_file(path), "format": "safetensors"}},
            "license": "test",
            "paper": "none",
            "score_range": [0, 1],
            "input": contract,
        }
    )


def test_new_arch_loads_its_safetensors_state_dict(tiny_arch, tmp_path):
    path = fabricate_tiny_checkpoint(tmp_path / "tiny.safetensors", seed=3)
    net = build_network(_card(path))
    assert isinstance(net.network, TinyQualityNet) and not net.training
    assert net.weights_sha256 == sha256_file(path)
    torch.manual_seed(3)
    expected = TinyQualityNet(4).state_dict()
    for key, value in net.network.state_dict().items():
        assert torch.equal(value, expected[key])
    random = build_network(_card(path), pretrained=False)
    assert random.weights_sha256 is None


def test_the_cards_contract_drives_preprocessing(tiny_arch, tmp_path):
    path = fabricate_tiny_checkpoint(tmp_path / "tiny.safetensors")
    plain = build_network(_card(path))
    clip = build_network(_card(path, mean=[0.48, 0.46, 0.41], std=[0.27, 0.26, 0.28]))
    resized = build_network(_card(path, resize=[40, 40], min_side=16))
    x = torch.rand(2, 3, 48, 64)
    with torch.inference_mode():
        expected_clip = plain.network((x - torch.tensor([0.48, 0.46, 0.41]).view(1, 3, 1, 1))
                                      / torch.tensor([0.27, 0.26, 0.28]).view(1, 3, 1, 1))
        torch.testing.assert_close(clip(x), expected_clip)
        assert not torch.allclose(clip(x), plain(x))
        torch.testing.assert_close(plain(x), plain.network(x))
        small = torch.nn.functional.interpolate(x, size=(40, 40), mode="bilinear", antialias=True)
        torch.testing.assert_close(resized(x), plain.network(small))
        resized(torch.rand(1, 3, 20, 20))  # min_side comes from the card too
    with pytest.raises(ValueError, match="too_small"):
        plain(torch.rand(1, 3, 20, 20))


def test_weights_that_do_not_fit_the_arch_name_the_file(tiny_arch, tmp_path):
    path = fabricate_tiny_checkpoint(tmp_path / "wide.safetensors", width=8)
    with pytest.raises(ValueError, match="wide.safetensors.*do not match arch TestTinyQualityNet"):
        build_network(_card(path))


def test_override_for_a_role_the_card_lacks_is_a_clear_error(tiny_arch, tmp_path):
    path = fabricate_tiny_checkpoint(tmp_path / "tiny.safetensors")
    with pytest.raises(ValueError, match="base_model_path is not used by 'tiny-test'.*pretrained_model_path"):
        build_network(_card(path), base_model_path=str(path))


def test_unknown_arch_lists_the_table(tmp_path):
    path = fabricate_tiny_checkpoint(tmp_path / "tiny.safetensors")
    with pytest.raises(ValueError, match="IqaPluginQualiCLIP"):
        build_network(_card(path))


def test_scorer_serves_any_card_network(tiny_arch, tmp_path, monkeypatch):
    """A new card + arch table entry is scored by BatchScorer by name, with no QualiCLIP-specific path."""
    import yaml

    from iqa_plugin.inference.scorer import BatchScorer

    path = fabricate_tiny_checkpoint(tmp_path / "tiny.safetensors", seed=5)
    registry = tmp_path / "cards"
    registry.mkdir()
    card = _card(path, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    (registry / "tiny.yaml").write_text(yaml.safe_dump(card.model_dump(mode="json")))
    monkeypatch.setenv("IQA_PLUGIN_REGISTRY", str(registry))
    scorer = BatchScorer("tiny-test", device="cpu", batch_size=2)
    assert scorer.weights_sha256 == sha256_file(path)
    images = [torch.rand(3, 40, 48), torch.rand(3, 48, 40), torch.rand(3, 40, 48)]
    reference = build_network(card)
    with torch.inference_mode():
        expected = [reference(x.unsqueeze(0)).item() for x in images]
    torch.testing.assert_close(torch.tensor(scorer.score_tensors(images)), torch.tensor(expected))
