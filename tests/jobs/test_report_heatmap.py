"""The score report of an SFD-IQA output shows Feat-D's real-probability map next to each shown image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ray_jobs.report import write_report
from tests.jobs.test_report import _parse, make_collection, write_output

DEMO = "sfd-iqa-demo-tiny"


def _rows(photos, root: Path, sha: str) -> list[dict]:
    rows = [r for r in make_collection(photos[:2], root) if r["error"] is None]
    for row in rows:
        row.update(model=DEMO, weights_sha256=sha)
    return rows


def test_sfd_iqa_report_has_one_heat_map_per_shown_image(photos, tmp_path):
    from fsspec.implementations.local import LocalFileSystem

    from iqa_plugin.hub.cards import get_card

    sha = get_card(DEMO).weights["model"].sha256
    dst = str(tmp_path / "scores")
    write_output(LocalFileSystem(), dst, _rows(photos, tmp_path / "photos", sha), n_parts=1)
    page = Path(write_report(dst, thumbnails=2)).read_text()
    heats = [a for tag, a in _parse(page) if tag == "img" and a.get("class") == "heat"]
    assert len(heats) == 4 and all(a["src"].startswith("data:image/jpeg;base64,") for a in heats)
    assert "share of this card&#x27;s score: 0%" in page or "share of this card's score: 0%" in page  # the demo's card
    assert "shown for inspection only" in page
    plain = Path(write_report(dst, thumbnails=2, heatmaps=False)).read_text()
    assert 'class="heat"' not in plain and "heat-note" not in plain


def test_no_heat_maps_for_other_weights_than_recorded(photos, tmp_path):
    from fsspec.implementations.local import LocalFileSystem

    dst = str(tmp_path / "scores")
    write_output(LocalFileSystem(), dst, _rows(photos, tmp_path / "photos", "0" * 64), n_parts=1)
    assert 'class="heat"' not in Path(write_report(dst, thumbnails=2)).read_text()


def test_overlay_is_blue_where_real_and_red_where_generated():
    from iqa_plugin.inference.heatmap import feat_map_overlay

    gray = Image.new("RGB", (64, 32), (128, 128, 128))
    overlay = np.asarray(feat_map_overlay(gray, np.array([[0.0, 0.0, 1.0, 1.0]]), alpha=1.0))
    assert tuple(overlay[16, 2]) == (215, 48, 39) and tuple(overlay[16, 61]) == (69, 117, 180)
