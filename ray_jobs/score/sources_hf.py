"""Hugging Face datasets as a score job's source: a dataset on the hub, a ``save_to_disk`` folder, or a
local ``imagefolder``, read with the ``datasets`` package (never a hand-written reader).

SRC forms: ``hf:<owner>/<name>`` (the hub, as ``iqa eval`` writes it; ``hf://datasets/<owner>/<name>``
works too; where the network allows, its local cache when ``HF_HUB_OFFLINE=1``), a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (local
or ``s3://``, found by its ``state.json`` / ``dataset_dict.json``), or any image folder with
``--source-format hf`` (datasets' ``imagefolder`` builder: class sub-folders become a label column,
a ``metadata.jsonl`` / ``metadata.csv`` adds columns).

Listing: one input per row of the split, ``id`` = ``<dataset fingerprint>/<zero-padded row index>`` (the
fingerprint is stored with a saved dataset and derived from the files for an imagefolder, so it is
stable across runs and a changed dataset gets new ids) or the ``--id-column`` value; ``uri`` =
:func:`row_uri`, which the fetch stage turns back into the image cell's bytes (:func:`fetch_row_bytes`).
The driver opens the dataset memory-mapped and holds only the ids; each worker opens it once.
"""

from __future__ import annotations

import functools
import os
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode

import pyarrow as pa
import pyarrow.compute as pc

from ray_jobs.errors import UserError
from ray_jobs.runtime import StorageSettings, filesystem_for, protocol_of, redact, storage_options_for
from ray_jobs.score.sources import Listing, SourceError

HUB_PREFIX = "hf:"  # as in iqa_plugin.eval.hf_datasets; the URL form below is accepted too
HUB_URL_PREFIX = "hf://datasets/"
ROW_SCHEME = "hf-row:"
SAVED_MARKERS = ("dataset_dict.json", "state.json")


def is_saved_dataset(src: str) -> bool:
    """True when ``src`` is a folder written by ``save_to_disk`` (a Dataset or a DatasetDict)."""
    if src.startswith(HUB_PREFIX) or "{" in src:
        return False
    try:
        fs, root = filesystem_for(src)
        return any(fs.isfile(f"{root.rstrip('/')}/{name}") for name in SAVED_MARKERS)
    except Exception:  # an unreadable SRC is reported by the listing that follows, with its own advice
        return False


def location_of(src: str) -> tuple[str, str]:
    """``(kind, location)``: ``hub`` + dataset name, ``disk`` + folder, or ``imagefolder`` + folder."""
    if src.startswith(HUB_PREFIX):
        prefix = HUB_URL_PREFIX if src.startswith(HUB_URL_PREFIX) else HUB_PREFIX
        name = src[len(prefix):].strip("/")
        if not name:
            raise SourceError(f"{src}: expected hf:<owner>/<name>")
        return "hub", name
    return ("disk" if is_saved_dataset(src) else "imagefolder"), src.rstrip("/")


def _load(kind: str, location: str, split: str | None, settings: StorageSettings | None = None) -> Any:
    """The Dataset or DatasetDict at ``location`` (datasets' own loaders; memory-mapped Arrow)."""
    import datasets

    datasets.disable_progress_bars()
    if kind == "hub":
        return datasets.load_dataset(location, split=split)
    if kind == "disk":
        options = storage_options_for(location, settings) if protocol_of(location) != "file" else None
        return datasets.load_from_disk(location, storage_options=options)
    if protocol_of(location) != "file":
        raise SourceError(f"{location}: an imagefolder must be a local folder (save_to_disk it to use object storage)")
    return datasets.load_dataset("imagefolder", data_dir=location, split=split)


def _pick_split(loaded: Any, split: str | None, src: str) -> tuple[Any, str | None]:
    import datasets

    if isinstance(loaded, datasets.Dataset):
        if split is not None and loaded.split is not None and str(loaded.split) != split:
            raise UserError(f"{src} holds the single split {loaded.split!r}, not --split {split!r}; drop --split")
        return loaded, split if split is not None else (str(loaded.split) if loaded.split is not None else None)
    names = list(loaded.keys())
    if split is None:
        split = names[0] if len(names) == 1 else "train" if "train" in names else None
        if split is None:
            raise UserError(f"{src} has the splits {names}; choose one with --split")
    if split not in names:
        raise UserError(f"{src} has no split {split!r}; it has {names} (--split)")
    return loaded[split], split


def open_dataset(src: str, split: str | None, settings: StorageSettings | None = None) -> tuple[Any, str | None]:
    """``(Dataset, split name)`` of ``src`` (see the module docstring for its forms).

    Raises:
        SourceError: the dataset cannot be loaded (offline hub, missing folder); one line, no secret.
        UserError: the split does not exist.
    """
    kind, location = location_of(src)
    try:
        loaded = _load(kind, location, split if kind != "disk" else None, settings)
    except (SourceError, UserError):
        raise
    except Exception as error:  # datasets/huggingface_hub/fsspec errors: one clear line
        text = redact(f"{type(error).__name__}: {error}".splitlines()[0])[:300]
        if kind == "hub":
            raise SourceError(f"Hugging Face dataset {location!r} cannot be loaded ({text}); without network it "
                              "must already be in the local cache (HF_HUB_OFFLINE=1 reads only the cache), or give "
                              "a save_to_disk folder") from None
        if split is not None and "split" in text.lower():
            raise UserError(f"{src}: no split {split!r} ({text}) (--split)") from None
        raise SourceError(f"{src}: cannot be read as a Hugging Face dataset ({text}); expected a save_to_disk "
                          "folder or an image folder") from None
    return _pick_split(loaded, split, src)


