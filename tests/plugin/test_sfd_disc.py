"""SFD's discriminators and losses: shapes, frozen CLIP, loss signs, gradients reaching only their owners."""

from __future__ import annotations

import pytest
import torch

from iqa_plugin.archs.rrdbnet import RRDBNet
from iqa_plugin.archs.sfd_disc import TGD, FeatD, FrozenCLIP, load_clip_rn50
from iqa_plugin.hub.weights import WeightsOfflineError
from iqa_plugin.losses.gan import discriminator_loss, generator_loss
from iqa_plugin.losses.pixel import PerceptualLoss, pixel_loss, vgg19_layer_names


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    return FrozenCLIP(load_clip_rn50(None), stages=("layer2", "layer3"))


@pytest.fixture(scope="module")
def heads(clip):
    torch.manual_seed(1)
    return FeatD(clip.stage_channels(), hidden=16), TGD(clip.clip, n_ctx=4)


def test_shapes(clip, heads):
    feat_d, tg_d = heads
    out = clip(torch.rand(2, 3, 64, 96))
    assert out.stages["layer2"].shape == (2, 512, 8, 12) and out.stages["layer3"].shape == (2, 1024, 4, 6)
    assert out.embedding.shape == (2, 1024)
    assert feat_d(out.stages).shape == (2, 1, 8, 12)  # one logit per pixel of the finest stage
    assert tg_d(out.embedding).shape == (2,)
    assert tg_d.text_features().shape == (2, 1024)
    assert set(tg_d.state_dict()) == {"prompt_learner.ctx", "prompt_learner.token_prefix",
                                      "prompt_learner.token_suffix", "logit_scale"}  # no CLIP inside


def test_stage_choice_is_checked():
    with pytest.raises(ValueError, match="stages=.*layer1"):
        FrozenCLIP(torch.nn.Identity(), stages=("layer5",))


@pytest.mark.parametrize("gan_type", ["vanilla", "lsgan", "hinge"])
def test_sign_of_each_adversarial_loss(gan_type):
    # at 0.5: between LSGAN's targets (0, 1) and inside the hinge margins, so no loss is at its optimum
    real = torch.full((4,), 0.5, requires_grad=True)
    fake = torch.full((4,), 0.5, requires_grad=True)
    discriminator_loss(real, fake, gan_type).backward()
    assert (real.grad < 0).all(), "D loss must fall as real logits rise"
    assert (fake.grad > 0).all(), "D loss must fall as fake logits fall"
    fake_g = torch.full((4,), 0.5, requires_grad=True)
    generator_loss(fake_g, gan_type).backward()
    assert (fake_g.grad < 0).all(), "G loss must fall as D calls its output real"
    confident = discriminator_loss(torch.full((4,), 3.0), torch.full((4,), -3.0), gan_type)
    fooled = discriminator_loss(torch.full((4,), -3.0), torch.full((4,), 3.0), gan_type)
    assert confident < fooled
    assert generator_loss(torch.full((4,), 3.0), gan_type) < generator_loss(torch.full((4,), -3.0), gan_type)


def _grads(module: torch.nn.Module) -> list[bool]:
    return [p.grad is not None and bool(p.grad.abs().sum() > 0) for p in module.parameters()]


def test_discriminator_losses_reach_only_their_own_parameters(clip, heads):
    feat_d, tg_d = heads
    generator = RRDBNet(scale=4, features=8, blocks=1, growth=4)
    for net in (feat_d, tg_d, generator):
        net.zero_grad(set_to_none=True)
    hr = torch.rand(2, 3, 64, 64)
    sr = generator(torch.rand(2, 3, 16, 16))
    both = clip(torch.cat([hr, sr.detach()]))
    real, fake = feat_d(both.stages).chunk(2)
    discriminator_loss(real, fake).backward()
    assert all(_grads(feat_d)) and not any(_grads(tg_d)) and not any(_grads(generator))
    feat_d.zero_grad(set_to_none=True)
    real, fake = tg_d(both.embedding).chunk(2)
    discriminator_loss(real, fake).backward()
    assert _grads(tg_d) == [True] and not any(_grads(feat_d)) and not any(_grads(generator))  # only the context
    assert all(p.grad is None for p in clip.parameters())


def test_generator_loss_reaches_the_generator_through_the_frozen_clip(clip, heads):
    feat_d, tg_d = heads
    generator = RRDBNet(scale=4, features=8, blocks=1, growth=4)
    for net in (feat_d, tg_d):
        net.zero_grad(set_to_none=True)
        net.requires_grad_(False)
    try:
        out = clip(generator(torch.rand(2, 3, 16, 16)))
        (generator_loss(feat_d(out.stages)) + generator_loss(tg_d(out.embedding))).backward()
    finally:
        for net in (feat_d, tg_d):
            net.requires_grad_(True)
    assert all(_grads(generator))
    assert all(p.grad is None for net in (feat_d, tg_d, clip) for p in net.parameters())


def test_clip_stays_in_eval_mode(clip):
    clip.train()
    assert not any(m.training for m in clip.modules())
    assert not any(p.requires_grad for p in clip.parameters())


def test_perceptual_losses(clip):
    sr, hr = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    on_clip = PerceptualLoss("clip", clip=clip)
    assert on_clip(hr, hr) == 0 and on_clip(sr, hr) > 0
    assert on_clip.net is clip  # shared, not a second CLIP
    vgg = PerceptualLoss("vgg19", layers={"conv2_2": 1.0}, vgg_weights=None)
    assert len(vgg.net) == vgg19_layer_names().index("conv2_2") + 1  # runs only as deep as needed
    sr.requires_grad_(True)
    vgg(sr, hr).backward()
    assert sr.grad.abs().sum() > 0 and all(p.grad is None for p in vgg.parameters())
    assert PerceptualLoss("auto", clip=clip).backbone == "clip"  # no VGG19 file on this machine: CLIP
    assert pixel_loss(torch.ones(2), torch.zeros(2)) == 1.0


def test_vgg19_weights_load_from_a_file(tmp_path):
    from torchvision.models import vgg19

    torch.manual_seed(3)
    features = {f"features.{k}": v for k, v in vgg19(weights=None).features.state_dict().items()}
    torch.save(features, tmp_path / "vgg19-dcbb9e9d.pth")
    loss = PerceptualLoss("auto", vgg_weights=tmp_path / "vgg19-dcbb9e9d.pth")
    assert loss.backbone == "vgg19"
    assert torch.equal(loss.net[34].weight, features["features.34.weight"])


def test_clip_from_openai_archive_and_the_card_offline(tmp_path, monkeypatch):
    from iqa_plugin.testing import fabricate_openai_clip_archive, fabricated_clip_state_dict

    path = fabricate_openai_clip_archive(tmp_path / "RN50.pt", seed=2)
    clip = load_clip_rn50(path)
    expected = fabricated_clip_state_dict(2)["visual.layer3.0.conv1.weight"]
    assert torch.equal(clip.visual.layer3[0].conv1.weight, expected.half().float())
    monkeypatch.setenv("IQA_PLUGIN_OFFLINE", "1")
    with pytest.raises(WeightsOfflineError, match="openaipublic.azureedge.net/clip/models/afeb0e10"):
        load_clip_rn50("clip_rn50_openai")
