"""``iqa models add`` end to end: a trained export added to the default user registry is served by
``pyiqa.create_metric`` in a fresh interpreter that imports nothing else, and by ``iqa score --model``
on the session's local Ray (whose workers read the same registry)."""

from __future__ import annotations

import os
import subprocess
import sys

import fsspec
import pytest
import torch
import yaml

from iqa_plugin import env
from ray_jobs.cli import main
from tests.helpers import read_output

NAME = "qualiclip-added-by-cli"


@pytest.fixture
def export(tmp_path):
    """A one-step tiny QualiCLIP export (weights named relative to the card, copied along by add)."""
    from iqa_plugin.training.export import qualiclip_card, write_export
    from iqa_plugin.training.qualiclip import QualiCLIPRecipe, QualiCLIPRecipeConfig

    torch.manual_seed(0)
    recipe = QualiCLIPRecipe(QualiCLIPRecipeConfig(arch="tiny"), total_steps=1)
    recipe.step(torch.rand(1, 2, 3, 3, 48, 48))
    fs = fsspec.filesystem("file", auto_mkdir=True)

    def card_for(uri, sha256, size):
        return qualiclip_card(NAME, uri, sha256, size, recipe.arch_options(NAME), {"steps": 1})

    _, card = write_export(fs, str(tmp_path / "export"), NAME, recipe.export_state(), card_for,
                           lambda p: p.rsplit("/", 1)[-1])  # fmt: skip
    return tmp_path / "export" / card


@pytest.fixture
def user_registry(monkeypatch):
    """The session's default user registry (conftest points XDG_DATA_HOME at a fresh folder before Ray
    starts); the card added here is removed afterwards so other tests never see it."""
    monkeypatch.delenv("IQA_PLUGIN_REGISTRY", raising=False)
    registry = env.user_registry_dir()
    yield registry
    for leftover in registry.glob(f"{NAME}.*"):
        leftover.unlink()


@pytest.mark.slow
def test_added_export_is_served_by_pyiqa_and_the_score_job(export, user_registry, photos, tmp_path, ray_local, capsys):
    assert main(["models", "add", str(export)]) == 0
    out = capsys.readouterr().out
    assert f"{NAME} added as {user_registry / (NAME + '.yaml')}" in out and "IQA_PLUGIN_REGISTRY=" not in out, out
    assert main(["models", "add", str(export)]) == 0  # again: nothing changes
    assert f"{NAME} already in the registry" in capsys.readouterr().out

    photo = str(photos[0])
    code = f"import pyiqa\nm = pyiqa.create_metric({NAME!r}, device='cpu')\nprint(float(m({photo!r})))\n"
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "IQA_PLUGIN_OFFLINE": "1"})  # fmt: skip
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert 0.0 <= float(fresh.stdout.strip().splitlines()[-1]) <= 1.0

    src = tmp_path / "photos"
    src.mkdir()
    for p in photos[:2]:
        (src / p.name).write_bytes(p.read_bytes())
    scores = str(tmp_path / "scores")
    assert main(["score", str(src), "--out", scores, "--model", NAME, "--no-report", "--no-progress-bars"]) == 0
    table = read_output(scores)
    sha = yaml.safe_load(export.read_text())["weights"]["model"]["sha256"]
    assert set(table.column("model").to_pylist()) == {NAME} and set(table.column("weights_sha256").to_pylist()) == {sha}
    assert table.num_rows == 2 and all(0.0 <= s <= 1.0 for s in table.column("score").to_pylist())


def test_add_errors_are_one_line(export, tmp_path, capsys):
    assert main(["models", "add"]) == 2
    assert "add needs CARD" in capsys.readouterr().err
    assert main(["models", "add", str(tmp_path / "missing.yaml"), "--registry", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "no such card file" in err, err
    assert main(["models", "add", str(export), "--registry", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert f"serve it with IQA_PLUGIN_REGISTRY={tmp_path / 'r'}" in out, out  # not where the lookup reads
    changed = yaml.safe_load(export.read_text())
    changed["description"] = "another model"
    (tmp_path / "changed.yaml").write_text(yaml.safe_dump(changed))
    (tmp_path / f"{NAME}.safetensors").write_bytes((export.parent / f"{NAME}.safetensors").read_bytes())
    assert main(["models", "add", str(tmp_path / "changed.yaml"), "--registry", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "pass --force" in err, err
    assert main(["models", "add", str(tmp_path / "changed.yaml"), "--registry", str(tmp_path / "r"), "--force"]) == 0
    assert "another model" in (tmp_path / "r" / f"{NAME}.yaml").read_text()
    assert main(["models", str(export)]) == 2  # a card without 'add'
    assert main(["models"]) == 0  # the action is optional: a plain `iqa models` lists
