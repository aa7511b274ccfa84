"""Does SFD-IQA rank the degradation levels of the 24 distortion types? Held-out photos, one run.

    python bench/bench_sfd_iqa.py                              # the shipped demo model
    python bench/bench_sfd_iqa.py --model my-sfd-iqa --crops 3

Held-out photos: flower.jpg and grace_hopper.jpg (``bench/bench_train_sfd_iqa.py`` never trains on them),
resized to short side 256 like the training photos, ``--crops`` crops of ``--crop`` px each, every crop
pristine and degraded with each of the 24 KADID types at levels 1..5 (fixed seeds):
``iqa_plugin.training.validate``. Reported side by side on the same images: the SRCC between score and
negated level pooled over everything and per type, and the share of (pristine, degraded) pairs where the
pristine crop scores higher, for SFD-IQA (the card's own part weights), its two parts alone (Feat-D:
``feat_weight=1, lpp_weight=0``; LPP: ``feat_weight=0, lpp_weight=1``), the QualiCLIP demo model, a seeded random score and the mean brightness.
Note: the QualiCLIP demo model was trained on all 8 package photos, these two included (its card says so).
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


def held_out_photos(short_side: int) -> list[torch.Tensor]:
    from iqa_plugin.data.images import load_image, resize_short_side
    from iqa_plugin.testing import real_photo_paths

    return [resize_short_side(load_image(p)[None], short_side)[0] for p in real_photo_paths() if p.name in HELD_OUT]


def scorers(model: str, seed: int) -> dict:
    from iqa_plugin.build import build_network

    rng = np.random.default_rng(seed)
    nets = {
        model: build_network(model),
        "feat_d_only": build_network(model, feat_weight=1.0, lpp_weight=0.0),
        "lpp_only": build_network(model, feat_weight=0.0, lpp_weight=1.0),
        "qualiclip-demo-tiny": build_network("qualiclip-demo-tiny"),
    }
    fns = {name: (lambda x, net=net: net(x)) for name, net in nets.items()}
    fns["random"] = lambda x: torch.from_numpy(rng.random(x.shape[0]))
    fns["brightness"] = lambda x: x.mean(dim=(1, 2, 3))
    return fns


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--model", default="sfd-iqa-demo-tiny", help="an SFD-IQA card name")
    parser.add_argument("--crop", type=int, default=96)
    parser.add_argument("--crops", type=int, default=2, help="crops per held-out photo")
    parser.add_argument("--short-side", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from iqa_plugin.data.degradations import KINDS
    from iqa_plugin.training.validate import build_validation_set, degradation_srcc

    validation = build_validation_set(held_out_photos(args.short_side), KINDS, crop=args.crop, crops=args.crops,
                                      seed=args.seed)
    results = {name: degradation_srcc(fn, validation, batch_size=32) for name, fn in scorers(args.model, args.seed).items()}
    print(f"machine: {describe_machine()}")
    print(f"{len(validation.images)} images: {', '.join(HELD_OUT)} x {args.crops} crops of {args.crop} px x "
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
    beats = sfd - control > margin
    print(f"{args.model} pooled SRCC {sfd:.3f}; best control {control:.3f}; needed margin 3/sqrt(n-1) = "
          f"{margin:.3f}: beats both controls: {beats}")
    if args.json:
        args.json.write_text(json.dumps({"machine": describe_machine(), "results": results, "margin": margin,
                                         "beats_controls": bool(beats)}, indent=1))
    return 0 if beats else 1


if __name__ == "__main__":
    raise SystemExit(main())
