"""The plugin seen through pyiqa's own API: registration, create_metric, list_models, as_loss."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch

import iqa_plugin
from iqa_plugin.registration import TAKEN_OVER

NAMES = list(TAKEN_OVER)


def test_names_registered_with_our_arch():
    import pyiqa
    from pyiqa.default_model_configs import DEFAULT_CONFIGS
    from pyiqa.utils.registry import ARCH_REGISTRY

    models = pyiqa.list_models()
    for name in NAMES:
        assert name in models
        assert DEFAULT_CONFIGS[name]["metric_opts"]["type"] == "IqaPluginQualiCLIP"
        assert DEFAULT_CONFIGS[name]["metric_opts"]["model_type"] == name
        assert DEFAULT_CONFIGS[name]["metric_opts"]["card"] == name
    # pyiqa builds our arch names through the plugin's one builder
    assert ARCH_REGISTRY.get("IqaPluginQualiCLIP") is iqa_plugin.registration.build_for_pyiqa
    assert "qualiclip" in pyiqa.list_models(metric_mode="NR")


def test_register_is_idempotent_and_silent():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = iqa_plugin.register()
        second = iqa_plugin.register()
    assert first == second and set(NAMES) <= set(first)


def test_import_after_pyiqa_created_a_metric_is_silent():
    code = (
        "import warnings, pyiqa\n"
        "m = pyiqa.create_metric('psnr', device='cpu')\n"
        "warnings.simplefilter('error')\n"
        "import iqa_plugin, importlib\n"
        "importlib.reload(iqa_plugin)\n"
        "from pyiqa.default_model_configs import DEFAULT_CONFIGS\n"
        "assert DEFAULT_CONFIGS['qualiclip']['metric_opts']['type'] == 'IqaPluginQualiCLIP'\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-2000:]


@pytest.mark.parametrize("flags", [[], ["-W", "error::UserWarning"]], ids=["default", "warnings-as-errors"])
def test_an_invalid_card_never_breaks_import_pyiqa(tmp_path, flags):
    """The import hook (armed by the autoload .pth, here by ``import iqa_plugin``) skips a bad card with one
    warning line; pyiqa and the valid names still work. Even with warnings as errors, import never fails."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: broken-card\nkind: metric\ncolour: blue\n")
    code = (
        "import iqa_plugin, pyiqa\n"
        "m = pyiqa.create_metric('psnr', device='cpu')\n"
        + ("m = pyiqa.create_metric('qualiclip', device='cpu', pretrained=False)\n" if not flags else "")
        + "print('ok')\n"
    )
    env = {**os.environ, "IQA_PLUGIN_REGISTRY": str(tmp_path), "IQA_PLUGIN_OFFLINE": "1"}
    result = subprocess.run([sys.executable, *flags, "-c", code], capture_output=True, text=True, timeout=300,
                            env=env)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "colour" in lines[0], result.stderr[-2000:]


def test_entry_point_target_is_register():
    from importlib.metadata import entry_points

    eps = [ep for ep in entry_points(group="pyiqa.archs") if ep.name == "iqa_plugin"]
    if not eps:
        pytest.skip("package metadata not installed (run `pip install -e .`)")
    assert eps[0].load() is iqa_plugin.register


@pytest.mark.slow
def test_create_metric_scores_paths_and_tensors(fabricated, photos):
    import pyiqa

    metric = pyiqa.create_metric("qualiclip", device="cpu", pretrained_model_path=str(fabricated["qualiclip"]))
    assert metric.lower_better is False
    assert metric.score_range == "0, 1"
    from_path = metric(str(photos[3]))
    assert from_path.shape == (1, 1) and 0.0 <= from_path.item() <= 1.0
    x = torch.rand(2, 3, 64, 80)
    out = metric(x)
    assert out.shape == (2, 1) and torch.all((out >= 0) & (out <= 1))


@pytest.mark.slow
def test_as_loss_gives_finite_input_gradients(fabricated):
    import pyiqa

    loss = pyiqa.create_metric(
        "qualiclip", as_loss=True, device="cpu", pretrained_model_path=str(fabricated["qualiclip"])
    )
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    value = loss(x)
    value.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_temperature_one_and_two_differ_and_stay_in_range():
    from iqa_plugin.archs.qualiclip import IqaPluginQualiCLIP

    torch.manual_seed(0)
    net = IqaPluginQualiCLIP()
    net.prompt_features.copy_(torch.nn.functional.normalize(torch.randn(14, 1024), dim=-1))
    x = torch.rand(1, 3, 96, 64)
    with torch.inference_mode():
        two = net(x)
        net.temperature = 1.0
        one = net(x)
    assert torch.all((one >= 0) & (one <= 1)) and not torch.allclose(one, two)


