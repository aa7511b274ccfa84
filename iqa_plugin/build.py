"""Card -> arch -> weights -> ready network: the one builder behind every front door.

pyiqa's ``create_metric`` (through :mod:`iqa_plugin.registration`), :class:`iqa_plugin.BatchScorer`, the
jobs and the exports all call :func:`build_network`. It reads the card
(:mod:`iqa_plugin.hub.cards`), takes the class from the one arch table (:data:`iqa_plugin.archs.ARCHS`),
builds it with the card's ``arch_options`` updated by the caller's options, resolves each weights file
through :mod:`iqa_plugin.hub.weights` (mirrors, sha256, cache, offline) and loads it, then wraps it in the
card's input contract (:class:`iqa_plugin.inference.contract.CardNetwork`) in eval mode.

Weights of an arch load in one of two ways:

* the default: the ``'model'`` file (``key`` taken as the card says) must be the arch's exact state dict
  (``load_state_dict(strict=True)``): enough for our own safetensors exports;
* an arch whose published files have another layout implements :class:`LoadsCardWeights`
  (``load_card_weights(files, card)``; QualiCLIP splits one checkpoint into CLIP and prompt features).

Overriding files: ``pretrained_model_path`` replaces the ``'model'`` file and ``<role>_model_path``
(e.g. ``base_model_path``) the file of another role; a user's file is not checked against the card's
sha256 (it is meant to be another file), and its own sha256 is computed for ``weights_sha256``.

>>> net = build_network("qualiclip", pretrained=False)  # random weights, no download  # doctest: +SKIP
>>> net(torch.rand(1, 3, 64, 64)).shape  # doctest: +SKIP
torch.Size([1, 1])
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from iqa_plugin.archs import arch_class
from iqa_plugin.hub.cards import ModelCard, get_card
from iqa_plugin.inference.contract import CardNetwork

__all__ = ["LoadsCardWeights", "build_network", "override_option"]

PathLike = str | os.PathLike[str]


@runtime_checkable
class LoadsCardWeights(Protocol):
    """An arch whose published checkpoint is not its own state dict loads it itself."""

    def load_card_weights(self, files: Mapping[str, Path], card: ModelCard) -> None:
        """Load ``files`` (role -> local, verified path; every role of ``card.weights``) into ``self``."""
        ...


def override_option(role: str) -> str:
    """The keyword that replaces the file of ``role``: ``pretrained_model_path`` for ``'model'`` (pyiqa's
    name), ``<role>_model_path`` for the others."""
    return "pretrained_model_path" if role == "model" else f"{role}_model_path"


def _pop_overrides(card: ModelCard, options: dict[str, Any], model_path: PathLike | None) -> dict[str, PathLike]:
    overrides: dict[str, PathLike] = {} if model_path is None else {"model": model_path}
    for key in [k for k in options if k.endswith("_model_path")]:
        role = key[: -len("_model_path")]
        value = options.pop(key)
        if value is None:
            continue
        if role not in card.weights:
            roles = ", ".join(override_option(r) for r in sorted(card.weights))
            raise ValueError(
                f"{key} is not used by {card.name!r} (its weights files are: {sorted(card.weights)}). "
                f"Fix: pass one of {roles}."
            )
        overrides[role] = value
    return overrides


def _load_default(network: nn.Module, files: Mapping[str, Path], card: ModelCard) -> None:
    from iqa_plugin.hub.weights import load_state_dict

    path = files["model"]
    state = load_state_dict(path, key=card.weights["model"].key)
    fix = "Fix: pass the checkpoint exported for this card, or correct the card's arch/arch_options."
    try:
        result = network.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        detail = "; ".join(line.strip() for line in str(exc).splitlines()[1:4])
        raise ValueError(f"{path}: weights do not match arch {card.arch} of card {card.name!r}: {detail}. {fix}") from exc
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{path}: weights do not match arch {card.arch} of card {card.name!r}: "
            f"{len(result.missing_keys)} missing (e.g. {result.missing_keys[:3]}), "
            f"{len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[:3]}). {fix}"
        )


def _weights_sha256(card: ModelCard, overrides: Mapping[str, PathLike], path: Path) -> str:
    """The card's sha256 (already verified by the resolver) unless the user gave the file or the card
    publishes none; then computed once here."""
    published = card.weights["model"].sha256
    if "model" not in overrides and published is not None:
        return published
    from iqa_plugin.hub.weights import sha256_file

    return sha256_file(path)


def build_network(
    card_or_name: ModelCard | str,
    *,
    pretrained: bool = True,
    pretrained_model_path: PathLike | None = None,
    device: str | torch.device | None = None,
    **options: Any,
) -> CardNetwork:
    """The ready network of a model card: arch built, weights loaded and verified, eval mode.

    Args:
        card_or_name: a :class:`~iqa_plugin.hub.cards.ModelCard` or the name of a known card.
        pretrained: load the card's weights; ``False`` keeps the arch's random initialisation.
        pretrained_model_path: replaces the card's ``'model'`` file (local path, http(s) or fsspec URL).
        device: where the network goes (default: stays on CPU).
        **options: ``<role>_model_path`` for the card's other files; the rest update the card's
            ``arch_options`` and go to the arch's constructor.

    Returns:
        A :class:`~iqa_plugin.inference.contract.CardNetwork`: ``forward`` takes RGB ``[B, 3, H, W]``
        in [0, 1]; ``weights_sha256`` names the ``'model'`` file (None when ``pretrained=False``).

    Raises:
        UnknownCardError: no card has that name (lists close ones).
        ValueError: an unknown arch, an override for a role the card does not have, weights that do
            not fit the arch.
        WeightsError: the weights cannot be fetched or verified (see :mod:`iqa_plugin.hub.weights`).
    """
    card = get_card(card_or_name) if isinstance(card_or_name, str) else card_or_name
    options = dict(options)
    overrides = _pop_overrides(card, options, pretrained_model_path)
    network = arch_class(card.arch)(**{**card.arch_options, **options})
    sha256 = None
    if pretrained:
        from iqa_plugin.hub.weights import resolve_card_weights

        files = {
            role: resolve_card_weights(card, role=role, override=None if role not in overrides else str(overrides[role]))
            for role in card.weights
        }
        if isinstance(network, LoadsCardWeights):
            network.load_card_weights(files, card)
        else:
            _load_default(network, files, card)
        sha256 = _weights_sha256(card, overrides, files["model"])
    built = CardNetwork(network, card, sha256).eval()
    if device is not None:
        built = built.to(device)
    return built
