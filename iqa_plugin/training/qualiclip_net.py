"""The trainable QualiCLIP network: a CLIP image tower (RN50 or a reduced ModifiedResNet) plus frozen prompt
features, built from an architecture preset and an initialisation (random, a model card, or a checkpoint).

Architecture presets (``arch``):

=========  ==========================================================================================
``tiny``   ModifiedResNet layers (1, 1, 1, 1), width 16, 8 heads, 64-d embedding: ~1.6 M parameters,
           6 MB in fp32; trains on a 2-core CPU in minutes at 64-128 px crops (tests, demos).
``small``  layers (2, 2, 2, 2), width 32, 8 heads, 128-d embedding: ~8 M parameters.
``rn50``   OpenAI CLIP RN50 (layers (3, 4, 6, 3), width 64, 1024-d), the paper's network.
=========  ==========================================================================================

Prompt features (``prompts``): a network with CLIP's text tower uses the 14 antonym prompts' text
features, computed once with the frozen tower (or read from a QualiCLIP checkpoint, which stores them).
A reduced tower trained from random init has no text tower that could embed the prompts, so it uses 14
*fixed* seeded random unit vectors instead: the learned image embedding aligns with them, and the export
stores them as ``prompts_features`` exactly like a QualiCLIP checkpoint.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from iqa_plugin.archs.clip_backbone import (
    CLIP_MEAN,
    CLIP_PREFIX,
    CLIP_STD,
    ImageTower,
    build_image_only_clip,
    build_rn50_clip,
    load_clip_weights,
)
from iqa_plugin.archs.prompts import PROMPTS

__all__ = ["ARCH_PRESETS", "QualiCLIPTrainNet", "build_train_net", "random_prompt_features"]

#: Reduced image towers (open_clip ModifiedResNet options); ``rn50`` is ``None``: the full CLIP RN50.
ARCH_PRESETS: dict[str, dict | None] = {
    "tiny": {"layers": [1, 1, 1, 1], "width": 16, "heads": 8, "output_dim": 64},
    "small": {"layers": [2, 2, 2, 2], "width": 32, "heads": 8, "output_dim": 128},
    "rn50": None,
}


def random_prompt_features(dim: int, seed: int) -> torch.Tensor:
    """14 fixed seeded random unit vectors ``[14, dim]`` (prompt features of a model without text tower)."""
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(len(PROMPTS), dim, generator=generator), dim=-1)


class QualiCLIPTrainNet(nn.Module):
    """Image tower + frozen prompt features. ``forward`` takes RGB in [0, 1] and returns image features.

    Args:
        clip: the CLIP (or :class:`ImageOnlyCLIP`) whose ``visual`` trains; its other parts are kept only
            for the export (a full RN50 export must hold the whole CLIP, the layout QualiCLIP.pth uses).
        prompt_features: ``[14, D]`` prompt embeddings (normalised here, never trained).
        vision: the reduced tower's options (``None`` for RN50), recorded in the exported card.
        gradient_checkpointing: recompute each ResNet stage in the backward pass (less memory, ~30% slower).
    """

    def __init__(
        self, clip: nn.Module, prompt_features: torch.Tensor, vision: dict | None, gradient_checkpointing: bool = False
    ) -> None:
        super().__init__()
        # the pool skips its positional embedding: keep it out of the optimiser and DDP's gradient sync
        clip.visual.attnpool.positional_embedding.requires_grad_(False)
        self.tower = ImageTower(clip.visual)
        self.vision = vision
        self.gradient_checkpointing = gradient_checkpointing
        self.register_buffer("prompt_features", F.normalize(prompt_features.float(), dim=-1))
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)
        # the frozen rest of the CLIP (text tower), exported untouched; a plain dict, so DDP never sees it
        self._frozen_rest = {k: v.detach().cpu() for k, v in clip.state_dict().items() if not k.startswith("visual.")}

    def _feature_map(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.gradient_checkpointing and self.training and torch.is_grad_enabled()):
            return self.tower.feature_map(x)
        v = self.tower.visual
        x = v.act1(v.bn1(v.conv1(x)))
        x = v.avgpool(v.act3(v.bn3(v.conv3(v.act2(v.bn2(v.conv2(x)))))))
        for layer in (v.layer1, v.layer2, v.layer3, v.layer4):
            x = checkpoint(layer, x, use_reentrant=False)
        return x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images``: RGB ``[N, 3, H, W]`` in [0, 1] -> image features ``[N, D]`` (not normalised)."""
        x = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        return self.tower.attention_pool(self._feature_map(x))

    def export_state(self, logit_scale: float) -> dict[str, torch.Tensor]:
        """The QualiCLIP.pth layout: ``clip_model.<CLIP key>`` (fp32) plus ``prompts_features``, with
        ``clip_model.logit_scale`` set to log(``logit_scale``), the scale the model was trained with."""
        state = {f"{CLIP_PREFIX}{k}": v.clone() for k, v in self._frozen_rest.items()}
        for k, v in self.tower.visual.state_dict().items():
            state[f"{CLIP_PREFIX}visual.{k}"] = v.detach().float().cpu().clone()
        state[f"{CLIP_PREFIX}logit_scale"] = torch.tensor(float(torch.log(torch.tensor(logit_scale))))
        state["prompts_features"] = self.prompt_features.detach().cpu().clone()
        return {k: v.contiguous() for k, v in state.items()}


