"""QualiCLIP and QualiCLIP+ as a pyiqa arch (``IqaPluginQualiCLIP``).

Score (REFERENCE.md): CLIP-normalise the RGB [0, 1] input at native resolution, L2-normalised image
feature against the 14 L2-normalised prompt features, ``logits = logit_scale.exp() * cos``, then for each
of the 7 (positive, negative) pairs ``sigmoid((l+ - l-) / temperature)`` (the stable form of the softmax of
``logits / temperature``, which overflows in float16), averaged: ``[B, 1]`` in [0, 1], higher is better.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from iqa_plugin.archs.clip_backbone import (
    CLIP_MEAN,
    CLIP_STD,
    ImageTower,
    build_image_only_clip,
    build_rn50_clip,
    load_clip_weights,
    split_qualiclip_checkpoint,
)
from iqa_plugin.archs.prompts import PROMPT_PAIRS, PROMPTS, PromptLearner
from iqa_plugin.data.images import validate_batch

PathLike = str | os.PathLike


def _is_plus(model_type: str) -> bool:
    return model_type.startswith("qualiclip+")


def _build_prompt_learner(clip: nn.Module, n_ctx: int) -> PromptLearner:
    from open_clip.tokenizer import SimpleTokenizer, tokenize

    tokenizer = SimpleTokenizer()
    prefix = " ".join(["X"] * n_ctx) + " "
    tokenized = tokenize([prefix + p for p in PROMPTS])
    name_lengths = [len(tokenizer.encode(p)) for p in PROMPTS]
    return PromptLearner(tokenized, name_lengths, n_ctx=n_ctx, width=clip.token_embedding.weight.shape[1])


class IqaPluginQualiCLIP(nn.Module):
    """QualiCLIP (opinion-unaware) and QualiCLIP+ (learned prompts) no-reference quality.

    Args:
        model_type: ``'qualiclip'`` or a ``'qualiclip+*'`` card name; picks the card whose weights load.
        temperature: softmax temperature of each prompt pair: 2 (pyiqa's, the default) or 1 (the official
            torch.hub model).
        pretrained: load weights (from the card, or the paths below). ``False`` keeps random weights.
        pretrained_model_path: overrides the card's weights: for ``qualiclip`` a QualiCLIP.pth-layout file,
            for ``qualiclip+*`` the prompt-learner ``params`` file. A local path, http(s) URL or fsspec URL.
        base_model_path: ``qualiclip+*`` only: the QualiCLIP.pth-layout checkpoint under the prompts.
        n_ctx: number of learned context tokens (``qualiclip+*``).
        vision: a reduced image tower ``{layers, width, heads, output_dim}`` (models trained by
            ``iqa train qualiclip`` from a small config; no text tower); ``None``: CLIP RN50.
    """

    def __init__(
        self,
        model_type: str = "qualiclip",
        temperature: float = 2.0,
        pretrained: bool = True,
        pretrained_model_path: PathLike | None = None,
        base_model_path: PathLike | None = None,
        n_ctx: int = 16,
        vision: dict | None = None,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature={temperature!r}: expected a positive number (2 = pyiqa, 1 = official).")
        if base_model_path is not None and not _is_plus(model_type):
            raise ValueError(
                f"base_model_path is only used by 'qualiclip+*' models, not {model_type!r}: "
                "pass the QualiCLIP checkpoint as pretrained_model_path instead."
            )
        self.model_type = model_type
        self.temperature = float(temperature)
        if vision is not None and _is_plus(model_type):
            raise ValueError(f"vision={vision!r} is for plain QualiCLIP models; {model_type!r} needs CLIP's text tower.")
        self.weights_sha256: str | None = None
        clip = build_rn50_clip() if vision is None else build_image_only_clip(vision)
        prompt_features = torch.zeros(len(PROMPTS), clip.visual.output_dim)
        if pretrained:
            prompt_features = self._load_base(clip, model_type, pretrained_model_path, base_model_path)
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("prompt_features", prompt_features)
        self.logit_scale = nn.Parameter(clip.logit_scale.detach().clone(), requires_grad=False)
        self.image_tower = ImageTower(clip.visual)
        self.prompt_learner: PromptLearner | None = None
        self.text_clip: nn.Module | None = None
        if _is_plus(model_type):
            self.prompt_learner = _build_prompt_learner(clip, n_ctx)
            clip.visual = nn.Identity()  # the text tower is all the prompts need
            self.text_clip = clip
            if pretrained:
                self._load_prompts(model_type, pretrained_model_path)
        for p in self.parameters():
            p.requires_grad_(False)
        self._text_cache: tuple[tuple, torch.Tensor] | None = None
        self.eval()

    def _load_base(self, clip: nn.Module, model_type: str, model_path: PathLike | None, base_path: PathLike | None):
        from iqa_plugin.hub.cards import get_card
        from iqa_plugin.hub.weights import load_state_dict, resolve_card_weights

        card = get_card(model_type)
        override = base_path if _is_plus(model_type) else model_path
        role = "base" if _is_plus(model_type) else "model"
        path = resolve_card_weights(card, role=role, override=None if override is None else str(override))
        clip_state, features = split_qualiclip_checkpoint(load_state_dict(path), str(path))
        load_clip_weights(clip, clip_state, str(path))
        if not _is_plus(model_type):
            self.weights_sha256 = _weights_sha256(card.weights[role].sha256, override, path)
        return features.float()

    def _load_prompts(self, model_type: str, model_path: PathLike | None) -> None:
        from iqa_plugin.hub.cards import get_card
        from iqa_plugin.hub.weights import load_state_dict, resolve_card_weights

        card = get_card(model_type)
        path = resolve_card_weights(card, role="model", override=None if model_path is None else str(model_path))
        state = load_state_dict(path, key=card.weights["model"].key or "params")
        wanted = {f"prompt_learner.{k}" for k in ("ctx", "token_prefix", "token_suffix")}
        if set(state) != wanted:
            raise ValueError(
                f"{path}: expected the QualiCLIP+ 'params' layout with keys {sorted(wanted)}, got {sorted(state)[:6]}."
            )
        assert self.prompt_learner is not None
        self.prompt_learner.load_state_dict({k.split(".", 1)[1]: v for k, v in state.items()}, strict=False)
        self.weights_sha256 = _weights_sha256(card.weights["model"].sha256, model_path, path)

    def text_features(self) -> torch.Tensor:
        """The 14 L2-normalised prompt features ``[14, D]`` (learned prompts cached until they change)."""
        if self.prompt_learner is None:
            return self.prompt_features
        ctx = self.prompt_learner.ctx
        key = (ctx.device, ctx._version, torch.is_grad_enabled() and ctx.requires_grad)
        if self._text_cache is None or self._text_cache[0] != key:
            with torch.autocast(ctx.device.type, enabled=False):
                features = self.prompt_learner(self.text_clip)
            self._text_cache = (key, F.normalize(features.float(), dim=-1))
        return self._text_cache[1]

    def head(self, image_features: torch.Tensor) -> torch.Tensor:
        """Image features ``[B, D]`` -> quality ``[B, 1]`` (always computed in float32)."""
        with torch.autocast(image_features.device.type, enabled=False):
            features = F.normalize(image_features.float(), dim=-1)
            logits = self.logit_scale.float().exp() * features @ self.text_features().float().t()
            pairs = logits.view(logits.shape[0], len(PROMPT_PAIRS), 2)
            return torch.sigmoid((pairs[..., 0] - pairs[..., 1]) / self.temperature).mean(dim=1, keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: RGB ``[B, 3, H, W]`` in [0, 1] (grayscale and RGBA converted, see ``validate_batch``)."""
        x = validate_batch(x)
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return self.head(self.image_tower(x))


def _weights_sha256(card_sha256: str | None, override: PathLike | None, path: os.PathLike | str) -> str:
    """The checkpoint's sha256: the card's (already verified by the resolver) unless the user gave the
    file or the card publishes none, in which case it is computed once here."""
    if override is None and card_sha256 is not None:
        return card_sha256
    from iqa_plugin.hub.weights import sha256_file

    return sha256_file(path)
