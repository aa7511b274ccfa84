"""Train the small SFD-IQA demo model with SFD's recipe, Ray-free, on the package photos.

    python bench/bench_train_sfd_iqa.py --steps 600 --out /tmp/sfd-demo            # a run to look at
    python bench/bench_train_sfd_iqa.py --steps 700 --warmup 0 --crop 64 --clip qualiclip-demo --lr-g 1e-5 --demo
        # (re)make registry/sfd-iqa-demo-tiny, then: python bench/calibrate_sfd_iqa.py --write

The recipe is :class:`iqa_plugin.training.sfd.SFDTrainer` (warm-up, then generator + Feat-D + TG-D steps) at
a small size so that it fits a few CPU minutes: x2 RRDBNet (16 features, 1 block, bicubic residual),
real-world degradation of 96 px HR crops, Feat-D head 64 wide on CLIP stages layer2+layer3, TG-D with 16
context tokens. The frozen "CLIP" is small (a reduced ModifiedResNet, 16 wide, with a one-layer text tower),
seeded random weights (``--clip random``) or the QualiCLIP demo model's image tower (``--clip qualiclip-demo``).
Training photos: the 8 package photos except flower.jpg and grace_hopper.jpg, held out for
``bench/bench_sfd_iqa.py`` (which by default scores pyiqa's 9 photos, seen by no demo model). The demo uses a
near-frozen generator (``--lr-g 1e-5``): with SFD's usual generator lr the tiny generator learns within minutes
to smooth everything, so the discriminators learn "blurry = generated" and call noise *real* (the previous demo:
pooled SRCC 0.08 on pyiqa's photos, white noise -0.52); when the fakes stay the bicubic upsampling of the
real-world LR (blur, noise, JPEG), they learn those as generated (0.38, white noise 0.78). Every choice is an
argument below; the card records the command.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEMO_NAME = "sfd-iqa-demo-tiny"
HELD_OUT = ("flower.jpg", "grace_hopper.jpg")
CLIP_TEXT = {
    "random": "seeded random image tower",
    "qualiclip-demo": "the image tower of the qualiclip-demo-tiny model, embedded here; that model was trained on "
    "all 8 package photos, the 2 held out here included",
}
VISION = {"layers": [1, 1, 1, 1], "width": 16, "heads": 8, "output_dim": 64}  # the QualiCLIP demo's tower


def training_photos(short_side: int) -> tuple[list[torch.Tensor], list[dict]]:
    """The package photos not held out, resized (Lanczos) to ``short_side``; and what the card lists."""
    import importlib.util

    import numpy as np
    from PIL import Image

    from iqa_plugin.testing import PACKAGED_PHOTOS

    images, listed = [], []
    for package, relative in PACKAGED_PHOTOS:
        if relative.endswith(HELD_OUT):
            continue
        path = Path(next(iter(importlib.util.find_spec(package).submodule_search_locations))) / relative
        image = Image.open(path).convert("RGB")
        scale = short_side / min(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
        images.append(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255)
        listed.append({"package": package, "path": relative, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
    return images, listed


def random_crops(images: list[torch.Tensor], crop: int, batch: int, generator: torch.Generator) -> torch.Tensor:
    out = []
    for _ in range(batch):
        image = images[int(torch.randint(len(images), (1,), generator=generator))]
        y = int(torch.randint(image.shape[1] - crop + 1, (1,), generator=generator))
        x = int(torch.randint(image.shape[2] - crop + 1, (1,), generator=generator))
        piece = image[:, y : y + crop, x : x + crop]
        out.append(piece.flip(-1) if bool(torch.randint(2, (1,), generator=generator)) else piece)
    return torch.stack(out)


def small_clip(kind: str, seed: int) -> torch.nn.Module:
    from iqa_plugin.archs.sfd_iqa import build_small_clip
    from iqa_plugin.hub.cards import get_card
    from iqa_plugin.hub.weights import load_state_dict, resolve_card_weights

    torch.manual_seed(seed)
    clip = build_small_clip(VISION)
    if kind == "qualiclip-demo":
        state = load_state_dict(resolve_card_weights(get_card("qualiclip-demo-tiny"), "model"))
        clip.visual.load_state_dict({k[len("clip_model.visual."):]: v for k, v in state.items()
                                     if k.startswith("clip_model.visual.")})
    return clip


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--steps", type=int, default=600, help="optimiser steps in all")
    parser.add_argument("--warmup", type=int, default=100, help="pixel-loss warm-up steps (part of --steps)")
    parser.add_argument("--crop", type=int, default=96, help="HR crop side")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--short-side", type=int, default=256, help="photos resized to this short side first")
    parser.add_argument("--lr-g", type=float, default=1e-3,
                        help="generator lr; a small one keeps the fakes close to the bicubic upsampling of the "
                        "real-world LR (blur, noise, JPEG), so the discriminators learn those as fake")
    parser.add_argument("--lr-d", type=float, default=5e-4, help="discriminator lr (SeD's 1e-4 is too slow "
                        "for a few hundred steps)")
    parser.add_argument("--clip", choices=("random", "qualiclip-demo"), default="random")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/sfd-iqa-demo"))
    parser.add_argument("--demo", action="store_true", help=f"write registry/{DEMO_NAME}.{{yaml,safetensors}}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    from iqa_plugin.training.export import safetensors_bytes
    from iqa_plugin.training.sfd import SFDConfig, SFDTrainer
    from iqa_plugin.training.sfd_iqa_export import sfd_iqa_card, sfd_iqa_options, sfd_iqa_tensors

    config = SFDConfig(scale=2, features=16, blocks=1, growth=16, residual="bicubic", degradation="realworld",
                       warmup_steps=args.warmup, lr_g=args.lr_g, lr_d=args.lr_d, clip=None, feat_hidden=64,
                       perceptual_backbone="clip", ema_decay=None, seed=args.seed)
    trainer = SFDTrainer(config, clip=small_clip(args.clip, args.seed))
    images, listed = training_photos(args.short_side)
    generator = torch.Generator().manual_seed(args.seed)
    start, history = time.perf_counter(), []
    for step in range(args.steps):
        metrics = trainer.step({"hr": random_crops(images, args.crop, args.batch_size, generator)})
        if step % 50 == 0 or step == args.steps - 1:
            history.append({k: round(v, 4) for k, v in metrics.items()})
            print(json.dumps({"t": round(time.perf_counter() - start, 1), **history[-1]}), flush=True)
    minutes = (time.perf_counter() - start) / 60

    tensors = sfd_iqa_tensors(trainer, embed_clip=True)
    blob = safetensors_bytes(tensors, {"format": "pt", "producer": "iqa-plugin"})
    sha = hashlib.sha256(blob).hexdigest()
    out = ROOT / "registry" if args.demo else args.out
    out.mkdir(parents=True, exist_ok=True)
    weights_file = f"{DEMO_NAME}.safetensors"
    (out / weights_file).write_bytes(blob)
    command = "python bench/bench_train_sfd_iqa.py " + " ".join(argv if argv is not None else sys.argv[1:])
    description = (
        "DEMO model, NOT the SFD paper's weights: SFD's Feat-D and learnable prompt pair trained by iqa-plugin's "
        f"SFD recipe (SFDTrainer, {args.steps} steps, {minutes:.1f} CPU minutes at {args.threads} thread(s)) on a "
        f"tiny frozen CLIP ({CLIP_TEXT[args.clip]}; {VISION}; one-layer random text tower, only used in training: "
        "the prompt pair's text features are stored), so that the offline demo of sfd_iqa gives meaningful "
        "scores. Use --model sfd_iqa for the paper's model once you have its file.\n"
        f"trained on (package, path, sha256; resized to short side {args.short_side}, Lanczos, then random "
        f"{args.crop} px crops, real-world x2 degradation): \n"
        + "".join(f"  {p['package']} {p['path']} {p['sha256']}\n" for p in listed)
        + f"held out: {', '.join(HELD_OUT)}, and the 9 photos pyiqa installs (bench/bench_sfd_iqa.py's default "
        "set, which no demo model saw)\n"
        + (f"generator lr {args.lr_g:g}: the fakes stay close to the bicubic upsampling of the real-world LR (blur, "
           "noise, JPEG), so the discriminators learn those as generated\n" if args.lr_g < 1e-4 else "")
        + f"command: {command}\n"
        + f"recipe: {config.model_dump_json()}\nlast losses: {json.dumps(history[-1])}"
    )
    card = sfd_iqa_card(DEMO_NAME, weights_file, sha, len(blob), sfd_iqa_options(trainer, VISION), description,
                        clip_weights={"urls": [weights_file], "sha256": sha, "bytes": len(blob),
                                      "format": "safetensors"})
    card["arch_options"]["clip"] = None
    text = io.StringIO()
    yaml.safe_dump(card, text, sort_keys=False, width=110)
    (out / f"{DEMO_NAME}.yaml").write_text(text.getvalue())
    print(f"wrote {out / weights_file} ({len(blob) / 1e6:.2f} MB) and its card in {minutes:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
