"""Throughput of our QualiCLIP vs pyiqa 0.1.16's native QualiCLIP, same fabricated weights, same photos.

    python bench/bench_qualiclip.py                       # CPU, 512x384, fp32 and bf16
    python bench/bench_qualiclip.py --device cuda --size 1024x768 --batch 32 --compile

Prints images/s for each path side by side in one run, the ratios, and the max score differences
(ours fp32 vs native fp32, ours bf16 vs ours fp32). Weights are fabricated (real layout, random values).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._machine import describe_machine  # noqa: E402
from iqa_plugin.inference.scorer import BatchScorer  # noqa: E402
from iqa_plugin.testing import build_native_qualiclip, fabricate_qualiclip_checkpoint, real_photo_paths  # noqa: E402


def photo_batch(n: int, width: int, height: int) -> list[torch.Tensor]:
    paths = real_photo_paths()
    out = []
    for i in range(n):
        image = Image.open(paths[i % len(paths)]).convert("RGB").resize((width, height), Image.BICUBIC)
        out.append(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float().div(255))
    return out


def interleaved(fns: dict, repeats: int, sync) -> dict[str, float]:
    """Seconds per run of each function, timed in interleaved rounds (A B C, A B C, ...) after one
    warm-up each, so drifting machine load hits every path alike."""
    for fn in fns.values():
        fn()
    total = dict.fromkeys(fns, 0.0)
    for _ in range(repeats):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            total[name] += time.perf_counter() - start
    return {name: seconds / repeats for name, seconds in total.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", default="512x384", help="WIDTHxHEIGHT of the test images")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8, help="batch of the second native run")
    parser.add_argument("--ours-batch", type=int, default=None, help="our batch (default: the scorer's automatic one)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also time ours bf16 with torch.compile")
    parser.add_argument("--checkpoint", help="an existing QualiCLIP.pth-layout file (else one is fabricated)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    checkpoint = Path(args.checkpoint) if args.checkpoint else Path(tempfile.mkdtemp()) / "QualiCLIP.pth"
    if not checkpoint.exists():
        fabricate_qualiclip_checkpoint(checkpoint, seed=0)
    images = photo_batch(args.images, width, height)
    print(f"machine: {describe_machine()}")
    print(f"inputs: {len(images)} real photos at {width}x{height}, batch {args.batch}, device {device}")

    native = build_native_qualiclip("qualiclip", checkpoint).to(device)
    stacked = torch.stack(images)

    def run_native(batch: int):
        out = []
        with torch.inference_mode():
            for i in range(0, len(images), batch):
                out.append(native(stacked[i : i + batch].to(device)).float().cpu())
        return torch.cat(out).flatten().numpy()

    fns = {"native fp32 b1": lambda: run_native(1), f"native fp32 b{args.batch}": lambda: run_native(args.batch)}
    variants = [("ours fp32", "fp32", False), ("ours bf16", "bf16", False)]
    if args.compile:
        variants.append(("ours bf16 compiled", "bf16", True))
    for name, dtype, compiled in variants:
        scorer = BatchScorer(
            "qualiclip", device=device, dtype=dtype, batch_size=args.ours_batch, compile=compiled,
            pretrained_model_path=str(checkpoint),
        )
        fns[f"{name} b{scorer.batch_size}"] = lambda s=scorer: np.array(s.score_tensors(images))
    seconds = interleaved(fns, args.repeats, sync)
    results = {name: (len(images) / seconds[name], fn()) for name, fn in fns.items()}

    base_name = max((n for n in results if n.startswith("native")), key=lambda n: results[n][0])
    base = results[base_name][0]
    print(f"\n{'path':<26} {'images/s':>10} {'vs best native (' + base_name + ')':>34}")
    for name, (ips, _) in results.items():
        print(f"{name:<26} {ips:>10.2f} {ips / base:>33.2f}x")
    fp32 = next(scores for n, (_, scores) in results.items() if n.startswith("ours fp32"))
    print(f"\nmax |ours fp32 - native fp32| = {np.abs(fp32 - results[base_name][1]).max():.2e}")
    for name in results:
        if name.startswith("ours bf16"):
            print(f"max |{name} - ours fp32| = {np.abs(results[name][1] - fp32).max():.2e}")


if __name__ == "__main__":
    main()
