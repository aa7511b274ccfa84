"""``add_card``: a training export goes into the user registry with its weights; checked, idempotent, never
silently replacing another card; then served by name."""

from __future__ import annotations

import shutil

import fsspec
import pytest
import torch
import yaml

from iqa_plugin.hub.cards import CardError, get_card
from iqa_plugin.hub.user_registry import add_card
from iqa_plugin.hub.weights import WeightsError

NAME = "qualiclip-registry-test"


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """A one-step tiny QualiCLIP export whose card names its weights relative to itself (as iqa train can)."""
    from iqa_plugin.training.export import qualiclip_card, write_export
    from iqa_plugin.training.qualiclip import QualiCLIPRecipe, QualiCLIPRecipeConfig

    torch.manual_seed(0)
    recipe = QualiCLIPRecipe(QualiCLIPRecipeConfig(arch="tiny"), total_steps=1)
    recipe.step(torch.rand(1, 2, 3, 3, 48, 48))
    root = tmp_path_factory.mktemp("export")
    fs = fsspec.filesystem("file", auto_mkdir=True)

    def card_for(uri, sha256, size):
        return qualiclip_card(NAME, uri, sha256, size, recipe.arch_options(NAME), {"steps": 1})

    _, card = write_export(fs, str(root), NAME, recipe.export_state(), card_for, lambda p: p.rsplit("/", 1)[-1])
    return root / card


def _edit(card, target, **fields):
    data = yaml.safe_load(card.read_text())
    data.update(fields)
    target.write_text(yaml.safe_dump(data))
    return target


def test_add_copies_card_and_weights_and_is_idempotent(export, tmp_path, monkeypatch):
    registry = tmp_path / "registry"
    added = add_card(export, registry)
    assert added.changed and added.card == registry / f"{NAME}.yaml"
    assert added.weights == [registry / f"{NAME}.safetensors"] and added.weights[0].read_bytes() == (
        export.parent / f"{NAME}.safetensors").read_bytes()
    monkeypatch.setenv("IQA_PLUGIN_REGISTRY", str(registry))
    card = get_card(NAME)
    assert card.weights["model"].urls == [str(registry / f"{NAME}.safetensors")]  # the copy, not the export
    again = add_card(export)  # default registry: $IQA_PLUGIN_REGISTRY
    assert not again.changed and again.card == added.card


def test_add_defaults_to_the_user_registry_which_the_lookup_reads(export, tmp_path, monkeypatch):
    monkeypatch.delenv("IQA_PLUGIN_REGISTRY", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    added = add_card(export)
    assert added.card == tmp_path / "data" / "iqa_plugin" / "registry" / f"{NAME}.yaml"
    assert get_card(NAME).weights["model"].sha256 == yaml.safe_load(export.read_text())["weights"]["model"]["sha256"]


def test_a_different_card_of_the_same_name_needs_force(export, tmp_path):
    registry = tmp_path / "registry"
    add_card(export, registry)
    changed = tmp_path / "changed"
    shutil.copytree(export.parent, changed)
    card = changed / export.name
    _edit(card, card, description="retrained.")
    with pytest.raises(CardError, match=rf"already has a different '{NAME}' .*pass --force"):
        add_card(card, registry)
    assert add_card(card, registry, force=True).changed
    assert "retrained." in (registry / f"{NAME}.yaml").read_text()
    # a card of that name under another file name is found too, and replaced only with force
    (registry / "old-copy.yaml").write_text(export.read_text())
    with pytest.raises(CardError, match="old-copy.yaml"):
        add_card(card, registry)
    add_card(card, registry, force=True)
    assert not (registry / "old-copy.yaml").exists()


def test_bad_cards_and_weights_are_refused_and_nothing_is_copied(export, tmp_path):
    registry = tmp_path / "registry"
    damaged = tmp_path / "damaged"
    shutil.copytree(export.parent, damaged)
    weights = damaged / f"{NAME}.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    with pytest.raises(WeightsError, match="sha256 is"):
        add_card(damaged / export.name, registry)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match=f"weights .*{NAME}.safetensors do not exist"):
        add_card(damaged / export.name, registry)
    packaged = _edit(export, tmp_path / "shadow.yaml", name="qualiclip")
    with pytest.raises(CardError, match="shipped with iqa-plugin"):
        add_card(packaged, registry)
    invalid = _edit(export, tmp_path / "invalid.yaml", colour="blue")
    with pytest.raises(CardError, match="colour"):
        add_card(invalid, registry)
    data = yaml.safe_load(export.read_text())
    data["weights"]["model"]["urls"] = [f"../{NAME}.safetensors"]
    escaping = _edit(export, tmp_path / "escaping.yaml", weights=data["weights"])
    with pytest.raises(CardError, match="leaves the card's folder"):
        add_card(escaping, registry)
    assert not registry.exists() or not any(registry.iterdir())
