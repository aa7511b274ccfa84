"""Eager vs compiled scoring, end to end, on a job of mixed image sizes: three runs side by side.

    python bench/bench_compile.py                   # this CPU: 240 small JPEGs, the shipped tiny demo model
    python bench/bench_compile.py --device cuda --n 20000 --model qualiclip --scale 1.0   # (bench/gpu_all.py)

The same job (``python -m ray_jobs.score``, local Ray, one actor) runs three times over JPEGs of a
camera-like mix of sizes (60% 4:3 landscape, 20% portrait, 10% square, 10% assorted rare sizes; at
``--scale 1.0`` the landscape is 1024x768, at the CPU default 0.16 it is 164x123):

* ``eager``: ``--no-compile``;
* ``compiled``: ``--compile --compile-break-even 0``: every shape compiled on first use (up to 4);
* ``policy``: ``--compile`` with the default break-even: only shapes that repay their compilation.
  ``--policy-break-even N`` scales it to a job of this size (e.g. 40 for 240 images, so the common shapes
  are compiled and the rare ones stay eager): the policy's choice at work on CPU, timed against eager in
  the same alternating rounds (``--rounds 2``). On a CPU compilation may not pay: the ratio says so.

Prints images/s end to end (actor start and compilation included) and after the first block, and each
run's ratio to eager. The policy's promise is "never slower than eager": on a job too small to repay a
compilation it compiles nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._machine import describe_machine  # noqa: E402
from bench.gpu_score_job import write_collection  # noqa: E402

RUNS = {"eager": ["--no-compile"], "compiled": ["--compile", "--compile-break-even", "0"], "policy": ["--compile"]}


def mixed_size(scale: float, seed: int = 0):
    """index -> (width, height): 60% 4:3 landscape, 20% portrait, 10% square, 10% rare random sizes."""
    landscape = (round(1024 * scale), round(768 * scale))

    def size_of(index: int) -> tuple[int, int]:
        draw = (index * 7919 + seed) % 100
        if draw < 60:
            return landscape
        if draw < 80:
            return landscape[::-1]
        if draw < 90:
            return (round(800 * scale),) * 2
        rng = np.random.default_rng(index)
        return int(rng.integers(landscape[1] // 2, landscape[0])), int(rng.integers(landscape[1] // 2, landscape[0]))

    return size_of


def run_score_job(src: Path, out: Path, flags: list[str], log_lines: int = 6) -> dict:
    """Run ``python -m ray_jobs.score SRC --out OUT FLAGS`` afresh; return its run record (``_iqa/job.json``)."""
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "ray_jobs.score", str(src), "--out", str(out), "--no-progress-bars",
               "--no-report", *flags]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    tail = [line for line in result.stdout.splitlines() if line.startswith(("pipeline", "done", "throughput"))]
    print("\n".join("    " + line for line in tail[-log_lines:]), flush=True)
    if result.returncode != 0:
        raise RuntimeError(f"score job failed ({result.returncode}): {(result.stderr or result.stdout)[-2000:]}")
    return json.loads((out / "_iqa" / "job.json").read_text())


def compare(work: Path, n: int, scale: float, model_flags: list[str], common: list[str],
            runs: tuple[str, ...] = tuple(RUNS), rounds: int = 1, policy_break_even: int | None = None) -> dict:
    """The ``runs`` over one mixed-size collection; ``{run: {images_per_s, steady_images_per_s, ...}}``."""
    src = work / f"mixed-{n}-{scale}"
    write_collection(src, n, mixed_size(scale))
    shapes = {mixed_size(scale)(i) for i in range(n)}
    print(f"{n} JPEGs of {len(shapes)} sizes under {src}", flush=True)
    results: dict = {"n": n, "distinct_sizes": len(shapes), "rounds": rounds}
    for round_ in range(rounds):  # in alternation, the best of each kept: load drift hits every run alike
        for name in runs:
            flags = RUNS[name]
            if name == "policy" and policy_break_even is not None:
                flags = [*flags, "--compile-break-even", str(policy_break_even)]
            print(f"{name} (round {round_ + 1}): {' '.join(flags)}", flush=True)
            record = run_score_job(src, work / f"out-{name}", [*model_flags, *common, *flags])
            row = {key: record[key] for key in ("images_per_s", "steady_images_per_s", "elapsed_s", "n_scored")}
            every = results.get(name, {}).get("every_round", []) + [row["images_per_s"]]
            if name not in results or row["images_per_s"] > results[name]["images_per_s"]:
                results[name] = row
            results[name]["every_round"] = every  # compiled: round 2 reuses Inductor's on-disk cache
    for name in set(runs) - {"eager"}:
        results[name]["vs_eager"] = round(results[name]["images_per_s"] / results["eager"]["images_per_s"], 3)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=240)
    parser.add_argument("--scale", type=float, default=0.16, help="landscape size = scale x 1024x768")
    parser.add_argument("--model", default="qualiclip-demo-tiny")
    parser.add_argument("--weights", default=None, help="checkpoint (default: the card's; qualiclip: fabricated)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch-size", type=int, default=None, help="default: 4 on CPU, 32 on CUDA")
    parser.add_argument("--work", default=None)
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each, in alternation (the best is kept)")
    parser.add_argument("--policy-break-even", type=int, default=None,
                        help="the policy run's --compile-break-even (default: the job's, 25000 images)")
    args = parser.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-compile-"))
    weights = args.weights
    if weights is None and args.model == "qualiclip":
        from iqa_plugin.testing import fabricate_qualiclip_checkpoint

        weights = str(fabricate_qualiclip_checkpoint(work / "QualiCLIP.pth", seed=0))
    model_flags = ["--model", args.model] + (["--weights", weights] if weights else [])
    batch = args.batch_size or (32 if args.device == "cuda" else 4)
    common = ["--device", args.device, "--batch-size", str(batch), "--block-size", str(batch * 8),
              "--dtype", "bf16" if args.device == "cuda" else "fp32"]
    print(f"machine: {describe_machine()}", flush=True)
    results = compare(work, args.n, args.scale, model_flags, common, rounds=args.rounds,
                      policy_break_even=args.policy_break_even)
    results.update(machine=describe_machine(), model=args.model, device=args.device, batch_size=batch,
                   policy_break_even=args.policy_break_even)
    print(f"\n{'run':<10}{'img/s end to end':>18}{'img/s steady':>14}{'vs eager':>10}  every round (end to end)")
    for name in RUNS:
        row = results[name]
        print(f"{name:<10}{row['images_per_s']:>18.1f}{row['steady_images_per_s'] or 0:>14.1f}"
              f"{row.get('vs_eager', 1.0):>9.2f}x  {row['every_round']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
