"""Choose an SFD-IQA card's part weights and pooling on its TRAINING photos (never the held-out ones).

    python bench/calibrate_sfd_iqa.py                                   # the demo card: print the grid
    python bench/calibrate_sfd_iqa.py --write                           # ... and store the choice in its card
    python bench/calibrate_sfd_iqa.py --card my.yaml --photos train/ --write   # any SFD-IQA card, ITS photos

SFD-IQA's formula is not public, so ``feat_weight`` / ``lpp_weight`` / ``pooling`` are options (defaults
0.5 / 0.5 / ``mean_prob``: neither discriminator favoured). How much each part says about quality depends on
what its discriminator learned to call fake, which differs from model to model (a small demo trained for
minutes on bicubic-like SR fakes learns "smooth = fake", so it calls noise *real*). This script scores the
photos the model was trained on (``--photos DIR``; default: the demo's, ``bench/bench_train_sfd_iqa.py``'s
list, the 8 package photos except flower.jpg and grace_hopper.jpg: pass your own for any other card), degraded with the 24 KADID types at levels 1..5 (``iqa_plugin.training.
validate``), computes both parts once, and picks the weight (a grid of ``--steps`` + 1 values of
``feat_weight``, ``lpp_weight = 1 - feat_weight``) and pooling with the highest pooled SRCC between score and
negated level. Synthetic levels, not opinion scores, and the photos are the training photos: the held-out
figures of ``bench/bench_sfd_iqa.py`` stay held out. ``--write`` stores the choice in the card's
``arch_options`` and appends the table and this command to its description.
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
from bench.bench_train_sfd_iqa import DEMO_NAME, training_photos  # noqa: E402


def part_scores(card_path: Path, images: torch.Tensor, batch_size: int = 32) -> dict[str, np.ndarray]:
    """``{'mean_prob', 'mean_logit', 'lpp'}``: Feat-D's real-probability under each pooling and the LPP's."""
    from iqa_plugin.archs.sfd_iqa import sfd_iqa_parts
    from iqa_plugin.build import build_network
    from iqa_plugin.hub.cards import load_card_file

    card = load_card_file(card_path)
    out: dict[str, list[torch.Tensor]] = {"mean_prob": [], "mean_logit": [], "lpp": []}
    with torch.no_grad():
        for pooling in ("mean_prob", "mean_logit"):
            net = build_network(card, pooling=pooling)
            for i in range(0, len(images), batch_size):
                parts = sfd_iqa_parts(net, images[i : i + batch_size])
                out[pooling].append(parts.feat_prob.float().cpu())
                if pooling == "mean_prob":
                    out["lpp"].append(parts.lpp_prob.float().cpu())
    return {k: torch.cat(v).numpy() for k, v in out.items()}


def grid(parts: dict[str, np.ndarray], levels: np.ndarray, steps: int) -> list[tuple[float, str, float]]:
    """``(feat_weight, pooling, pooled SRCC)`` for every grid point."""
    from scipy.stats import spearmanr

    rows = []
    for pooling in ("mean_prob", "mean_logit"):
        for k in range(steps + 1):
            w = k / steps
            score = w * parts[pooling] + (1 - w) * parts["lpp"]
            rho = 0.0 if np.ptp(score) == 0 else float(spearmanr(score, -levels).statistic)
            rows.append((w, pooling, rho))
    return rows


def choose(rows: list[tuple[float, str, float]]) -> tuple[float, str, float]:
    """The best grid point: the highest SRCC (to 4 decimals); ties go to the smaller Feat-D weight, then to
    ``mean_prob`` (the arch default)."""
    if not rows:
        raise ValueError("no grid points to choose from")
    return max(rows, key=lambda r: (round(r[2], 4), -r[0], r[1] == "mean_prob"))


def folder_photos(folder: Path, short_side: int) -> list[torch.Tensor]:
    """Every image file in ``folder`` as RGB ``[3, H, W]`` in [0, 1], resized to ``short_side``."""
    from bench.bench_sfd_iqa import load_photos
    from ray_jobs.shards.config import DEFAULT_EXTENSIONS  # the endings the shards job reads as images

    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in DEFAULT_EXTENSIONS)
    if not paths:
        raise SystemExit(f"--photos {folder}: no {'/'.join(DEFAULT_EXTENSIONS)} images in it. Fix: pass the folder of "
                         "the photos the card's model was trained on.")  # fmt: skip
    return load_photos(paths, short_side)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--card", type=Path, default=ROOT / "registry" / f"{DEMO_NAME}.yaml")
    parser.add_argument("--short-side", type=int, default=256, help="the training photos' short side")
    parser.add_argument("--crop", type=int, default=96)
    parser.add_argument("--crops", type=int, default=2, help="crops per training photo")
    parser.add_argument("--photos", type=Path, help="folder of the card's training photos (default: the demo's)")
    parser.add_argument("--steps", type=int, default=10, help="feat_weight grid: 0, 1/steps, ..., 1 (>= 1)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write", action="store_true", help="store the best choice in the card")
    args = parser.parse_args(argv)
    if not args.card.is_file():
        raise SystemExit(f"--card {args.card}: no such file. Fix: pass an SFD-IQA card (.yaml) path.")
    if args.steps < 1:
        raise SystemExit(f"--steps {args.steps}: expected >= 1 grid intervals (10 gives 0, 0.1, ..., 1).")
    if args.photos is not None and not args.photos.is_dir():
        raise SystemExit(f"--photos {args.photos}: not a folder. Fix: pass the folder of the card's training photos.")
    torch.set_num_threads(args.threads)
    from iqa_plugin.data.degradations import KINDS
    from iqa_plugin.training.validate import build_validation_set

    if args.photos is None:
        photos, where = training_photos(args.short_side)[0], "the demo's"
    else:
        photos, where = folder_photos(args.photos, args.short_side), f"{args.photos}'s"
    validation = build_validation_set(photos, KINDS, crop=args.crop, crops=args.crops, seed=1)
    parts = part_scores(args.card, validation.images)
    rows = grid(parts, validation.levels, args.steps)
    best = choose(rows)
    print(f"machine: {describe_machine()}")
    print(f"{args.card.name}: {len(validation.images)} images of {where} {len(photos)} training photos "
          f"({args.crops} crops of {args.crop} px, pristine + {len(KINDS)} types x 5 levels)")
    table = "pooled SRCC(score, -level) on the training photos, feat_weight (lpp_weight = 1 - it):\n"
    for pooling in ("mean_prob", "mean_logit"):
        table += f"  {pooling:11s}" + " ".join(f"{w:.1f}:{rho:+.3f}" for w, p, rho in rows if p == pooling) + "\n"
    print(table, end="")
    print(f"best: feat_weight {best[0]:.2f}, lpp_weight {1 - best[0]:.2f}, pooling {best[1]} (SRCC {best[2]:.3f})")
    if args.write:
        import yaml

        given = sys.argv[1:] if argv is None else argv
        command = "python bench/calibrate_sfd_iqa.py " + " ".join(given)  # exactly what chose these weights
        card = yaml.safe_load(args.card.read_text())
        if not isinstance(card, dict) or not isinstance(card.get("arch_options"), dict):
            raise SystemExit(f"--card {args.card}: has no arch_options mapping. Fix: pass an SFD-IQA model card.")
        card.setdefault("description", "")
        card["arch_options"].update(feat_weight=round(best[0], 4), lpp_weight=round(1 - best[0], 4), pooling=best[1])
        card["description"] = (
            card["description"].split("\npart weights:", 1)[0]
            + f"\npart weights: feat_weight {best[0]:.2f}, lpp_weight {1 - best[0]:.2f}, pooling {best[1]}, chosen on "
            f"the training photos by `{command}` (not on held-out photos):\n{table}"
        )
        args.card.write_text(yaml.safe_dump(card, sort_keys=False, width=110))
        print(f"wrote the choice into {args.card}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
