"""Evaluation metrics behind one interface, per-metric summaries and the Markdown / HTML outputs."""

from __future__ import annotations

import re

import numpy as np
import pytest

from iqa_plugin.eval.datasets import MosItem
from iqa_plugin.eval.metrics import MetricError, build_scorer, metric_info, weights_key
from iqa_plugin.eval.summary import ranking, scatter_points, summarize_metric


def test_metric_families_directions_and_unknown_names():
    assert metric_info("psnr").full_reference and not metric_info("psnr").lower_better
    piqe = metric_info("piqe")
    assert (piqe.family, piqe.full_reference, piqe.lower_better) == ("pyiqa", False, True)
    assert metric_info("qualiclip").family == "plugin"
    assert metric_info("random").family == "baseline"
    with pytest.raises(MetricError, match="no such metric. Did you mean psnr"):
        metric_info("psnrr")


def test_baselines_are_deterministic_and_mean_brightness_is_the_mean():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 30, 3), dtype=np.uint8) for _ in range(3)]
    random = build_scorer("random")
    first = random.score_arrays(images)
    assert first == random.score_arrays(images) and len(set(first)) == 3 and all(0 <= s < 1 for s in first)
    brightness = build_scorer("mean_brightness").score_arrays(images)
    assert brightness == pytest.approx([float(i.mean()) / 255 for i in images], rel=1e-6)


def test_pyiqa_metrics_score_like_pyiqa_itself(photos):
    import pyiqa

    from iqa_plugin.data.images import array_to_tensor, load_image

    reference = (load_image(str(photos[0]))[:, :96, :96].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    noisy = np.clip(reference + np.random.default_rng(1).normal(0, 20, reference.shape), 0, 255).astype(np.uint8)
    psnr = build_scorer("psnr")
    ours = psnr.score_arrays([noisy], refs=[reference])[0]
    theirs = pyiqa.create_metric("psnr", device="cpu")(array_to_tensor(noisy)[None], array_to_tensor(reference)[None])
    assert ours == pytest.approx(float(theirs), rel=1e-6)
    with pytest.raises(MetricError, match="full-reference"):
        psnr.score_arrays([noisy])
    piqe = build_scorer("piqe").score_arrays([reference, noisy])
    direct = pyiqa.create_metric("piqe", device="cpu")
    assert piqe == pytest.approx([float(direct(array_to_tensor(a)[None])) for a in (reference, noisy)], rel=1e-6)


def test_weights_key_follows_the_checkpoint(fabricated, tmp_path):
    from iqa_plugin.hub.weights import sha256_file

    key = weights_key("qualiclip", str(fabricated["qualiclip"]))
    assert key == sha256_file(fabricated["qualiclip"])
    changed = tmp_path / "other.pth"
    data = fabricated["qualiclip"].read_bytes()
    changed.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert weights_key("qualiclip", str(changed)) != key
    assert weights_key("psnr").startswith("pyiqa-") and weights_key("random") == "baseline-v1"


def _items(levels: list[int], groups: list[str]) -> list[MosItem]:
    return [MosItem(id=f"{g}{i}", uri=f"/x/{g}{i}", mos=-float(level), group=g)
            for g in groups for i, level in enumerate(levels)]


def test_summary_per_group_direction_and_failures():
    items = _items([1, 2, 3, 4, 5] * 2, ["blur", "noise"])
    levels = np.array([-i.mos for i in items])
    scores = list(levels)  # a lower-is-better "metric" that is exactly the level
    scores[3] = None
    failures = [None] * len(items)
    failures[3] = "truncated"
    summary = summarize_metric(items, scores, failures, lower_better=True, bootstrap=50)
    assert summary["overall"]["srcc"] == pytest.approx(1.0) and summary["overall"]["n"] == 19
    assert summary["per_group"]["blur"]["srcc"] == pytest.approx(1.0)
    assert set(summary["per_group"]["noise"]["ci"]) == {"srcc"}
    assert (summary["n_failed"], summary["failures_by_reason"]) == (1, {"truncated": 1})
    wrong_way = summarize_metric(items, list(levels), [None] * len(items), lower_better=False, bootstrap=0)
    assert wrong_way["overall"]["srcc"] == pytest.approx(-1.0)
    assert ranking({"a": wrong_way, "b": summary}) == ["b", "a"]
    assert len(scatter_points(items, list(levels), limit=7)) == 7


def _results() -> dict:
    items = _items([1, 2, 3, 4, 5] * 3, ["blur", "jpeg"])
    levels = [-i.mos for i in items]
    rng = np.random.default_rng(0)
    metrics = {
        "good": summarize_metric(items, levels, [None] * len(items), lower_better=True, bootstrap=30),
        "random": summarize_metric(items, list(rng.random(len(items))), [None] * len(items), lower_better=False,
                                   bootstrap=30),
    }
    for m in metrics.values():
        m.update(lower_better=False, family="x")
    return {"dataset": {"name": "demo", "source": "/data", "n_items": len(items), "n_skipped": 1,
                        "skipped_by_reason": {"missing_file": 1},
                        "skipped": [{"row": "a.jpg", "reason": "missing_file", "detail": "/data/a.jpg"}]},
            "metrics": metrics, "ranking": ranking(metrics), "groups": ["blur", "jpeg"],
            "scatter": {n: [[float(v), -float(v)] for v in levels] for n in metrics},
            "config": {"bootstrap": 30}}


def test_markdown_table_lists_every_metric_with_intervals_and_groups():
    from ray_jobs.eval.render import markdown

    text = markdown(_results())
    assert text.splitlines()[0] == "### demo: 30 rated images, 1 rows skipped (missing_file 1)"
    good = next(line for line in text.splitlines() if line.startswith("| good "))
    assert re.search(r"\| 30 \| 1\.000 \[1\.000, 1\.000\] \|", good)
    assert "| blur | 1.00 |" in text and "| jpeg | 1.00 |" in text


def test_html_page_is_self_contained_with_bars_and_scatters():
    from ray_jobs.eval.render import html_page

    page = html_page(_results())
    assert "<script" not in page and not re.search(r'(src|href)="https?://', page)
    assert page.count('class="bar"') == 2 * 3  # 2 metrics x (2 groups + overall), nan bars left out
    assert page.count('class="scatter"') == 2 and page.count("<circle") == 2 * 30
    assert "a.jpg: missing_file" in page
