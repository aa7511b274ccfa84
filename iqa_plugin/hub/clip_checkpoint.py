"""The one reader of CLIP weights, shared by everything that starts from a CLIP (QualiCLIP training's
``init``, SFD's frozen discriminator backbone).

A source is a model card name (``clip_rn50_openai``: OpenAI's RN50, sha256-verified and cached like any
card's weights), a local file or a URL. Files, recognised by their content:

* OpenAI's TorchScript archive (``RN50.pt``, fp16): its tensors are read without running the archive
  (:mod:`iqa_plugin.hub.torchscript`); the non-weight entries ``input_resolution``, ``context_length`` and
  ``vocab_size`` are dropped, as open_clip's ``build_model_from_openai_state_dict`` does;
* a QualiCLIP checkpoint (``QualiCLIP.pth`` or an export of our recipe): ``clip_model.<key>`` tensors plus
  ``prompts_features`` [14, D], which are returned too;
* a plain state dict in OpenAI's key names (``.pth`` or ``.safetensors``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import torch

__all__ = ["OPENAI_EXTRA_KEYS", "ClipCheckpoint", "clip_weights_path", "read_clip_checkpoint"]

#: Entries of OpenAI's archives that are model sizes, not weights.
OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")
_PREFIX = "clip_model."


class ClipCheckpoint(NamedTuple):
    state: dict[str, torch.Tensor]  # OpenAI key names, floating tensors in fp32
    prompt_features: torch.Tensor | None  # [14, D] when the file stores them (QualiCLIP layout)
    path: Path  # the local file read


def clip_weights_path(source: str | os.PathLike[str]) -> Path:
    """The local file of ``source``: an existing file, a card's weights (downloaded into the cache and
    verified when needed) or a URL's (likewise).

    Raises:
        UnknownCardError: ``source`` is neither a file, a URL nor a card name (lists close card names).
        WeightsOfflineError / WeightsError: the weights are not cached and cannot be downloaded; the
            message names the URL, the path expected in the cache and ``IQA_PLUGIN_CACHE``.
    """
    from iqa_plugin.hub.cards import UnknownCardError, get_card
    from iqa_plugin.hub.weights import resolve_card_weights, resolve_weights

    local = Path(os.fspath(source)).expanduser()
    if local.is_file():
        return local
    if "://" in str(source):
        return resolve_weights(str(source))
    try:
        card = get_card(str(source))
    except UnknownCardError as error:
        raise UnknownCardError(f"{source!r} is not a file, and {error}") from None
    return resolve_card_weights(card, "model")


def read_clip_checkpoint(source: str | os.PathLike[str]) -> ClipCheckpoint:
    """The CLIP state dict (and stored prompt features) of ``source``; see the module docstring.

    Raises:
        WeightsError: the file cannot be read safely; as :func:`clip_weights_path` otherwise.
    """
    from iqa_plugin.hub.weights import load_state_dict

    path = clip_weights_path(source)
    state = load_state_dict(path)
    features = state.pop("prompts_features", None)
    if features is not None and (features.ndim != 2 or features.shape[0] != 14):
        raise ValueError(f"{path}: 'prompts_features' has shape {tuple(features.shape)}, expected [14, D]")
    if any(k.startswith(_PREFIX) for k in state):
        state = {k[len(_PREFIX) :]: v for k, v in state.items() if k.startswith(_PREFIX)}
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items() if k not in OPENAI_EXTRA_KEYS}
    return ClipCheckpoint(state, features, path)
