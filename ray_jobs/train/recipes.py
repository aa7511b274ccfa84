"""The recipes the one training harness can run: what each needs from the shards, and its Ray-free parts.

A recipe (in :mod:`iqa_plugin.training`) provides ``step(batch) -> metrics``, ``step_count``,
``state_dict()`` / ``load_state_dict()`` (every network, optimiser, EMA, step and RNG) and
``distribute(wrap)`` (wraps each trainable network with ``ray.train.torch.prepare_model``); the spec here
adds how shard rows become a batch on the worker's device, which rows it trains on, its validation, what
its export writes, and how the driver prints its progress.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

#: ``write(name, tensors, card_for, also=None) -> (weights URI, card URI)``: one safetensors file + its card in
#: the run's export folder, ``card_for(weights_uri, sha256, size) -> card dict``; ``also``: ``{card name:
#: card_for}``, more cards over the same file (see ``iqa_plugin.training.export.write_export``).
ExportWriter = Callable[..., tuple[str, str]]


@dataclass(frozen=True)
class RecipeSpec:
    """How the harness drives one recipe."""

    shards_kind: str
    config_class: type[BaseModel]
    build: Callable[[Any, int, str], Any]  # (recipe config, total steps, device) -> recipe
    materialize: Callable[[dict, str], Any]  # (numpy batch of shard rows, device) -> batch
    excluded: Callable[[Any], tuple[str, ...]]  # recipe config -> distortion kinds skipped in training
    validator: Callable[[Any, list[str], int, int], Callable[[Any], dict[str, float]]]  # -> recipe -> metrics
    #: (recipe, card name, provenance, write) -> URI of the main card, written LAST (its existence marks
    #: the run finished); other files of the export are written before it.
    export: Callable[[Any, str, dict[str, Any], ExportWriter], str]
    progress: Callable[[dict[str, Any]], str]  # rank 0's reported metrics -> the middle of a progress line
    summary: Callable[[dict[str, Any]], str]  # last metrics -> figures for the final line ('' when none)
    front_door: str  # how the export is used, '{name}' replaced by the card name
    check_shards: Callable[[dict[str, Any], Any], None] = lambda manifest, config: None  # ValueError: unusable
    #: the recipe's YAML fields -> the same with machine-dependent choices (``auto``) made concrete; run in
    #: the driver before Ray starts, so every worker gets the same value and the export records it
    resolve: Callable[[dict[str, Any]], dict[str, Any]] = lambda recipe: recipe


def _qualiclip_validator(config: Any, images: list[str], crop: int, seed: int) -> Callable[[Any], dict[str, float]]:
    from iqa_plugin.data.degradations import KINDS
    from iqa_plugin.data.images import load_image
    from iqa_plugin.training.validate import build_validation_set, degradation_srcc

    validation = build_validation_set([load_image(p) for p in images], KINDS, crop=crop, crops=2, seed=seed)
    held_out = set(config.exclude_distortions)

    def validate(recipe: Any) -> dict[str, float]:
        figures = degradation_srcc(recipe.score, validation)
        out = {"val_srcc": figures["pooled"], "val_pristine_above": figures["pristine_above"]}
        out.update({f"val_srcc/{kind}": value for kind, value in figures["per_kind"].items()})
        seen = [v for k, v in figures["per_kind"].items() if k not in held_out]
        unseen = [v for k, v in figures["per_kind"].items() if k in held_out]
        out["val_srcc_trained_kinds_mean"] = sum(seen) / len(seen) if seen else float("nan")
        if unseen:
            out["val_srcc_held_out_kinds_mean"] = sum(unseen) / len(unseen)
        return out

    return validate


def _qualiclip_export(recipe: Any, name: str, provenance: dict[str, Any], write: ExportWriter) -> str:
    from iqa_plugin.training.export import qualiclip_card

    def card_for(uri: str, sha256: str, size: int) -> dict:
        return qualiclip_card(name, uri, sha256, size, recipe.arch_options(name), provenance)

    return write(name, recipe.export_state(), card_for)[1]


def _qualiclip_progress(item: dict[str, Any]) -> str:
    cross = f" cross {item['cross_sample']:.4f}" if "cross_sample" in item else ""  # the optional non-paper term
    line = (f"loss {item['loss']:.4f} (cons {item['consistency']:.4f} pos {item['positive']:.4f} "
            f"neg {item['negative']:.4f}{cross}) lr {item['lr']:.2e}")  # fmt: skip
    if "val_srcc" in item:
        line += f" | val SRCC {item['val_srcc']:.3f} pristine-above {item['val_pristine_above']:.2f}"
    return line


def _qualiclip_summary(metrics: dict[str, Any]) -> str:
    srcc = metrics.get("val_srcc")
    return f", held-out SRCC(score, level) {srcc:.3f}" if isinstance(srcc, float) else ""


def _qualiclip_spec() -> RecipeSpec:
    from iqa_plugin.data.materialize import materialize_qualiclip_batch
    from iqa_plugin.training.qualiclip import QualiCLIPRecipe, QualiCLIPRecipeConfig

    return RecipeSpec(
        shards_kind="qualiclip",
        config_class=QualiCLIPRecipeConfig,
        build=lambda config, steps, device: QualiCLIPRecipe(config, total_steps=steps, device=device),
        materialize=materialize_qualiclip_batch,
        excluded=lambda config: tuple(config.exclude_distortions),
        validator=_qualiclip_validator,
        export=_qualiclip_export,
        progress=_qualiclip_progress,
        summary=_qualiclip_summary,
        front_door="pyiqa.create_metric('{name}')",
    )


def _sfd_spec() -> RecipeSpec:
    from ray_jobs.train import sfd_spec

    return sfd_spec.spec()


_SPECS: dict[str, Callable[[], RecipeSpec]] = {"qualiclip": _qualiclip_spec, "sfd": _sfd_spec}


def recipe_spec(name: str) -> RecipeSpec:
    """The spec of recipe ``name`` (imports torch and the recipe only when asked)."""
    if name not in _SPECS:
        raise ValueError(f"unknown recipe {name!r}; expected one of {sorted(_SPECS)}")
    return _SPECS[name]()


def default_validation_images() -> list[str]:
    """flower.jpg and grace_hopper.jpg (scikit-learn, matplotlib) when installed: photos the demo
    shards leave out, so validation measures photos the model never saw."""
    from iqa_plugin.testing import real_photo_paths

    return [str(p) for p in real_photo_paths() if p.name in ("flower.jpg", "grace_hopper.jpg")]
