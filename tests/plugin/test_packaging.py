"""The wheel: cards shipped inside it, entry points, and `iqa models` from the installed wheel (offline)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip("hatchling")
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True,
        timeout=300,
    )
    (path,) = out.glob("iqa_plugin-*.whl")
    return path


def test_wheel_contents(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    cards = {Path(n).name for n in names if n.startswith("iqa_plugin/_registry/") and n.endswith(".yaml")}
    assert {f"{n}.yaml" for n in ("qualiclip", "qualiclip+", "qualiclip+-clive", "qualiclip+-flive", "qualiclip+-spaq")} <= cards
    assert any(n.startswith("ray_jobs/") for n in names)
    assert not any(n.startswith(("tests/", "bench/")) for n in names)
    # the autoload .pth sits at the site-packages root (only there does Python run it), once
    assert [n for n in names if n.endswith(".pth")] == ["iqa_plugin_autoload.pth"]
    entry_points = next(zipfile.ZipFile(wheel).read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert "[pyiqa.archs]" in entry_points and "iqa_plugin.registration:register" in entry_points
    assert "iqa = ray_jobs.cli:main" in entry_points


def test_installed_wheel_lists_models(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        check=True,
        timeout=300,
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    code = (
        "import iqa_plugin, sys; from iqa_plugin.hub.cards import packaged_registry_dir;"
        "print(iqa_plugin.__file__); print(packaged_registry_dir());"
        "from ray_jobs.cli import main; sys.exit(main(['models']))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith(str(site)) and lines[1].startswith(str(site)), lines[:2]
    assert "_registry" in lines[1]
    for name in ("qualiclip", "qualiclip+-spaq"):
        assert any(line.split()[:1] == [name] for line in lines), result.stdout
