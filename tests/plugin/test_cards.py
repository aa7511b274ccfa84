"""Model card schema and registry: packaged cards, validation errors naming the file, extra directory."""

from __future__ import annotations

import hashlib
import re
import warnings
from pathlib import Path

import pytest
import yaml

from iqa_plugin.hub import cards
from iqa_plugin.hub.cards import CardError, ModelCard, UnknownCardError, get_card, list_cards, load_card_file

QUALICLIP_SHA = "5818e085ac4b3d297cdd183fd2b1d8a4ddb2242e5bb7fd24b2cd66d7d132bc7e"
FIVE = {"qualiclip", "qualiclip+", "qualiclip+-clive", "qualiclip+-flive", "qualiclip+-spaq"}


def _card_dict(name: str = "my-metric", **changes) -> dict:
    data = {
        "name": name,
        "kind": "metric",
        "arch": "IqaPluginQualiCLIP",
        "arch_options": {"model_type": "qualiclip"},
        "weights": {"model": {"urls": ["https://example.invalid/w.safetensors"], "format": "safetensors"}},
        "license": "Apache-2.0",
        "paper": "arXiv:2403.11176",
        "score_range": [0.0, 1.0],
    }
    data.update(changes)
    return data


def _write(directory: Path, filename: str, data) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / filename
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def test_packaged_cards_validate_and_the_five_names_exist(monkeypatch):
    monkeypatch.delenv("IQA_PLUGIN_REGISTRY", raising=False)
    found = {card.name: card for card in list_cards()}
    assert FIVE <= set(found)
    qualiclip_cards, sfd_iqa_cards = set(), set()
    for path in sorted(cards.packaged_registry_dir().glob("*.yaml")):
        card = load_card_file(path)  # re-validates every file, not just the cached ones
        if card.arch == "IqaPluginSFDIQA":
            sfd_iqa_cards.add(card.name)
            _check_sfd_iqa_card(card, path)
            continue
        if not card.name.startswith("qualiclip"):  # SFD's generator and the backbones have their own tests
            assert card.kind in ("sr", "backbone")
            continue
        assert card.arch == "IqaPluginQualiCLIP"
        if "-demo-" in card.name:  # a model trained by our recipe, shipped with its weights next to the card
            weights = Path(card.weights["model"].urls[0])
            assert weights.parent == path.parent and weights.suffix == ".safetensors"
            assert hashlib.sha256(weights.read_bytes()).hexdigest() == card.weights["model"].sha256
            assert "NOT the QualiCLIP paper's weights" in card.description and weights.stat().st_size <= 10_000_000
            continue
        qualiclip_cards.add(card.name)  # the published QualiCLIP cards: exactly the five pyiqa names
        assert card.arch_options == {"model_type": card.name}
        assert card.paper == "arXiv:2403.11176"
        assert card.score_range == (0.0, 1.0) and card.lower_better is False and card.metric_mode == "NR"
        assert card.input.resize == "native" and card.input.min_side == 32
        assert card.input.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
        assert "no license" in card.license
    assert qualiclip_cards == FIVE
    assert sfd_iqa_cards == {"sfd_iqa", "sfd-iqa-demo-tiny"}


def _check_sfd_iqa_card(card: ModelCard, path: Path) -> None:
    assert card.kind == "metric" and card.metric_mode == "NR" and card.lower_better is False
    assert card.score_range == (0.0, 1.0) and card.paper == "arXiv:2503.19295"
    assert card.input.min_side == 32 and card.input.resize == "native"
    if "-demo-" in card.name:  # trained by our SFD recipe, one self-contained file next to the card
        for role in ("model", "clip"):
            weights = path.parent / card.weights[role].urls[0]
            assert weights.suffix == ".safetensors" and weights.stat().st_size <= 10_000_000
            assert hashlib.sha256(weights.read_bytes()).hexdigest() == card.weights[role].sha256
        assert "NOT the SFD paper's weights" in card.description and "command: python bench/" in card.description
        assert len(re.findall(r"\b[0-9a-f]{64}\b", card.description)) >= 6 and "held out" in card.description
    else:  # the authors' release: a shared folder, fetched by hand
        assert card.weights["model"].manual_download and card.weights["model"].sha256 is None
        assert card.weights["clip"].sha256 == "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762"


def test_qualiclip_card_has_the_published_file():
    model = get_card("qualiclip").weights["model"]
    assert model.urls == [
        "https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main/QualiCLIP.pth",
        "https://github.com/miccunifi/QualiCLIP/releases/download/weights/qualiclip.pth",
    ]
    assert model.sha256 == QUALICLIP_SHA
    assert model.bytes == 408_494_502
    assert model.format == "pth" and model.key is None


@pytest.mark.parametrize(
    "name,suffix", [("qualiclip+", "koniq"), ("qualiclip+-clive", "clive"), ("qualiclip+-spaq", "spaq")]
)
def test_qualiclip_plus_cards_name_their_params_file_and_the_base(name, suffix):
    card = get_card(name)
    model = card.weights["model"]
    assert model.urls[0].endswith(f"QualiCLIP%2B_{suffix}.pth")
    assert model.sha256 is None and "not" in card.description and "published" in card.description
    assert model.bytes == 2_209_627 and model.key == "params"
    assert card.weights["base"] == get_card("qualiclip").weights["model"]


def test_unknown_name_suggests_close_names():
    with pytest.raises(UnknownCardError) as info:
        get_card("qualclip")
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    assert "Did you mean" in str(info.value) and "qualiclip" in str(info.value)


