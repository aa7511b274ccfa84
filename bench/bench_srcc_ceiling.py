"""How high can the "it learns" figure go? Pooled SRCC(score, -level) of reference scores on the same
held-out validation set as ``bench/bench_train_qualiclip.py`` (flower.jpg + grace_hopper.jpg, 2 crops each,
pristine + 24 kinds x 5 levels):

* a full-reference oracle, PSNR against the pristine crop (it sees the reference, which no NR model does);
* a model that orders every kind's 5 levels perfectly but gives each kind its own scale (uniform in
  [min_scale, 1]): what the paper's losses, which rank levels only within a sample, leave free.

    python bench/bench_srcc_ceiling.py [--crop 64] [--short-side 128 0] [--min-scale 0.2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._machine import describe_machine  # noqa: E402
from bench.bench_train_qualiclip import _validation  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--short-side", type=int, nargs="+", default=[128, 0])
    parser.add_argument("--min-scale", type=float, default=0.2)
    parser.add_argument("--seeds", type=int, default=20, help="draws of the per-kind scales")
    args = parser.parse_args()

    import numpy as np
    from scipy.stats import spearmanr

    print(f"machine: {describe_machine()}")
    for short in args.short_side:
        val = _validation(args.crop, short)
        levels, groups, kinds = val.levels, val.groups, np.asarray(val.kinds)
        reference = {int(g): val.images[i] for i, g in enumerate(groups) if levels[i] == 0}
        mse = np.array([float(((val.images[i] - reference[int(g)]) ** 2).mean()) for i, g in enumerate(groups)])
        psnr = -10 * np.log10(np.maximum(mse, 1e-10))
        fr = spearmanr(psnr, -levels).statistic
        per_kind = []
        for seed in range(args.seeds):
            rng = np.random.default_rng(seed)
            scale = {k: rng.uniform(args.min_scale, 1.0) for k in set(kinds) if k}
            ordered = np.array([-lv * (scale[k] if k else 1.0) for lv, k in zip(levels, kinds, strict=True)])
            per_kind.append(spearmanr(ordered, -levels).statistic)
        print(f"short side {short or 'as shipped'}, crop {args.crop}, {len(levels)} images: "
              f"FR PSNR oracle pooled SRCC {fr:.3f}; perfect per-kind order with per-kind scales in "
              f"[{args.min_scale:g}, 1]: {np.mean(per_kind):.3f} (min {np.min(per_kind):.3f} over {args.seeds} draws)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
