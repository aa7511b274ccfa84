"""SRModel in bf16 (autocast) against fp32 on the same small generator: close in PSNR, same return types,
through the untiled and the tiled path. The CPU test runs everywhere (autocast works on CPU); its CUDA twin
checks the precision that ``precision='auto'`` picks on a GPU."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from iqa_plugin.archs.rrdbnet import RRDBNet
from iqa_plugin.inference.sr import SRModel


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1.0 / torch.mean((a.float() - b.float()) ** 2)))


def _check_bf16_close_to_fp32(device: str, precision: str) -> None:
    torch.manual_seed(0)
    net = RRDBNet(scale=2, features=16, blocks=2, growth=8, residual="bicubic")
    with torch.no_grad():  # residual mode starts at exactly bicubic (conv_last zero): give it a visible residual
        torch.nn.init.normal_(net.conv_last.weight, std=0.05)
    x = torch.rand(1, 3, 40, 52, device=device)
    for tile in (0, 16):  # 40x52 LR with 16 px tiles: 3 x 4 tiles, seams inside
        fp32 = SRModel(net, tile=tile, tile_overlap=4, device=device, precision="fp32")
        bf16 = SRModel(net, tile=tile, tile_overlap=4, device=device, precision=precision)
        assert bf16.bf16 and not fp32.bf16
        ref, low = fp32.upscale(x), bf16.upscale(x)
        assert low.dtype == x.dtype == torch.float32 and low.shape == ref.shape == (1, 3, 80, 104)
        assert low.device == x.device
        assert not torch.equal(low, ref)  # autocast did run the network in bf16
        assert _psnr(low, ref) > 35.0, (tile, _psnr(low, ref))
        assert _psnr(ref, torch.nn.functional.interpolate(x, scale_factor=2, mode="bicubic")) < 60  # not trivial

    photo = Image.fromarray((x[0].permute(1, 2, 0).cpu().numpy() * 255).astype("uint8"))
    out = SRModel(net, tile=16, tile_overlap=4, device=device, precision=precision).upscale(photo)
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == (104, 80)


def test_bf16_on_cpu_is_close_to_fp32_tiled_and_untiled():
    _check_bf16_close_to_fp32("cpu", "bf16")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bf16_on_cuda_is_what_auto_picks_and_close_to_fp32():
    _check_bf16_close_to_fp32("cuda", "auto")
