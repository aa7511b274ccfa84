"""Pixel and perceptual losses for super-resolution.

The perceptual loss compares frozen-backbone features of the SR output and the HR target. Backbones:

* ``'vgg19'``: torchvision's ImageNet VGG19 (card ``vgg19_imagenet`` or a file), features before the
  activation, ESRGAN/BasicSR's default ``conv5_4`` with weight 1;
* ``'clip'``: the frozen CLIP RN50 stage maps (the one under SFD's discriminators can be shared), for
  when the VGG19 file is not available (it cannot be downloaded everywhere);
* ``'auto'``: VGG19 when its file is already in the cache or placed by hand, else CLIP; never downloads.
"""

from __future__ import annotations

import logging
import os
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DEFAULT_CLIP_LAYERS", "DEFAULT_VGG_LAYERS", "PerceptualLoss", "pixel_loss", "resolve_backbone",
           "vgg19_available"]

log = logging.getLogger(__name__)

#: ESRGAN / BasicSR / SeD: VGG19 conv5_4 (before ReLU), weight 1, L1.
DEFAULT_VGG_LAYERS: dict[str, float] = {"conv5_4": 1.0}
#: CLIP fallback: the two middle stages Feat-D also reads (no published choice exists).
DEFAULT_CLIP_LAYERS: dict[str, float] = {"layer2": 1.0, "layer3": 1.0}
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_VGG19_BLOCKS = (2, 2, 4, 4, 4)


def pixel_loss(sr: torch.Tensor, hr: torch.Tensor, kind: Literal["l1", "l2"] = "l1") -> torch.Tensor:
    """Mean absolute (``l1``, ESRGAN/SeD) or squared (``l2``) error."""
    if kind == "l1":
        return F.l1_loss(sr, hr)
    if kind == "l2":
        return F.mse_loss(sr, hr)
    raise ValueError(f"kind={kind!r}: expected 'l1' or 'l2'")


def vgg19_layer_names() -> list[str]:
    """Names of ``torchvision.models.vgg19().features`` entries in order: conv1_1, relu1_1, ..., pool5."""
    names = []
    for block, convs in enumerate(_VGG19_BLOCKS, start=1):
        for i in range(1, convs + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
        names.append(f"pool{block}")
    return names


def vgg19_available(card_name: str = "vgg19_imagenet") -> bool:
    """Whether the card's VGG19 file is already on this machine (cache or hand-placed); never downloads."""
    from iqa_plugin.hub.cards import get_card
    from iqa_plugin.hub.weights import cache_path_for

    entry = get_card(card_name).weights["model"]
    return any(cache_path_for(url, sha256=entry.sha256).is_file() for url in entry.urls)


def _vgg19_features(weights: str | os.PathLike | None, depth: int) -> nn.Sequential:
    from torchvision.models import vgg19

    features = vgg19(weights=None).features[:depth]
    if weights is not None:
        from iqa_plugin.hub.cards import UnknownCardError, get_card
        from iqa_plugin.hub.weights import load_state_dict, resolve_card_weights, resolve_weights

        try:
            path = resolve_card_weights(get_card(str(weights)), "model")
        except UnknownCardError:
            path = resolve_weights(weights)
        state = {k[len("features."):]: v for k, v in load_state_dict(path).items() if k.startswith("features.")}
        wanted = set(features.state_dict())
        if not wanted <= set(state):
            raise ValueError(f"{path}: not a torchvision VGG19 state dict (missing {sorted(wanted - set(state))[:3]})")
        features.load_state_dict({k: state[k] for k in wanted})
    return features


def resolve_backbone(backbone: str, vgg_weights: str | os.PathLike | None = "vgg19_imagenet") -> str:
    """The concrete backbone ``'auto'`` stands for on this machine: ``'vgg19'`` when ``vgg_weights`` is a
    file or a card whose file is already cached or placed by hand (never downloads), else ``'clip'``. Other
    values are returned as they are. A distributed job resolves it once in the driver, so that every worker
    trains with the same loss."""
    if backbone != "auto":
        return backbone
    found = vgg_weights is not None and (os.path.isfile(vgg_weights) or vgg19_available(str(vgg_weights)))
    return "vgg19" if found else "clip"


class PerceptualLoss(nn.Module):
    """Weighted feature distance between SR and HR through a frozen backbone; ``forward(sr, hr) -> scalar``.

    Args:
        backbone: ``'auto'``, ``'vgg19'`` or ``'clip'`` (module docstring).
        layers: layer name -> weight; VGG19 names as :func:`vgg19_layer_names`, CLIP names ``layer1..4``.
            Default :data:`DEFAULT_VGG_LAYERS` or :data:`DEFAULT_CLIP_LAYERS`.
        criterion: ``'l1'`` (BasicSR's default) or ``'l2'``.
        vgg_weights: card name or file of the VGG19 weights; None keeps random weights (tests only).
        clip: a :class:`~iqa_plugin.archs.sfd_disc.FrozenCLIP` to share; a random one is built when None.
    """

    def __init__(self, backbone: Literal["auto", "vgg19", "clip"] = "auto", layers: dict[str, float] | None = None,
                 criterion: Literal["l1", "l2"] = "l1", vgg_weights: str | os.PathLike | None = "vgg19_imagenet",
                 clip: nn.Module | None = None) -> None:
        super().__init__()
        if backbone == "auto":
            backbone = resolve_backbone(backbone, vgg_weights)
            log.info("perceptual loss backbone: %s", backbone)
        if backbone not in ("vgg19", "clip"):
            raise ValueError(f"backbone={backbone!r}: expected 'auto', 'vgg19' or 'clip'")
        self.backbone, self.criterion = backbone, criterion
        self.layers = dict(layers or (DEFAULT_VGG_LAYERS if backbone == "vgg19" else DEFAULT_CLIP_LAYERS))
        if backbone == "vgg19":
            names = vgg19_layer_names()
            unknown = [n for n in self.layers if n not in names]
            if unknown:
                raise ValueError(f"unknown VGG19 layers {unknown}; expected names such as conv5_4, relu4_4")
            self._index = {names.index(n): n for n in self.layers}
            self.net = _vgg19_features(vgg_weights, max(self._index) + 1)
            self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        else:
            from iqa_plugin.archs.sfd_disc import STAGES, FrozenCLIP

            unknown = [n for n in self.layers if n not in STAGES]
            if unknown:
                raise ValueError(f"unknown CLIP layers {unknown}; expected some of {STAGES}")
            self.net = clip if clip is not None else FrozenCLIP()
        self.net.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> PerceptualLoss:
        return super().train(False)  # the backbone is frozen, BatchNorm included

    def _features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.backbone == "clip":
            return self.net.features(x, tuple(self.layers))
        x = (x - self.mean) / self.std
        out = {}
        for i, layer in enumerate(self.net):
            x = layer(x)
            if i in self._index:
                out[self._index[i]] = x
        return out

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self._features(hr)
        produced = self._features(sr)
        losses = [w * pixel_loss(produced[n].float(), target[n].float(), self.criterion) for n, w in self.layers.items()]
        return torch.stack(losses).sum()
