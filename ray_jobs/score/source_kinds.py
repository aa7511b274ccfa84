"""Which kind of source a score job reads, and its listing: single files, a Hugging Face dataset or
WebDataset shards.

``source_format: auto`` decides from SRC alone: ``hf:<owner>/<name>`` or a folder holding a
``save_to_disk`` dataset is ``hf``; a ``.tar`` brace pattern or file is ``webdataset``; a folder or prefix
whose inputs are ``.tar`` files, alone or with the sidecars img2dataset / DataComp write next to them
(``00000.parquet``, ``00000_stats.json``, ``.txt``), is ``webdataset`` too (the sidecars are counted as
excluded); ``.tar`` files mixed with anything else (images) are refused, naming ``--source-format``;
anything else is ``files``. An image folder is
read with datasets' ``imagefolder`` builder only when asked (``source_format: hf``): as plain files it
is the same images with path ids.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from ray_jobs.errors import UserError
from ray_jobs.score.sources import Listing, list_source

KINDS = ("files", "hf", "webdataset")
SIDECAR_SUFFIXES = (".parquet", ".json", ".txt")
"""What shard writers (img2dataset, DataComp) put next to the tars: per-shard metadata and stats."""


def source_kind(config: Any) -> str:
    """``files``, ``hf`` or ``webdataset`` for ``config.src`` (a prefix of tars is found by listing)."""
    from ray_jobs.score.sources_hf import HUB_PREFIX, is_saved_dataset
    from ray_jobs.score.sources_wds import is_shard_pattern

    chosen = getattr(config, "source_format", "auto")
    if chosen != "auto":
        return chosen
    if config.src.startswith(HUB_PREFIX):
        return "hf"
    if is_shard_pattern(config.src):
        return "webdataset"
    return "hf" if is_saved_dataset(config.src) else "files"


def _check_options(config: Any, kind: str) -> None:
    given = [name for name in ("split", "image_column", "id_column") if getattr(config, name, None) is not None]
    allowed = {"files": (), "hf": ("split", "image_column", "id_column"), "webdataset": ("image_column",)}[kind]
    wrong = [name for name in given if name not in allowed]
    if wrong:
        flags = ", ".join("--" + name.replace("_", "-") for name in wrong)
        how = {"files": "it is read as single files (--source-format hf reads an image folder as a Hugging Face "
                        "imagefolder)",
               "hf": "",
               "webdataset": "a WebDataset sample's id is always <tar name>/<key> and it has no splits"}[kind]
        raise UserError(f"{flags} does not apply to {config.src}: {how}")


def _shards_if_any(src: str, listing: Listing) -> Listing | None:
    """The tars of a listing when it is a shard prefix (tars plus sidecars), None when it holds no tar.

    Raises:
        UserError: tars mixed with other files (images): which one is meant cannot be guessed.
    """
    ids = listing.inputs.column("id").to_pylist()
    is_tar = [i.lower().endswith(".tar") for i in ids]
    if not any(is_tar):
        return None
    others = [i for i, tar in zip(ids, is_tar, strict=True) if not tar and not i.lower().endswith(SIDECAR_SUFFIXES)]
    if others:
        raise UserError(
            f"{src} mixes {sum(is_tar)} .tar files with {len(others)} other files (e.g. {others[0]}); pass "
            "--source-format webdataset to score only the shards or --source-format files to score every file")
    excluded = {**listing.excluded, "not_tar": len(ids) - sum(is_tar)}
    return Listing(listing.inputs.filter(pa.array(is_tar)), excluded)


def list_config_source(config: Any) -> tuple[str, Listing]:
    """``(kind, listing)``: for ``files`` and ``hf`` one row per image, for ``webdataset`` one row per shard.

    Raises:
        SourceError / UserError: see :func:`ray_jobs.score.sources.list_source`,
            :func:`ray_jobs.score.sources_hf.list_dataset`, :func:`ray_jobs.score.sources_wds.list_shards`;
            also an option of another kind of source (``--split`` on a folder of files).
    """
    from ray_jobs.score.sources_hf import list_dataset
    from ray_jobs.score.sources_wds import list_shards

    kind = source_kind(config)
    listing: Listing | None = None
    if kind == "files":
        listing = list_source(config.src, exclude=config.out)
        if getattr(config, "source_format", "auto") == "auto":
            shards = _shards_if_any(config.src, listing)
            if shards is not None:
                kind, listing = "webdataset", shards
    _check_options(config, kind)
    if kind == "hf":
        listing = list_dataset(config.src, split=config.split, image_column=config.image_column,
                               id_column=config.id_column)
    elif listing is None:
        listing = list_shards(config.src, exclude=config.out)
    return kind, listing


def source_identity(config: Any) -> str:
    """The ``source`` of a run identity: SRC plus the options that choose what in it is scored."""
    text = config.src.rstrip("/")
    for name in ("split", "image_column", "id_column"):
        value = getattr(config, name, None)
        if value is not None:
            text += f" {name}={value}"
    return text
