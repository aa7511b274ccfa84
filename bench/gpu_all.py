"""Every GPU figure of issue 14 in one run, written as JSON and a log under ``--out``; run by gpu_all.sh.

    python3 bench/gpu_all.py --out $OUT [--sections metric,job,compile_shapes,...] [--n 10000]
    python3 bench/gpu_all.py --dry-run --out /tmp/gpu-all      # tiny sizes on CPU; stops where CUDA is needed

Sections (each guarded: a failure is recorded and the next section runs; the JSON is rewritten after
each, so a run cut short still brings back what it measured):

* ``metric``: ours bf16 eager and compiled at 1024x768 (batch 32) vs pyiqa's native QualiCLIP (fp32,
  the same fabricated weights) at batch 1 and 16;
* ``ceiling``: on N generated 1024x768 JPEGs, CPU decode (one process per core) and nvjpeg decode rates,
  and in-process scoring (no Ray) on pre-decoded images and with nvjpeg decode + resize, native and short:224;
* ``job``: the Ray score job end to end on the same N JPEGs, native and short:224, ``--decode cpu`` vs ``gpu``;
* ``compile_shapes``: compile seconds per input shape and the break-even each implies (bench/gpu_compile_shapes.py:
  how to set ``--compile-break-even`` from them);
* ``compile``: bench/bench_compile.py on N JPEGs of mixed sizes: eager, compiled, and the default policy;
* ``degradations``: the torch degradations on the GPU vs the CPU reference loop, per type (batch 64, 224 px);
* ``train``: QualiCLIP training steps/s (RN50, bf16, 224 px); SFD's when ``iqa train sfd`` exists.
* ``sr``: bench/gpu_sr.py and bench/gpu_train_sfd.py (issue 10), each in a subprocess.

Weights are fabricated (real layouts, seeded random values): throughput does not depend on their values.
The targets of issue 14 (item 4) are judged at the end (``targets``: value, target, pass).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import gpu_all_sections as sections  # noqa: E402
from bench import gpu_compile_shapes  # noqa: E402
from bench._machine import describe_machine  # noqa: E402

#: The sections, most important first (the order of a run without --sections). HOOK for other benches
#: (e.g. fix10's gpu_sr, gpu_train_sfd): append ``("name", function)`` here; the function takes the
#: :class:`sections.Context` and returns a JSON-able dict (``ctx.stop(...)`` where CUDA is needed).
SECTIONS: list[tuple[str, Callable[[sections.Context], dict]]] = [
    ("metric", sections.section_metric),  # ours eager / compiled vs pyiqa at 1024x768
    ("job", sections.section_job),  # the score job: native and short:224, CPU vs GPU decode
    ("compile_shapes", gpu_compile_shapes.measure),  # compile seconds per shape -> --compile-break-even
    ("ceiling", sections.section_ceiling),
    ("compile", sections.section_compile),
    ("degradations", sections.section_degradations),
    ("train", sections.section_train),
    ("sr", sections.section_sr),  # issue 10: bench/gpu_sr.py, bench/gpu_train_sfd.py
]
ALL = tuple(name for name, _ in SECTIONS)
#: degradations that round-trip through Pillow's codecs on the CPU whatever the device (degradations/__init__.py)
CPU_CODECS = frozenset({"jpeg", "jpeg2000"})


class Tee:
    """stdout to the terminal and to the log file."""

    def __init__(self, stream, path: Path) -> None:
        self.stream, self.file = stream, path.open("a", buffering=1)

    def write(self, text: str) -> int:
        self.file.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()
        self.file.flush()


def judge(results: dict) -> dict:
    """Issue 14's targets on what was measured: ``{name: {value, target, pass}}`` (absent: not measured)."""
    out: dict = {}
    s = results["sections"]

    def add(name: str, value, target: float, ratio: bool = False) -> None:
        if isinstance(value, (int, float)):
            out[name] = {"value": round(float(value), 2), "target": target, "pass": value >= target,
                         **({"unit": "x"} if ratio else {"unit": "img/s"})}

    metric = s.get("metric", {})
    add("metric_bf16_eager_1024x768", metric.get("ours_bf16_b32"), 560)
    add("metric_bf16_compiled_1024x768", metric.get("ours_bf16_compiled_b32"), 1150)
    job = s.get("job", {})
    for resolution, target in (("native", 1000), ("short:224", 6000)):
        run = job.get(f"{resolution} decode gpu", {})
        add(f"job_{resolution}_gpu_decode_steady", run.get("steady_images_per_s"), target)
    policy = s.get("compile", {}).get("policy", {})
    add("compile_policy_vs_eager_end_to_end", policy.get("vs_eager"), 0.95, ratio=True)
    for kind, row in s.get("degradations", {}).get("kinds", {}).items():
        if kind not in CPU_CODECS:  # "every type that can run on the GPU": the two codecs are Pillow's, on CPU
            add(f"degradation_{kind}_gpu_vs_cpu_loop", row.get("ratio"), 5.0, ratio=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for gpu_all.json and gpu_all.log ($OUT)")
    parser.add_argument("--sections", default=",".join(ALL), help=f"comma-separated subset of {','.join(ALL)}")
    parser.add_argument("--n", type=int, default=None, help="JPEGs for the job sections (20000; gpu_all.sh passes 10000 to fit one device call; dry run 24)")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on CPU; stop where CUDA is needed")
    parser.add_argument("--state", default=None, help="a JSON kept between calls on one machine: sections measured "
                        "by an earlier call are kept (gpu_all.sh: /tmp/gpu-all/state.json), so each call's "
                        "--out holds everything measured so far")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sys.stdout = Tee(sys.stdout, out / "gpu_all.log")  # type: ignore[assignment]
    chosen = [name.strip() for name in args.sections.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(ALL))
    if unknown:
        parser.error(f"--sections: unknown {unknown}; expected names from {','.join(ALL)}")
    ctx = sections.Context.create(dry_run=args.dry_run, n=args.n,
                                  work=Path(args.work or tempfile.mkdtemp(prefix="gpu-all-")))
    results: dict = {"machine": describe_machine(), "dry_run": args.dry_run, "device": ctx.device,
                     "n": ctx.n, "sections": {}}
    state = Path(args.state) if args.state else None
    if state is not None and state.exists():
        results["sections"] = json.loads(state.read_text()).get("sections", {})
        print(f"kept from earlier calls ({state}): {', '.join(results['sections']) or 'nothing'}")
    print(f"machine: {results['machine']}\nmode: {'DRY RUN (CPU, tiny sizes)' if args.dry_run else 'GPU'}; "
          f"device {ctx.device}; sections {','.join(chosen)}; work {ctx.work}", flush=True)
    path = out / "gpu_all.json"
    for name in chosen:
        print(f"\n=== {name} ===", flush=True)
        started = time.perf_counter()
        try:
            results["sections"][name] = dict(SECTIONS)[name](ctx)
        except sections.NeedsCuda as stop:
            results["sections"][name] = {"stopped": str(stop)}
            print(f"STOP (needs CUDA): {stop}", flush=True)
        except Exception as error:  # one section's failure must not lose the others' figures
            results["sections"][name] = {"error": f"{type(error).__name__}: {error}"[:2000]}
            traceback.print_exc(file=sys.stdout)
        results["sections"][name]["seconds"] = round(time.perf_counter() - started, 1)
        results["targets"] = {} if args.dry_run else judge(results)  # tiny CPU sizes say nothing of them
        for target in (path, state):
            if target is not None:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(json.dumps(results, indent=2, default=str))
    print("\n=== targets (issue 14, item 4) ===")
    for name, row in results["targets"].items():
        print(f"{name:<48} {row['value']:>10} {row['unit']:<5} target >= {row['target']:<6} "
              f"{'PASS' if row['pass'] else 'FAIL'}")
    if not results["targets"]:
        print("not judged in a dry run: the GPU figures are still to be measured" if args.dry_run else "none measured")
    stops = list(_stops(results["sections"]))
    print(f"\nwrote {path} and {out / 'gpu_all.log'}")
    if stops:
        print("stopped where CUDA is needed: " + "; ".join(stops))
    return 0


def _stops(tree: dict, prefix: str = ""):
    """``section.key`` of every figure recorded as stopped (needs CUDA)."""
    for key, value in tree.items():
        if isinstance(value, dict):
            if "stopped" in value:
                yield f"{prefix}{key}"
            else:
                yield from _stops(value, f"{prefix}{key}.")


if __name__ == "__main__":
    sys.exit(main())
