"""Upscale job vs the in-process ``SRModel`` loop on the same images, side by side in one run.

Both do the same work per image: read the file, decode, upscale (same generator, same tiling, fp32 on
CPU or bf16 on a GPU), encode a PNG and write it. The in-process loop is one process with ``--threads``
torch threads; the job is ``iqa upscale``'s ``run_job`` on a local Ray (started by the job, as the
command does) with ``--actors`` actors of ``--threads / --actors`` threads each, its decode and write
tasks in parallel processes. Reported: images/s end to end (the job's includes Ray's start, the
driver's model check and the actors' model loading; the loop's includes its model loading) and the job's
processing rate (from the first block submitted), with the ratio job / loop.

The generator is an RRDBNet x4 with fabricated weights in the ESRGAN layout (``--features``,
``--blocks``, ``--growth``; the defaults are a small configuration so that a CPU run takes minutes):
speed does not depend on the weights' values. Run::

    python bench/bench_upscale_job.py [--n 32] [--size 128x96] [--threads 2] [--actors 2]

On a GPU machine (with Ray installed) both sides take the GPU by themselves (bf16); measure the full SFD
generator there: ``--features 64 --blocks 23 --growth 32 --size 512x384 --tile 256 --overlap 32 --actors 1``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench._machine import describe_machine  # noqa: E402
from bench.bench_score_job import write_photos  # noqa: E402


def write_card(registry: Path, arch: dict[str, int]) -> str:
    """A card ``bench-sr-x4`` with fabricated weights beside it in ``registry``; returns its name."""
    from iqa_plugin.hub.weights import sha256_file
    from iqa_plugin.testing import fabricate_rrdbnet_checkpoint

    weights = fabricate_rrdbnet_checkpoint(registry / "bench-sr-x4.pth", "official", seed=0, **arch)
    card = {"name": "bench-sr-x4", "kind": "sr", "arch": "IqaPluginRRDBNet", "arch_options": arch,
            "weights": {"model": {"urls": [weights.name], "sha256": sha256_file(weights), "format": "pth"}},
            "license": "benchmark weights (random)", "paper": "arXiv:2503.19295", "input": {"min_side": 1}}
    (registry / "bench-sr-x4.yaml").write_text(yaml.safe_dump(card))
    return "bench-sr-x4"


def in_process(paths: list[Path], out: Path, card: str, tile: int, overlap: int, threads: int) -> dict[str, float]:
    """Read, decode, upscale, encode and write each image in this process."""
    import torch

    from iqa_plugin.build import build_network
    from iqa_plugin.data.images import decode_image_array
    from iqa_plugin.data.tensors import array_to_tensor
    from iqa_plugin.inference.sr import SRModel
    from ray_jobs.upscale.stages import encode_image

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    model = SRModel(build_network(card), tile=tile, tile_overlap=overlap)
    loaded = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    for path in paths:
        array = decode_image_array(path.read_bytes(), source=str(path))
        with torch.inference_mode():
            sr = model.upscale_batch(array_to_tensor(array).unsqueeze(0).to(model.device))[0]
            pixels = sr.mul_(255.0).round_().to(torch.uint8).permute(1, 2, 0).contiguous().cpu().numpy()
        (out / f"{path.name}.png").write_bytes(encode_image(pixels.tobytes(), list(pixels.shape),
                                                            {"format": "PNG", "compress_level": 6}))
    end = time.perf_counter()
    return {"end_to_end": len(paths) / (end - t0), "after_load": len(paths) / (end - loaded),
            "load_s": loaded - t0}


def job(src: Path, out: Path, card: str, tile: int, overlap: int, actors: int, threads: int) -> dict[str, float]:
    """``iqa upscale`` through ``run_job``, a local Ray started by the job itself."""
    from ray_jobs.upscale.config import UpscaleJobConfig
    from ray_jobs.upscale.job import run_job

    per_actor = max(1, threads // actors)
    config = UpscaleJobConfig(src=str(src), out=str(out), model=card, tile=tile, tile_overlap=overlap,
                              actors=actors, cpus_per_actor=per_actor, torch_threads=per_actor, block_size=4,
                              progress_bars=False, progress_interval_s=30)
    t0 = time.perf_counter()
    record = run_job(config, log=lambda line: None)
    end = time.perf_counter()
    assert record["n_upscaled"] == record["n_inputs"], record
    return {"end_to_end": record["n_inputs"] / (end - t0), "processing": record["images_per_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="images")
    parser.add_argument("--size", default="128x96", help="input size WxH")
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--growth", type=int, default=16)
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--overlap", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the loop, shared by the actors")
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    w, h = (int(v) for v in args.size.split("x"))
    arch = {"scale": 4, "features": args.features, "blocks": args.blocks, "growth": args.growth}
    with tempfile.TemporaryDirectory(prefix="bench-upscale-") as tmp:
        root = Path(tmp)
        (root / "cards").mkdir()
        os.environ["IQA_PLUGIN_REGISTRY"] = str(root / "cards")  # before Ray starts: its workers inherit it
        card = write_card(root / "cards", arch)
        paths = write_photos(root / "src", args.n, (w, h))
        loop = in_process(paths, root / "loop", card, args.tile, args.overlap, args.threads)
        ray_job = job(root / "src", root / "job", card, args.tile, args.overlap, args.actors, args.threads)
    figures = {"machine": describe_machine(), "n": args.n, "input": args.size, "arch": arch, "tile": args.tile,
               "overlap": args.overlap, "threads": args.threads, "actors": args.actors, "loop": loop, "job": ray_job,
               "ratio_end_to_end": ray_job["end_to_end"] / loop["end_to_end"],
               "ratio_processing_vs_loop_after_load": ray_job["processing"] / loop["after_load"]}
    print(f"machine: {figures['machine']}")
    print(f"{args.n} images {args.size} -> x4 PNG, RRDBNet {arch}, tile {args.tile}/{args.overlap}")
    print(f"in-process loop ({args.threads} threads): {loop['end_to_end']:.2f} img/s end to end, "
          f"{loop['after_load']:.2f} img/s after loading ({loop['load_s']:.1f} s)")
    print(f"iqa upscale job ({args.actors} actors x {max(1, args.threads // args.actors)} threads): "
          f"{ray_job['end_to_end']:.2f} img/s end to end (Ray start included), {ray_job['processing']:.2f} img/s "
          "processing (actor start included)")
    print(f"ratio job/loop: {figures['ratio_end_to_end']:.2f} end to end, "
          f"{figures['ratio_processing_vs_loop_after_load']:.2f} processing vs loop after loading")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
