"""SFD's two discriminators over one frozen CLIP RN50: Feat-D (pixel-wise, on middle features) and TG-D
(learnable prompt pair on the final image embedding).

Only SFD's generator is public (REFERENCE.md), so everything here follows the paper's description and its
nearest public precedent SeD; each unknown is an argument with a documented default:

* :class:`FrozenCLIP` runs the CLIP image tower once per batch and returns the stage maps Feat-D needs and
  the pooled embedding TG-D needs. Its weights never change (``requires_grad`` off, BatchNorm kept in eval
  mode even when a trainer calls ``.train()``), but gradients flow through it to the image, which is how
  the generator learns from both discriminators.
* :class:`FeatD` puts a small convolutional head on each chosen stage and averages the stages' logit maps
  at the finest stage's resolution: one real/fake logit per feature pixel.
* :class:`TGD` holds a learnable prompt pair (CoOp context tokens around a real and a fake prompt) encoded
  by CLIP's frozen text tower; its logit is ``scale * (cos(embedding, real) - cos(embedding, fake))``.

Feat-D and TG-D are separate modules so each gets its own optimiser and DDP wrapper; neither owns the
CLIP (TG-D keeps a plain reference to the text tower, so its ``state_dict`` is only the learned prompts).
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from iqa_plugin.archs.clip_backbone import CLIP_MEAN, CLIP_STD, ImageTower, build_rn50_clip, load_clip_weights
from iqa_plugin.archs.prompts import build_prompt_learner

__all__ = ["DEFAULT_FEAT_STAGES", "DEFAULT_PROMPT_WORDS", "ClipOutputs", "FeatD", "FrozenCLIP", "TGD",
           "load_clip_rn50"]

#: Feat-D's default stages. The paper discriminates CLIP's "middle, multi-scale" features; SeD (the public
#: precedent) uses layer3 (1,024 channels, 1/16 resolution) alone. layer2 (512 channels, 1/8) adds the finer
#: second scale; layer1 is close to low-level texture and layer4 is the semantic level TG-D already judges.
DEFAULT_FEAT_STAGES: tuple[str, ...] = ("layer2", "layer3")
#: TG-D's prompt words, real first. The paper's LPP words are not public; SFD-IQA reads TG-D's real-prompt
#: probability as quality, so the pair starts from QualiCLIP's first antonym pair, which carries that sense.
DEFAULT_PROMPT_WORDS: tuple[str, str] = ("Good photo.", "Bad photo.")
STAGES = ("layer1", "layer2", "layer3", "layer4")


class ClipOutputs(NamedTuple):
    stages: dict[str, torch.Tensor]
    embedding: torch.Tensor  # [B, 1024], not normalised


class FrozenCLIP(nn.Module):
    """A CLIP RN50 that never trains: image ``[B, 3, H, W]`` in [0, 1] -> :class:`ClipOutputs`.

    Args:
        clip: an open_clip RN50 with loaded weights (see :func:`load_clip_rn50`); random when None.
        stages: the stage maps to return (any of ``layer1`` .. ``layer4``).
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, clip: nn.Module | None = None, stages: tuple[str, ...] = DEFAULT_FEAT_STAGES) -> None:
        super().__init__()
        unknown = [s for s in stages if s not in STAGES]
        if unknown or not stages:
            raise ValueError(f"stages={stages!r}: expected one or more of {STAGES}")
        self.clip = clip if clip is not None else build_rn50_clip()
        self.tower = ImageTower(self.clip.visual)
        self.stages = tuple(stages)
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FrozenCLIP:
        return super().train(False)  # BatchNorm statistics are part of the frozen weights

    def stage_channels(self) -> dict[str, int]:
        return {s: getattr(self.clip.visual, s)[-1].conv3.out_channels for s in self.stages}

    def features(self, x: torch.Tensor, stages: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """The named stage maps of images ``x`` in [0, 1] (CLIP normalisation applied here)."""
        return self.tower.stage_features((x - self.mean.to(x.dtype)) / self.std.to(x.dtype), stages)

    def forward(self, x: torch.Tensor, with_embedding: bool = True) -> ClipOutputs:
        wanted = self.stages + (("layer4",) if with_embedding and "layer4" not in self.stages else ())
        maps = self.features(x, wanted)
        embedding = self.tower.attention_pool(maps["layer4"]) if with_embedding else torch.empty(0)
        return ClipOutputs({s: maps[s] for s in self.stages}, embedding)


def _conv(cin: int, cout: int, kernel: int, spectral: bool) -> nn.Module:
    conv = nn.Conv2d(cin, cout, kernel, 1, kernel // 2)
    return nn.utils.parametrizations.spectral_norm(conv) if spectral else conv


class FeatD(nn.Module):
    """Pixel-wise real/fake logits over CLIP stage maps: ``stages -> [B, 1, h, w]`` (finest stage's size).

    Args:
        channels: stage name -> channels (``FrozenCLIP.stage_channels()``).
        hidden: head width. 256: a quarter of layer3's width, enough for a linear-probe-like head.
        spectral_norm: spectral normalisation on every head convolution, as in SeD's and Real-ESRGAN's
            discriminators (keeps the discriminator Lipschitz and the GAN phase stable).
    """

    def __init__(self, channels: dict[str, int], hidden: int = 256, spectral_norm: bool = True) -> None:
        super().__init__()
        self.stages = tuple(channels)
        self.heads = nn.ModuleDict({
            stage: nn.Sequential(
                _conv(c, hidden, 1, spectral_norm), nn.LeakyReLU(0.2),
                _conv(hidden, hidden, 3, spectral_norm), nn.LeakyReLU(0.2),
                _conv(hidden, 1, 1, spectral_norm),
            )
            for stage, c in channels.items()
        })

    def forward(self, stages: dict[str, torch.Tensor]) -> torch.Tensor:
        maps = [self.heads[s](stages[s].float()) for s in self.stages]
        size = max((m.shape[-2:] for m in maps), key=lambda hw: hw[0] * hw[1])
        maps = [m if m.shape[-2:] == size else F.interpolate(m, size=size, mode="bilinear", align_corners=False)
                for m in maps]
        return torch.stack(maps).mean(dim=0)


class TGD(nn.Module):
    """Text-guided discriminator: a learnable prompt pair judged on CLIP's image embedding -> ``[B]`` logits.

    Args:
        clip: the frozen CLIP whose text tower encodes the prompts (kept as a reference, not a submodule).
        prompt_words: (real, fake) words the context tokens surround.
        n_ctx: learned context tokens per prompt. 16: CoOp's default and pyiqa's QualiCLIP+.
        init_std: context initialisation. 0.02: CoOp's.
        logit_scale: multiplies the cosine difference. None takes the CLIP's own (100 for OpenAI RN50), the
            scale CoOp trains prompts with; lower it if the discriminator saturates (REFERENCE.md's probe).
        seed: seed of the context initialisation.
    """

    logit_scale: torch.Tensor
    _clip: nn.Module

    def __init__(self, clip: nn.Module, prompt_words: tuple[str, str] = DEFAULT_PROMPT_WORDS, n_ctx: int = 16,
                 init_std: float = 0.02, logit_scale: float | None = None, seed: int = 0) -> None:
        super().__init__()
        self.prompt_learner = build_prompt_learner(clip, tuple(prompt_words), n_ctx, init_std, seed)
        scale = float(clip.logit_scale.detach().exp()) if logit_scale is None else float(logit_scale)
        self.register_buffer("logit_scale", torch.tensor(scale))
        object.__setattr__(self, "_clip", clip)  # shared, frozen: not a submodule, not in state_dict

    def text_features(self) -> torch.Tensor:
        """``[2, D]`` L2-normalised (real, fake) prompt features."""
        with torch.autocast(self.logit_scale.device.type, enabled=False):
            return F.normalize(self.prompt_learner(self._clip).float(), dim=-1)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        cos = F.normalize(embedding.float(), dim=-1) @ self.text_features().t()  # [B, 2]
        return self.logit_scale * (cos[:, 0] - cos[:, 1])


def load_clip_rn50(source: str | os.PathLike | None = "clip_rn50_openai") -> nn.Module:
    """An open_clip RN50 with weights from a card name (default: OpenAI's, sha256-verified), a file, or
    random weights when ``source`` is None.

    Files (read by :func:`iqa_plugin.hub.clip_checkpoint.read_clip_checkpoint`, the reader QualiCLIP
    training's ``init`` uses too): OpenAI's TorchScript ``RN50.pt`` (its tensors, without running it), a
    QualiCLIP.pth-layout checkpoint (``clip_model.*``), or a plain OpenAI-key state dict.
    """
    from iqa_plugin.hub.clip_checkpoint import read_clip_checkpoint

    clip = build_rn50_clip()
    if source is None:
        return clip
    checkpoint = read_clip_checkpoint(source)
    load_clip_weights(clip, checkpoint.state, str(checkpoint.path))
    return clip
