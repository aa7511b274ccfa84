"""Installed is enough: in a fresh environment with the package installed (wheel, and the editable install
the README uses), a process that imports only pyiqa gets the plugin's networks on its very first
``create_metric`` and in ``list_models()``; a user's edits to DEFAULT_CONFIGS survive later registrations.

The environments are the session fixtures ``wheel_env_python`` and ``editable_env_python`` of
tests/conftest.py (a real venv, the project installed by pip).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from iqa_plugin.hub.cards import list_cards
from iqa_plugin.registration import TAKEN_OVER

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

#: metric cards only this plugin defines (qualiclip-demo-tiny: its weights ship with the package, no network)
PLUGIN_ONLY = sorted(c.name for c in list_cards() if c.kind == "metric" and c.name not in TAKEN_OVER)


def _run(python: Path, code: str, cwd: Path, stderr: bool = False, **env_vars: str):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "IQA_PLUGIN_REGISTRY")}
    env["IQA_PLUGIN_OFFLINE"] = "1"
    env.update(env_vars)
    result = subprocess.run([str(python), "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return (result.stdout, result.stderr) if stderr else result.stdout


FIRST_CALL = """
import sys
assert "iqa_plugin" in sys.modules, "the installed .pth did not run"
assert "torch" not in sys.modules and "pyiqa" not in sys.modules, "interpreter start must stay light"
import pyiqa
assert {names!r} <= set(pyiqa.list_models()), pyiqa.list_models()
metric = pyiqa.create_metric({first!r}, device="cpu", **{kwargs!r})
print(type(metric.net).__module__, type(metric.net.network).__name__, metric.net.weights_sha256)
print(sys.modules["iqa_plugin"].__file__)
"""


def _first_call(python: Path, cwd: Path, name: str, **kwargs) -> list[str]:
    code = FIRST_CALL.format(names={*TAKEN_OVER, *PLUGIN_ONLY}, first=name, kwargs=kwargs)
    return _run(python, code, cwd).split()


def test_wheel_first_create_metric_is_the_plugins(wheel_env_python, fabricated, tmp_path):
    module, arch, sha, path = _first_call(wheel_env_python, tmp_path, "qualiclip",
                                          pretrained_model_path=str(fabricated["qualiclip"]))
    assert (module, arch) == ("iqa_plugin.inference.contract", "IqaPluginQualiCLIP")
    assert len(sha) == 64
    assert str(wheel_env_python.parents[1]) in path  # the installed copy, not this checkout


@pytest.mark.parametrize("name", [n for n in TAKEN_OVER if n != "qualiclip"])
def test_wheel_first_create_metric_for_every_name(wheel_env_python, tmp_path, name):
    module, arch, sha, _ = _first_call(wheel_env_python, tmp_path, name, pretrained=False)
    assert (module, arch, sha) == ("iqa_plugin.inference.contract", "IqaPluginQualiCLIP", "None")


def test_plugin_only_names_are_listed():
    assert "qualiclip-demo-tiny" in PLUGIN_ONLY  # the shipped demo card; the check below must not be empty


#: the card of each name, to know its arch and whether its weights can only be had by hand
CARDS = {c.name: c for c in list_cards()}

MANUAL_FIRST_CALL = """
import pyiqa
assert {name!r} in pyiqa.list_models()
try:
    pyiqa.create_metric({name!r}, device="cpu")
except Exception as error:
    print(type(error).__name__, "manual/{name}/" in str(error))
"""


@pytest.mark.parametrize("name", PLUGIN_ONLY)
def test_wheel_first_create_metric_for_plugin_only_names(wheel_env_python, tmp_path, name):
    """A name pyiqa does not know at all is listed and built on the first call, with its shipped weights;
    a card whose weights are published only by hand (sfd_iqa) is listed, and its first call says where the
    file must go."""
    card = CARDS[name]
    if any(w.manual_download for w in card.weights.values()):
        assert _run(wheel_env_python, MANUAL_FIRST_CALL.format(name=name), tmp_path).split() == ["WeightsError", "True"]
        return
    module, arch, sha, _ = _first_call(wheel_env_python, tmp_path, name)
    assert (module, arch) == ("iqa_plugin.inference.contract", card.arch)
    assert len(sha) == 64


BAD_CARD_IN_REGISTRY = """
import pyiqa
from iqa_plugin.hub.cards import CardError, get_card
assert "qualiclip" in pyiqa.list_models()
metric = pyiqa.create_metric("qualiclip", device="cpu", pretrained=False)
print(type(metric.net.network).__name__)
try:
    get_card("broken-card")
except CardError as exc:
    print("CardError", "colour" in str(exc))
"""


def test_an_invalid_extra_card_never_breaks_import_pyiqa(wheel_env_python, tmp_path):
    registry = tmp_path / "cards"
    registry.mkdir()
    bad = registry / "bad.yaml"
    bad.write_text("name: broken-card\nkind: metric\ncolour: blue\n")
    out, err = _run(wheel_env_python, BAD_CARD_IN_REGISTRY, tmp_path, stderr=True, IQA_PLUGIN_REGISTRY=str(registry))
    assert out.split() == ["IqaPluginQualiCLIP", "CardError", "True"]  # valid names work; the bad one still errs
    warned = [line for line in err.splitlines() if str(bad) in line]
    assert len(warned) == 1 and "CardWarning" in warned[0] and "colour" in warned[0], err
    assert len(err.strip().splitlines()) == 1, err  # ONE line, not a traceback


def test_editable_first_create_metric_is_the_plugins(editable_env_python, fabricated, tmp_path):
    module, arch, _, path = _first_call(editable_env_python, tmp_path, "qualiclip+", pretrained_model_path=str(
        fabricated["qualiclip+"]), base_model_path=str(fabricated["qualiclip"]))
    assert (module, arch) == ("iqa_plugin.inference.contract", "IqaPluginQualiCLIP")
    assert path == str(ROOT / "iqa_plugin" / "__init__.py")


USER_EDITS = """
import pyiqa
from pyiqa.default_model_configs import DEFAULT_CONFIGS
DEFAULT_CONFIGS["qualiclip"]["metric_opts"]["temperature"] = 1.0
DEFAULT_CONFIGS["qualiclip+-spaq"] = {**DEFAULT_CONFIGS["qualiclip+-spaq"], "score_range": "0, 2"}
metric = pyiqa.create_metric("qualiclip", device="cpu", pretrained=False)  # loads the entry point
assert metric.net.network.temperature == 1.0, metric.net.network.temperature
import iqa_plugin
served = iqa_plugin.register()  # any later registration, too
assert "qualiclip" in served and "qualiclip+-spaq" in served
assert DEFAULT_CONFIGS["qualiclip"]["metric_opts"]["temperature"] == 1.0
assert DEFAULT_CONFIGS["qualiclip+-spaq"]["score_range"] == "0, 2"
assert pyiqa.create_metric("qualiclip+-spaq", device="cpu", pretrained=False).score_range == "0, 2"
print("ok")
"""


def test_user_edits_to_default_configs_are_never_overwritten(wheel_env_python, tmp_path):
    assert _run(wheel_env_python, USER_EDITS, tmp_path).strip().endswith("ok")


def test_autoload_can_be_switched_off(wheel_env_python, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["IQA_PLUGIN_AUTOLOAD"] = "0"
    code = "import sys; print('iqa_plugin' in sys.modules)"
    result = subprocess.run([str(wheel_env_python), "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
