"""QualiCLIP's training losses: margin ranking on antonym-prompt similarities (pure torch, no Ray).

A training sample is two overlapping crops of one pristine image, each degraded with the same distortion
at L increasing levels (level index 0 mildest). For every crop, level and prompt pair the network gives a
*positive* similarity (to "Good photo.") and a *negative* one (to "Bad photo."). The paper
(arXiv:2403.11176, Sec. 3) trains with three margin ranking losses on them:

* **consistency**: both crops at the same level should get the same similarities; a hinge on their
  absolute difference (``relu(|s_a - s_b| - margin)``), so it reacts only to crop disagreement;
* **positive**: the positive similarity falls as the level rises: for levels i < j,
  ``relu(s+_j - s+_i + margin)``;
* **negative**: the negative similarity rises with the level: ``relu(s-_i - s-_j + margin)``.

Every choice the paper leaves open is an argument of :class:`QualiCLIPLossConfig` with its reason.

>>> sims = prompt_similarities(features, prompts, logit_scale=10.0, form="probability")  # doctest: +SKIP
>>> terms = qualiclip_losses(sims.view(B, 2, L, P, 2), QualiCLIPLossConfig())            # doctest: +SKIP
>>> terms["loss"].backward()                                                            # doctest: +SKIP
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["QualiCLIPLossConfig", "level_pairs", "prompt_similarities", "qualiclip_losses", "select_pairs"]


class QualiCLIPLossConfig(BaseModel):
    """The loss choices the paper does not publish; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    similarity: Literal["probability", "cosine"] = Field(
        "cosine",
        description="'cosine': cosine similarity to each prompt, so the positive and negative terms are two "
        "different constraints (default: measured here, a random-init tiny tower trained with it reached a "
        "held-out SRCC of 0.41 in 5 min, while the probability form at logit scale 10 stalled at the margin "
        "sum); 'probability': the pair's softmax probability, i.e. what the metric outputs (then the "
        "negative term equals the positive one).",
    )
    pairs: Literal["all"] | int = Field(
        "all",
        description="Prompt pairs the losses use: 'all' 7 (the score averages all 7, so all are trained), "
        "or the index of one pair (0 = 'Good photo.'/'Bad photo.').",
    )
    margin_consistency: float = Field(
        0.0, ge=0.0, description="Tolerated |s_a - s_b| between the two crops; 0 asks for equal similarities."
    )
    margin_ranking: float = Field(
        0.02,
        ge=0.0,
        description="Required gap between consecutive levels. 0.02 on the cosine scale (5 levels then span "
        ">= 0.08 of cosine); 0.05 learned worse here. On the probability scale REFERENCE.md's probe used 0.05.",
    )
    weight_consistency: float = Field(1.0, ge=0.0, description="Weight of the consistency term (paper: unknown).")
    weight_positive: float = Field(1.0, ge=0.0, description="Weight of the positive ranking term.")
    weight_negative: float = Field(1.0, ge=0.0, description="Weight of the negative ranking term.")
    weight_cross_sample: float = Field(
        0.0,
        ge=0.0,
        description="Weight of an optional fourth term that is NOT in the paper: the positive/negative ranking "
        "hinges also across the batch's *different* samples (a crop at level i of one distortion must score "
        "above any other sample's crop at a level j > i, margin * (j - i)). The paper ranks levels only within a "
        "sample, which leaves each distortion type its own score scale; this term asks levels to mean the same "
        "across types and images, which a score pooled over types needs. It assumes every sample holds the same "
        "levels (the shards' default, all 5). 0 (default) = the paper's losses.",
    )
    level_pairs: Literal["all", "adjacent"] = Field(
        "all",
        description="Which (i < j) level pairs are ranked: 'all' L(L-1)/2 pairs with a margin that grows "
        "with j - i (margin * (j - i)), or only 'adjacent' ones. 'all' gives each sample more constraints.",
    )


def level_pairs(levels: int, mode: str = "all") -> tuple[torch.Tensor, torch.Tensor]:
    """Index tensors ``(i, j)`` with ``i < j`` over ``levels`` levels ('all' pairs or 'adjacent' ones)."""
    if levels < 2:
        raise ValueError(f"levels={levels}: the ranking losses need at least 2 levels per sample")
    if mode == "adjacent":
        i = torch.arange(levels - 1)
        return i, i + 1
    if mode != "all":
        raise ValueError(f"level_pairs={mode!r}: expected 'all' or 'adjacent'")
    i, j = torch.triu_indices(levels, levels, offset=1)
    return i, j


def select_pairs(similarities: torch.Tensor, pairs: Literal["all"] | int) -> torch.Tensor:
    """Keep the prompt pairs the losses use: ``[..., P, 2]`` -> ``[..., P', 2]``."""
    if pairs == "all":
        return similarities
    count = similarities.shape[-2]
    if not 0 <= int(pairs) < count:
        raise ValueError(f"pairs={pairs!r}: expected 'all' or a pair index in 0..{count - 1}")
    return similarities[..., int(pairs) : int(pairs) + 1, :]


