"""Installed is enough: in a fresh environment with the package installed (wheel, and the editable install
the README uses), a process that imports only pyiqa gets the plugin's networks on its very first
``create_metric`` and in ``list_models()``; a user's edits to DEFAULT_CONFIGS survive later registrations.

Each environment is a real ``python -m venv --system-site-packages`` with the project installed by pip
(``--no-deps``); its third-party dependencies are this test environment's site-packages, appended to
its path by a plain ``.pth`` (plain path lines do not run that directory's own ``.pth`` files, so the
project's install there, if any, stays inert).
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

from iqa_plugin.registration import TAKEN_OVER

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _venv(root: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(root)],
                   check=True, timeout=300)
    python = root / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    (Path(purelib) / "zz_test_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return python


def _pip_install(python: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                    "--no-build-isolation", "-q", *args], check=True, timeout=600)


def _run(python: Path, code: str, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["IQA_PLUGIN_OFFLINE"] = "1"
    result = subprocess.run([str(python), "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout


@pytest.fixture(scope="module")
def wheel_python(tmp_path_factory) -> Path:
    pytest.importorskip("hatchling")
    root = tmp_path_factory.mktemp("wheel-env")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(root / "dist"), str(ROOT)], check=True, timeout=300)
    python = _venv(root / "venv")
    _pip_install(python, str(next((root / "dist").glob("iqa_plugin-*.whl"))))
    return python


@pytest.fixture(scope="module")
def editable_python(tmp_path_factory) -> Path:
    pytest.importorskip("hatchling")
    python = _venv(tmp_path_factory.mktemp("editable-env") / "venv")
    _pip_install(python, "-e", str(ROOT))
    return python


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


def test_wheel_first_create_metric_is_the_plugins(wheel_python, fabricated, tmp_path):
    module, arch, sha, path = _first_call(wheel_python, tmp_path, "qualiclip",
                                          pretrained_model_path=str(fabricated["qualiclip"]))
    assert (module, arch) == ("iqa_plugin.inference.contract", "IqaPluginQualiCLIP")
    assert len(sha) == 64
    assert str(wheel_python.parents[1]) in path  # the installed copy, not this checkout


@pytest.mark.parametrize("name", [n for n in TAKEN_OVER if n != "qualiclip"])
def test_wheel_first_create_metric_for_every_name(wheel_python, tmp_path, name):
    module, arch, sha, _ = _first_call(wheel_python, tmp_path, name, pretrained=False)
    assert (module, arch, sha) == ("iqa_plugin.inference.contract", "IqaPluginQualiCLIP", "None")


def test_editable_first_create_metric_is_the_plugins(editable_python, fabricated, tmp_path):
    module, arch, _, path = _first_call(editable_python, tmp_path, "qualiclip+", pretrained_model_path=str(
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


def test_user_edits_to_default_configs_are_never_overwritten(wheel_python, tmp_path):
    assert _run(wheel_python, USER_EDITS, tmp_path).strip().endswith("ok")


def test_autoload_can_be_switched_off(wheel_python, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["IQA_PLUGIN_AUTOLOAD"] = "0"
    code = "import sys; print('iqa_plugin' in sys.modules)"
    result = subprocess.run([str(wheel_python), "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
