"""QualiCLIP ranking losses against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from iqa_plugin.losses.qualiclip import (
    QualiCLIPLossConfig,
    level_pairs,
    prompt_similarities,
    qualiclip_losses,
)


def _sims(positive_by_level, negative_by_level=None, crop_b_offset=0.0, pairs=1):
    """[1, 2, L, pairs, 2] similarities: both crops equal unless ``crop_b_offset``."""
    pos = torch.tensor(positive_by_level, dtype=torch.float32)
    neg = 1.0 - pos if negative_by_level is None else torch.tensor(negative_by_level, dtype=torch.float32)
    crop = torch.stack([pos, neg], dim=-1).unsqueeze(1).expand(-1, pairs, -1)  # [L, P, 2]
    return torch.stack([crop, crop + crop_b_offset]).unsqueeze(0).clone().requires_grad_(True)


def test_perfectly_ordered_batch_has_zero_loss():
    config = QualiCLIPLossConfig(margin_ranking=0.05)
    sims = _sims([0.9, 0.8, 0.7, 0.6, 0.5], pairs=7)  # gaps 0.1 >= margin 0.05 at every distance
    terms = qualiclip_losses(sims, config)
    assert {k: v.item() for k, v in terms.items()} == {"loss": 0.0, "consistency": 0.0, "positive": 0.0, "negative": 0.0}


def test_hand_computed_values_for_two_levels():
    config = QualiCLIPLossConfig(margin_ranking=0.1, weight_positive=2.0, weight_negative=0.5)
    # positive rises with the level (wrong by 0.2); negative falls (wrong by 0.2)
    sims = _sims([0.4, 0.6], [0.6, 0.4])
    terms = qualiclip_losses(sims, config)
    assert terms["positive"].item() == pytest.approx(0.6 - 0.4 + 0.1)
    assert terms["negative"].item() == pytest.approx(0.6 - 0.4 + 0.1)
    assert terms["consistency"].item() == 0.0
    assert terms["loss"].item() == pytest.approx(2.0 * 0.3 + 0.5 * 0.3)


def test_all_level_pairs_scale_the_margin_with_the_level_distance():
    i, j = level_pairs(3, "all")
    assert list(zip(i.tolist(), j.tolist(), strict=True)) == [(0, 1), (0, 2), (1, 2)]
    config = QualiCLIPLossConfig(margin_ranking=0.1, weight_consistency=0.0)
    # gaps of 0.15 between neighbours: adjacent pairs are satisfied, the (0, 2) pair needs 0.2 and has 0.3
    sims = _sims([0.8, 0.65, 0.5])
    assert qualiclip_losses(sims, config)["positive"].item() == 0.0
    tight = _sims([0.8, 0.72, 0.64])  # (0,1),(1,2): 0.08 < 0.1 -> 0.02 each; (0,2): 0.16 < 0.2 -> 0.04
    assert qualiclip_losses(tight, config)["positive"].item() == pytest.approx((0.02 + 0.02 + 0.04) / 3, abs=1e-6)
    adjacent = QualiCLIPLossConfig(margin_ranking=0.1, level_pairs="adjacent")
    assert qualiclip_losses(tight, adjacent)["positive"].item() == pytest.approx(0.02, abs=1e-6)


def test_gradients_push_each_level_the_right_way():
    config = QualiCLIPLossConfig(margin_ranking=0.05, similarity="cosine")
    sims = _sims([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])  # everything tied: every ranking hinge is active
    qualiclip_losses(sims, config)["loss"].backward()
    grad = sims.grad[0, 0, :, 0]  # crop a, pair 0: [L, 2]
    # descent = -grad: positive similarity of the mildest level goes up, of the strongest goes down
    assert grad[0, 0] < 0 < grad[2, 0]
    # negative similarity: mildest goes down, strongest goes up
    assert grad[0, 1] > 0 > grad[2, 1]


def test_consistency_reacts_only_to_crop_disagreement():
    config = QualiCLIPLossConfig(margin_consistency=0.0)
    agree = _sims([0.3, 0.5, 0.9])  # misordered, but both crops agree
    terms = qualiclip_losses(agree, config)
    assert terms["consistency"].item() == 0.0 and terms["positive"].item() > 0
    disagree = _sims([0.9, 0.7, 0.5], crop_b_offset=0.1)  # ordered, crop b 0.1 higher everywhere
    terms = qualiclip_losses(disagree, config)
    assert terms["positive"].item() == 0.0 and terms["negative"].item() == 0.0
    assert terms["consistency"].item() == pytest.approx(0.1)
    terms["loss"].backward()
    assert (disagree.grad[0, 0] < 0).all() and (disagree.grad[0, 1] > 0).all()  # pulls the crops together
    within_margin = QualiCLIPLossConfig(margin_consistency=0.2)
    assert qualiclip_losses(_sims([0.9, 0.7, 0.5], crop_b_offset=0.1), within_margin)["consistency"].item() == 0.0


def test_one_pair_ignores_the_others():
    sims = _sims([0.9, 0.8], pairs=7).detach().clone()
    sims[..., 3, 0] = torch.tensor([0.1, 0.9])  # pair 3 misordered
    sims.requires_grad_(True)
    assert qualiclip_losses(sims, QualiCLIPLossConfig(pairs=0))["loss"].item() == 0.0
    assert qualiclip_losses(sims, QualiCLIPLossConfig(pairs=3))["positive"].item() > 0
    with pytest.raises(ValueError, match="pair index in 0..6"):
        qualiclip_losses(sims, QualiCLIPLossConfig(pairs=7))


def test_prompt_similarities_forms():
    prompts = torch.eye(4)  # two pairs: (e0, e1), (e2, e3)
    image = torch.tensor([[2.0, 0.0, 0.0, 0.0]])  # along e0: cos 1 to "good" of pair 0, 0 to the rest
    cos = prompt_similarities(image, prompts, logit_scale=10.0, form="cosine")
    assert cos.tolist() == [[[1.0, 0.0], [0.0, 0.0]]]
    prob = prompt_similarities(image, prompts, logit_scale=10.0, form="probability", temperature=2.0)
    expected = torch.sigmoid(torch.tensor(10.0 / 2.0)).item()
    assert prob[0, 0, 0].item() == pytest.approx(expected) and prob[0, 0, 1].item() == pytest.approx(1 - expected)
    assert prob[0, 1].tolist() == [0.5, 0.5]


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match=r"expected \[B, 2 crops, L levels, P pairs, 2\]"):
        qualiclip_losses(torch.zeros(2, 3, 5, 7, 2), QualiCLIPLossConfig())
    with pytest.raises(ValueError, match="at least 2 levels"):
        qualiclip_losses(torch.zeros(2, 2, 1, 7, 2), QualiCLIPLossConfig())
    with pytest.raises(ValueError, match="2 per pair"):
        prompt_similarities(torch.zeros(1, 4), torch.zeros(3, 4), logit_scale=1.0)


def test_cross_sample_term_is_off_by_default_and_ranks_levels_across_samples():
    a = _sims([0.9, 0.7], [0.1, 0.3])
    b = _sims([0.5, 0.3], [0.5, 0.7])  # ordered within itself, but its level 0 is below a's level 1
    batch = torch.cat([a, b]).detach().requires_grad_(True)
    assert "cross_sample" not in qualiclip_losses(batch, QualiCLIPLossConfig(margin_ranking=0.1))
    config = QualiCLIPLossConfig(margin_ranking=0.1, weight_cross_sample=2.0)
    terms = qualiclip_losses(batch, config)
    assert terms["positive"].item() == terms["negative"].item() == 0.0  # each sample is ordered on its own
    # cross pairs (level 0 of one sample, level 1 of the other), per crop pair: 2 x 2 crops x 2 directions = 8;
    # only b@0 vs a@1 is wrong: positive 0.7 - 0.5 + 0.1 = 0.3 and negative 0.5 - 0.3 + 0.1 = 0.3, 4 crop pairs
    assert terms["cross_sample"].item() == pytest.approx(4 * (0.3 + 0.3) / 8 / 2)
    assert terms["loss"].item() == pytest.approx(2.0 * terms["cross_sample"].item())
    terms["loss"].backward()
    assert batch.grad[1, :, 0, 0, 0].lt(0).all() and batch.grad[0, :, 1, 0, 0].gt(0).all()  # b@0 up, a@1 down
