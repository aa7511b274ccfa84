"""``iqa eval`` benchmarks on this machine, measured side by side in one run.

1. Throughput: the evaluation through Ray (hash -> score job pipeline -> statistics, cold cache) against
   scoring the same images in this process with the same scorer (decode + score + the same statistics).
   Both end to end, model loading included, and the scoring part alone ("steady", after loading).
2. The cache: the same evaluation run again (every score from the cache, no model loaded) against the
   first run.

Images: the synthetic benchmark's files (packaged photos x distortion kinds x 5 levels), listed in a CSV
with the level as the human score (so both sides score one metric: the job adds no baselines to a CSV);
metric: QualiCLIP with a fabricated checkpoint (real layout and size, seeded values), so the compute is the
real network's.
Run: ``python bench/bench_eval.py [--photos 4] [--kinds 4] [--size 224] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench._machine import describe_machine  # noqa: E402


def in_process(items: list, weights: str, threads: int, bootstrap: int, device: str) -> dict[str, float]:
    """Decode and score every image here (no Ray), then the same statistics as the job."""
    import torch

    torch.set_num_threads(threads)
    from iqa_plugin.data.images import decode_image_array
    from iqa_plugin.eval.metrics import build_scorer
    from iqa_plugin.eval.summary import summarize_metric

    t0 = time.perf_counter()
    scorer = build_scorer("qualiclip", device=device, weights=weights)
    loaded = time.perf_counter()
    arrays = [decode_image_array(Path(item.uri).read_bytes(), source=item.uri) for item in items]
    scores = scorer.score_arrays(arrays)
    scored = time.perf_counter()
    summarize_metric(items, scores, [None] * len(items), lower_better=False, bootstrap=bootstrap)
    end = time.perf_counter()
    return {"end_to_end": len(items) / (end - t0), "steady": len(items) / (scored - loaded), "load_s": loaded - t0,
            "load_and_score": len(items) / (scored - t0)}


def through_ray(config, log) -> tuple[dict, float]:
    from ray_jobs.eval.job import run_eval

    t0 = time.perf_counter()
    results = run_eval(config, log=log)
    return results, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=4)
    parser.add_argument("--kinds", type=int, default=4, help="the first K distortion kinds")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2, help="torch threads in-process and per actor")
    parser.add_argument("--actors", type=int, default=1)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    work = Path(tempfile.mkdtemp(prefix="bench-eval-"))
    os.environ["IQA_PLUGIN_CACHE"] = str(work / "cache")

    from iqa_plugin.data.degradations import KINDS
    from iqa_plugin.eval.synthetic import build_synthetic
    from iqa_plugin.testing import fabricate_qualiclip_checkpoint
    from ray_jobs.eval.config import EvalJobConfig

    weights = str(fabricate_qualiclip_checkpoint(work / "QualiCLIP.pth"))
    kinds = list(KINDS[: args.kinds])
    dataset = build_synthetic(work / "synthetic", size=args.size, photos=args.photos, kinds=kinds)
    n = len(dataset.items)
    listing = work / "synthetic" / "mos.csv"
    listing.write_text("path,mos\n" + "".join(f"{item.uri},{item.mos}\n" for item in dataset.items))
    print(f"machine: {describe_machine()}")
    print(f"images: {n} ({args.photos} photos x {len(kinds)} kinds x 5 levels, {args.size}x{args.size} PNG); "
          f"metric qualiclip (fabricated weights), {args.device}, {args.threads} threads, "
          f"{args.bootstrap} bootstrap resamples")
    here = in_process(dataset.items, weights, args.threads, args.bootstrap, args.device)
    config = EvalJobConfig(dataset=str(listing), model=["qualiclip"], weights={"qualiclip": weights},
                           out=str(work / "out"), bootstrap=args.bootstrap, device=args.device,
                           actors=args.actors, cpus_per_actor=float(args.threads), batch_size=None)
    lines: list[str] = []
    first, first_s = through_ray(config, lines.append)
    second, second_s = through_ray(config, lines.append)
    run = first["metrics"]["qualiclip"]
    assert run["n_scored_now"] == n and second["metrics"]["qualiclip"]["n_scored_now"] == 0
    ray_rate = n / first_s
    print(f"in-process: {here['end_to_end']:.2f} img/s end to end (model load {here['load_s']:.1f} s), "
          f"{here['steady']:.2f} img/s scoring only")
    print(f"through Ray, cold cache: {ray_rate:.2f} img/s end to end ({first_s:.1f} s incl. Ray start, hashing, "
          f"statistics), scoring stage {n / run['scoring_s']:.2f} img/s")
    print(f"ratio Ray / in-process: {ray_rate / here['end_to_end']:.2f}x end to end; "
          f"{(n / run['scoring_s']) / here['load_and_score']:.2f}x scoring (Ray: actor start + model load + "
          f"pipeline, vs in-process model load + scoring at {here['load_and_score']:.2f} img/s)")
    print(f"second run (warm cache, no model loaded): {second_s:.1f} s vs {first_s:.1f} s cold "
          f"({first_s / second_s:.1f}x faster); scoring stage {second['metrics']['qualiclip']['scoring_s']:.2f} s "
          f"vs {run['scoring_s']:.1f} s")


if __name__ == "__main__":
    main()
