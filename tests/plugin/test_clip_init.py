"""QualiCLIP training initialised from OpenAI's CLIP RN50 (the paper's start) through its card, on a
fabricated ``RN50.pt`` in OpenAI's TorchScript layout; the archive is read without running it."""

from __future__ import annotations

import warnings
import zipfile

import pytest
import torch
import torch.nn.functional as F
import yaml

from iqa_plugin.hub.torchscript import TorchScriptError, load_torchscript_state_dict
from iqa_plugin.hub.weights import WeightsOfflineError, sha256_file
from iqa_plugin.training.qualiclip import QualiCLIPRecipe, QualiCLIPRecipeConfig


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    from iqa_plugin.testing import fabricate_openai_clip_archive

    return fabricate_openai_clip_archive(tmp_path_factory.mktemp("openai") / "RN50.pt", seed=3)


@pytest.fixture(scope="module")
def expected(archive):
    """What the archive holds, as TorchScript itself loads it (the reference for the reader)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {k: v.clone() for k, v in torch.jit.load(str(archive), map_location="cpu").state_dict().items()}


@pytest.fixture
def card_registry(archive, tmp_path, monkeypatch):
    """A registry holding a card shaped like registry/clip_rn50_openai.yaml, pointing at the fabricated file."""
    packaged = yaml.safe_load(open("registry/clip_rn50_openai.yaml"))
    packaged["name"] = "clip_rn50_fabricated"
    packaged["weights"]["model"].update(urls=[str(archive)], sha256=sha256_file(archive))
    (tmp_path / "registry").mkdir()
    (tmp_path / "registry" / "clip_rn50_fabricated.yaml").write_text(yaml.safe_dump(packaged))
    monkeypatch.setenv("IQA_PLUGIN_REGISTRY", str(tmp_path / "registry"))
    return "clip_rn50_fabricated"


def test_reader_gives_the_archives_state_dict_without_running_it(archive, expected, tmp_path):
    state = load_torchscript_state_dict(archive)
    assert set(state) == set(expected) and "visual.attnpool.positional_embedding" in state
    assert all(torch.equal(state[k], expected[k]) and state[k].dtype == expected[k].dtype for k in expected)
    assert state["visual.conv1.weight"].dtype == torch.float16 and int(state["context_length"]) == 77
    # an archive whose pickle names any other callable is refused, not run
    hostile = tmp_path / "hostile.pt"
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(hostile, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            target.writestr(item, b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85R." if item.filename.endswith("/data.pkl") else data)
    with pytest.raises(TorchScriptError, match=r"refusing to unpickle os\.system"):
        load_torchscript_state_dict(hostile)


def test_rn50_recipe_starts_from_openai_clip_through_its_card(card_registry, expected):
    from open_clip.tokenizer import tokenize

    from iqa_plugin.archs.clip_backbone import build_rn50_clip
    from iqa_plugin.archs.prompts import PROMPTS

    torch.manual_seed(0)
    recipe = QualiCLIPRecipe(QualiCLIPRecipeConfig(arch="rn50", init=card_registry), total_steps=2)
    weights = {k: v.float() for k, v in expected.items() if k not in ("input_resolution", "context_length", "vocab_size")}
    visual = recipe.net.tower.visual.state_dict()
    assert all(torch.equal(visual[k], weights[f"visual.{k}"]) for k in visual)  # the image tower: OpenAI's
    exported = recipe.export_state()
    text_keys = [k for k in weights if not k.startswith("visual.") and k != "logit_scale"]
    assert text_keys and all(torch.equal(exported[f"clip_model.{k}"], weights[k]) for k in text_keys)
    # prompt features: the 14 prompts through the archive's frozen text tower, computed once
    reference = build_rn50_clip()
    reference.load_state_dict(weights)
    with torch.no_grad():
        features = F.normalize(reference.encode_text(tokenize(list(PROMPTS))).float(), dim=-1)
    torch.testing.assert_close(recipe.net.prompt_features, features)
    assert recipe.frozen_bn  # init from a pretrained CLIP: BatchNorm frozen by default

    before = recipe.net.tower.visual.layer4[0].conv1.weight.clone()
    recipe.step(torch.rand(1, 2, 2, 3, 64, 64))
    assert not torch.equal(recipe.net.tower.visual.layer4[0].conv1.weight, before)  # the image tower trains
    assert torch.equal(recipe.net.prompt_features, features)  # the prompts do not
    assert all(torch.equal(recipe.export_state()[f"clip_model.{k}"], weights[k]) for k in text_keys)


def test_the_openai_card_offline_names_url_cache_path_and_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("IQA_PLUGIN_OFFLINE", "1")
    with pytest.raises(WeightsOfflineError) as caught:
        QualiCLIPRecipe(QualiCLIPRecipeConfig(arch="rn50", init="clip_rn50_openai"), total_steps=1)
    message = str(caught.value)
    assert "https://openaipublic.azureedge.net/clip/models/afeb0e10" in message
    assert str(tmp_path / "weights-cache" / "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762" / "RN50.pt") in message
    assert "IQA_PLUGIN_CACHE" in message

