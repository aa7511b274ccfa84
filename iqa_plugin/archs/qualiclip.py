"""QualiCLIP and QualiCLIP+ as an arch (``IqaPluginQualiCLIP``), served to pyiqa through the builder.

Score (REFERENCE.md): on the CLIP-normalised RGB input at native resolution, L2-normalised image
feature against the 14 L2-normalised prompt features, ``logits = logit_scale.exp() * cos``, then for each
of the 7 (positive, negative) pairs ``sigmoid((l+ - l-) / temperature)`` (the stable form of the softmax of
``logits / temperature``, which overflows in float16), averaged: ``[B, 1]`` in [0, 1], higher is better.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from iqa_plugin.archs.clip_backbone import (
    ImageTower,
    build_image_only_clip,
    build_rn50_clip,
    load_clip_weights,
    split_qualiclip_checkpoint,
)
from iqa_plugin.archs.prompts import PROMPT_PAIRS, PROMPTS, PromptLearner

if TYPE_CHECKING:
    from iqa_plugin.hub.cards import ModelCard


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

    Built with random weights; :func:`iqa_plugin.build.build_network` loads the card's files through
    :meth:`load_card_weights` and applies the card's input contract (CLIP mean/std) in front, so
    ``forward`` takes CLIP-normalised input.

    Args:
        model_type: ``'qualiclip'`` or a ``'qualiclip+*'`` name (learned prompts on the frozen QualiCLIP).
        temperature: softmax temperature of each prompt pair: 2 (pyiqa's, the default) or 1 (the official
            torch.hub model).
        n_ctx: number of learned context tokens (``qualiclip+*``).
        vision: a reduced image tower ``{layers, width, heads, output_dim}`` (models trained by
            ``iqa train qualiclip`` from a small config; no text tower); ``None``: CLIP RN50.
    """

    def __init__(
        self, model_type: str = "qualiclip", temperature: float = 2.0, n_ctx: int = 16, vision: dict | None = None
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature={temperature!r}: expected a positive number (2 = pyiqa, 1 = official).")
        self.model_type = model_type
        self.temperature = float(temperature)
        if vision is not None and _is_plus(model_type):
            raise ValueError(f"vision={vision!r} is for plain QualiCLIP models; {model_type!r} needs CLIP's text tower.")
        clip = build_rn50_clip() if vision is None else build_image_only_clip(vision)
        self.register_buffer("prompt_features", torch.zeros(len(PROMPTS), clip.visual.output_dim))
        self.logit_scale = nn.Parameter(clip.logit_scale.detach().clone(), requires_grad=False)
        self.image_tower = ImageTower(clip.visual)
        self.prompt_learner: PromptLearner | None = None
        self.text_clip: nn.Module | None = None
        if _is_plus(model_type):
            self.prompt_learner = _build_prompt_learner(clip, n_ctx)
            clip.visual = nn.Identity()  # the text tower is all the prompts need
            self.text_clip = clip
        for p in self.parameters():
            p.requires_grad_(False)
        self._text_cache: tuple[tuple, torch.Tensor] | None = None
        self.eval()

    def load_card_weights(self, files: Mapping[str, Path], card: ModelCard) -> None:
        """QualiCLIP.pth (role ``'model'``, or ``'base'`` under QualiCLIP+) holds the whole CLIP plus the
        stored prompt features; QualiCLIP+'s ``'model'`` file holds the learned prompt context."""
        from iqa_plugin.hub.weights import load_state_dict

        plus = self.prompt_learner is not None
        base = files["base" if plus else "model"]
        clip_state, features = split_qualiclip_checkpoint(load_state_dict(base), str(base))
        visual = {k[len("visual.") :]: v for k, v in clip_state.items() if k.startswith("visual.")}
        load_clip_weights(self.image_tower.visual, visual, str(base))
        if "logit_scale" not in clip_state:
            raise ValueError(f"{base}: no 'clip_model.logit_scale' entry; expected a whole QualiCLIP RN50 checkpoint.")
        self.logit_scale.data.copy_(clip_state["logit_scale"])
        self.prompt_features.copy_(features.float())
        if self.text_clip is not None:
            text = {k: v for k, v in clip_state.items() if not k.startswith("visual.")}
            load_clip_weights(self.text_clip, text, str(base))
        if plus:
            self._load_prompts(files["model"], card.weights["model"].key or "params")
        self._text_cache = None

    def _load_prompts(self, path: Path, key: str) -> None:
        from iqa_plugin.hub.weights import load_state_dict

        state = load_state_dict(path, key=key)
        wanted = {f"prompt_learner.{k}" for k in ("ctx", "token_prefix", "token_suffix")}
        if set(state) != wanted:
            raise ValueError(
                f"{path}: expected the QualiCLIP+ 'params' layout with keys {sorted(wanted)}, got {sorted(state)[:6]}."
            )
        assert self.prompt_learner is not None
        self.prompt_learner.load_state_dict({k.split(".", 1)[1]: v for k, v in state.items()}, strict=False)

    def prepare_for_inference(self, compile: bool = False) -> None:
        """Frozen inference only: fold BatchNorm into the convolutions (one memory pass less per conv)
        and optionally ``torch.compile`` the image tower (pays off where input shapes repeat)."""
        self.image_tower.fold_batchnorm()
        if compile:
            self.image_tower = torch.compile(self.image_tower, dynamic=False)  # type: ignore[assignment]

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
        """``x``: CLIP-normalised RGB ``[B, 3, H, W]`` (the card's contract does it) -> ``[B, 1]`` in [0, 1]."""
        return self.head(self.image_tower(x))

