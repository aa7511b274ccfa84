"""Datasets of images rated by people (MOS), read into one shape: :class:`MosDataset`.

Readers (``load_mos_dataset`` picks one from the source; ``fmt`` forces it):

* ``csv``: a CSV of ``(path, score[, split][, ref])``, or a folder / object-store prefix holding one;
  paths are relative to the CSV's folder (or absolute, or URLs). Column names are detected (``path``,
  ``image``, ``file_name``...; ``mos``, ``score``, ``dmos``...) or given.
* ``hf``: Hugging Face ``datasets``: a local ``imagefolder`` with ``metadata.csv``/``metadata.jsonl``
  (``file_name`` + score column), a dataset saved with ``save_to_disk``, or ``hf:<hub name>``.
  See :mod:`iqa_plugin.eval.hf_datasets`.
* ``pyiqa``: pyiqa's meta-info layout (``pyiqa:koniq10k`` with ``root`` = the folder holding
  ``meta_info/`` and the image folders, or a ``meta_info_*.csv`` with ``images``): the same files, the same
  official split and the same row rules as pyiqa's own dataset classes. See :mod:`iqa_plugin.eval.pyiqa_layout`.

Rows with a missing image or an unusable score are counted and listed in :attr:`MosDataset.skipped`,
never fatal; only a source that cannot be read at all raises :class:`DatasetError`.
"""

from __future__ import annotations

import math
import os
import posixpath
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import fsspec

PATH_COLUMNS = ("path", "image", "image_name", "img_name", "file_name", "filename", "file", "uri", "name")
SCORE_COLUMNS = ("mos", "score", "dmos", "mos_zscore", "quality", "rating", "label")
REF_COLUMNS = ("ref", "ref_path", "ref_name", "reference")
SPLIT_COLUMN = "split"


class DatasetError(ValueError):
    """A dataset source cannot be read at all (the message names it, what was expected, the fix)."""


@dataclass(frozen=True)
class MosItem:
    """One rated image. ``mos`` is always higher-is-better (DMOS is negated on reading)."""

    id: str
    uri: str
    mos: float
    split: str | None = None
    ref_uri: str | None = None
    group: str | None = None  # distortion type in synthetic sets, for per-type tables


@dataclass(frozen=True)
class Skipped:
    """A row left out, and why (``missing_file``, ``missing_path``, ``bad_score``, ``missing_reference``)."""

    row: str
    reason: str
    detail: str = ""


@dataclass
class MosDataset:
    """Rated images from one source, ready to score."""

    name: str
    source: str
    items: list[MosItem]
    skipped: list[Skipped] = field(default_factory=list)
    mos_lower_better: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def full_reference(self) -> bool:
        """True when every item has a reference image (full-reference metrics can run)."""
        return bool(self.items) and all(item.ref_uri for item in self.items)

    def skipped_by_reason(self) -> dict[str, int]:
        return dict(sorted(Counter(s.reason for s in self.skipped).items()))

    def select_split(self, split: str | None) -> MosDataset:
        """Only the items of ``split`` (``None`` or ``'all'``: every item).

        Raises:
            DatasetError: the dataset has no such split (the ones it has are listed).
        """
        if split in (None, "all"):
            return self
        present = sorted({item.split for item in self.items if item.split is not None})
        if split not in present:
            raise DatasetError(f"{self.source}: no split {split!r}; it has {present or 'no split column'} "
                               "(use --split all to evaluate every image)")
        return replace(self, items=[item for item in self.items if item.split == split],
                       notes=[*self.notes, f"split {split}"])


def url_to_fs(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """``(filesystem, path)`` for a local path or any fsspec URL (S3 endpoint from ``$AWS_ENDPOINT_URL``)."""
    options = {}
    if uri.startswith(("s3://", "s3a://")):
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            options = {"client_kwargs": {"endpoint_url": endpoint}}
    return fsspec.core.url_to_fs(uri, **options)


def join(base: str, relative: str) -> str:
    """``relative`` resolved against the folder ``base`` (URLs and absolute paths pass through)."""
    if "://" in relative or os.path.isabs(relative):
        return relative
    if "://" in base:
        return posixpath.join(base.rstrip("/"), relative)
    return os.path.normpath(os.path.join(base, relative))


def parse_score(value: object) -> float | None:
    """A finite float from a cell, or ``None`` (empty, text, nan, inf)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(str(value).strip()) if not isinstance(value, (int, float)) else float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def pick_column(columns: Iterable[str], wanted: str | None, candidates: tuple[str, ...], what: str,
                source: str, required: bool = True) -> str | None:
    """The column named ``wanted``, else the first of ``candidates`` present (case-insensitive)."""
    columns = list(columns)
    lower = {c.lower(): c for c in columns}
    if wanted is not None:
        if wanted in columns:
            return wanted
        if wanted.lower() in lower:
            return lower[wanted.lower()]
        raise DatasetError(f"{source}: no column {wanted!r} for the {what}; its columns are {columns}")
    for candidate in candidates:
        if candidate in lower:
            return lower[candidate]
    if required:
        raise DatasetError(f"{source}: cannot tell which column holds the {what} (columns {columns}); expected "
                           f"one of {list(candidates)} or name it with --{what.split()[0]}-column")
    return None


def existing_files(root: str) -> set[str] | None:
    """Every file path under ``root`` as full URIs/absolute paths (one listing), or ``None`` if unlistable."""
    try:
        fs, path = url_to_fs(root)
        fs.invalidate_cache()
        found = fs.find(path)
    except Exception:
        return None
    if "://" in root:
        return {fs.unstrip_protocol(p) for p in found}
    return {os.path.abspath(p) for p in found}


def check_exists(items: list[MosItem], roots: Iterable[str]) -> tuple[list[MosItem], list[Skipped]]:
    """Split ``items`` into those whose image (and reference) exist and :class:`Skipped` rows."""
    listed: set[str] = set()
    for root in set(roots):
        listed |= existing_files(root) or set()
    cache: dict[str, bool] = {}

    def exists(uri: str) -> bool:
        key = uri if "://" in uri else os.path.abspath(uri)
        if key in listed:
            return True
        if key not in cache:
            try:
                fs, path = url_to_fs(uri)
                cache[key] = fs.isfile(path)
            except Exception:
                cache[key] = False
        return cache[key]

    kept, skipped = [], []
    for item in items:
        if not exists(item.uri):
            skipped.append(Skipped(item.id, "missing_file", item.uri))
        elif item.ref_uri and not exists(item.ref_uri):
            skipped.append(Skipped(item.id, "missing_reference", item.ref_uri))
        else:
            kept.append(item)
    return kept, skipped
