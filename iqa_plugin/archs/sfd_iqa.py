"""SFD-IQA as an arch (``IqaPluginSFDIQA``): no-reference quality from SFD's trained discriminators.

SFD (arXiv 2503.19295) scores images with the Feat-D and the learnable prompt pair (LPP, TG-D) that its
super-resolution training produced, with no training on opinion scores. Its formula is not public
(REFERENCE.md), so the score is a documented combination of the two discriminators' probabilities that
an image is *real* (a high-resolution original, not a generator output):

* ``feat_prob``: Feat-D's per-pixel real-probability map over CLIP's middle stages, pooled over the image
  (``pooling``: ``'mean_prob'`` = mean of ``sigmoid(logit)``, the default; ``'mean_logit'`` =
  ``sigmoid(mean logit)``);
* ``lpp_prob``: ``sigmoid(logit_scale * (cos(e, t_real) - cos(e, t_fake)) / lpp_temperature)`` on CLIP's
  final image embedding ``e`` against the two learned prompts' text features;
* ``score = (feat_weight * feat_prob + lpp_weight * lpp_prob) / (feat_weight + lpp_weight)``, in [0, 1],
  higher is better.

The weights file is the plugin's own discriminator export (:func:`iqa_plugin.training.export.
sfd_discriminator_card`: ``feat_d.*`` with spectral normalisation folded, ``tg_d.*``), optionally with the
LPP's text features already computed (``tg_d.text_features`` ``[2, D]``, so no text tower is needed).
The CLIP under both is the card's ``'clip'`` weights file when it has one, else the ``clip`` option (a card
name or file, like the export's ``arch_options``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from iqa_plugin.archs.clip_backbone import CLIP_PREFIX, build_image_only_clip, build_rn50_clip
from iqa_plugin.archs.sfd_disc import DEFAULT_FEAT_STAGES, DEFAULT_PROMPT_WORDS, TGD, FeatD, FrozenCLIP

if TYPE_CHECKING:
    from iqa_plugin.hub.cards import ModelCard

__all__ = ["POOLINGS", "IqaPluginSFDIQA", "SFDIQAParts", "build_small_clip", "sfd_iqa_parts"]

Pooling = Literal["mean_prob", "mean_logit"]
POOLINGS: tuple[str, ...] = ("mean_prob", "mean_logit")


class SFDIQAParts(NamedTuple):
    """What drives an SFD-IQA score: ``score`` ``[B]``, ``feat_prob`` ``[B]`` (pooled), ``feat_map``
    ``[B, 1, h, w]`` (Feat-D's per-pixel real-probability at the finest stage's resolution), ``lpp_prob``
    ``[B]``."""

    score: torch.Tensor
    feat_prob: torch.Tensor
    feat_map: torch.Tensor
    lpp_prob: torch.Tensor


def build_small_clip(vision: dict, text_width: int = 64, text_heads: int = 2, text_layers: int = 1) -> nn.Module:
    """An open_clip CLIP with a reduced ModifiedResNet (``vision``: ``{layers, width, heads, output_dim}``,
    as :func:`~iqa_plugin.archs.clip_backbone.build_image_only_clip`) and a small text tower, random
    weights: the frozen CLIP of a small SFD model (TG-D needs a text tower to learn its prompts)."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    image_only = build_image_only_clip(vision)  # validates the shape
    width, heads = int(vision["width"]), int(vision["heads"])
    vision_cfg = CLIPVisionCfg(layers=tuple(vision["layers"]), width=width, head_width=width * 32 // heads,
                               image_size=64)
    text_cfg = CLIPTextCfg(width=text_width, heads=text_heads, layers=text_layers)
    clip = CLIP(int(vision["output_dim"]), vision_cfg, text_cfg, quick_gelu=True)
    assert set(clip.visual.state_dict()) == set(image_only.visual.state_dict())
    return clip


