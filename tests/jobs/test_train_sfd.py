"""``iqa train sfd`` on a real local Ray and the moto S3 server: SR shards -> warm-up -> GAN phase ->
checkpoints of every network -> export of the generator (an ``sr`` card that ``create_sr_model`` serves)
and of the discriminators (a ``discriminator`` card, and over the same file an SFD-IQA metric card that
``pyiqa.create_metric`` serves) -> a finished run rerun does nothing. The driver-kill
resume of SFD runs in tests/jobs/test_train_qualiclip.py (parametrized over both recipes)."""

from __future__ import annotations

import io
import re

import pytest
import torch

from tests.jobs.conftest import SFD_TINY_RECIPE

pytestmark = pytest.mark.slow


def test_warmup_then_gan_then_export_served_by_create_sr_model(s3_server, s3, sr_shards, photos, tmp_path,
                                                               capsys, monkeypatch):
    from iqa_plugin.archs.sfd_disc import TGD, FeatD, FrozenCLIP, load_clip_rn50
    from iqa_plugin.hub.cards import load_card_file
    from ray_jobs.train.config import TrainJobConfig
    from ray_jobs.train.job import run

    s3.mkdir("runs")
    registry = tmp_path / "registry"
    config = TrainJobConfig(recipe_name="sfd", shards=sr_shards, out="s3://runs/sfd", workers=2, batch_size=2,
                            steps=4, report_every=2, checkpoint_every=2, validate_every=2, validation_crop=64,
                            export_name="sfd-test-run", register_to=str(registry),
                            recipe={k: v for k, v in SFD_TINY_RECIPE.items() if k != "perceptual_backbone"})
    assert run(config) == 0
    printed = capsys.readouterr().out
    assert "recipe.perceptual_backbone: clip (resolved on this driver" in printed  # no VGG19 file here
    assert re.search(r"step 2/4 \[warm-up\] L1 [\d.]+ .*\| val PSNR-Y [\d.]+ dB \(bicubic [\d.]+\)", printed), printed
    gan = re.search(r"step 4/4 \[gan\] L1 ([\d.]+) perc ([\d.]+) adv feat ([\d.]+) tg ([\d.]+) \| D feat ([\d.]+)", printed)
    assert gan and all(float(v) >= 0 for v in gan.groups()), printed  # finite numbers (nan does not match)
    assert re.search(r"done: 4 steps, held-out PSNR-Y [\d.]+ dB vs bicubic [\d.]+ dB \(margin [-+][\d.]+ dB\)", printed)
    assert "iqa_plugin.create_sr_model('sfd-test-run')" in printed

    checkpoints = sorted(p.rsplit("/", 1)[-1] for p in s3.ls("runs/sfd/run") if "step_" in p)
    assert checkpoints == ["step_00000002", "step_00000004"]
    state = torch.load(io.BytesIO(s3.cat_file("runs/sfd/run/step_00000004/state.pt")), weights_only=True)["recipe"]
    assert state["steps_done"] == 4 and set(state["optimizers"]) == {"generator", "feat_d", "tg_d"}
    assert {"generator", "generator_ema", "feat_d", "tg_d", "rng"} <= set(state)

    sr_card = load_card_file(registry / "sfd-test-run.yaml")
    assert sr_card.kind == "sr" and sr_card.arch_options["residual"] == "bicubic"
    assert '"perceptual_backbone": "clip"' in sr_card.description  # the export records the resolved value
    assert sr_card.weights["model"].urls[0].startswith("s3://runs/sfd/export/")
    disc_path = tmp_path / "disc.yaml"
    disc_path.write_bytes(s3.cat_file("runs/sfd/export/sfd-test-run-disc.yaml"))
    disc_card = load_card_file(disc_path)
    assert disc_card.kind == "discriminator" and disc_card.arch_options["feat_stages"] == ["layer2", "layer3"]

    # the discriminator file loads into the documented plain modules (spectral norm folded)
    from safetensors.torch import load as load_safetensors

    tensors = load_safetensors(s3.cat_file("runs/sfd/export/sfd-test-run-disc.safetensors"))
    clip = FrozenCLIP(load_clip_rn50(None), tuple(disc_card.arch_options["feat_stages"]))
    feat_d = FeatD(clip.stage_channels(), disc_card.arch_options["feat_hidden"], spectral_norm=False)
    feat_d.load_state_dict({k.removeprefix("feat_d."): v for k, v in tensors.items() if k.startswith("feat_d.")})
    tg_d = TGD(clip.clip, tuple(disc_card.arch_options["prompt_words"]), disc_card.arch_options["n_ctx"])
    tg_d.load_state_dict({k.removeprefix("tg_d."): v for k, v in tensors.items()
                          if k.startswith("tg_d.") and k != "tg_d.text_features"})
    text = tensors["tg_d.text_features"]  # added: the LPP's (real, fake) text features, the metric's TG-D
    assert text.shape == (2, 1024) and torch.allclose(text.norm(dim=-1), torch.ones(2), atol=1e-4)

    # the SFD-IQA metric card over that same file: `iqa models add` it, pyiqa.create_metric scores photos
    from ray_jobs.cli import main

    assert main(["models", "add", "s3://runs/sfd/export/sfd-test-run-iqa.yaml", "--registry", str(registry)]) == 0
    iqa_card = load_card_file(registry / "sfd-test-run-iqa.yaml")
    assert iqa_card.arch == "IqaPluginSFDIQA" and iqa_card.weights["model"].urls == disc_card.weights["model"].urls

    monkeypatch.setenv("IQA_PLUGIN_REGISTRY", str(registry))
    import iqa_plugin

    model = iqa_plugin.create_sr_model("sfd-test-run", device="cpu")
    from PIL import Image

    with Image.open(photos[0]) as photo:
        lowres = photo.convert("RGB").resize((40, 30))
    upscaled = model.upscale(lowres)
    assert upscaled.size == (160, 120)
    trained = model.network.network  # the generator behind the card; residual mode keeps bicubic as its base
    assert trained.residual == "bicubic" and trained.conv_last.weight.abs().sum() > 0

    import pyiqa

    iqa_plugin.register()
    metric = pyiqa.create_metric("sfd-test-run-iqa", device="cpu")
    served = metric.net.network.feat_d.state_dict()  # the trained Feat-D, not a fresh one
    assert all(torch.equal(v, tensors[f"feat_d.{k}"]) for k, v in served.items()) and served
    scores = [float(metric(str(photo))) for photo in photos[:2]]
    assert all(0.0 <= s <= 1.0 for s in scores) and scores[0] != scores[1], scores

    assert run(config) == 0  # finished: says so, does nothing
    assert "already finished" in capsys.readouterr().out


