"""Throughput of SFD-IQA against QualiCLIP on the same photos, side by side in one run.

    python bench/bench_sfd_iqa_speed.py                                    # CPU, 512x384, fp32
    python bench/bench_sfd_iqa_speed.py --device cuda --size 1024x768 --images 64 --batch 32 --dtypes fp32 bf16

Both metrics go through the same front door (:class:`iqa_plugin.BatchScorer` on the card name, so each
network's own ``prepare_for_inference`` runs). ``--scale rn50`` (default): the published architectures
(CLIP RN50; SFD-IQA adds Feat-D on layer2 + layer3 and the LPP head) with random weights (nothing to
download; the cost does not depend on the values). ``--scale demo``: the two shipped demo models. Prints
images/s of each and the ratio SFD-IQA / QualiCLIP, timed in interleaved rounds, and both models' GFLOP per
image (torch's FlopCounterMode) as the load-independent expectation of that ratio.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._machine import describe_machine  # noqa: E402
from bench.bench_qualiclip import interleaved, photo_batch  # noqa: E402
from iqa_plugin.inference.scorer import BatchScorer  # noqa: E402

MODELS = {"rn50": ("sfd_iqa", "qualiclip"), "demo": ("sfd-iqa-demo-tiny", "qualiclip-demo-tiny")}


def _gflop(model: str, image: torch.Tensor, options: dict) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    from iqa_plugin.build import build_network

    network = build_network(model, **options)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        network(image[None])
    return counter.get_total_flops() / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", default="512x384", help="WIDTHxHEIGHT of the photos")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--batch", type=int, default=None, help="scorer batch (default: its automatic one)")
    parser.add_argument("--dtypes", nargs="+", default=["fp32"], choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--scale", choices=tuple(MODELS), default="rn50")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.split("x"))
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    images = photo_batch(args.images, width, height)
    options = {"pretrained": False} if args.scale == "rn50" else {}
    fns = {}
    for dtype in args.dtypes:
        for model in MODELS[args.scale]:
            scorer = BatchScorer(model, device=device, dtype=dtype, batch_size=args.batch, **options)
            fns[f"{model} {dtype} b{scorer.batch_size}"] = lambda s=scorer: np.array(s.score_tensors(images))
    seconds = interleaved(fns, args.repeats, sync)
    print(f"machine: {describe_machine()}")
    print(f"inputs: {len(images)} real photos at {width}x{height}, device {device}, models {args.scale}")
    rate = {name: len(images) / s for name, s in seconds.items()}
    for name, ips in rate.items():
        print(f"{name:<40} {ips:>10.2f} images/s")
    sfd, qualiclip = MODELS[args.scale]
    flops = {model: _gflop(model, images[0], options) for model in (sfd, qualiclip)}
    print(f"GFLOP per {width}x{height} image: {sfd} {flops[sfd]:.1f}, {qualiclip} {flops[qualiclip]:.1f} "
          f"(expected throughput ratio from the arithmetic alone: {flops[qualiclip] / flops[sfd]:.2f})")
    for dtype in args.dtypes:
        a = next(v for k, v in rate.items() if k.startswith(f"{sfd} {dtype}"))
        b = next(v for k, v in rate.items() if k.startswith(f"{qualiclip} {dtype}"))
        print(f"{dtype}: {sfd} / {qualiclip} throughput ratio = {a / b:.2f}")
    if device.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
