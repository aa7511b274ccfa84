"""SR generator on a CUDA GPU: x4 throughput in bf16 and fp32, and peak GPU memory tiled vs untiled.

    python bench/gpu_sr.py                     # full SFD generator, LR 512x512 and 1024x768
    python bench/gpu_sr.py --sizes 256x256 --repeats 3

Prints the machine line (GPU name), output megapixels/s for each precision and tile setting side by side,
``torch.cuda.max_memory_allocated`` per configuration (tiling bounds it by the tile size), and the PSNR of
bf16 vs fp32 and of tiled vs untiled outputs (outputs of random weights mapped by the fp32 untiled range
onto [0, 1], as bench/bench_sr.py does). Stops with a clear message where no CUDA device is present.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._machine import describe_machine  # noqa: E402
from iqa_plugin.archs.rrdbnet import RRDBNet  # noqa: E402
from iqa_plugin.inference.sr import DEFAULT_TILE, DEFAULT_TILE_OVERLAP, SRModel  # noqa: E402


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1.0 / torch.mean((a.double() - b.double()) ** 2)))


def timed(model: SRModel, x: torch.Tensor, repeats: int) -> tuple[float, float, torch.Tensor]:
    """(seconds per image, peak GiB allocated, output)."""
    out = model.upscale_batch(x)  # warm-up (cuDNN autotuning of each tile shape)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(repeats):
        out = model.upscale_batch(x)
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats, torch.cuda.max_memory_allocated() / 2**30, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="512x512,1024x768", help="LR sizes WxH, comma separated")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench/gpu_sr.py needs a CUDA GPU and none is visible (torch.cuda.is_available() is False); "
                 "run bench/bench_sr.py for the CPU figures.")
    torch.backends.cudnn.benchmark = True
    print(describe_machine())
    torch.manual_seed(0)
    net = RRDBNet(scale=4).cuda().eval()
    for size in args.sizes.split(","):
        width, height = (int(v) for v in size.split("x"))
        x = torch.rand(1, 3, height, width, device="cuda")
        print(f"\n## LR {width}x{height} -> {4 * width}x{4 * height} (full RRDBNet 64/23/32, random weights)")
        outputs = {}
        for precision in ("fp32", "bf16"):
            for tile in (0, DEFAULT_TILE):
                model = SRModel(net, tile=tile, tile_overlap=DEFAULT_TILE_OVERLAP, device="cuda", precision=precision)
                try:
                    seconds, peak, out = timed(model, x, args.repeats)
                except torch.OutOfMemoryError:
                    print(f"{precision} tile={tile or 'none'}: out of GPU memory")
                    torch.cuda.empty_cache()
                    continue
                outputs[(precision, tile)] = out.float()
                mp = 16 * width * height / 1e6
                print(f"{precision} tile={tile or 'none':>4}: {seconds * 1e3:8.1f} ms/image  {mp / seconds:7.2f} output "
                      f"MP/s  peak {peak:6.2f} GiB")
        if ("fp32", 0) in outputs:
            with torch.inference_mode():
                raw = net(x)
            low, high = raw.min().item(), raw.max().item()
            print(f"(raw fp32 output range [{low:.3f}, {high:.3f}]; clamped outputs compared below)")
            reference = outputs[("fp32", 0)]
            for key, out in outputs.items():
                if key != ("fp32", 0):
                    print(f"PSNR {key[0]} tile={key[1] or 'none'} vs fp32 untiled: {psnr(out, reference):.1f} dB")


if __name__ == "__main__":
    main()
