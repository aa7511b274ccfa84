"""From per-image scores to the numbers a paper reports: one :func:`summarize_metric` per metric.

Each metric is judged on the images it scored (images it failed on are counted, never guessed); the
table says ``n`` so a reader sees when metrics were compared on different subsets. Sets with groups
(the synthetic benchmark's distortion kinds) also get a per-group SRCC/KRCC/PLCC with an SRCC interval.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from iqa_plugin.eval.datasets import MosItem
from iqa_plugin.eval.stats import correlations


def summarize_metric(items: Sequence[MosItem], scores: Sequence[float | None], failures: Sequence[str | None], *,
                     lower_better: bool, bootstrap: int, confidence: float = 0.95,
                     seed: int = 0) -> dict[str, Any]:
    """Agreement of one metric with ``items``' human scores, overall and per group.

    Args:
        items: the rated images.
        scores: the metric's score per item (``None`` where it failed).
        failures: the reason code per item where it failed (``None`` where scored).
        lower_better: the metric's direction (its scores are negated for the coefficients).
        bootstrap / confidence / seed: see :func:`iqa_plugin.eval.stats.correlations`.

    Returns:
        ``{"overall": {...}, "per_group": {group: {...}}, "n_scored", "n_failed", "failures_by_reason"}``
        (coefficients direction-corrected; ``None`` where undefined).
    """
    if not (len(items) == len(scores) == len(failures)):
        raise ValueError(f"items, scores and failures differ in length ({len(items)}, {len(scores)}, {len(failures)})")
    scored = [(item, float(score)) for item, score in zip(items, scores, strict=True) if score is not None]
    pred = np.array([s for _, s in scored], dtype=np.float64)
    mos = np.array([item.mos for item, _ in scored], dtype=np.float64)
    overall = correlations(pred, mos, lower_better=lower_better, bootstrap=bootstrap, confidence=confidence,
                           seed=seed).to_dict()
    groups: dict[str, list[int]] = defaultdict(list)
    for index, (item, _) in enumerate(scored):
        if item.group is not None:
            groups[item.group].append(index)
    per_group = {}
    for group, index in groups.items():
        c = correlations(pred[index], mos[index], lower_better=lower_better, bootstrap=bootstrap,
                         confidence=confidence, seed=seed, ci_for=("srcc",))
        per_group[group] = {k: v for k, v in c.to_dict().items() if k in ("n", "srcc", "krcc", "plcc", "ci")}
    reasons = Counter(reason for reason in failures if reason is not None)
    return {"overall": overall, "per_group": per_group, "n_scored": len(scored),
            "n_failed": sum(reasons.values()), "failures_by_reason": dict(sorted(reasons.items()))}


def scatter_points(items: Sequence[MosItem], scores: Sequence[float | None], limit: int,
                   seed: int = 0) -> list[tuple[float, float]]:
    """At most ``limit`` ``(score, mos)`` pairs for a plot, a seeded uniform subsample when there are more."""
    pairs = [(float(s), item.mos) for item, s in zip(items, scores, strict=True) if s is not None]
    if len(pairs) <= limit:
        return pairs
    keep = np.sort(np.random.default_rng(seed).choice(len(pairs), size=limit, replace=False))
    return [pairs[i] for i in keep]


def group_names(items: Sequence[MosItem]) -> list[str]:
    """The groups of ``items`` in first-seen order."""
    return list(dict.fromkeys(item.group for item in items if item.group is not None))


def ranking(metrics: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Metric names by overall SRCC, best first (undefined last)."""
    def key(name: str) -> float:
        value = metrics[name]["overall"].get("srcc")
        return -value if value is not None else float("inf")

    return sorted(metrics, key=key)
