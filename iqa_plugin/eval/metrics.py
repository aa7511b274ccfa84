"""The metrics an evaluation can compare, behind one interface: ``score_arrays(arrays, refs=None)``.

Three families, told apart by name:

* **plugin metrics** (``qualiclip``, ``qualiclip+``, a user-trained card): the fast
  :class:`iqa_plugin.inference.scorer.BatchScorer`;
* **built-in pyiqa metrics** (``niqe``, ``psnr``, ``ssim``, ``piqe``, ...): ``pyiqa.create_metric``, one
  image per call; full-reference ones (``metric_mode: FR``) get the reference image in ``refs``;
* **baselines** that show the harness can fail a metric: ``random`` (a uniform number derived from the
  image's pixels, so it is deterministic) and ``mean_brightness`` (mean pixel value in [0, 1]).

The cache key of a metric's scores is ``(name, weights_key(name), image content hash)``;
:func:`weights_key` is known before any model is built, so cached images never reach a model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

#: Names of the baseline scores (no model, no weights).
BASELINES = ("random", "mean_brightness")
_BASELINE_VERSION = "baseline-v1"  # bump when a baseline's formula changes, so cached scores are redone


class MetricError(ValueError):
    """A metric name or its weights cannot be used (the message names it and the fix)."""


@dataclass(frozen=True)
class MetricInfo:
    """What the driver must know about a metric before scoring: family, reference, direction."""

    name: str
    family: Literal["plugin", "pyiqa", "baseline"]
    full_reference: bool
    lower_better: bool


def _plugin_names() -> set[str]:
    from iqa_plugin.registration import register

    return set(register())


def metric_info(name: str) -> MetricInfo:
    """Family, reference mode and direction of ``name`` (builds no network, downloads nothing).

    Raises:
        MetricError: ``name`` is neither a baseline, a plugin metric nor a pyiqa metric (close names listed).
    """
    if name in BASELINES:
        return MetricInfo(name, "baseline", False, False)
    plugin = _plugin_names()
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    entry = DEFAULT_CONFIGS.get(name)
    if entry is None:
        import difflib

        known = sorted(set(DEFAULT_CONFIGS) | set(BASELINES))
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise MetricError(f"--model {name}: no such metric.{hint} Expected a plugin metric ({', '.join(sorted(plugin))}), "
                          f"a pyiqa metric (pyiqa.list_models()) or a baseline ({', '.join(BASELINES)}).")
    return MetricInfo(name, "plugin" if name in plugin else "pyiqa", entry.get("metric_mode", "NR") == "FR",
                      bool(entry.get("lower_better", False)))


def weights_key(name: str, weights: str | None = None) -> str:
    """The identity of the weights ``name`` scores with, for the score cache.

    Plugin metrics: the sha256 of every weight file of the card (verified, resolved from the card or from
    ``weights``), so a changed checkpoint gets new scores. Built-in pyiqa metrics: ``pyiqa-<version>``
    (their weights are pinned by the pyiqa release), plus the sha256 of ``weights`` when given.
    Baselines: a version string.
    """
    info = metric_info(name)
    if info.family == "baseline":
        return _BASELINE_VERSION
    from iqa_plugin.hub.weights import resolve_weights, sha256_file

    if info.family == "pyiqa":
        import pyiqa

        base = f"pyiqa-{pyiqa.__version__}"
        return base if weights is None else f"{base}-{sha256_file(resolve_weights(weights))}"
    from iqa_plugin.hub.cards import get_card
    from iqa_plugin.hub.weights import resolve_card_weights

    card = get_card(name)
    digests = []
    for role in sorted(card.weights):
        override = weights if role == "model" else None
        path = resolve_card_weights(card, role=role, override=override)
        digest = card.weights[role].sha256 if override is None and card.weights[role].sha256 else sha256_file(path)
        digests.append(digest)
    return digests[0] if len(digests) == 1 else hashlib.sha256("+".join(digests).encode()).hexdigest()


def content_hash(data: bytes) -> str:
    """The cache's image identity: sha256 of the file's bytes."""
    return hashlib.sha256(data).hexdigest()


def _unit_float(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    return array.astype(np.float32)


class BaselineScorer:
    """``random`` or ``mean_brightness`` with the scorer interface."""

    def __init__(self, name: str) -> None:
        if name not in BASELINES:
            raise MetricError(f"{name!r} is not a baseline; expected one of {BASELINES}")
        self.model_name = name
        self.weights_sha256: str | None = _BASELINE_VERSION

    def score_arrays(self, arrays: Sequence[np.ndarray], refs: Sequence[np.ndarray] | None = None) -> list[float]:
        if self.model_name == "mean_brightness":
            return [float(_unit_float(a).mean()) for a in arrays]
        digests = (hashlib.sha256(np.ascontiguousarray(a).tobytes()).digest() for a in arrays)
        return [int.from_bytes(d[:8], "little") / 2.0**64 for d in digests]


class PyiqaScorer:
    """A built-in pyiqa metric with the scorer interface (one image per forward pass)."""

    def __init__(self, name: str, *, device: str = "cpu", weights: str | None = None) -> None:
        import pyiqa

        options: dict[str, Any] = {"device": device}
        if weights is not None:
            options["pretrained_model_path"] = weights
        try:
            self.metric = pyiqa.create_metric(name, **options)
        except Exception as error:  # pyiqa downloads weights at construction; offline that fails here
            raise MetricError(f"--model {name}: pyiqa could not build it ({type(error).__name__}: "
                              f"{str(error).splitlines()[0][:200]}). Weight-free pyiqa metrics work offline "
                              "(psnr, ssim, piqe, gmsd, vif, fsim); others need their weights in "
                              "~/.cache/torch/hub/pyiqa or --weights.") from None
        self.model_name = name
        self.weights_sha256: str | None = weights_key(name, weights)
        self.full_reference = self.metric.metric_mode == "FR"

    def score_arrays(self, arrays: Sequence[np.ndarray], refs: Sequence[np.ndarray] | None = None) -> list[float]:
        import torch

        from iqa_plugin.data.images import array_to_tensor

        if self.full_reference and (refs is None or len(refs) != len(arrays)):
            raise MetricError(f"{self.model_name} is a full-reference metric: give one reference per image")
        scores = []
        with torch.inference_mode():
            for index, array in enumerate(arrays):
                x = array_to_tensor(array)[None]
                if self.full_reference:
                    assert refs is not None
                    value = self.metric(x, array_to_tensor(refs[index])[None])
                else:
                    value = self.metric(x)
                scores.append(float(value.reshape(-1)[0]))
        return scores


class PluginScorer:
    """A plugin metric through :class:`iqa_plugin.inference.scorer.BatchScorer` (``refs`` ignored: NR)."""

    def __init__(self, name: str, *, device: str = "cpu", weights: str | None = None, **kwargs: Any) -> None:
        from iqa_plugin.inference.scorer import BatchScorer

        if weights is not None:
            kwargs["pretrained_model_path"] = weights
        self.scorer = BatchScorer(name, device=device, **kwargs)
        self.model_name = name
        self.weights_sha256 = self.scorer.weights_sha256

    def score_arrays(self, arrays: Sequence[np.ndarray], refs: Sequence[np.ndarray] | None = None) -> list[float]:
        return self.scorer.score_arrays(arrays)


def build_scorer(name: str, *, device: str = "cpu", weights: str | None = None,
                 **plugin_kwargs: Any) -> BaselineScorer | PyiqaScorer | PluginScorer:
    """The scorer of ``name`` on ``device``; ``plugin_kwargs`` go to ``BatchScorer`` (dtype, batch_size, ...)."""
    family = metric_info(name).family
    if family == "baseline":
        return BaselineScorer(name)
    if family == "pyiqa":
        return PyiqaScorer(name, device=device, weights=weights)
    return PluginScorer(name, device=device, weights=weights, **plugin_kwargs)
