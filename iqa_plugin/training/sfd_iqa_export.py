"""From a trained :class:`~iqa_plugin.training.sfd.SFDTrainer` to an SFD-IQA metric: tensors and card.

The SFD recipe's own discriminator export (``feat_d.*``, ``tg_d.*``) needs CLIP's text tower again to turn
the learned prompt context into text features. :func:`sfd_iqa_tensors` adds those features
(``tg_d.text_features``, ``[2, D]``, real first), so the metric runs on the image tower alone, and can embed
a small frozen image tower (``clip_model.visual.*``) so that one file is the whole model.
:func:`sfd_iqa_card` writes the metric card (arch ``IqaPluginSFDIQA``) over such a file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from iqa_plugin.training.sfd import SFDTrainer

__all__ = ["sfd_iqa_card", "sfd_iqa_options", "sfd_iqa_tensors"]


def sfd_iqa_tensors(trainer: SFDTrainer, *, embed_clip: bool = False) -> dict[str, torch.Tensor]:
    """The trainer's discriminator export plus the LPP text features (and the frozen image tower under
    ``clip_model.`` when ``embed_clip``: for small models whose CLIP is not a published file)."""
    tensors = trainer.discriminator_state()
    tg_d = getattr(trainer.tg_d, "module", trainer.tg_d)
    with torch.no_grad():
        tensors["tg_d.text_features"] = tg_d.text_features().detach().cpu()
    if embed_clip:
        clip = trainer.clip.clip
        tensors.update({f"clip_model.visual.{k}": v.detach().cpu() for k, v in clip.visual.state_dict().items()})
        tensors["clip_model.logit_scale"] = clip.logit_scale.detach().cpu()
    return tensors


def sfd_iqa_options(trainer: SFDTrainer, vision: dict | None = None) -> dict[str, Any]:
    """The metric card's ``arch_options`` for the trainer's discriminators (``vision``: the reduced image
    tower's shape when the CLIP is not RN50)."""
    options = dict(trainer.discriminator_options())
    options["feat_stages"] = list(options["feat_stages"])
    if vision is not None:
        options["vision"] = dict(vision)
    return options


def sfd_iqa_card(
    name: str, weights_uri: str, sha256: str, size: int, arch_options: Mapping[str, Any], description: str,
    clip_weights: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A metric card (``iqa_plugin.hub.cards.ModelCard`` fields) serving an SFD discriminator export as
    ``pyiqa.create_metric(name)``. ``clip_weights``: the ``'clip'`` weights entry (urls, sha256, ...)."""
    from iqa_plugin.training.export import _trained_card

    card = _trained_card(name, "metric", "IqaPluginSFDIQA", (weights_uri, sha256, size), arch_options, 32, "", {})
    if clip_weights is not None:
        card["weights"]["clip"] = dict(clip_weights)
    card.update(score_range=[0.0, 1.0], lower_better=False, metric_mode="NR", description=description)
    return card
