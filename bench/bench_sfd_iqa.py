"""Does SFD-IQA rank the degradation levels of the 24 distortion types? Held-out photos, one run.

    python bench/bench_sfd_iqa.py                              # the shipped demo model, unseen photos
    python bench/bench_sfd_iqa.py --photos package             # flower.jpg + grace_hopper.jpg instead
    python bench/bench_sfd_iqa.py --model my-sfd-iqa --crops 3

Photos (``--photos``):

* ``unseen`` (default): the 9 real photos pyiqa's wheel installs (``iqa_plugin.testing.PYIQA_PHOTOS``: 5
  TID2013/Kodak references, 4 photos of its efficiency test). No demo model saw them: not the SFD-IQA
  demo's discriminators, not the QualiCLIP demo tower under them (trained on the 8 package photos), not the
  QualiCLIP demo model, and not ``bench/calibrate_sfd_iqa.py``'s weight choice.
* ``package``: flower.jpg and grace_hopper.jpg, held out from the SFD training and the weight choice, but the
  QualiCLIP demo tower under the SFD-IQA demo and the QualiCLIP demo model were trained on them.

Each photo is resized to short side 256 like the training photos, ``--crops`` crops of ``--crop`` px each,
every crop pristine and degraded with each of the 24 KADID types at levels 1..5 (fixed seeds):
``iqa_plugin.training.validate``. Reported side by side on the same images: the SRCC between score and
negated level pooled over everything and per type, and the share of (pristine, degraded) pairs where the
pristine crop scores higher, for SFD-IQA (the card's own part weights), its two parts alone (Feat-D:
``feat_weight=1, lpp_weight=0``; LPP: ``feat_weight=0, lpp_weight=1``), the QualiCLIP demo model, a seeded
random score and the mean brightness. The run fails (exit 1) unless SFD-IQA beats the better control by
more than 3 / sqrt(n - 1) (three standard errors of a pooled SRCC under no relation, if the images were
independent) AND the 95% interval of that difference, with whole photos resampled (the photo is the
independent unit; its crops and copies are not), lies above 0.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._machine import describe_machine  # noqa: E402
from bench.bench_train_sfd_iqa import HELD_OUT  # noqa: E402


def held_out_paths(photos: str) -> list[Path]:
    """The evaluation photos: ``unseen`` (pyiqa's 9, seen by no demo model) or ``package`` (the SFD demo's 2)."""
    from iqa_plugin.testing import pyiqa_photo_paths, real_photo_paths

    if photos == "package":
        return [p for p in real_photo_paths() if p.name in HELD_OUT]
    paths = pyiqa_photo_paths()
    if not paths:
        raise SystemExit("--photos unseen: the installed pyiqa ships none of its photos (pyiqa 0.1.16's wheel does); "
                         "install pyiqa 0.1.16 or pass --photos package")  # fmt: skip
    return paths


def load_photos(paths: list[Path], short_side: int) -> list[torch.Tensor]:
    """The photos as RGB ``[3, H, W]`` in [0, 1], resized to ``short_side``."""
    from iqa_plugin.data.images import load_image, resize_short_side

    return [resize_short_side(load_image(p)[None], short_side)[0] for p in paths]


def _recording(fn, into: list[torch.Tensor]):
    """``fn`` that also keeps each batch's scores, in call order (= the validation set's row order)."""

    def score(x: torch.Tensor) -> torch.Tensor:
        into.append(fn(x).reshape(-1).float())
        return into[-1]

    return score


def scorers(model: str, seed: int) -> dict:
    from iqa_plugin.build import build_network
    from iqa_plugin.hub.cards import load_card_file

    rng = np.random.default_rng(seed)
    card = load_card_file(Path(model)) if model.endswith((".yaml", ".yml")) else model  # a card file or a name
    nets = {
        model: build_network(card),
        "feat_d_only": build_network(card, feat_weight=1.0, lpp_weight=0.0),
        "lpp_only": build_network(card, feat_weight=0.0, lpp_weight=1.0),
        "qualiclip-demo-tiny": build_network("qualiclip-demo-tiny"),
    }
    fns = {name: (lambda x, net=net: net(x)) for name, net in nets.items()}
    fns["random"] = lambda x: torch.from_numpy(rng.random(x.shape[0]))
    fns["brightness"] = lambda x: x.mean(dim=(1, 2, 3))
    return fns


def photo_bootstrap(raw: dict, validation, model: str, crops: int, seed: int, draws: int = 500) -> tuple[float, float]:
    """95% interval of pooled SRCC(model) - max(pooled SRCC(random), pooled SRCC(brightness)) when whole
    *photos* are resampled with replacement (crops of one photo are not independent; the photo is the unit).
    With few photos the interval means little (2 photos allow 3 distinct resamples): the default set has 9."""
    from scipy.stats import spearmanr

    photo = validation.groups // crops
    rows = [np.flatnonzero(photo == p) for p in np.unique(photo)]
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(draws):
        pick = np.concatenate([rows[i] for i in rng.integers(len(rows), size=len(rows))])
        level = -validation.levels[pick]
        srcc = {n: 0.0 if np.ptp(raw[n][pick]) == 0 else spearmanr(raw[n][pick], level).statistic  # constant: 0
                for n in (model, "random", "brightness")}  # fmt: skip
        diffs.append(srcc[model] - max(srcc["random"], srcc["brightness"]))
    low, high = np.percentile(diffs, [2.5, 97.5])
    return float(low), float(high)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--model", default="sfd-iqa-demo-tiny", help="an SFD-IQA card name or card file (.yaml)")
    parser.add_argument("--crop", type=int, default=96)
    parser.add_argument("--crops", type=int, default=2, help="crops per held-out photo")
    parser.add_argument("--photos", choices=("unseen", "package"), default="unseen",
                        help="unseen: pyiqa's 9 photos, seen by no demo model; package: flower.jpg + grace_hopper.jpg")
    parser.add_argument("--short-side", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from iqa_plugin.data.degradations import KINDS
    from iqa_plugin.training.validate import build_validation_set, degradation_srcc

    paths = held_out_paths(args.photos)
    validation = build_validation_set(load_photos(paths, args.short_side), KINDS, crop=args.crop,
                                      crops=args.crops, seed=args.seed)
    results, raw = {}, {}
    for name, fn in scorers(args.model, args.seed).items():
        seen: list[torch.Tensor] = []
        results[name] = degradation_srcc(_recording(fn, seen), validation, batch_size=32)
        raw[name] = torch.cat(seen).numpy()
    print(f"machine: {describe_machine()}")
    photo_names = ", ".join(p.name for p in paths)
    print(f"{len(validation.images)} images: {args.photos} photos ({photo_names}) x {args.crops} crops of {args.crop} px x "
          f"(pristine + {len(KINDS)} types x 5 levels)")
    names = list(results)
    print(f"{'SRCC(score, -level)':26s}" + "".join(f"{n[:19]:>20s}" for n in names))
    for row in ("pooled", "pristine_above", "mean_per_type"):
        values = [float(np.mean(list(r["per_kind"].values()))) if row == "mean_per_type" else r[row]
                  for r in results.values()]
        print(f"{row:26s}" + "".join(f"{v:20.3f}" for v in values))
    for kind in KINDS:
        print(f"  {kind:24s}" + "".join(f"{results[n]['per_kind'][kind]:20.3f}" for n in names))
    sfd = results[args.model]["pooled"]
    # Under "no relation" a pooled SRCC over n images has a standard error of about 1 / sqrt(n - 1); a
    # model beats a control only by more than 3 of those (a single draw of either may sit 1-2 SE off).
    margin = 3 / np.sqrt(len(validation.images) - 1)
    control = max(results["random"]["pooled"], results["brightness"]["pooled"])
    low, high = photo_bootstrap(raw, validation, args.model, args.crops, args.seed)
    beats = sfd - control > margin and low > 0
    print(f"{args.model} pooled SRCC {sfd:.3f}; best control {control:.3f}; needed margin 3/sqrt(n-1) = "
          f"{margin:.3f}; photo bootstrap 95% interval of (SFD-IQA - the better control) [{low:.3f}, {high:.3f}]: "
          f"beats both controls: {beats}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"machine": describe_machine(), "photos": args.photos, "results": results,
                                         "margin": margin, "bootstrap_95": [low, high], "beats_controls": bool(beats)},
                                        indent=1))  # fmt: skip
    return 0 if beats else 1


if __name__ == "__main__":
    raise SystemExit(main())
