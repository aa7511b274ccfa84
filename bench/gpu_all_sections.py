"""The measurements of bench/gpu_all.py, one function per section; each returns a JSON-able dict.

On CUDA they run at the issue's sizes; in a dry run (no CUDA) they run the same code at tiny sizes on
CPU and put ``{"stopped": "needs CUDA: ..."}`` where a figure needs the GPU (nvjpeg, compiled RN50).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.bench_compile import compare, run_score_job
from bench.gpu_score_job import decode_rate, write_collection


class NeedsCuda(Exception):
    """A whole section needs CUDA (the dry run records it and goes on)."""


@dataclass
class Context:
    """What every section shares: the device, sizes, the scratch folder and the fabricated weights."""

    dry_run: bool
    device: str
    n: int
    work: Path
    size: tuple[int, int]
    _weights: Path | None = field(default=None, repr=False)

    @classmethod
    def create(cls, *, dry_run: bool, n: int | None, work: Path) -> Context:
        import torch

        cuda = torch.cuda.is_available()
        if not cuda and not dry_run:
            raise SystemExit("gpu_all: no CUDA device here (torch.cuda.is_available() is False). Run it on the GPU "
                             "machine, or with --dry-run (DRY_RUN=1) for the tiny CPU rehearsal.")
        if cuda:
            torch.backends.cudnn.benchmark = True
        work.mkdir(parents=True, exist_ok=True)
        return cls(dry_run=dry_run, device="cuda" if cuda else "cpu", n=n or (24 if dry_run else 20_000),
                   work=work, size=(128, 96) if dry_run else (1024, 768))

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"

    @property
    def weights(self) -> Path:
        if self._weights is None:
            from iqa_plugin.testing import fabricate_qualiclip_checkpoint

            self._weights = self.work / "QualiCLIP.pth"
            if not self._weights.exists():
                fabricate_qualiclip_checkpoint(self._weights, seed=0)
        return self._weights

    def collection(self) -> list[Path]:
        started = time.perf_counter()
        paths = write_collection(self.work / f"photos-{self.size[0]}x{self.size[1]}", self.n, self.size)
        print(f"{len(paths)} JPEGs at {self.size[0]}x{self.size[1]} ready in {time.perf_counter() - started:.1f} s")
        return paths

    def stop(self, what: str) -> dict[str, str]:
        print(f"  STOP (needs CUDA): {what}", flush=True)
        return {"stopped": f"needs CUDA: {what}"}

    def sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()


def _rate(ctx: Context, count: int, fn, repeats: int = 3) -> float:
    fn()  # warm-up (and compilation)
    ctx.sync()
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    ctx.sync()
    return round(repeats * count / (time.perf_counter() - started), 2)


def section_metric(ctx: Context) -> dict[str, Any]:
    """Ours bf16 eager / compiled vs pyiqa's native QualiCLIP fp32 at batch 1 and 16."""
    import torch

    from bench.bench_qualiclip import interleaved, photo_batch
    from iqa_plugin.inference.scorer import BatchScorer
    from iqa_plugin.testing import build_native_qualiclip

    width, height = (64, 48) if ctx.dry_run else (1024, 768)
    # on the device already: both paths are timed without the host-to-device copy
    images = [image.to(ctx.device) for image in photo_batch(2 if ctx.dry_run else 96, width, height)]
    native = build_native_qualiclip("qualiclip", ctx.weights).to(ctx.device)
    stacked = torch.stack(images)

    def run_native(batch: int) -> np.ndarray:
        with torch.inference_mode():
            return torch.cat([native(stacked[i : i + batch]).float().cpu()
                              for i in range(0, len(images), batch)]).flatten().numpy()

    fns = {"native_fp32_b1": lambda: run_native(1), "native_fp32_b16": lambda: run_native(16)}
    ours = {"ours_bf16_b32": BatchScorer("qualiclip", device=ctx.device, dtype="bf16", batch_size=32,
                                         pretrained_model_path=str(ctx.weights))}
    result: dict[str, Any] = {"size": f"{width}x{height}", "images": len(images)}
    if ctx.cuda:
        ours["ours_bf16_compiled_b32"] = BatchScorer("qualiclip", device="cuda", dtype="bf16", batch_size=32,
                                                     compile=True, pretrained_model_path=str(ctx.weights))
    else:
        result["ours_bf16_compiled_b32"] = ctx.stop("compiled RN50 at 1024x768 (Inductor + freezing on the GPU; "
                                                    "bench/bench_compile.py measures compile on CPU)")
    for name, scorer in ours.items():
        fns[name] = lambda s=scorer: np.array(s.score_tensors(images))
    started = time.perf_counter()
    seconds = interleaved(fns, 1 if ctx.dry_run else 3, ctx.sync)
    result["first_calls_and_timing_s"] = round(time.perf_counter() - started, 1)
    scores = {name: fn() for name, fn in fns.items()}
    for name in fns:
        result[name] = round(len(images) / seconds[name], 2)
        print(f"  {name:<26} {result[name]:>10.1f} img/s", flush=True)
    result["max_abs_bf16_vs_native_fp32"] = float(np.abs(scores["ours_bf16_b32"] - scores["native_fp32_b1"]).max())
    return result


