"""The synthetic benchmark: real photos from installed packages x the 24 distortion kinds x 5 levels.

Every photo is resized (short side ``size``) and centre-cropped to ``size x size``, then degraded with
:func:`iqa_plugin.data.degradations.degrade` under a fixed seed and stored as PNG (lossless, so the file
holds exactly the distortion and nothing of a second codec). The "human" score of an image is minus its
level: a metric agrees with the benchmark when it ranks milder distortions higher. The pristine crop is
each image's reference, for full-reference metrics.

Building is idempotent: a folder that already holds the same recipe (``synthetic.json``) is reused.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from iqa_plugin.eval.datasets import MosDataset, MosItem

#: Default crop side: large enough for every kind's spatial structure (patches, blocks, jitter), small
#: enough that 8 photos x 120 versions score in minutes on a CPU.
DEFAULT_SIZE = 256
RECIPE_VERSION = 1


def _pristine(path: Path, size: int):
    import numpy as np
    import torch
    from PIL import Image

    image = Image.open(path).convert("RGB")
    scale = size / min(image.size)
    image = image.resize((max(size, round(image.width * scale)), max(size, round(image.height * scale))),
                         Image.Resampling.LANCZOS)
    left, top = (image.width - size) // 2, (image.height - size) // 2
    image = image.crop((left, top, left + size, top + size))
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float().div(255.0)


def _save_png(tensor, path: Path) -> None:
    from PIL import Image

    array = tensor.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(array).save(path, format="PNG")


def build_synthetic(folder: str | Path, *, size: int = DEFAULT_SIZE, seed: int = 0, photos: int | None = None,
                    kinds: Sequence[str] | None = None, levels: Sequence[int] | None = None,
                    progress: Callable[[str], None] | None = None) -> MosDataset:
    """Write (or reuse) the synthetic benchmark in ``folder`` and return it as a :class:`MosDataset`.

    Args:
        folder: a local folder (created).
        size: side of the square crops.
        seed: seeds every random distortion (same seed, same bytes).
        photos: use only the first N packaged photos (default: all installed, up to 8).
        kinds / levels: subsets of :data:`iqa_plugin.data.degradations.KINDS` and 1..5 (default: all).
        progress: called with one line per distortion kind.

    Raises:
        ValueError: an unknown kind or a level outside 1..5 (from ``degrade``), ``size`` below 32.
    """
    import torch

    from iqa_plugin.data.degradations import KINDS, LEVELS, degrade
    from iqa_plugin.testing import real_photo_paths

    if size < 32:
        raise ValueError(f"size={size}: expected at least 32 (every metric needs 32 px)")
    kinds = list(kinds or KINDS)
    levels = list(levels or range(1, LEVELS + 1))
    paths = real_photo_paths()[:photos] if photos else real_photo_paths()
    recipe = {"version": RECIPE_VERSION, "size": size, "seed": seed, "photos": [p.name for p in paths],
              "kinds": kinds, "levels": levels, "torch": torch.__version__.split("+")[0]}
    root = Path(folder)
    marker = root / "synthetic.json"
    stems = [p.stem for p in paths]
    if not (marker.is_file() and json.loads(marker.read_text()) == recipe):
        for kind in kinds:  # validate before writing anything
            degrade(torch.zeros(1, 3, 32, 32), kind, levels[0], seed)
        (root / "reference").mkdir(parents=True, exist_ok=True)
        batch = torch.stack([_pristine(p, size) for p in paths])
        for stem, image in zip(stems, batch, strict=True):
            _save_png(image, root / "reference" / f"{stem}.png")
        for kind in kinds:
            (root / kind).mkdir(exist_ok=True)
            for level in levels:
                degraded = degrade(batch, kind, level, seed + level)
                for stem, image in zip(stems, degraded, strict=True):
                    _save_png(image, root / kind / f"{stem}-{level}.png")
            if progress:
                progress(f"synthetic: {kind} done ({len(levels)} levels x {len(stems)} photos)")
        marker.write_text(json.dumps(recipe, indent=2) + "\n")
    items = [MosItem(id=f"{kind}/{stem}-{level}.png", uri=str((root / kind / f"{stem}-{level}.png").resolve()),
                     mos=-float(level), ref_uri=str((root / "reference" / f"{stem}.png").resolve()), group=kind)
             for kind in kinds for level in levels for stem in stems]
    notes = [f"synthetic: {len(stems)} photos x {len(kinds)} kinds x {len(levels)} levels, {size}px, seed {seed}; "
             "human score = -level"]
    return MosDataset(name="synthetic", source=str(root), items=items, notes=notes)