def prompt_similarities(
    image_features: torch.Tensor,
    prompt_features: torch.Tensor,
    *,
    logit_scale: float | torch.Tensor,
    form: Literal["probability", "cosine"] = "probability",
    temperature: float = 1.0,
) -> torch.Tensor:
    """Similarities of each image to each prompt pair: ``[N, D]`` x ``[2P, D]`` -> ``[N, P, 2]``.

    Args:
        image_features: image embeddings (any scale; L2-normalised here).
        prompt_features: the 2P prompt embeddings, positive and negative interleaved (the layout of
            QualiCLIP's ``prompts_features``); L2-normalised here.
        logit_scale: multiplier of the cosine (CLIP's exp(logit_scale) is 100, which saturates the
            probabilities of a small model; see :mod:`iqa_plugin.training.qualiclip`).
        form: ``'probability'``: ``[p, 1 - p]`` with ``p = sigmoid((l+ - l-) / temperature)``, the pair's
            softmax written in the form that cannot overflow; ``'cosine'``: the two cosines.
        temperature: softmax temperature of the probability form.
    """
    if prompt_features.shape[0] % 2:
        raise ValueError(f"prompt_features has {prompt_features.shape[0]} rows, expected 2 per pair (positive, negative)")
    cos = F.normalize(image_features.float(), dim=-1) @ F.normalize(prompt_features.float(), dim=-1).t()
    cos = cos.view(cos.shape[0], -1, 2)
    if form == "cosine":
        return cos
    if form != "probability":
        raise ValueError(f"form={form!r}: expected 'probability' or 'cosine'")
    logits = cos * logit_scale
    p = torch.sigmoid((logits[..., 0] - logits[..., 1]) / temperature)
    return torch.stack([p, 1.0 - p], dim=-1)


def qualiclip_losses(similarities: torch.Tensor, config: QualiCLIPLossConfig) -> dict[str, torch.Tensor]:
    """The three QualiCLIP loss terms and their weighted sum.

    Args:
        similarities: ``[B, 2 crops, L levels, P pairs, 2]`` (positive, negative) similarities, levels in
            increasing severity along dim 2 (what :func:`prompt_similarities` gives, reshaped).
        config: margins, weights, pairs and level pairs.

    Returns:
        ``{'loss', 'consistency', 'positive', 'negative'}`` scalars; the terms are unweighted means, the
        loss is their weighted sum. A batch ordered with the margins and crops that agree has loss 0.
    """
    if similarities.ndim != 5 or similarities.shape[1] != 2 or similarities.shape[-1] != 2:
        raise ValueError(
            f"similarities has shape {tuple(similarities.shape)}, expected [B, 2 crops, L levels, P pairs, 2]"
        )
    sims = select_pairs(similarities, config.pairs)
    positive, negative = sims[..., 0], sims[..., 1]  # [B, 2, L, P]
    consistency = F.relu((sims[:, 0] - sims[:, 1]).abs() - config.margin_consistency).mean()
    i, j = level_pairs(sims.shape[2], config.level_pairs)
    i, j = i.to(sims.device), j.to(sims.device)
    margin = config.margin_ranking * (j - i).to(sims.dtype).view(-1, 1)  # [pairs, 1]
    positive_term = F.relu(positive[:, :, j] - positive[:, :, i] + margin).mean()
    negative_term = F.relu(negative[:, :, i] - negative[:, :, j] + margin).mean()
    loss = (
        config.weight_consistency * consistency
        + config.weight_positive * positive_term
        + config.weight_negative * negative_term
    )
    terms = {"consistency": consistency, "positive": positive_term, "negative": negative_term}
    if config.weight_cross_sample > 0 and sims.shape[0] > 1:
        terms["cross_sample"] = _cross_sample_term(positive, negative, config.margin_ranking)
        loss = loss + config.weight_cross_sample * terms["cross_sample"]
    return {"loss": loss, **terms}


def _cross_sample_term(positive: torch.Tensor, negative: torch.Tensor, margin: float) -> torch.Tensor:
    """Ranking hinges between crops of *different* samples at levels i < j (``[B, 2, L, P]`` inputs): the
    mean over those pairs of ``relu(s+_j - s+_i + margin (j - i)) + relu(s-_i - s-_j + margin (j - i))``."""
    b, crops, levels, pairs = positive.shape
    level = torch.arange(levels, device=positive.device).repeat(b * crops)  # [N]
    sample = torch.arange(b, device=positive.device).repeat_interleave(crops * levels)  # [N]
    gap = (level.view(1, -1) - level.view(-1, 1)).to(positive.dtype)  # [N(i), N(j)]: j - i
    keep = (gap > 0) & (sample.view(1, -1) != sample.view(-1, 1))
    pos = positive.reshape(-1, pairs)  # [N, P], row order (sample, crop, level)
    neg = negative.reshape(-1, pairs)
    hinge_pos = F.relu(pos.unsqueeze(0) - pos.unsqueeze(1) + margin * gap.unsqueeze(-1))  # [i, j, P]: s+_j - s+_i
    hinge_neg = F.relu(neg.unsqueeze(1) - neg.unsqueeze(0) + margin * gap.unsqueeze(-1))  # s-_i - s-_j
    return (hinge_pos + hinge_neg)[keep].mean() / 2