@pytest.mark.parametrize(
    "content,expected",
    [
        ("name: [unclosed", "not valid YAML"),
        ("- just\n- a list\n", "YAML mapping"),
        (_card_dict(colour="blue"), "colour"),
        (
            _card_dict(weights={"model": {"urls": ["https://x/w.pth"], "sha256": "ABC123"}}),
            "64 lowercase hex",
        ),
        (
            _card_dict(weights={"model": {"urls": ["https://x/w.pth"], "sha256": "A" * 64}}),
            "weights.model.sha256",
        ),
        (_card_dict(weights={"model": {"urls": []}}), "weights.model.urls"),
        (_card_dict(weights={"base": {"urls": ["https://x/w.pth"]}}), "'model' entry"),
        (_card_dict(kind="metric", score_range=None), "score_range"),
        (_card_dict(name="my_fid_metric"), "FID"),
        (_card_dict(input={"resize": "bilinear"}), "input.resize"),
    ],
)
def test_bad_card_error_names_the_file_and_the_field(tmp_path, content, expected):
    path = _write(tmp_path, "broken-card.yaml", content)
    with pytest.raises(CardError) as info:
        load_card_file(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_a_valid_card_round_trips(tmp_path):
    path = _write(tmp_path, "mine.yaml", _card_dict(input={"resize": [224, 224], "mean": [0.5, 0.5, 0.5]}))
    card = load_card_file(path)
    assert isinstance(card, ModelCard)
    assert card.input.resize == (224, 224) and card.weights["model"].format == "safetensors"


def test_extra_registry_dir_is_read_on_each_call(tmp_path, monkeypatch):
    extra = tmp_path / "extra-cards"
    _write(extra, "mine.yaml", _card_dict("my-metric"))
    monkeypatch.delenv("IQA_PLUGIN_REGISTRY", raising=False)
    with pytest.raises(UnknownCardError):
        get_card("my-metric")
    monkeypatch.setenv("IQA_PLUGIN_REGISTRY", str(extra))
    assert get_card("my-metric").arch_options == {"model_type": "qualiclip"}
    names = [card.name for card in list_cards()]
    assert FIVE <= set(names) and names[-1] == "my-metric"
    assert cards.card_path("my-metric") == extra / "mine.yaml"


def test_extra_card_reusing_a_packaged_name_is_an_error_naming_both_files(tmp_path, monkeypatch):
    extra = tmp_path / "extra-cards"
    clash = _write(extra, "shadow.yaml", _card_dict("qualiclip"))
    monkeypatch.setenv("IQA_PLUGIN_REGISTRY", str(extra))
    with pytest.raises(CardError) as info:
        list_cards()
    message = str(info.value)
    assert str(clash) in message and str(cards.packaged_registry_dir() / "qualiclip.yaml") in message


def test_two_extra_cards_with_one_name_is_an_error(tmp_path, monkeypatch):
    extra = tmp_path / "extra-cards"
    first = _write(extra, "a.yaml", _card_dict("twin"))
    second = _write(extra, "b.yaml", _card_dict("twin"))
    monkeypatch.setenv("IQA_PLUGIN_REGISTRY", str(extra))
    with pytest.raises(CardError, match="twin") as info:
        get_card("twin")
    assert str(first) in str(info.value) and str(second) in str(info.value)


def test_registry_env_pointing_nowhere_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("IQA_PLUGIN_REGISTRY", str(tmp_path / "missing"))
    with pytest.raises(CardError, match="IQA_PLUGIN_REGISTRY"):
        list_cards()


def test_lenient_listing_skips_an_invalid_card_with_one_warning(tmp_path, monkeypatch):
    """What the pyiqa registration uses: a bad extra card never hides the others; strict callers still fail."""
    extra = tmp_path / "extra-cards"
    bad = _write(extra, "bad.yaml", _card_dict("broken-card", colour="blue"))
    _write(extra, "unreadable.yaml", "name: [unclosed")
    _write(extra, "good.yaml", _card_dict("my-metric"))
    monkeypatch.setenv("IQA_PLUGIN_REGISTRY", str(extra))
    monkeypatch.setattr(cards, "_WARNED", set())
    with pytest.warns(cards.CardWarning) as record:
        names = {card.name for card in list_cards(skip_invalid=True)}
    assert FIVE | {"my-metric"} <= names and "broken-card" not in names
    messages = [str(w.message) for w in record]
    assert len(messages) == 2 and all("\n" not in m for m in messages)
    assert any(str(bad) in m and "colour" in m for m in messages)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reported once per process, not on every call
        list_cards(skip_invalid=True)
        assert get_card("my-metric").name == "my-metric"
    with pytest.raises(CardError, match="colour"):
        get_card("broken-card")
    with pytest.raises(CardError, match="colour"):
        list_cards()


def test_lenient_listing_survives_a_registry_env_pointing_nowhere(tmp_path, monkeypatch):
    monkeypatch.setenv("IQA_PLUGIN_REGISTRY", str(tmp_path / "missing"))
    monkeypatch.setattr(cards, "_WARNED", set())
    with pytest.warns(cards.CardWarning, match="IQA_PLUGIN_REGISTRY"):
        assert FIVE <= {card.name for card in list_cards(skip_invalid=True)}
    with pytest.raises(CardError, match="IQA_PLUGIN_REGISTRY"):
        get_card("my-metric")