def test_head_is_stable_in_float16_range():
    """The pair softmax as a sigmoid of differences: huge logits give 0/1, never NaN."""
    from iqa_plugin.archs.qualiclip import IqaPluginQualiCLIP

    net = IqaPluginQualiCLIP()
    net.prompt_features.copy_(torch.nn.functional.normalize(torch.randn(14, 1024), dim=-1))
    net.logit_scale.data.fill_(20.0)  # exp(20) ~ 5e8: exp(logits / T) would overflow
    score = net.head(torch.randn(3, 1024).half())
    assert torch.isfinite(score).all() and torch.all((score >= 0) & (score <= 1))


def test_fourteen_prompts():
    from iqa_plugin.archs.prompts import PROMPT_PAIRS, PROMPTS

    assert len(PROMPTS) == 14 and len(set(PROMPTS)) == 14 and len(PROMPT_PAIRS) == 7
    assert PROMPTS[0] == "Good photo." and PROMPTS[1] == "Bad photo."


@pytest.mark.slow
def test_weights_from_http_and_s3_urls(fabricated, http_server, s3, photos):
    """pretrained_model_path / base_model_path take URLs: base over HTTP, QualiCLIP+ prompts from S3."""
    import pyiqa

    base_url, root, stats = http_server
    link = root / "QualiCLIP-http.pth"
    if not link.exists():
        link.symlink_to(fabricated["qualiclip"])
    s3.mkdir("weights")
    s3.put(str(fabricated["qualiclip+"]), "weights/QualiCLIP+_koniq.pth")
    metric = pyiqa.create_metric(
        "qualiclip+",
        device="cpu",
        pretrained_model_path="s3://weights/QualiCLIP+_koniq.pth",
        base_model_path=f"{base_url}/QualiCLIP-http.pth",
    )
    local = pyiqa.create_metric(
        "qualiclip+",
        device="cpu",
        pretrained_model_path=str(fabricated["qualiclip+"]),
        base_model_path=str(fabricated["qualiclip"]),
    )
    assert stats["/QualiCLIP-http.pth"] == 1
    x = torch.rand(1, 3, 64, 96)
    assert torch.allclose(metric(x), local(x), atol=1e-6)


def test_offline_without_cache_fails_at_once_with_the_fix(monkeypatch):
    import pyiqa

    from iqa_plugin.hub.weights import WeightsOfflineError

    monkeypatch.setenv("IQA_PLUGIN_OFFLINE", "1")
    with pytest.raises(WeightsOfflineError) as info:
        pyiqa.create_metric("qualiclip", device="cpu")
    message = str(info.value)
    assert "QualiCLIP.pth" in message and "IQA_PLUGIN_CACHE" in message and "IQA_PLUGIN_OFFLINE" in message


BAD_INPUTS = [
    ("rank 2", lambda: torch.rand(64, 64), "bad_shape"),
    ("rank 5", lambda: torch.rand(1, 1, 3, 64, 64), "bad_shape"),
    ("5 channels", lambda: torch.rand(1, 5, 64, 64), "bad_shape"),
    ("nan", lambda: torch.full((1, 3, 64, 64), float("nan")), "bad_values"),
    ("inf", lambda: torch.full((1, 3, 64, 64), float("inf")), "bad_values"),
    ("uint8", lambda: torch.zeros(1, 3, 64, 64, dtype=torch.uint8), "bad_values"),
    ("16 px", lambda: torch.rand(1, 3, 16, 64), "too_small"),
]


@pytest.fixture(scope="module")
def random_net():
    from iqa_plugin.build import build_network

    return build_network("qualiclip", pretrained=False)


@pytest.mark.parametrize(("case", "make", "reason"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_network_rejects_bad_tensors_with_reason(random_net, case, make, reason):
    from iqa_plugin.data.images import ImageInputError

    with pytest.raises(ImageInputError) as info:
        random_net(make())
    assert info.value.reason == reason
    assert "Fix" in str(info.value) or "fix" in str(info.value)


@pytest.mark.parametrize("channels", [1, 4])
def test_network_converts_gray_and_rgba(random_net, channels):
    x = torch.rand(1, 3, 64, 64)
    converted = x[:, :1] if channels == 1 else torch.cat([x, torch.rand(1, 1, 64, 64)], dim=1)
    expected = x[:, :1].repeat(1, 3, 1, 1) if channels == 1 else x
    with torch.inference_mode():
        assert torch.allclose(random_net(converted), random_net(expected))


def test_network_accepts_finite_values_outside_unit_range(random_net):
    """pyiqa's metrics take them on the loss path (an overshooting generator, torch.randn in its tests)."""
    torch.manual_seed(0)
    with torch.inference_mode():
        for x in (torch.full((1, 3, 64, 64), 1.5), torch.full((1, 3, 64, 64), -0.2), torch.randn(2, 3, 64, 64)):
            assert torch.isfinite(random_net(x)).all()


@pytest.mark.slow
def test_as_loss_accepts_randn_like_pyiqas_own_suite(fabricated):
    import pyiqa

    loss = pyiqa.create_metric("qualiclip", as_loss=True, device="cpu", pretrained_model_path=str(fabricated["qualiclip"]))
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    loss(x).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with pytest.raises(Exception, match="bad_values"):
        loss(torch.full((1, 3, 64, 64), float("nan")))
