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
#: Everything of a job's output that is not a Parquet part (run record, identity, lock, report, temporary
#: files) lives under ``DST/_iqa/``: Parquet readers skip ``_``-prefixed folders (pyarrow, pandas, Spark)
#: or read only ``.parquet`` files (Ray, duckdb's ``DST/*.parquet``), and nothing in there ends so.
META_DIR = "_iqa"


def meta_uri(dst: str, *names: str) -> str:
    """``DST/_iqa/<names>``: where a job keeps what is not a Parquet part."""
    return join_uri(dst, META_DIR, *names)


def find_files(fs: Any, root: str, where: str, special: list[str] | None = None) -> list[str]:
    """Every regular file under ``root`` (sorted paths), failing when a part of the tree cannot be listed.

    Entries that are neither files nor folders (FIFOs, sockets, devices: reading them can block forever)
    are not returned; they are appended to ``special`` when given, so that callers count them.

    fsspec's ``find`` skips a folder it may not read without a word (its ``walk`` drops ``on_error``
    below the top level); here that is an error. On an object store the listing is one flat request that
    fails as a whole.

    Raises:
        UserError: a folder under ``root`` cannot be listed (names it and says what to do).
    """
    from ray_jobs.errors import UserError

    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    if {"s3", "s3a"} & set(protocols):
        return sorted(fs.find(root))
    found: list[str] = []
    unreadable: list[OSError] = []
    pending = [root.rstrip("/")]
    while pending:
        folder = pending.pop()
        try:
            listing = fs.ls(folder, detail=True)
        except FileNotFoundError:
            continue  # removed while listing
        except OSError as error:
            unreadable.append(error)
            continue
        for info in listing:
            name = str(info["name"]).rstrip("/")
            if info["type"] == "directory" and name != folder:
                pending.append(name)
            elif info["type"] == "file":
                found.append(name)
            elif info["type"] != "directory" and special is not None:
                special.append(name)
    if unreadable:
        first = unreadable[0]
        folder = getattr(first, "filename", None) or str(first)
        raise UserError(f"{where}: {len(unreadable)} folder(s) cannot be listed, e.g. {folder} "
                        f"({type(first).__name__}: {first.strerror or first}); fix their permissions or point "
                        f"{where} at a folder the job can read (nothing is skipped silently)")
    return sorted(found)


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
        tmp_dir = join_uri(root, META_DIR, "tmp")
        fs.makedirs(tmp_dir, exist_ok=True)
        tmp = join_uri(tmp_dir, f"{block_key}-{uuid.uuid4().hex}.tmp")  # never read as a part
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


def put_bytes(uri: str, data: bytes, settings: StorageSettings | None = None) -> str:
    """Write ``data`` to ``uri`` (any fsspec URI) whole or not at all, creating local folders; return the
    URI a worker can open again. Local: a temporary dot-file beside it (listings skip those, should a
    killed writer leave one), renamed; object store: one PUT."""
    fs, path = filesystem_for(uri, settings)
    parent, _, name = path.rpartition("/")
    if protocol_of(uri) == "file" and parent:
        fs.makedirs(parent, exist_ok=True)
        tmp = f"{parent}/.{name}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    else:
        fs.pipe_file(path, data)
    return full_uri(fs, path)


def write_json(uri: str, payload: dict[str, Any]) -> None:
    """Write ``payload`` as indented JSON to ``uri`` (any fsspec URI), whole or not at all."""
    put_bytes(uri, (json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8"))


def read_json(uri: str) -> dict[str, Any] | None:
    """The JSON object at ``uri``, or ``None`` when there is none."""
    fs, path = filesystem_for(uri)
    try:
        return json.loads(fs.cat_file(path).decode("utf-8"))
    except FileNotFoundError:
        return None


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
