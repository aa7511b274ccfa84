"""One entry for every dataset source: :func:`load_mos_dataset` picks the reader from the source."""

from __future__ import annotations

import os
from typing import Literal

from iqa_plugin.eval.datasets import DatasetError, MosDataset

Format = Literal["auto", "csv", "hf", "pyiqa"]
PYIQA_PREFIX = "pyiqa:"


def detect_format(src: str) -> str:
    """``pyiqa`` for ``pyiqa:<name>`` or a ``meta_info_*.csv``; ``hf`` for ``hf:<name>``, a ``save_to_disk``
    folder or an imagefolder with ``metadata.*``; ``csv`` otherwise."""
    from iqa_plugin.eval.hf_datasets import HUB_PREFIX, is_imagefolder, is_saved_dataset

    if src.startswith(PYIQA_PREFIX) or os.path.basename(src).startswith("meta_info_"):
        return "pyiqa"
    if src.startswith(HUB_PREFIX):
        return "hf"
    if "://" not in src and os.path.isdir(src) and (is_saved_dataset(src) or is_imagefolder(src)):
        return "hf"
    return "csv"


def load_mos_dataset(src: str, *, fmt: Format = "auto", root: str | None = None, images: str | None = None,
                     path_column: str | None = None, score_column: str | None = None,
                     image_column: str | None = None, split: str | None = None,
                     mos_lower_better: bool | None = None, cache_dir: str | None = None) -> MosDataset:
    """Read the rated images of ``src`` (see :mod:`iqa_plugin.eval.datasets` for the sources).

    Args:
        src: CSV file/folder/prefix, ``hf:<name>``, a ``datasets`` folder, ``pyiqa:<name>`` or a pyiqa
            ``meta_info_*.csv``.
        fmt: force a reader instead of detecting it.
        root: pyiqa layout: the folder standing for pyiqa's ``./datasets`` (default: ``./datasets``).
        images: pyiqa meta-info CSV given directly: the folder its image names are relative to.
        path_column / score_column / image_column: column names (detected when omitted).
        split: a split to keep (``all`` keeps every row); pyiqa layouts default to their official test split.
        mos_lower_better: the human score is lower-is-better (DMOS); ``None`` guesses per reader.
        cache_dir: where images stored inside a ``datasets`` dataset are written.

    Raises:
        DatasetError: the source cannot be read (message names it, what was expected, the fix).
    """
    kind = detect_format(src) if fmt == "auto" else fmt
    if kind == "pyiqa":
        from iqa_plugin.eval.pyiqa_layout import read_meta_info, read_pyiqa_dataset

        if src.startswith(PYIQA_PREFIX):
            return read_pyiqa_dataset(src[len(PYIQA_PREFIX):], root or "datasets", phase=split)
        if images is None:
            raise DatasetError(f"{src}: a meta-info CSV needs --images, the folder its image names are relative to")
        return read_meta_info(src, images, phase=split or "all", mos_lower_better=bool(mos_lower_better))
    if kind == "hf":
        from iqa_plugin.env import cache_dir as default_cache
        from iqa_plugin.eval.hf_datasets import read_hf_dataset

        return read_hf_dataset(src, cache_dir=cache_dir or default_cache() / "eval-images",
                               image_column=image_column, score_column=score_column, split=split,
                               mos_lower_better=bool(mos_lower_better))
    if kind == "csv":
        from iqa_plugin.eval.csv_table import read_csv_dataset

        dataset = read_csv_dataset(src, path_column=path_column, score_column=score_column,
                                   mos_lower_better=mos_lower_better)
        return dataset.select_split(split)
    raise DatasetError(f"--format {fmt}: expected one of auto, csv, hf, pyiqa")
