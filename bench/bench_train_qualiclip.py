"""It learns: a tiny QualiCLIP from random init, 2 gloo workers, time-boxed, on shards of real photos.

    python bench/bench_train_qualiclip.py [--minutes 10] [--workers 2] [--crop 64] [--pairs 128]

Training photos: the 6 package photos other than flower.jpg (scikit-learn) and grace_hopper.jpg
(matplotlib); those two are the held-out validation photos, never in the shards. Four distortion kinds
(one per group that has a sibling) are also held out of training. Steps: shards (``iqa shards``), the
untrained model's figures (same seed as the workers' init), the Ray Train job (``iqa train qualiclip``)
stopped by its time limit so the whole run, Ray start included, fits in ``--minutes``, then the *exported*
model (served through the builder, as pyiqa serves it) on the held-out photos: the SRCC between score
and negated degradation level (1 = score falls as damage grows), pooled and per kind.
"""

from __future__ import annotations

import argparse
import os
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
HELD_OUT_KINDS = ("lens_blur", "jpeg2000", "multiplicative_noise", "color_saturation2")
RECIPE = {"arch": "tiny", "exclude_distortions": list(HELD_OUT_KINDS)}


def _validation(crop: int):
    from iqa_plugin.data.degradations import KINDS
    from iqa_plugin.data.images import load_image
    from iqa_plugin.testing import real_photo_paths
    from iqa_plugin.training.validate import build_validation_set

    photos = [p for p in real_photo_paths() if p.name in HELD_OUT_PHOTOS]
    return build_validation_set([load_image(p) for p in photos], KINDS, crop=crop, crops=2, seed=0)


def _figures(score_fn, validation) -> dict:
    from iqa_plugin.training.validate import degradation_srcc

    return degradation_srcc(score_fn, validation)


def _make_shards(root: Path, crop: int, pairs: int) -> str:
    from iqa_plugin.testing import real_photo_paths
    from ray_jobs.shards.config import ShardsJobConfig
    from ray_jobs.shards.job import run_shards_job

    pristine = root / "pristine"
    pristine.mkdir()
    for photo in real_photo_paths():
        if photo.name not in HELD_OUT_PHOTOS:
            shutil.copyfile(photo, pristine / photo.name)
    out = str(root / "shards")
    run_shards_job(ShardsJobConfig(source=str(pristine), out=out, kind="qualiclip", crop=crop,
                                   samples_per_image=pairs, images_per_shard=1, seed=0),
                   progress=lambda line: None)  # fmt: skip
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="wall-clock budget of the training job")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8, help="samples per worker per step")
    parser.add_argument("--steps", type=int, default=900, help="schedule length (the time limit usually stops first)")
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--pairs", type=int, default=128, help="crop pairs per training photo")
    parser.add_argument("--out", help="keep the run here (default: a temporary folder)")
    args = parser.parse_args()

    import torch

    from iqa_plugin.build import build_network
    from iqa_plugin.hub.cards import load_card_file
    from iqa_plugin.training.qualiclip import QualiCLIPRecipe, QualiCLIPRecipeConfig
    from ray_jobs.runtime import ensure_ray
    from ray_jobs.train.config import TrainJobConfig
    from ray_jobs.train.job import run

    torch.set_num_threads(2)
    print(f"machine: {describe_machine()}")
    root = Path(args.out or tempfile.mkdtemp(prefix="bench-train-"))
    root.mkdir(parents=True, exist_ok=True)
    validation = _validation(args.crop)
    untrained = _figures(QualiCLIPRecipe(QualiCLIPRecipeConfig(**RECIPE), total_steps=1).score, validation)
    with ensure_ray(min_cpus=4, log=lambda line: None):
        shards = _make_shards(root, args.crop, args.pairs)
        started = time.perf_counter()
        config = TrainJobConfig(
            recipe_name="qualiclip", shards=shards, out=str(root / "run"), workers=args.workers,
            batch_size=args.batch_size, steps=args.steps, report_every=20, checkpoint_every=100,
            validate_every=200, validation_crop=args.crop, time_limit_s=max(30.0, args.minutes * 60 - 60),
            export_name="qualiclip-bench-tiny", recipe=RECIPE,
        )  # fmt: skip
        code = run(config)
        wall = time.perf_counter() - started
    if code:
        print(f"training job failed (exit {code})")
        return code
    card = load_card_file(root / "run" / "export" / "qualiclip-bench-tiny.yaml")
    network = build_network(card)
    trained = _figures(lambda x: network(x).view(-1), validation)
    print(f"\ntraining job wall time {wall:.0f} s (Ray Train start included), {args.workers} workers, "
          f"batch {args.batch_size}/worker, crop {args.crop}")  # fmt: skip
    print(f"{'kind':<24} {'untrained':>9} {'trained':>8}")
    for kind, value in trained["per_kind"].items():
        mark = "  (held out of training)" if kind in HELD_OUT_KINDS else ""
        print(f"{kind:<24} {untrained['per_kind'][kind]:>9.3f} {value:>8.3f}{mark}")
    held = [trained["per_kind"][k] for k in HELD_OUT_KINDS]
    print(f"{'pooled (all 24 kinds)':<24} {untrained['pooled']:>9.3f} {trained['pooled']:>8.3f}")
    print(f"held-out kinds mean SRCC {sum(held) / len(held):.3f}; pristine crop above its degraded copies: "
          f"{untrained['pristine_above']:.2f} -> {trained['pristine_above']:.2f}")  # fmt: skip
    print(f"target pooled SRCC >= 0.7: {'met' if trained['pooled'] >= 0.7 else 'NOT met'}")
    print(f"machine after: {describe_machine()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
