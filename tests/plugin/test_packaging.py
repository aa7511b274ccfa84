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


def _pyproject() -> dict:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _requirement_names(requirements: list[str]) -> set[str]:
    import re

    return {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def test_a_user_install_declares_what_the_demo_and_cli_import():
    """`iqa score --demo` / `iqa eval --synthetic` read sample photos (iqa_plugin.testing.real_photo_paths):
    `.[all]` must bring them without the test extra; tqdm and typing_extensions are imported by the package."""
    project = _pyproject()["project"]
    assert {"tqdm", "typing-extensions"} <= _requirement_names(project["dependencies"])
    extras = project["optional-dependencies"]
    (all_extras,) = extras["all"]
    in_all = set(all_extras.split("[", 1)[1].rstrip("]").split(","))
    user_packages = set().union(*(_requirement_names(extras[name]) for name in in_all))
    assert {"scikit-image", "scikit-learn", "matplotlib"} <= user_packages


def test_no_module_needs_python_3_11_typing():
    """requires-python is >=3.10: typing.Self (3.11+) comes from typing_extensions."""
    import ast

    assert _pyproject()["project"]["requires-python"] == ">=3.10"
    offenders = []
    for path in [*(ROOT / "iqa_plugin").rglob("*.py"), *(ROOT / "ray_jobs").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "typing":
                offenders += [f"{path}: typing.{a.name}" for a in node.names if a.name in {"Self", "LiteralString",
                                                                                           "Never", "assert_never",
                                                                                           "reveal_type", "Required",
                                                                                           "NotRequired"}]
            if isinstance(node, ast.Attribute) and node.attr == "Self" and getattr(node.value, "id", "") == "typing":
                offenders.append(f"{path}: typing.Self")
    assert not offenders, offenders


def test_pyiqa_photos_are_found_through_its_distribution_and_are_real_photos():
    """bench/bench_train_qualiclip.py trains on pyiqa's 9 installed photos too: they are found through the
    installed distribution's file list (pyiqa is a runtime dependency), decode, and are photo-sized."""
    from PIL import Image

    from iqa_plugin.testing import PYIQA_PHOTOS, pyiqa_photo_paths

    paths = pyiqa_photo_paths()
    assert len(paths) == len(PYIQA_PHOTOS), (
        f"found {len(paths)} of pyiqa's {len(PYIQA_PHOTOS)} photos; pyiqa 0.1.16's wheel installs them: "
        "pip install pyiqa==0.1.16"
    )
    assert all(p.as_posix().endswith(rel) for p, rel in zip(paths, PYIQA_PHOTOS, strict=True))
    for path in paths:
        with Image.open(path) as image:
            assert image.mode == "RGB" and min(image.size) >= 384, (path, image.size, image.mode)
