"""The recipes the one training harness can run: what each needs from the shards, and its Ray-free parts.

A recipe (in :mod:`iqa_plugin.training`) provides ``step(batch) -> metrics``, ``state_dict()``,
``load_state_dict()``, ``distribute(wrap)``, ``export_state()`` and ``arch_options(name)``; the spec here
adds how shard rows become a batch on the worker's device, which rows it trains on, and its validation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel


@dataclass(frozen=True)
class RecipeSpec:
    """How the harness drives one recipe."""

    shards_kind: str
    config_class: type[BaseModel]
    build: Callable[[Any, int, str], Any]  # (recipe config, total steps, device) -> recipe
    materialize: Callable[[dict, str], Any]  # (numpy batch of shard rows, device) -> batch
    excluded: Callable[[Any], tuple[str, ...]]  # recipe config -> distortion kinds skipped in training
    validator: Callable[[Any, list[str], int, int], Callable[[Any], dict[str, float]]]  # -> recipe -> metrics


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
    )


_SPECS: dict[str, Callable[[], RecipeSpec]] = {"qualiclip": _qualiclip_spec}


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
