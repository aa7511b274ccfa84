"""It learns: ``iqa train sfd`` with a small configuration, 2 gloo workers, on SR shards of real photos.

    python bench/bench_train_sfd.py [--warmup-steps 300] [--gan-steps 20] [--minutes 20]
    python bench/bench_train_sfd.py --throughput [--steps 20]      # steps/s: 1 vs 2 workers, warm-up and GAN

Training photos: the 6 package photos other than flower.jpg (scikit-learn) and grace_hopper.jpg
(matplotlib), cut by ``iqa shards --kind sr`` into 96-px HR patches (x4, bicubic LR made on the workers).
The two held-out photos are never in the shards. The run (``iqa train sfd``: warm-up, then the GAN phase)
checkpoints at the end of the warm-up and at the end; from those checkpoints, rebuilt in this process
(same seed, so the same random CLIP):

* after the warm-up: PSNR-Y / SSIM-Y of the generator on 192-px central crops of the held-out photos next
  to bicubic upscaling (the validation of the job, :class:`iqa_plugin.training.sr_validate.SRValidation`);
* the GAN phase: every reported loss finite, and the PSNR after it (a perceptual phase may trade PSNR);
* after it: ROC AUC of Feat-D (mean of its logit map) and TG-D (its logit) separating held-out HR patches
  from the exported generator's SR patches of the same places, next to the same figure for the
  discriminators as they were before the GAN phase (untrained);
* the exported SR card served by ``create_sr_model`` gives the PSNR the job reported.

No CLIP file can be downloaded here, so the CLIP under Feat-D / TG-D has random weights whose BatchNorm
statistics are calibrated on training patches (:func:`_calibrated_clip`; with the default statistics a
random RN50's stage activations shrink ~5x per stage, to ~1e-2, and the discriminator heads barely
learn): the figures show that the machinery learns, not SFD's quality.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._machine import describe_machine  # noqa: E402

HELD_OUT_PHOTOS = ("flower.jpg", "grace_hopper.jpg")
HR_SIZE = 96
VALIDATION_CROP = 192
RECIPE = {
    "features": 32, "blocks": 2, "growth": 16, "residual": "bicubic", "clip": None, "perceptual_backbone": "clip",
    "lr_g": 1e-3, "lr_d": 2e-4, "perceptual_weight": 0.1, "feat_hidden": 64, "n_ctx": 4, "ema_decay": 0.99,
}  # fmt: skip


class _Tee(io.TextIOBase):
    """stdout that is also kept (the job's progress lines are parsed for the GAN-phase losses)."""

    def __init__(self, stream: io.TextIOBase) -> None:
        self.stream, self.lines = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.lines.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


def _make_shards(root: Path, patches: int) -> str:
    from iqa_plugin.testing import real_photo_paths
    from ray_jobs.shards.config import ShardsJobConfig
    from ray_jobs.shards.job import run_shards_job

    pristine = root / "pristine"
    pristine.mkdir()
    for photo in real_photo_paths():
        if photo.name not in HELD_OUT_PHOTOS:
            shutil.copyfile(photo, pristine / photo.name)
    out = str(root / "shards")
    run_shards_job(ShardsJobConfig(source=str(pristine), out=out, kind="sr", hr_size=HR_SIZE, scale=4,
                                   samples_per_image=patches, realworld_fraction=0.0, images_per_shard=1, seed=0),
                   progress=lambda line: None)  # fmt: skip
    return out


def _calibrated_clip(root: Path, shards_photos: list, patches: int = 128) -> str:
    """A random-weight CLIP RN50 (seed 0) whose image tower's BatchNorm running statistics are the mean
    and variance of its own activations on ``patches`` training patches (one pass in train mode, cumulative
    averages), saved as an OpenAI-key state dict: stage activations then have unit scale, as in a trained
    CLIP. Every worker loads the same file (``recipe.clip``)."""
    import torch

    from iqa_plugin.archs.sfd_disc import FrozenCLIP, load_clip_rn50

    torch.manual_seed(0)
    clip = load_clip_rn50(None)
    tower = FrozenCLIP(clip, ("layer4",))  # applies CLIP's mean/std, runs the stages without the attention pool
    batchnorms = [m for m in clip.visual.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in batchnorms:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    hr = random_patches(shards_photos, patches, seed=1)
    with torch.no_grad():
        for i in range(0, len(hr), 16):
            tower.features(hr[i : i + 16], ("layer4",))
    clip.eval()
    path = root / "clip_rn50_random_calibrated.pth"
    torch.save(clip.state_dict(), path)
    return str(path)


def random_patches(images: list, count: int, seed: int, side: int = HR_SIZE):
    """``[count, 3, side, side]`` crops at random places, cycling over ``images`` (seeded)."""
    import torch

    rng = torch.Generator().manual_seed(seed)
    out = []
    for k in range(count):
        image = images[k % len(images)]
        _, h, w = image.shape
        y = int(torch.randint(0, h - side + 1, (1,), generator=rng))
        x = int(torch.randint(0, w - side + 1, (1,), generator=rng))
        out.append(image[:, y : y + side, x : x + side])
    return torch.stack(out)


def _training_images() -> list:
    from iqa_plugin.data.images import load_image
    from iqa_plugin.testing import real_photo_paths

    return [load_image(p) for p in real_photo_paths() if p.name not in HELD_OUT_PHOTOS]


def _held_out_images() -> list:
    from iqa_plugin.data.images import load_image
    from iqa_plugin.testing import real_photo_paths

    return [load_image(p) for p in real_photo_paths() if p.name in HELD_OUT_PHOTOS]


def _trainer_at(checkpoint: Path, recipe: dict):
    """An SFDTrainer on CPU restored from a job checkpoint (same seed: the same random CLIP as the workers)."""
    import torch

    from iqa_plugin.training.sfd import SFDConfig, SFDTrainer

    state = torch.load(checkpoint / "state.pt", map_location="cpu", weights_only=True)["recipe"]
    trainer = SFDTrainer(SFDConfig(**recipe))
    prefix = trainer.tg_d.prompt_learner.token_prefix
    if not torch.equal(prefix, state["tg_d"]["prompt_learner.token_prefix"]):
        raise SystemExit("the rebuilt CLIP differs from the workers' (token embeddings differ): seeds not reproducible")
    trainer.load_state_dict(state)
    return trainer


def _patch_pairs(generator, images, count: int, seed: int = 0):
    """``count`` random HR patches per held-out image and the generator's x4 SR of their bicubic LR."""
    import torch

    from iqa_plugin.data.degradations.sr import downscale_bicubic

    hr = random_patches(images, count * len(images), seed)
    with torch.no_grad():
        sr = torch.cat([generator(downscale_bicubic(hr[i : i + 16], 4)).clamp(0, 1) for i in range(0, len(hr), 16)])
    return hr, sr


def _aucs(trainer, hr, sr) -> dict[str, float]:
    """ROC AUC of each discriminator scoring HR (positive) above SR (negative)."""
    import torch
    from sklearn.metrics import roc_auc_score

    trainer.feat_d.eval()
    trainer.tg_d.eval()
    feat, tg = [], []
    with torch.no_grad():
        for i in range(0, len(hr) + len(sr), 16):
            batch = torch.cat([hr, sr])[i : i + 16]
            out = trainer.clip(batch)
            feat.append(trainer.feat_d(out.stages).mean(dim=(1, 2, 3)))
            tg.append(trainer.tg_d(out.embedding))
    labels = [1] * len(hr) + [0] * len(sr)
    return {"feat_d": float(roc_auc_score(labels, torch.cat(feat))), "tg_d": float(roc_auc_score(labels, torch.cat(tg)))}


def _config(shards: str, out: str, workers: int, steps: int, recipe: dict, **values):
    from ray_jobs.train.config import TrainJobConfig

    return TrainJobConfig(recipe_name="sfd", shards=shards, out=out, workers=workers, cpus_per_worker=1.0,
                          steps=steps, recipe=recipe, **values)  # fmt: skip


def _throughput(shards: str, root: Path, recipe: dict, args: argparse.Namespace) -> None:
    """Steady-state steps/s (the second report window of each run) for 1 and 2 workers in each phase."""
    from ray_jobs.train.job import train

    half = max(1, args.steps // 2)
    for phase, warmup in (("warm-up", 10**6), ("GAN", 0)):
        rates = {}
        for workers in (1, 2):
            config = _config(shards, str(root / f"throughput-{phase}-{workers}"), workers, args.steps,
                             {**recipe, "warmup_steps": warmup},
                             batch_size=args.batch_size, report_every=half, checkpoint_every=args.steps,
                             validate_every=0, validation_crop=VALIDATION_CROP, export_name=f"sfd-tp-{workers}")
            rates[workers] = train(config)["samples_per_s"] / (workers * args.batch_size)
            print(f"{phase:<8} {workers} worker(s), batch {args.batch_size}/worker: {rates[workers]:.2f} steps/s "
                  f"({rates[workers] * workers * args.batch_size:.1f} HR patches/s)", flush=True)
        print(f"{phase:<8} scaling 2 workers vs 1 (samples/s ratio): {2 * rates[2] / rates[1]:.2f}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup-steps", type=int, default=300)
    parser.add_argument("--gan-steps", type=int, default=20)
    parser.add_argument("--minutes", type=float, default=20.0, help="hard budget of the whole run (time limit)")
    parser.add_argument("--batch-size", type=int, default=8, help="HR patches per worker per step")
    parser.add_argument("--patches", type=int, default=96, help="HR patches per training photo")
    parser.add_argument("--steps", type=int, default=20, help="--throughput: steps per run")
    parser.add_argument("--out", help="keep the run here (default: a temporary folder)")
    parser.add_argument("--throughput", action="store_true")
    args = parser.parse_args()

    import torch

    import iqa_plugin
    from iqa_plugin.training.sr_validate import SRValidation
    from ray_jobs.runtime import ensure_ray
    from ray_jobs.train.job import run

    torch.set_num_threads(2)
    print(f"machine: {describe_machine()}", flush=True)
    root = Path(args.out or tempfile.mkdtemp(prefix="bench-sfd-"))
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with ensure_ray(min_cpus=4, log=lambda line: None):
        shards = _make_shards(root, args.patches)
        recipe = {**RECIPE, "clip": _calibrated_clip(root, _training_images()), "warmup_steps": args.warmup_steps}
        if args.throughput:
            _throughput(shards, root, recipe, args)
            print(f"machine after: {describe_machine()}")
            return 0
        steps = args.warmup_steps + args.gan_steps
        config = _config(shards, str(root / "run"), 2, steps, recipe, batch_size=args.batch_size,
                         report_every=10, checkpoint_every=args.warmup_steps, keep_checkpoints=10,
                         validate_every=args.warmup_steps, validation_crop=VALIDATION_CROP,
                         time_limit_s=args.minutes * 60 - (time.perf_counter() - started) - 150,
                         export_name="sfd-bench-small", register_to=str(root / "registry"))
        tee = _Tee(sys.stdout)
        with contextlib.redirect_stdout(tee):
            code = run(config)
        job_wall = time.perf_counter() - started
    if code:
        print(f"training job failed (exit {code})")
        return code
    lines = tee.lines.getvalue().splitlines()
    gan_lines = [line for line in lines if "[gan]" in line]
    reported = [float(v) for line in gan_lines for v in re.findall(r"(?<![\w/])(-?\d+\.\d+|nan|inf)", line)]
    finite = all(v == v and abs(v) != float("inf") for v in reported)
    rates = {phase: [float(m) for line in lines if phase in line for m in re.findall(r"([\d.]+) samples/s", line)]
             for phase in ("[warm-up]", "[gan]")}

    validation = SRValidation(_held_out_images(), crop=VALIDATION_CROP, scale=4)
    checkpoints = sorted((root / "run" / "run").glob("step_*"))
    warm = next(c for c in checkpoints if int(c.name[5:]) == args.warmup_steps)
    after_warmup = _trainer_at(warm, recipe)
    final = _trainer_at(checkpoints[-1], recipe)
    warm_figures = validation(after_warmup.export_generator())
    final_figures = validation(final.export_generator())
    images = _held_out_images()
    hr, sr = _patch_pairs(final.export_generator(), images, count=32)
    auc_final = _aucs(final, hr, sr)
    auc_before = _aucs(after_warmup, hr, sr)
    os.environ["IQA_PLUGIN_REGISTRY"] = str(root / "registry")
    served = iqa_plugin.create_sr_model("sfd-bench-small", tile=0, device="cpu")
    served_psnr = validation(served.upscale_batch)["val_psnr"]

    print(f"\nmachine: {describe_machine()}")
    print(f"run: 2 gloo workers x 1 thread, batch {args.batch_size} HR patches of {HR_SIZE} px per worker, "
          f"{len(checkpoints) and int(checkpoints[-1].name[5:])} steps ({args.warmup_steps} warm-up), "
          f"job wall time {job_wall:.0f} s with Ray start and shards; recipe {recipe}")
    print(f"held-out PSNR-Y / SSIM-Y (flower + grace_hopper, {VALIDATION_CROP}-px central crops, x4 bicubic LR):")
    print(f"  bicubic           {warm_figures['val_psnr_bicubic']:.2f} dB  {warm_figures['val_ssim_bicubic']:.4f}")
    print(f"  after warm-up     {warm_figures['val_psnr']:.2f} dB  {warm_figures['val_ssim']:.4f}  "
          f"margin {warm_figures['val_psnr_margin']:+.2f} dB")
    print(f"  after GAN phase   {final_figures['val_psnr']:.2f} dB  {final_figures['val_ssim']:.4f}  "
          f"margin {final_figures['val_psnr_margin']:+.2f} dB (exported card via create_sr_model: {served_psnr:.2f} dB)")
    print(f"GAN phase: {len(gan_lines)} progress reports, {len(reported)} reported numbers, all finite: {finite}")
    print(f"ROC AUC HR vs SR on {len(hr)} held-out {HR_SIZE}-px patches: Feat-D {auc_final['feat_d']:.3f} "
          f"(untrained {auc_before['feat_d']:.3f}), TG-D {auc_final['tg_d']:.3f} (untrained {auc_before['tg_d']:.3f})")
    for phase, values in rates.items():
        if values:
            tail = values[len(values) // 2 :]
            rate = sum(tail) / len(tail) / (2 * args.batch_size)
            print(f"{phase} steps/s with 2 workers (mean of the later reports): {rate:.2f}")
    beat = warm_figures["val_psnr_margin"] > 0
    print(f"targets: warm-up beats bicubic {'met' if beat else 'NOT met'}; GAN finite {'met' if finite else 'NOT met'}; "
          f"Feat-D AUC >= 0.7 {'met' if auc_final['feat_d'] >= 0.7 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