def image_column_of(dataset: Any, column: str | None, src: str) -> str:
    """``column`` checked to exist, or the first ``Image``-typed column."""
    import datasets

    names = list(dataset.column_names)
    if column is not None:
        if column not in names:
            raise UserError(f"{src}: no column {column!r} (--image-column); its columns are {names}")
        return column
    images = [name for name, feature in dataset.features.items() if isinstance(feature, datasets.Image)]
    if not images:
        raise UserError(f"{src}: no Image column among {names}; name the column holding images (bytes or paths) "
                        "with --image-column")
    return images[0]


def row_uri(src: str, split: str | None, column: str, row: int) -> str:
    """``hf-row:<src>?split=..&column=..&row=N``: where one image cell lives (shown in the ``uri`` column)."""
    query = {"column": column, "row": str(row)}
    if split is not None:
        query = {"split": split, **query}
    return f"{ROW_SCHEME}{quote(src, safe='/:@-._~')}?{urlencode(query)}"


def parse_row_uri(uri: str) -> tuple[str, str | None, str, int]:
    """``(src, split, column, row)`` of a :func:`row_uri`."""
    body, _, query = uri[len(ROW_SCHEME):].rpartition("?")
    values = {key: items[0] for key, items in parse_qs(query).items()}
    return unquote(body), values.get("split"), values["column"], int(values["row"])


def list_dataset(src: str, *, split: str | None, image_column: str | None, id_column: str | None) -> Listing:
    """One input per row of the split: ``id`` (see the module docstring) and its :func:`row_uri`.

    Raises:
        SourceError / UserError: the dataset cannot be opened, a column or split does not exist, or the id
            column has empty or repeated values.
    """
    dataset, split = open_dataset(src, split)
    column = image_column_of(dataset, image_column, src)
    n = dataset.num_rows
    if id_column is not None:
        if id_column not in dataset.column_names:
            raise UserError(f"{src}: no column {id_column!r} (--id-column); its columns are {dataset.column_names}")
        ids = pc.cast(dataset.with_format("arrow")[id_column], pa.string())
        if ids.null_count:
            raise UserError(f"{src}: {ids.null_count} rows have an empty {id_column!r}; fill them or drop "
                            "--id-column")
        if pc.count_distinct(ids).as_py() != n:
            raise UserError(f"{src}: the values of {id_column!r} repeat; every id must be unique (the output is keyed "
                            "by it): give another --id-column or none (fingerprint + row index)")
        ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    else:
        width = max(6, len(str(max(n - 1, 0))))
        ids = pa.array([f"{dataset._fingerprint}/{i:0{width}d}" for i in range(n)], pa.string())
    uris = pa.array([row_uri(src, split, column, i) for i in range(n)], pa.string())
    return Listing(pa.table({"id": ids, "uri": uris}))


@functools.lru_cache(maxsize=4)
def _arrow_rows(src: str, split: str | None) -> Any:
    """The dataset in Arrow format, opened once per worker process (memory-mapped, so cheap to keep)."""
    dataset, _ = open_dataset(src, split)
    return dataset.with_format("arrow")


def fetch_row_bytes(uri: str, settings: StorageSettings | None = None) -> bytes:
    """The image bytes of one dataset cell (a :func:`row_uri`): embedded bytes, or the file its path names.

    Raises:
        ray_jobs.score.stages.FetchError: ``no_image`` (a null cell), ``unsupported_type`` (a cell that is
            neither an image, bytes nor a path), ``missing`` (a row or file that is gone), ``fetch_error``.
    """
    from iqa_plugin.data.reasons import FETCH_ERROR, MISSING, NO_IMAGE, UNSUPPORTED_TYPE
    from ray_jobs.score.stages import FetchError, fetch_bytes

    src, split, column, row = parse_row_uri(uri)
    try:
        rows = _arrow_rows(src, split)
        if row >= rows.num_rows:
            raise FetchError(MISSING)
        cell = rows[row].column(column)[0].as_py()
    except FetchError:
        raise
    except Exception:
        raise FetchError(FETCH_ERROR) from None
    if isinstance(cell, dict):  # datasets' Image storage: {"bytes": ..., "path": ...}
        cell = cell.get("bytes") or cell.get("path")
    if cell is None:
        raise FetchError(NO_IMAGE)
    if isinstance(cell, bytes):
        return cell
    if isinstance(cell, str) and cell:
        if "://" not in cell and not os.path.isabs(cell):
            raise FetchError(MISSING)  # a relative path with no folder to resolve it against
        return fetch_bytes(cell, settings)
    raise FetchError(UNSUPPORTED_TYPE)
