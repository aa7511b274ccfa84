"""SFDTrainer (Ray-free): warm-up then GAN phase, what each phase updates, frozen CLIP, EMA, resume."""

from __future__ import annotations

import copy

import pytest
import torch
from pydantic import ValidationError

from iqa_plugin.archs.sfd_disc import load_clip_rn50
from iqa_plugin.training.sfd import SFDConfig, SFDTrainer, make_lr

TINY = {"features": 8, "blocks": 1, "growth": 4, "feat_hidden": 8, "n_ctx": 2, "clip": None,
        "perceptual_backbone": "clip", "warmup_steps": 2, "lr_g": 1e-3, "lr_d": 1e-3}


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    return load_clip_rn50(None)


def _batch(seed: int) -> dict[str, torch.Tensor]:
    return {"hr": torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(seed))}


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(before[k], v) for k, v in module.state_dict().items() if k in before)


def test_warmup_updates_only_the_generator_then_gan_updates_all_but_clip(clip):
    trainer = SFDTrainer(SFDConfig(**TINY), clip=clip)
    clip_before = _snapshot(trainer.clip)
    feat_before, tg_before = _snapshot(trainer.feat_d), _snapshot(trainer.tg_d)
    gen_before = _snapshot(trainer.generator)
    metrics = trainer.step(_batch(0))
    assert metrics["phase"] == 0.0 and set(metrics) == {"phase", "loss_pixel", "lr_g", "step"}
    assert _changed(gen_before, trainer.generator)
    assert not _changed(feat_before, trainer.feat_d) and not _changed(tg_before, trainer.tg_d)
    trainer.step(_batch(1))
    assert trainer.phase == "gan"
    metrics = trainer.step(_batch(2))
    assert metrics["phase"] == 1.0
    for key in ("loss_pixel", "loss_perceptual", "loss_g_feat", "loss_g_tg", "loss_d_feat", "loss_d_tg"):
        assert torch.isfinite(torch.tensor(metrics[key])), key
    assert 0 < metrics["d_feat_real"] < 1 and 0 < metrics["d_tg_fake"] < 1
    assert _changed(feat_before, trainer.feat_d) and _changed(tg_before, trainer.tg_d)
    assert not _changed(clip_before, trainer.clip)  # frozen weights and BatchNorm statistics
    assert not any(p.requires_grad for p in trainer.clip.parameters())
    assert all(p.requires_grad for p in trainer.feat_d.parameters())  # unfrozen again after the G step


def test_ema_generator_is_exported_and_lags_the_trained_one(clip):
    trainer = SFDTrainer(SFDConfig(**TINY, ema_decay=0.5), clip=clip)
    for i in range(2):
        trainer.step(_batch(i))
    ema = trainer.export_generator()
    assert ema is not trainer.generator
    trained = trainer.generator.state_dict()
    assert any(not torch.equal(v, trained[k]) for k, v in ema.state_dict().items())
    assert SFDTrainer(SFDConfig(**TINY, ema_decay=None), clip=clip).export_generator() is not None


def test_resume_from_state_dict_continues_identically(clip):
    config = SFDConfig(**TINY)
    first = SFDTrainer(config, clip=clip)
    for i in range(3):
        first.step(_batch(i))
    state = copy.deepcopy(first.state_dict())
    resumed = SFDTrainer(config, clip=clip)
    resumed.load_state_dict(state)
    assert resumed.steps_done == 3 and resumed.phase == "gan"
    torch.manual_seed(5)
    expected = first.step(_batch(3))
    torch.manual_seed(5)
    got = resumed.step(_batch(3))
    assert got == pytest.approx(expected, rel=1e-5)
    assert set(state) == {"steps_done", "rng", "generator", "feat_d", "tg_d", "optimizers", "schedulers",
                          "generator_ema"}


def test_lr_is_made_from_hr_and_the_config_rejects_unknown_keys():
    config = SFDConfig(**TINY)
    assert make_lr(torch.rand(2, 3, 64, 48), config).shape == (2, 3, 16, 12)
    real = SFDConfig(**{**TINY, "degradation": "realworld", "scale": 2})
    assert make_lr(torch.rand(1, 3, 64, 64), real, seed=3).shape == (1, 3, 32, 32)
    with pytest.raises(ValidationError, match="extra_forbidden|Extra inputs"):
        SFDConfig(generator_lr=1e-3)
    assert SFDConfig().feat_stages == ("layer2", "layer3") and SFDConfig().lr_g == 1e-4


def test_bf16_autocast_steps_stay_finite_and_weights_stay_fp32(clip):
    trainer = SFDTrainer(SFDConfig(**{**TINY, "precision": "bf16"}), clip=clip)  # the GPU path, run on CPU
    for i in range(3):
        metrics = trainer.step(_batch(i))
    assert metrics["phase"] == 1.0 and all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    assert all(p.dtype == torch.float32 for net in (trainer.generator, trainer.feat_d, trainer.tg_d)
               for p in net.parameters())