def _clip_from_file(path: Path, vision: dict | None) -> nn.Module:
    """A CLIP loaded from ``path``: the whole RN50 (OpenAI TorchScript, QualiCLIP.pth layout or OpenAI keys)
    when ``vision`` is None, else the reduced image tower of ``vision`` (``visual.*`` + ``logit_scale``,
    optionally under ``clip_model.``, e.g. a QualiCLIP export)."""
    from iqa_plugin.archs.clip_backbone import load_clip_weights
    from iqa_plugin.archs.sfd_disc import load_clip_rn50
    from iqa_plugin.hub.weights import load_state_dict

    if vision is None:
        return load_clip_rn50(path)
    state = load_state_dict(path)
    if any(k.startswith(CLIP_PREFIX) for k in state):
        state = {k[len(CLIP_PREFIX):]: v for k, v in state.items() if k.startswith(CLIP_PREFIX)}
    clip = build_image_only_clip(vision)
    wanted = {k: v.float() for k, v in state.items() if k.startswith("visual.") or k == "logit_scale"}
    load_clip_weights(clip, wanted, str(path))
    return clip


class IqaPluginSFDIQA(nn.Module):
    """SFD-IQA: no-reference quality ``[B, 1]`` in [0, 1] (higher is better) from Feat-D and the LPP.

    Built with random weights; :func:`iqa_plugin.build.build_network` loads the card's files through
    :meth:`load_card_weights`. ``forward`` takes RGB in [0, 1] (CLIP's mean/std are applied inside, as
    in training).

    Args:
        clip: where the CLIP under the discriminators comes from when the card has no ``'clip'`` weights
            file: a card name or file (the export's ``arch_options.clip``); None = random weights.
        vision: a reduced image tower ``{layers, width, heads, output_dim}`` (small models such as the demo);
            None: CLIP RN50.
        feat_stages: CLIP stages Feat-D reads (must match the export).
        feat_hidden: Feat-D head width (must match the export).
        spectral_norm_folded: the export folded spectral norm into plain weights (the plugin's exports
            always do; kept to accept the export's ``arch_options`` unchanged).
        prompt_words: TG-D's (real, fake) prompt words (only used to rebuild the prompts when the export
            has no stored text features).
        n_ctx: learned context tokens per prompt (as above).
        logit_scale: TG-D's logit scale; the export stores its own, which wins.
        feat_weight: weight of Feat-D's pooled real-probability. Default 0.5: SFD trains both discriminators
            with equal adversarial weight (``feat_adv_weight = tg_adv_weight``) and the paper publishes no
            weights, so neither part is favoured.
        lpp_weight: weight of the LPP real-prompt probability (0.5, same reason). ``feat_weight=1,
            lpp_weight=0`` scores with Feat-D alone, ``feat_weight=0, lpp_weight=1`` with the LPP alone. A card
            may set its own weights (``sfd-iqa-demo-tiny``: chosen on its training photos by
            ``bench/calibrate_sfd_iqa.py``); keyword arguments override the card's.
        pooling: how Feat-D's logit map becomes one probability. ``'mean_prob'`` (default): the mean of the
            per-pixel probabilities, i.e. the expected fraction of the image judged real; Feat-D is trained
            per pixel with BCE, so each sigmoid is a calibrated per-location probability, and a mean of
            probabilities is not dominated by a few saturated logits. ``'mean_logit'``: ``sigmoid`` of the
            mean logit (sharper, saturates sooner).
        lpp_temperature: divides the LPP logit before the sigmoid. 1 (default): the probability TG-D was
            trained to output; raise it if the LPP saturates at 0 or 1 on your images.
    """

    text_features: torch.Tensor
    logit_scale: torch.Tensor

    def __init__(
        self,
        clip: str | None = "clip_rn50_openai",
        vision: dict | None = None,
        feat_stages: tuple[str, ...] | list[str] = DEFAULT_FEAT_STAGES,
        feat_hidden: int = 256,
        spectral_norm_folded: bool = True,
        prompt_words: tuple[str, str] | list[str] = DEFAULT_PROMPT_WORDS,
        n_ctx: int = 16,
        logit_scale: float = 100.0,
        feat_weight: float = 0.5,
        lpp_weight: float = 0.5,
        pooling: Pooling = "mean_prob",
        lpp_temperature: float = 1.0,
    ) -> None:
        super().__init__()
        if feat_weight < 0 or lpp_weight < 0 or feat_weight + lpp_weight <= 0:
            raise ValueError(f"feat_weight={feat_weight!r}, lpp_weight={lpp_weight!r}: expected non-negative weights "
                             "with a positive sum (e.g. 0.5 and 0.5; 1 and 0 for Feat-D alone). A card may set one of "
                             "them (sfd-iqa-demo-tiny: feat_weight 0); a weight you do not pass is the card's, so "
                             "pass both, e.g. feat_weight=1, lpp_weight=0.")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling={pooling!r}: expected one of {POOLINGS}.")
        if lpp_temperature <= 0:
            raise ValueError(f"lpp_temperature={lpp_temperature!r}: expected a positive number (1 = as trained).")
        self.clip_source, self.vision = clip, vision
        self.prompt_words, self.n_ctx = tuple(prompt_words), int(n_ctx)
        self.feat_weight, self.lpp_weight = float(feat_weight), float(lpp_weight)
        self.pooling, self.lpp_temperature = pooling, float(lpp_temperature)
        clip_model = build_rn50_clip() if vision is None else build_image_only_clip(vision)
        self.clip = FrozenCLIP(_image_only(clip_model), tuple(feat_stages))
        self.feat_d = FeatD(self.clip.stage_channels(), feat_hidden, spectral_norm=False)
        self.register_buffer("text_features", torch.zeros(2, clip_model.visual.output_dim))
        self.register_buffer("logit_scale", torch.tensor(float(logit_scale)))
        self.requires_grad_(False)
        self.eval()

    def load_card_weights(self, files: Mapping[str, Path], card: ModelCard) -> None:
        """Role ``'model'``: the discriminator export; role ``'clip'`` (optional): the CLIP under it."""
        from iqa_plugin.hub.weights import load_state_dict

        clip = self._load_clip(files.get("clip"))
        path = files["model"]
        state = load_state_dict(path)
        self._check_layout(state, path)
        feat = {k[len("feat_d."):]: v.float() for k, v in state.items() if k.startswith("feat_d.")}
        try:
            self.feat_d.load_state_dict(feat, strict=True)
        except RuntimeError as exc:
            detail = " ".join(str(exc).split())[:300]
            raise ValueError(f"{path}: Feat-D does not fit card {card.name!r} (feat_stages / feat_hidden / vision "
                             f"differ from the export's arch_options): {detail}. Fix: build the metric with the "
                             "arch_options of the export's discriminator card.") from exc
        if "tg_d.logit_scale" in state:
            self.logit_scale.copy_(state["tg_d.logit_scale"].float())
        if "tg_d.text_features" in state:
            self.text_features.copy_(F.normalize(state["tg_d.text_features"].float(), dim=-1))
        else:
            self.text_features.copy_(self._prompt_features(clip, state, path))
        self.clip = FrozenCLIP(_image_only(clip), self.clip.stages)

    def _load_clip(self, clip_file: Path | None) -> nn.Module:
        if clip_file is not None:
            return _clip_from_file(clip_file, self.vision)
        if self.clip_source is None:
            return self.clip.clip
        return _clip_from_file(_resolve_source(self.clip_source), self.vision)

    @staticmethod
    def _check_layout(state: Mapping[str, torch.Tensor], path: Path) -> None:
        if not any(k.startswith("feat_d.") for k in state) or not any(k.startswith("tg_d.") for k in state):
            raise ValueError(
                f"{path}: not an SFD discriminator export: expected 'feat_d.*' and 'tg_d.*' tensors, got keys "
                f"starting {sorted(state)[:4]}. Fix: pass the .safetensors that `iqa train sfd` exports "
                "(card kind 'discriminator'); the layout of the SFD authors' own file is not public, so it "
                "cannot be read yet."
            )

    def _prompt_features(self, clip: nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> torch.Tensor:
        """The LPP's ``[2, D]`` normalised text features, rebuilt through ``clip``'s frozen text tower."""
        if not hasattr(clip, "transformer"):
            raise ValueError(f"{path}: has no 'tg_d.text_features' and this CLIP has no text tower to compute them "
                             "from 'tg_d.prompt_learner.*'. Fix: export with the text features, or use CLIP RN50.")
        tg = TGD(clip, self.prompt_words, self.n_ctx, logit_scale=float(self.logit_scale))
        prompts = {k[len("tg_d."):]: v.float() for k, v in state.items() if k.startswith("tg_d.")}
        try:
            tg.load_state_dict(prompts, strict=True)
        except RuntimeError as exc:
            detail = " ".join(str(exc).split())[:300]
            raise ValueError(f"{path}: the prompt pair does not fit (n_ctx / prompt_words differ from the export's "
                             f"arch_options): {detail}.") from exc
        with torch.no_grad():
            return tg.text_features()

    def prepare_for_inference(self, compile: bool = False) -> None:
        """Frozen inference only: fold the CLIP's BatchNorm into its convolutions; optionally compile it."""
        self.clip.tower.fold_batchnorm()
        if compile:
            self.clip.tower = torch.compile(self.clip.tower, dynamic=False)  # type: ignore[assignment]

    def parts(self, x: torch.Tensor) -> SFDIQAParts:
        """RGB ``[B, 3, H, W]`` in [0, 1] -> :class:`SFDIQAParts` (the score and what it is made of)."""
        out = self.clip(x)
        with torch.autocast(x.device.type, enabled=False):
            logits = self.feat_d({k: v.float() for k, v in out.stages.items()})
            feat_map = torch.sigmoid(logits)
            if self.pooling == "mean_prob":
                feat_prob = feat_map.mean(dim=(1, 2, 3))
            else:
                feat_prob = torch.sigmoid(logits.mean(dim=(1, 2, 3)))
            cos = F.normalize(out.embedding.float(), dim=-1) @ self.text_features.float().t()
            lpp_prob = torch.sigmoid(self.logit_scale.float() * (cos[:, 0] - cos[:, 1]) / self.lpp_temperature)
            total = self.feat_weight + self.lpp_weight
            score = (self.feat_weight * feat_prob + self.lpp_weight * lpp_prob) / total
        return SFDIQAParts(score, feat_prob, feat_map, lpp_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """RGB ``[B, 3, H, W]`` in [0, 1] -> quality ``[B, 1]`` in [0, 1]."""
        return self.parts(x).score[:, None]


def _image_only(clip: nn.Module) -> nn.Module:
    """The image half of ``clip`` (its ``visual`` tower and ``logit_scale``): the text tower is only needed
    once, to compute the prompts' features."""
    holder = nn.Module()
    holder.visual = clip.visual
    holder.logit_scale = clip.logit_scale
    return holder


def _resolve_source(source: str) -> Path:
    from iqa_plugin.hub.cards import UnknownCardError, get_card
    from iqa_plugin.hub.weights import resolve_card_weights, resolve_weights

    try:
        return resolve_card_weights(get_card(source), "model")
    except UnknownCardError:
        return resolve_weights(source)


def sfd_iqa_parts(model: nn.Module, images: torch.Tensor) -> SFDIQAParts:
    """Score RGB ``images`` ``[B, 3, H, W]`` in [0, 1] and return what drives each score.

    ``model`` is what ``pyiqa.create_metric('sfd_iqa')`` returns, a network from
    :func:`iqa_plugin.build.build_network`, or an :class:`IqaPluginSFDIQA`; the card's input checks
    (size, channels, finite values) apply as in scoring.

    >>> parts = sfd_iqa_parts(pyiqa.create_metric("sfd-iqa-demo-tiny"), images)  # doctest: +SKIP
    >>> parts.feat_map.shape, parts.lpp_prob  # doctest: +SKIP
    """
    from iqa_plugin.inference.contract import CardNetwork

    net = getattr(model, "net", model)  # pyiqa's InferenceModel keeps the network as .net
    transform = net.transform if isinstance(net, CardNetwork) else (lambda x: x)
    arch = net.network if isinstance(net, CardNetwork) else net
    if not isinstance(arch, IqaPluginSFDIQA):
        raise TypeError(f"model is a {type(arch).__name__}: expected an SFD-IQA metric "
                        "(pyiqa.create_metric('sfd_iqa') or a card with arch IqaPluginSFDIQA).")
    device = next(arch.feat_d.parameters()).device
    return arch.parts(transform(images.to(device)))
