"""RRDBNet: shapes, the official ESRGAN/SFD layout loading as is, BasicSR's through the key mapping."""

from __future__ import annotations

import pytest
import torch

from iqa_plugin.archs.rrdbnet import (
    RRDBNet,
    config_from_state_dict,
    rrdbnet_from_state_dict,
    to_official_keys,
)
from iqa_plugin.testing import fabricate_rrdbnet_checkpoint, fabricated_rrdbnet_state_dict

SMALL = {"features": 8, "blocks": 2, "growth": 4}


@pytest.mark.parametrize(("scale", "unshuffle"), [(4, 1), (2, 1), (2, 2), (1, 4)])
def test_output_is_scale_times_input(scale, unshuffle):
    net = RRDBNet(scale=scale, unshuffle=unshuffle, **SMALL)
    assert net(torch.rand(2, 3, 12, 20)).shape == (2, 3, 12 * scale, 20 * scale)


def test_full_size_matches_the_published_configuration():
    net = RRDBNet(scale=4)
    official = fabricated_rrdbnet_state_dict("official", scale=4)
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == {k: tuple(v.shape) for k, v in official.items()}
    assert sum(p.numel() for p in net.parameters()) == 16_697_987  # ESRGAN x4 generator, as published


def test_official_layout_loads_unchanged_and_strictly():
    state = fabricated_rrdbnet_state_dict("official", scale=2, **SMALL)
    net = RRDBNet(scale=2, **SMALL)
    net.load_state_dict(state, strict=True)  # names are the official ones: no mapping needed
    assert not hasattr(net, "upconv2")  # official x2 has a single upsampling


def test_basicsr_keys_map_to_official_keys():
    basicsr = fabricated_rrdbnet_state_dict("basicsr", scale=4, **SMALL)
    official = fabricated_rrdbnet_state_dict("official", scale=4, **SMALL)
    mapped = to_official_keys(basicsr)
    assert list(mapped) == list(official)
    for key in official:
        assert torch.equal(mapped[key], official[key]), key
    assert to_official_keys(official).keys() == official.keys()  # official keys pass through


def test_both_layouts_give_the_same_network_output():
    x = torch.rand(1, 3, 16, 16)
    nets = [rrdbnet_from_state_dict(fabricated_rrdbnet_state_dict(layout, scale=4, **SMALL)) for layout in
            ("official", "basicsr")]
    assert torch.equal(nets[0](x), nets[1](x))


@pytest.mark.parametrize(
    ("layout", "scale", "expected"),
    [
        ("official", 4, {"scale": 4, "unshuffle": 1}),
        ("official", 2, {"scale": 2, "unshuffle": 1}),
        ("basicsr", 2, {"scale": 2, "unshuffle": 2}),
        ("basicsr", 1, {"scale": 1, "unshuffle": 4}),
    ],
)
def test_configuration_is_read_from_shapes(layout, scale, expected):
    state = to_official_keys(fabricated_rrdbnet_state_dict(layout, scale=scale, **SMALL))
    config = config_from_state_dict(state)
    assert config == {**SMALL, **expected, "in_channels": 3, "out_channels": 3}
    net = rrdbnet_from_state_dict(state)
    assert net(torch.rand(1, 3, 8, 8)).shape[-1] == 8 * scale


@pytest.mark.parametrize("wrap", ["params_ema", "params", None])
def test_release_wrappers_and_ddp_prefix_are_unwrapped(tmp_path, wrap):
    path = fabricate_rrdbnet_checkpoint(tmp_path / "g.pth", "basicsr", wrap=wrap, scale=4, **SMALL)
    state = torch.load(path, weights_only=True)
    if wrap is None:
        state = {f"module.{k}": v for k, v in state.items()}
    net = rrdbnet_from_state_dict(state, str(path))
    expected = fabricated_rrdbnet_state_dict("official", scale=4, **SMALL)
    assert torch.equal(net.state_dict()["RRDB_trunk.1.RDB3.conv5.weight"], expected["RRDB_trunk.1.RDB3.conv5.weight"])


def test_wrong_scale_and_foreign_dicts_are_refused_with_the_fix():
    state = fabricated_rrdbnet_state_dict("official", scale=2, **SMALL)
    with pytest.raises(ValueError, match=r"upscales x2, but x4 was asked for; pass scale=2"):
        rrdbnet_from_state_dict(state, "g.pth", scale=4)
    with pytest.raises(ValueError, match=r"not an RRDBNet state dict .*ESRGAN/SFD layout"):
        rrdbnet_from_state_dict({"features.0.weight": torch.zeros(1)}, "vgg.pth")
    broken = dict(state)
    broken["HRconv.weight"] = torch.zeros(8, 8, 1, 1)
    with pytest.raises(RuntimeError, match="HRconv.weight"):
        rrdbnet_from_state_dict(broken)


def test_impossible_scale_is_refused():
    with pytest.raises(ValueError, match="power of two"):
        RRDBNet(scale=3, **SMALL)


def test_residual_bicubic_starts_at_bicubic_and_keeps_the_official_layout():
    import torch.nn.functional as F

    x = torch.rand(1, 3, 10, 12)
    net = RRDBNet(scale=4, residual="bicubic", **SMALL)
    assert torch.equal(net(x), F.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False))
    assert net.state_dict().keys() == RRDBNet(scale=4, **SMALL).state_dict().keys()
    state = fabricated_rrdbnet_state_dict("official", scale=4, **SMALL)
    plain, residual = rrdbnet_from_state_dict(state), rrdbnet_from_state_dict(state, residual="bicubic")
    expected = plain(x) + F.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False)
    assert torch.allclose(residual(x), expected, atol=1e-6)
    with pytest.raises(ValueError, match="residual='sum'"):
        RRDBNet(residual="sum")
