"""create_sr_model and SRModel.upscale: cards, weights, input/output types, tiling."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from iqa_plugin.archs.rrdbnet import RRDBNet
from iqa_plugin.hub.cards import UnknownCardError
from iqa_plugin.hub.weights import WeightsError, manual_weights_path
from iqa_plugin.inference.sr import SRModel, create_sr_model
from iqa_plugin.testing import fabricate_rrdbnet_checkpoint

SMALL = {"features": 8, "blocks": 1, "growth": 4}


@pytest.fixture(scope="module")
def small_x4():
    torch.manual_seed(0)
    return RRDBNet(scale=4, **SMALL)


def test_card_without_its_file_says_where_to_get_it_and_where_to_put_it():
    with pytest.raises(WeightsError) as info:
        create_sr_model("sfd_rrdb_x4")
    message = str(info.value)
    assert "Google Drive" in message and "github.com/GuangluDong0728/SFD" in message
    assert str(manual_weights_path(__import__("iqa_plugin.hub.cards").hub.cards.get_card("sfd_rrdb_x4"))) in message
    assert "pretrained_model_path=" in message


def test_file_placed_where_the_error_said_is_used(tmp_path):
    from iqa_plugin.hub.cards import get_card

    target = manual_weights_path(get_card("sfd_rrdb_x4"))
    fabricate_rrdbnet_checkpoint(target, "official", scale=4, **SMALL)
    model = create_sr_model("sfd_rrdb_x4", device="cpu", **SMALL)
    assert model.scale == 4 and model.network.network.config["features"] == 8


@pytest.mark.parametrize(("layout", "wrap"), [("official", None), ("basicsr", "params_ema")])
def test_pretrained_model_path_in_either_layout(tmp_path, layout, wrap):
    path = fabricate_rrdbnet_checkpoint(tmp_path / "g.pth", layout, wrap=wrap, scale=4, **SMALL)
    model = create_sr_model("sfd_rrdb_x4", pretrained_model_path=path, device="cpu", **SMALL)
    assert model.upscale(torch.rand(3, 10, 12)).shape == (3, 40, 48)


def test_wrong_scale_file_and_wrong_kind_and_unknown_name(tmp_path):
    path = fabricate_rrdbnet_checkpoint(tmp_path / "x2.pth", "official", scale=2, **SMALL)
    with pytest.raises(ValueError, match=r"this generator has \{'scale': 2\}, but card 'sfd_rrdb_x4' builds "
                       r"\{'scale': 4\}.*scale=2"):
        create_sr_model("sfd_rrdb_x4", pretrained_model_path=path, **SMALL)
    with pytest.raises(ValueError, match=r"\{'scale': 2, 'features': 8, 'blocks': 1, 'growth': 4\}.*scale=2, features=8, blocks=1"):
        create_sr_model("sfd_rrdb_x4", pretrained_model_path=path)
    with pytest.raises(ValueError, match="is a metric card, not an SR model"):
        create_sr_model("qualiclip")
    with pytest.raises(UnknownCardError, match="sfd_rrdb_x4"):
        create_sr_model("sfd_rrdb_x5")


def test_random_weights_without_any_file():
    model = create_sr_model("sfd_rrdb_x4", pretrained=False, device="cpu")
    assert model.network.network.config["blocks"] == 23 and model.scale == 4


def test_full_size_official_checkpoint_through_the_builder(tmp_path):
    from iqa_plugin.build import build_network

    path = fabricate_rrdbnet_checkpoint(tmp_path / "RRDB_x4.pth", "official", scale=4)
    net = build_network("sfd_rrdb_x4", pretrained_model_path=path)
    assert net.weights_sha256 is not None and len(net.weights_sha256) == 64
    assert net(torch.rand(1, 3, 8, 8)).shape == (1, 3, 32, 32)


def test_each_input_kind_comes_back_as_its_own_kind(small_x4, photos, tmp_path):
    model = SRModel(small_x4, device="cpu")
    photo = Image.open(photos[0]).convert("RGB").resize((24, 16))
    array = np.array(photo)

    assert isinstance(out := model.upscale(photo), Image.Image) and out.size == (96, 64) and out.mode == "RGB"
    assert (out := model.upscale(array)).dtype == np.uint8 and out.shape == (64, 96, 3)
    assert (out := model.upscale(array.astype(np.uint16) * 257)).dtype == np.uint16
    assert (out := model.upscale(array / 255.0)).dtype == np.float64 and out.max() <= 1.0
    assert model.upscale(array[..., 0]).shape == (64, 96, 3)  # grey -> RGB

    buffer = io.BytesIO()
    photo.save(buffer, "JPEG")
    png = model.upscale(buffer.getvalue())
    assert isinstance(png, bytes) and Image.open(io.BytesIO(png)).size == (96, 64)

    photo.save(tmp_path / "lr.png")
    assert model.upscale(str(tmp_path / "lr.png")).size == (96, 64)
    written = model.upscale(tmp_path / "lr.png", out=tmp_path / "sr.png")
    assert written == tmp_path / "sr.png" and Image.open(written).size == (96, 64)

    t8 = torch.from_numpy(array).permute(2, 0, 1).contiguous()
    assert (out := model.upscale(t8)).dtype == torch.uint8 and out.shape == (3, 64, 96)
    batch = torch.rand(2, 3, 16, 24, dtype=torch.float64)
    assert (out := model.upscale(batch)).shape == (2, 3, 64, 96) and out.dtype == torch.float64
    assert model.upscale(batch[:1]).shape == (1, 3, 64, 96)
    # the same pixels give the same result whatever the container
    assert np.array_equal(np.asarray(model.upscale(photo)), model.upscale(array))


def test_bad_inputs_are_refused_with_the_reason(small_x4):
    model = SRModel(small_x4, device="cpu")
    with pytest.raises(ValueError, match=r"\[bad_values\]"):
        model.upscale(torch.full((3, 8, 8), float("nan")))
    with pytest.raises(TypeError, match=r"\[unsupported_type\]"):
        model.upscale([1, 2, 3])
    with pytest.raises(ValueError, match="tile_overlap >= 0"):
        SRModel(small_x4, tile=16, tile_overlap=-1)


class _ShapeSpy(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.scale, self.shapes = inner, inner.scale, []

    def forward(self, x):
        self.shapes.append(tuple(x.shape[-2:]))
        return self.inner(x)


def test_tiles_bound_the_network_input_and_cover_the_image(small_x4):
    spy = _ShapeSpy(small_x4)
    model = SRModel(spy, tile=16, tile_overlap=4, device="cpu")
    x = torch.rand(1, 3, 37, 50)
    out = model.upscale(x)
    assert out.shape == (1, 3, 148, 200)
    assert len(spy.shapes) == 3 * 4  # ceil(37/16) x ceil(50/16)
    assert max(max(s) for s in spy.shapes) <= 16 + 2 * 4


def test_tiled_equals_untiled_when_the_overlap_covers_the_receptive_field():
    # one RRDB block: 17 3x3 convolutions at low resolution and 3 at x2 reach about 19 LR px; 24 covers it
    torch.manual_seed(1)
    net = RRDBNet(scale=2, features=8, blocks=1, growth=4)
    x = torch.rand(1, 3, 40, 52)
    untiled = SRModel(net, tile=0, device="cpu").upscale(x)
    tiled = SRModel(net, tile=16, tile_overlap=24, device="cpu").upscale(x)
    assert torch.allclose(tiled, untiled, atol=1e-5)
    short = SRModel(net, tile=16, tile_overlap=2, device="cpu").upscale(x)
    assert not torch.allclose(short, untiled, atol=1e-5)  # too little context does change the result