def _device_decode_rate(ctx: Context, paths: list[Path], device: str, batch: int = 64) -> float:
    from iqa_plugin.data.device_decode import decode_jpegs, torchvision_jpeg_decoder

    blobs = [p.read_bytes() for p in paths]
    decoder = torchvision_jpeg_decoder(device)
    return _rate(ctx, len(blobs), lambda: [decode_jpegs(blobs[i : i + batch], decoder)
                                           for i in range(0, len(blobs), batch)], repeats=2)


def section_ceiling(ctx: Context) -> dict[str, Any]:
    """Decode rates, and in-process scoring without Ray: the ceiling the job is measured against."""
    from iqa_plugin.data.device_decode import decode_jpegs, resize_uint8_short_side, torchvision_jpeg_decoder
    from iqa_plugin.inference.scorer import BatchScorer

    paths = ctx.collection()
    result: dict[str, Any] = {"size": f"{ctx.size[0]}x{ctx.size[1]}",
                              "cpu_decode_all_cores_img_s": round(decode_rate(paths[:2000]), 1),
                              "libjpeg_turbo_batched_1_process_img_s": _device_decode_rate(ctx, paths[:256], "cpu")}
    result["nvjpeg_decode_b64_img_s"] = _device_decode_rate(ctx, paths[:4096], "cuda") if ctx.cuda \
        else ctx.stop("nvjpeg decode (torchvision.io.decode_jpeg on cuda)")
    decoder = torchvision_jpeg_decoder(ctx.device)  # nvjpeg on CUDA; libjpeg-turbo stands in on CPU
    for short, batch in ((None, 32), (224, 128)):
        label = "native" if short is None else f"short:{short}"
        batch = 4 if ctx.dry_run else batch
        blobs = [p.read_bytes() for p in paths[: batch * (2 if ctx.dry_run else 8)]]
        scorer = BatchScorer("qualiclip", device=ctx.device, dtype="bf16" if ctx.cuda else "fp32", batch_size=batch,
                             pretrained_model_path=str(ctx.weights))
        ready = [image for image in decode_jpegs(blobs, decoder) if image is not None]  # uint8, on the device
        ready = [resize_uint8_short_side(image, short) for image in ready] if short else ready
        result[f"score_predecoded_{label}_img_s"] = _rate(ctx, len(ready), lambda s=scorer, r=ready: s.score_tensors(r))

        def pipeline(blobs=blobs, scorer=scorer, short=short) -> None:
            images = [image for image in decode_jpegs(blobs, decoder) if image is not None]
            scorer.score_tensors([resize_uint8_short_side(i, short) for i in images] if short else images)

        result[f"device_decode_resize_score_{label}_img_s"] = _rate(ctx, len(blobs), pipeline)
        print(f"  {label}: pre-decoded on the device {result[f'score_predecoded_{label}_img_s']} img/s, decode on "
              f"{ctx.device} + score {result[f'device_decode_resize_score_{label}_img_s']} img/s", flush=True)
    return result


