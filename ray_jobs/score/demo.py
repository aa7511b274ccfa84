"""The embedded default of ``iqa score --demo``: real photos from installed packages, degraded copies of
each (blur, noise, JPEG artefacts, pixelation, darkening) and a few broken files, written to a local
folder, so the job has something to score with no data and no object store at hand.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

DEGRADATIONS = ("blur", "noise", "jpeg", "pixelate", "dark")
#: The model ``--demo`` scores with unless ``--model``/``--weights`` is given: a tiny QualiCLIP trained by this
#: project's own recipe on the package photos (``registry/qualiclip-demo-tiny.yaml``), shipped with the package,
#: so the demo gives meaningful scores on a machine without network. It is NOT the paper's model.
DEMO_MODEL = "qualiclip-demo-tiny"
#: A dot-file marking a folder built by :func:`build_demo_folder` (dot-files are never inputs).
MARKER = ".iqa-demo"


def degrade(image: Image.Image, kind: str, seed: int = 0) -> Image.Image:
    """One visibly degraded copy of ``image`` (``kind`` from :data:`DEGRADATIONS`)."""
    if kind == "blur":
        return image.filter(ImageFilter.GaussianBlur(radius=max(2.0, min(image.size) / 60)))
    if kind == "noise":
        rng = np.random.default_rng(seed)
        pixels = np.asarray(image, dtype=np.float32)
        noisy = pixels + rng.normal(0.0, 28.0, pixels.shape)
        return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    if kind == "jpeg":
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=5)
        return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    if kind == "pixelate":
        small = image.resize((max(8, image.width // 12), max(8, image.height // 12)), Image.Resampling.BILINEAR)
        return small.resize(image.size, Image.Resampling.NEAREST)
    if kind == "dark":
        return Image.fromarray((np.asarray(image, dtype=np.float32) * 0.25).astype(np.uint8))
    raise ValueError(f"kind={kind!r}: expected one of {DEGRADATIONS}")


def build_demo_folder(folder: str | Path, *, short_side: int = 256, seed: int = 0) -> int:
    """Write the demo collection to ``folder`` (idempotent) and return how many input files it holds (the
    :data:`MARKER` dot-file is not an input)."""
    from iqa_plugin.testing import real_photo_paths

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for index, path in enumerate(real_photo_paths()):
        image = Image.open(path).convert("RGB")
        scale = short_side / min(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
        stem = path.stem
        image.save(folder / f"{stem}.jpg", quality=92)
        for kind in DEGRADATIONS:
            degrade(image, kind, seed=seed + index).save(folder / f"{stem}-{kind}.jpg", quality=92)
    (folder / "broken-empty.jpg").write_bytes(b"")
    whole = (folder / f"{stem}.jpg").read_bytes()
    (folder / "broken-truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (folder / "broken-notes.txt").write_text("not an image\n")
    (folder / MARKER).write_text("built by iqa score --demo\n")
    return sum(1 for item in folder.iterdir() if item.is_file() and not item.name.startswith("."))


def prepare_demo(src: str | None, out: str | None, log: Callable[[str], None] = print) -> tuple[str, str]:
    """``(src, out)`` for ``--demo``: builds the sample folder unless SRC was given; out defaults beside it."""
    root = Path(out).parent if out and "://" not in out else Path("iqa-demo")
    if src is None:
        src = str(root / "photos")
        count = build_demo_folder(src)
        log(f"demo: {count} sample files (real photos, degraded copies, 3 broken files) in {src}")
    return src, out or str(root / "scores")


def is_demo_folder(src: str) -> bool:
    """True when ``src`` is a local folder built by :func:`build_demo_folder`."""
    return "://" not in src and (Path(src) / MARKER).is_file()


def pair_ranking(scores: dict[str, float]) -> tuple[int, int]:
    """``(wins, pairs)``: how often a demo photo (``{stem}.jpg``) scored above one of its own degraded copies
    (``{stem}-{kind}.jpg``), over every pair where both were scored."""
    wins = pairs = 0
    for kind in DEGRADATIONS:
        for name, score in scores.items():
            if not name.endswith(f"-{kind}.jpg"):
                continue
            original = scores.get(name[: -len(f"-{kind}.jpg")] + ".jpg")
            if original is not None:
                pairs += 1
                wins += original > score
    return wins, pairs


def ranking_sentence(wins: int, pairs: int) -> str:
    """The one sentence ``iqa score --demo`` prints and the report shows for :func:`pair_ranking`."""
    return f"each photo scored above its own degraded copy in {wins} of {pairs} pairs ({wins / pairs:.0%})"
