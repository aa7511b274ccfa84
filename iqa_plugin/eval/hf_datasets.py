"""Rated images from Hugging Face ``datasets`` (the package does the reading; nothing re-implemented).

* a local ``imagefolder``: a folder with images and ``metadata.csv`` / ``metadata.jsonl`` whose
  ``file_name`` column names each image, plus a score column;
* a dataset saved with ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``;
* ``hf:<owner>/<name>`` on the hub, where the network allows (``datasets.load_dataset``).

Images are read undecoded (``Image(decode=False)``): files that exist on disk are scored from their
path; images stored inside the dataset (Arrow bytes) are written once to ``cache_dir`` under their
sha256, so the scoring job can read them like any other file.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from iqa_plugin.eval.datasets import (
    SCORE_COLUMNS,
    DatasetError,
    MosDataset,
    MosItem,
    Skipped,
    parse_score,
    pick_column,
)

HUB_PREFIX = "hf:"


def is_saved_dataset(path: str) -> bool:
    """True for a folder written by ``save_to_disk`` (a Dataset or a DatasetDict)."""
    folder = Path(path)
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def is_imagefolder(path: str) -> bool:
    """True for a folder with an ``imagefolder`` metadata file."""
    folder = Path(path)
    return any((folder / name).is_file() for name in ("metadata.csv", "metadata.jsonl", "metadata.parquet"))


def _load(src: str, split: str | None) -> tuple[Any, str]:
    import datasets

    try:
        if src.startswith(HUB_PREFIX):
            loaded = datasets.load_dataset(src[len(HUB_PREFIX):])
        elif is_saved_dataset(src):
            loaded = datasets.load_from_disk(src)
        elif is_imagefolder(src):
            loaded = datasets.load_dataset("imagefolder", data_dir=src)
        else:
            raise DatasetError(f"{src}: not a Hugging Face dataset; expected a save_to_disk folder, an imagefolder "
                               "with metadata.csv/metadata.jsonl (file_name + score), or hf:<owner>/<name>")
    except DatasetError:
        raise
    except Exception as error:  # network, missing files, bad metadata: one clear line
        raise DatasetError(f"{src}: datasets could not load it ({type(error).__name__}: "
                           f"{str(error).splitlines()[0][:200]})") from None
    if isinstance(loaded, datasets.DatasetDict):
        names = list(loaded)
        chosen = split if split not in (None, "all") else ("test" if "test" in names else names[0])
        if chosen not in loaded:
            raise DatasetError(f"{src}: no split {chosen!r}; it has {names}")
        return loaded[chosen], chosen
    return loaded, split or "all"


def _image_column(ds: Any, wanted: str | None, src: str) -> str:
    import datasets

    images = [name for name, feature in ds.features.items() if isinstance(feature, datasets.Image)]
    if wanted is not None:
        if wanted not in ds.column_names:
            raise DatasetError(f"{src}: no column {wanted!r}; its columns are {ds.column_names}")
        return wanted
    if not images:
        raise DatasetError(f"{src}: no Image column among {ds.column_names}; name it with --image-column")
    return images[0]


def _materialize(data: bytes, name: str | None, cache_dir: Path) -> str:
    digest = hashlib.sha256(data).hexdigest()
    suffix = Path(name).suffix if name else ""
    target = cache_dir / digest[:2] / f"{digest}{suffix or '.img'}"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{os.getpid()}")
        temporary.write_bytes(data)
        temporary.replace(target)  # atomic: a concurrent reader never sees half a file
    return str(target)


def _row_id(path: str | None, data: bytes | None, src: str, index: int) -> str:
    if path and not data:
        inside = os.path.abspath(path).startswith(os.path.abspath(src) + os.sep)
        return os.path.relpath(path, src).replace(os.sep, "/") if inside else path
    return f"{index}:{Path(path).name}" if path else f"row {index}"


def read_hf_dataset(src: str, *, cache_dir: str | os.PathLike[str], image_column: str | None = None,
                    score_column: str | None = None, split: str | None = None,
                    mos_lower_better: bool = False) -> MosDataset:
    """Read a Hugging Face dataset of rated images (see the module docstring for the three kinds).

    Args:
        src: an imagefolder path, a ``save_to_disk`` folder or ``hf:<owner>/<name>``.
        cache_dir: where images stored inside the dataset are written once (by sha256).
        image_column / score_column: default the first ``Image`` column / the first of
            :data:`iqa_plugin.eval.datasets.SCORE_COLUMNS` present.
        split: the split of a DatasetDict (default ``test`` when present, else the first).
        mos_lower_better: the score column is lower-is-better (DMOS); it is negated.

    Raises:
        DatasetError: the source cannot be loaded, or the columns cannot be found.
    """
    import datasets

    ds, chosen = _load(src, split)
    image_col = _image_column(ds, image_column, src)
    score_col = pick_column([c for c in ds.column_names if c != image_col], score_column, SCORE_COLUMNS,
                            "score column", src)
    ds = ds.cast_column(image_col, datasets.Image(decode=False))
    cache = Path(cache_dir)
    items, skipped = [], []
    for index, row in enumerate(ds):
        image = row[image_col] or {}
        path, data = image.get("path"), image.get("bytes")
        row_id = _row_id(path, data, src, index)
        score = parse_score(row[score_col])
        if score is None:
            skipped.append(Skipped(str(row_id), "bad_score", f"row {index}: {row[score_col]!r}"))
            continue
        if data:
            uri = _materialize(data, path, cache)
        elif path and os.path.isfile(path):
            uri = path
        else:
            skipped.append(Skipped(str(row_id), "missing_file", str(path)))
            continue
        items.append(MosItem(id=str(row_id), uri=uri, mos=-score if mos_lower_better else score, split=chosen))
    notes = [f"datasets: {src} split {chosen}, image={image_col}, score={score_col}"]
    return MosDataset(name=Path(src.removeprefix(HUB_PREFIX)).name, source=src, items=items, skipped=skipped,
                      mos_lower_better=mos_lower_better, notes=notes)