def _has_ray() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def section_job(ctx: Context) -> dict[str, Any]:
    """The Ray score job end to end: native and short:224, CPU decode vs GPU decode."""
    if not _has_ray():
        return {"skipped": "ray is not installed here (carry both halves of its wheel: bench/gpu_all.sh)"}
    paths = ctx.collection()
    result: dict[str, Any] = {"n": len(paths), "size": f"{ctx.size[0]}x{ctx.size[1]}"}
    for resolution, batch in (("native", 32), ("short:224", 128)):
        for decode in ("cpu", "gpu"):
            name = f"{resolution} decode {decode}"
            if decode == "gpu" and not ctx.cuda:
                result[name] = ctx.stop(f"--decode gpu ({resolution})")
                continue
            batch = 4 if ctx.dry_run else batch
            print(f"  {name}", flush=True)
            record = run_score_job(paths[0].parent, ctx.work / f"job-{resolution.replace(':', '-')}-{decode}", [
                "--weights", str(ctx.weights), "--device", ctx.device, "--dtype", "bf16" if ctx.cuda else "fp32",
                "--resolution", resolution, "--decode", decode, "--batch-size", str(batch),
                "--block-size", str(8 if ctx.dry_run else 256)])
            result[name] = {key: record[key] for key in ("images_per_s", "steady_images_per_s", "elapsed_s",
                                                         "n_scored", "n_inputs")}
        if ctx.cuda:
            folder = ctx.work / f"job-{resolution.replace(':', '-')}"
            result[f"{resolution} gpu vs cpu decode"] = _compare_rows(Path(f"{folder}-cpu"), Path(f"{folder}-gpu"))
    return result


def _compare_rows(cpu: Path, gpu: Path) -> dict[str, Any]:
    """The two decodes' outputs side by side: rows and reasons must match; scores differ by the IDCT."""
    import pyarrow.parquet as pq

    tables = [pq.read_table(sorted(folder.glob("*.parquet"))).to_pandas().set_index("id").sort_index()
              for folder in (cpu, gpu)]
    a, b = tables
    same = ["bytes", "width", "height", "error"]
    both = a["score"].notna() & b["score"].notna()
    diff = (a["score"][both] - b["score"][both]).abs()
    return {"same_ids": bool(a.index.equals(b.index)), "same_rows_and_reasons": bool(a[same].equals(b[same])),
            "max_abs_score_diff": float(diff.max()) if len(diff) else None,
            "p99_abs_score_diff": float(diff.quantile(0.99)) if len(diff) else None}


def section_compile(ctx: Context) -> dict[str, Any]:
    """bench/bench_compile.py's three runs on N JPEGs of mixed sizes (the dry run: eager and policy)."""
    if not _has_ray():
        return {"skipped": "ray is not installed here"}
    if ctx.dry_run:
        result = compare(ctx.work, ctx.n, 0.1, ["--model", "qualiclip-demo-tiny"],
                         ["--device", "cpu", "--batch-size", "4", "--block-size", "8"], runs=("eager", "policy"))
        result["compiled"] = ctx.stop("every shape compiled on the GPU (bench/bench_compile.py runs it on CPU)")
        return result
    return compare(ctx.work, ctx.n, 1.0, ["--model", "qualiclip", "--weights", str(ctx.weights)],
                   ["--device", "cuda", "--dtype", "bf16", "--batch-size", "32", "--block-size", "256"])


