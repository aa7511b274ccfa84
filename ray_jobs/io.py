"""Parquet parts under deterministic names and reading back what a previous run already wrote (resume).

Any fsspec URI works; filesystems come from :func:`ray_jobs.runtime.filesystem_for` (one storage and
credential scheme). Functions that run inside Ray tasks take the driver's non-secret
:class:`ray_jobs.runtime.StorageSettings`.
"""

from __future__ import annotations

import json
import os
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ray_jobs.runtime import StorageSettings, filesystem_for, full_uri, join_uri, protocol_of

PART_PREFIX = "part-"
PART_SUFFIX = ".parquet"


def part_name(block_key: str) -> str:
    """File name of the Parquet part holding one block: ``part-<block key>.parquet``."""
    return f"{PART_PREFIX}{block_key}{PART_SUFFIX}"


def write_parquet_part(table: pa.Table, dst: str, block_key: str, settings: StorageSettings | None = None) -> str:
    """Write ``table`` as ``DST/part-<block_key>.parquet`` and return its URI.

    The write is all-or-nothing: a local file is written under a temporary name and renamed; an object
    store PUT is atomic. A retried block therefore replaces its earlier file and a reader never sees half
    a part. Transient store errors are retried by the store's client (botocore, s3fs).
    """
    fs, root = filesystem_for(dst, settings)
    target = join_uri(root, part_name(block_key))
    if protocol_of(dst) == "file":
        fs.makedirs(root, exist_ok=True)
        tmp = join_uri(root, f"_tmp-{block_key}-{uuid.uuid4().hex}{PART_SUFFIX}")
        pq.write_table(table, tmp)
        os.replace(tmp, target)
    else:
        with fs.open(target, "wb") as handle:
            pq.write_table(table, handle)
    return full_uri(fs, target)


def list_parts(dst: str) -> list[str]:
    """Paths (inside the filesystem of ``dst``) of every finished part file, sorted."""
    fs, root = filesystem_for(dst)
    fs.invalidate_cache()
    if not fs.exists(root):
        return []
    names = fs.find(root, maxdepth=1)
    return sorted(
        path for path in names
        if path.rsplit("/", 1)[-1].startswith(PART_PREFIX) and path.endswith(PART_SUFFIX)
    )


def iter_part_columns(dst: str, columns: list[str], *, threads: int = 16) -> Iterator[pa.Table]:
    """Yield the requested columns of each part file of ``dst`` (read a few files at a time)."""
    fs, _ = filesystem_for(dst)
    parts = list_parts(dst)

    def read(path: str) -> pa.Table:
        with fs.open(path, "rb") as handle:
            return pq.read_table(handle, columns=columns)

    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(parts) or 1))) as pool:
        yield from pool.map(read, parts)


def read_done_ids(dst: str) -> set[str]:
    """Ids already present in the part files of ``dst`` (empty when ``dst`` has none)."""
    done: set[str] = set()
    for table in iter_part_columns(dst, ["id"]):
        done.update(table.column("id").to_pylist())
    return done


def summarize_parts(dst: str) -> tuple[int, int, dict[str, int]]:
    """``(rows, scored rows, errors by reason)`` over every part file of ``dst``."""
    rows = 0
    errors: Counter[str] = Counter()
    for table in iter_part_columns(dst, ["error"]):
        rows += table.num_rows
        errors.update(value for value in table.column("error").to_pylist() if value is not None)
    return rows, rows - sum(errors.values()), dict(sorted(errors.items()))


def write_json(uri: str, payload: dict[str, Any]) -> None:
    """Write ``payload`` as indented JSON to ``uri`` (any fsspec URI)."""
    fs, path = filesystem_for(uri)
    parent = path.rsplit("/", 1)[0]
    if protocol_of(uri) == "file" and parent:
        fs.makedirs(parent, exist_ok=True)
    with fs.open(path, "w") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True, default=str)
        handle.write("\n")


def chunked(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive lists of ``size`` items (the last one shorter)."""
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
