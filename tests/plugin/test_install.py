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

from iqa_plugin.registration import TAKEN_OVER

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _run(python: Path, code: str, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["IQA_PLUGIN_OFFLINE"] = "1"
    result = subprocess.run([str(python), "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout


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
    code = FIRST_CALL.format(names=set(TAKEN_OVER), first=name, kwargs=kwargs)
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