def _text_features(clip: nn.Module) -> torch.Tensor:
    from open_clip.tokenizer import tokenize

    with torch.no_grad():
        return clip.encode_text(tokenize(list(PROMPTS))).float()


def build_train_net(
    arch: str,
    init: str = "random",
    prompts: Literal["auto", "checkpoint", "text_tower", "random"] = "auto",
    prompt_seed: int = 0,
    gradient_checkpointing: bool = False,
    seed: int = 0,
) -> QualiCLIPTrainNet:
    """The network to train.

    Args:
        arch: ``'tiny'``, ``'small'`` or ``'rn50'`` (see :data:`ARCH_PRESETS`).
        init: ``'random'``, a model card name (``'clip_rn50_openai'``: OpenAI's CLIP RN50, the paper's
            start; ``'qualiclip'``) or a file of the same arch: OpenAI's TorchScript ``RN50.pt``, a
            QualiCLIP-layout checkpoint (``QualiCLIP.pth``, a safetensors export of this recipe) or an
            OpenAI-key state dict (see :mod:`iqa_plugin.hub.clip_checkpoint`).
        prompts: ``'checkpoint'`` (the init's stored features), ``'text_tower'`` (encode the 14 prompts
            with the frozen text tower; RN50 only), ``'random'`` (fixed random vectors) or ``'auto'``:
            checkpoint when the init has them, else text_tower for RN50, else random.
        prompt_seed: seed of the random prompt features.
        seed: seed of the random initialisation.
    """
    if arch not in ARCH_PRESETS:
        raise ValueError(f"arch={arch!r}: expected one of {sorted(ARCH_PRESETS)}")
    vision = ARCH_PRESETS[arch]
    torch.manual_seed(seed)  # open_clip's initialisers draw from the global generator
    clip = build_rn50_clip() if vision is None else build_image_only_clip(vision)
    stored = None
    if init != "random":
        from iqa_plugin.hub.clip_checkpoint import read_clip_checkpoint

        checkpoint = read_clip_checkpoint(init)
        load_clip_weights(clip, checkpoint.state, str(checkpoint.path))
        stored = checkpoint.prompt_features
    if prompts == "auto":
        prompts = "checkpoint" if stored is not None else ("text_tower" if vision is None else "random")
    if prompts == "checkpoint":
        if stored is None:
            raise ValueError("prompts='checkpoint' needs init=<card or checkpoint>; with init='random' use 'random'")
        features = stored
    elif prompts == "text_tower":
        if vision is not None:
            raise ValueError(f"prompts='text_tower' needs arch='rn50'; the {arch!r} tower has no text tower")
        features = _text_features(clip)
    elif prompts == "random":
        features = random_prompt_features(clip.visual.output_dim, prompt_seed)
    else:
        raise ValueError(f"prompts={prompts!r}: expected auto, checkpoint, text_tower or random")
    return QualiCLIPTrainNet(clip, features, vision, gradient_checkpointing)