def test_sfd_user_errors_are_one_line_before_ray_starts(sr_shards, tmp_path, capsys):
    from ray_jobs.cli import main

    bad = tmp_path / "run.yaml"
    bad.write_text("recipe:\n  scale: 2\n")
    assert main(["train", "sfd", "--shards", sr_shards, "--out", str(tmp_path / "o"), "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "shards were made for x4 but recipe.scale is 2" in err and len(err.strip().splitlines()) == 1, err
    bad.write_text("recipe:\n  featurs: 8\n")
    assert main(["train", "sfd", "--shards", sr_shards, "--out", str(tmp_path / "o"), "--config", str(bad)]) == 2
    assert "recipe.featurs: unknown key (known: scale, features" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_perceptual_backbone_auto_is_resolved_once_in_the_driver(sr_shards, tmp_path, capsys, monkeypatch):
    import iqa_plugin.losses.pixel as pixel
    from ray_jobs.train.config import TrainJobConfig
    from ray_jobs.train.job import _resolve
    from ray_jobs.train.recipes import recipe_spec

    spec = recipe_spec("sfd")
    config = TrainJobConfig(recipe_name="sfd", shards=sr_shards, out=str(tmp_path / "o"), recipe={"features": 8})
    for cached, expected in ((False, "clip"), (True, "vgg19")):
        monkeypatch.setattr(pixel, "vgg19_available", lambda name, cached=cached: cached)
        resolved = _resolve(config, spec)
        assert resolved.recipe == {"features": 8, "perceptual_backbone": expected}  # what the workers receive
        assert f"recipe.perceptual_backbone: {expected} (resolved on this driver from its default" in capsys.readouterr().out
    explicit = config.model_copy(update={"recipe": {"perceptual_backbone": "clip"}})
    assert _resolve(explicit, spec).recipe == {"perceptual_backbone": "clip"} and not capsys.readouterr().out
