"""Export of a trained model: a safetensors file plus a model card that the registry serves.

The card names the weights by URI (a local absolute path or an fsspec URL such as ``s3://...``) with
their sha256 and size, and records how the model was made (recipe config, data, command, validation
figures) in ``description`` so that ``iqa models`` and a reader of the YAML see it.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping
from typing import Any

import torch
import yaml

from iqa_plugin.archs.clip_backbone import CLIP_MEAN, CLIP_STD

__all__ = ["qualiclip_card", "safetensors_bytes", "sfd_discriminator_card", "sr_card", "write_export"]


def safetensors_bytes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> bytes:
    """The safetensors serialisation of ``tensors`` (contiguous CPU copies), deterministic for equal input."""
    from safetensors.torch import save

    return save({k: v.detach().cpu().contiguous() for k, v in sorted(tensors.items())}, metadata=dict(metadata or {}))


def _made_here(provenance: Mapping[str, Any]) -> str:
    return "\n".join(f"{key}: {json.dumps(value, sort_keys=True, default=str)}" for key, value in provenance.items())


def qualiclip_card(
    name: str, weights_uri: str, sha256: str, size: int, arch_options: Mapping[str, Any], provenance: Mapping[str, Any]
) -> dict[str, Any]:
    """A metric card (``iqa_plugin.hub.cards.ModelCard`` fields) for a QualiCLIP model trained here."""
    return {
        "name": name,
        "kind": "metric",
        "arch": "IqaPluginQualiCLIP",
        "arch_options": dict(arch_options),
        "weights": {"model": {"urls": [weights_uri], "sha256": sha256, "bytes": size, "format": "safetensors"}},
        "license": "trained with iqa-plugin's QualiCLIP recipe; licence of the weights follows the training images",
        "paper": "arXiv:2403.11176",
        "input": {
            "color": "RGB", "value_range": [0.0, 1.0], "min_side": 32, "resize": "native",
            "mean": list(CLIP_MEAN), "std": list(CLIP_STD),
        },  # fmt: skip
        "score_range": [0.0, 1.0],
        "lower_better": False,
        "metric_mode": "NR",
        "description": "QualiCLIP-style model trained by iqa-plugin (NOT the paper's published weights).\n"
        + _made_here(provenance),
    }


def _trained_card(name: str, kind: str, arch: str, weights: tuple[str, str, int], arch_options: Mapping[str, Any],
                  min_side: int, description: str, provenance: Mapping[str, Any]) -> dict[str, Any]:
    uri, sha256, size = weights
    return {
        "name": name,
        "kind": kind,
        "arch": arch,
        "arch_options": dict(arch_options),
        "weights": {"model": {"urls": [uri], "sha256": sha256, "bytes": size, "format": "safetensors"}},
        "license": "trained with iqa-plugin's SFD recipe; licence of the weights follows the training images",
        "paper": "arXiv:2503.19295",
        "input": {"color": "RGB", "value_range": [0.0, 1.0], "min_side": min_side, "resize": "native"},
        "description": description + "\n" + _made_here(provenance),
    }


def sr_card(
    name: str, weights_uri: str, sha256: str, size: int, arch_options: Mapping[str, Any], provenance: Mapping[str, Any]
) -> dict[str, Any]:
    """An SR card (kind ``sr``, arch ``IqaPluginRRDBNet``) for a generator trained by ``iqa train sfd``:
    served by ``iqa_plugin.create_sr_model(name)`` and ``iqa upscale --model name``."""
    description = (f"x{arch_options.get('scale')} RRDBNet generator trained by iqa-plugin's SFD recipe (NOT the "
                   "paper's published weights); official ESRGAN/SFD key layout.")
    return _trained_card(name, "sr", "IqaPluginRRDBNet", (weights_uri, sha256, size), arch_options, 1, description,
                         provenance)


def sfd_discriminator_card(
    name: str, weights_uri: str, sha256: str, size: int, arch_options: Mapping[str, Any], provenance: Mapping[str, Any]
) -> dict[str, Any]:
    """A card of kind ``discriminator`` for SFD's trained Feat-D + LPP (the input of the SFD-IQA metric).

    The safetensors file holds ``feat_d.*`` (the :class:`~iqa_plugin.archs.sfd_disc.FeatD` state dict with
    spectral normalisation folded into plain ``weight`` tensors: build ``FeatD(channels, hidden,
    spectral_norm=False)``) and ``tg_d.*`` (the :class:`~iqa_plugin.archs.sfd_disc.TGD` state dict:
    ``prompt_learner.ctx`` ``[2, n_ctx, 512]``, ``prompt_learner.token_prefix`` / ``token_suffix`` and
    ``logit_scale``; prompt 0 is the real one). ``arch_options`` name the CLIP RN50 both sit on (``clip``:
    a card name or file; ``null`` = random weights, a test run whose export no metric can reuse), the
    CLIP stages Feat-D reads and the head sizes.
    """
    description = ("SFD's Feat-D and learnable prompt pair (TG-D) trained by iqa-plugin (NOT the paper's weights): "
                   "the SFD-IQA metric's discriminators. Keys feat_d.* (spectral norm folded) and tg_d.*; images "
                   "in [0, 1], CLIP's mean/std applied inside.")
    return _trained_card(name, "discriminator", "IqaPluginSFDDiscriminators", (weights_uri, sha256, size),
                         arch_options, 32, description, provenance)


def write_export(
    fs: Any, root: str, name: str, tensors: Mapping[str, torch.Tensor], card_for: Any, uri_of: Any,
    also: Mapping[str, Any] | None = None,
) -> tuple[str, str]:
    """Write ``<root>/<name>.safetensors`` and ``<root>/<name>.yaml`` on the fsspec ``fs``.

    Args:
        card_for: ``(weights_uri, sha256, size) -> card dict``.
        uri_of: ``path -> URI`` a reader can open again (absolute local path or ``s3://...``).
        also: more cards over the same weights file, ``{card name: card_for}`` (``<root>/<card name>.yaml``),
            written before the main card.

    Returns:
        ``(weights URI, card URI)``. The card is written last, so a card always points at complete weights.
    """
    blob = safetensors_bytes(tensors, {"format": "pt", "producer": "iqa-plugin"})
    weights_path = f"{root.rstrip('/')}/{name}.safetensors"
    card_path = f"{root.rstrip('/')}/{name}.yaml"
    with fs.open(weights_path, "wb") as handle:
        handle.write(blob)
    weights = (uri_of(weights_path), hashlib.sha256(blob).hexdigest(), len(blob))
    for other, other_card_for in (also or {}).items():
        _write_card(fs, f"{root.rstrip('/')}/{other}.yaml", other_card_for(*weights))
    _write_card(fs, card_path, card_for(*weights))
    return uri_of(weights_path), uri_of(card_path)


def _write_card(fs: Any, path: str, card: Mapping[str, Any]) -> None:
    text = io.StringIO()
    yaml.safe_dump(dict(card), text, sort_keys=False, width=110)
    with fs.open(path, "w") as handle:
        handle.write(text.getvalue())