def section_degradations(ctx: Context) -> dict[str, Any]:
    """The torch degradations on the device vs the CPU reference loop, per type."""
    import torch

    from bench.bench_degradations import KINDS, crops, time_both

    batch, size, kinds = (2, 32, list(KINDS)[:3]) if ctx.dry_run else (64, 224, list(KINDS))
    images = crops(batch, size)
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255).contiguous().to(ctx.device)
    result: dict[str, Any] = {"batch": batch, "size": size, "device": ctx.device, "kinds": {}}
    if not ctx.cuda:
        result["gpu_ratios"] = ctx.stop("the ratios on the GPU (the rows below are the torch path on CPU)")
    for kind in kinds:
        fast, slow = time_both(kind, tensor, images, ctx.device, 1 if ctx.dry_run else 3)
        result["kinds"][kind] = {"torch_img_s": round(fast, 1), "loop_img_s": round(slow, 1),
                                 "ratio": round(fast / slow, 2)}
        print(f"  {kind:<24}{fast:>10.1f}{slow:>10.1f}{fast / slow:>8.2f}x", flush=True)
    if not ctx.cuda:
        result["kinds_on_cpu"] = result.pop("kinds")
    return result


def _sfd_rates(ctx: Context) -> dict[str, Any]:
    import torch

    try:
        from ray_jobs.train.recipes import recipe_spec

        recipe_spec("sfd")
    except (ImportError, ValueError) as error:
        return {"skipped": f"`iqa train sfd` does not exist in this checkout ({error})"}
    from iqa_plugin.training.sfd import SFDConfig, SFDTrainer

    tiny = {"features": 8, "blocks": 1, "growth": 8} if ctx.dry_run else {}
    batch, hr_size, steps = (1, 32, 1) if ctx.dry_run else (16, 128, 10)
    trainer = SFDTrainer(SFDConfig(clip=None, warmup_steps=steps + 2, **tiny), device=ctx.device)
    hr = torch.rand(batch, 3, hr_size, hr_size, device=ctx.device)
    result: dict[str, Any] = {"batch": batch, "hr_size": hr_size}
    for phase in ("warmup", "gan"):
        trainer.step({"hr": hr})
        while trainer.phase != phase:
            trainer.step({"hr": hr})
        result[f"{phase}_steps_per_s"] = _rate(ctx, 1, lambda: trainer.step({"hr": hr}), repeats=steps)
    return result


def section_train(ctx: Context) -> dict[str, Any]:
    """QualiCLIP training steps/s (RN50, bf16); SFD's when its recipe exists."""
    from bench.gpu_train_qualiclip import measure

    if ctx.dry_run:
        qualiclip = [measure(1, 1, 64, "cpu", arch="tiny")]
    else:
        qualiclip = [measure(batch, 10, 224, "cuda") for batch in (32, 64)]
    for row in qualiclip:
        print(f"  qualiclip batch {row['batch']}: {row['steps_per_s']:.2f} steps/s, {row['images_per_s']:.0f} img/s",
              flush=True)
    result: dict[str, Any] = {"qualiclip": qualiclip, "sfd": _sfd_rates(ctx)}
    print(f"  sfd: {result['sfd']}", flush=True)
    return result


def section_sr(ctx: Context) -> dict[str, Any]:
    """Issue 10's prepared GPU scripts, each in its own process: bench/gpu_sr.py (x4 generator MP/s, bf16 vs
    fp32, tiled vs untiled, peak memory) and bench/gpu_train_sfd.py (paper-size training steps/s, bf16 vs
    fp32); their printed lines are the figures."""
    import subprocess
    import sys

    if not ctx.cuda:
        raise NeedsCuda("bench/gpu_sr.py and bench/gpu_train_sfd.py measure the CUDA path only")
    root = Path(__file__).resolve().parent
    result: dict[str, Any] = {}
    for script in ("gpu_sr.py", "gpu_train_sfd.py"):
        done = subprocess.run([sys.executable, str(root / script)], capture_output=True, text=True, timeout=900)
        print(done.stdout, flush=True)
        result[script] = {"rc": done.returncode, "lines": done.stdout.strip().splitlines()[-40:],
                          **({"stderr_tail": done.stderr[-2000:]} if done.returncode else {})}
    return result
