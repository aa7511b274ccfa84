"""fsspec helpers shared by the Ray jobs: one filesystem per URI, Parquet parts under deterministic
names, and reading back what a previous run already wrote (resume).

Any fsspec URI works (local paths, ``file://``, ``s3://``, ``gs://``, ...). For ``s3://`` the endpoint
named by ``$AWS_ENDPOINT_URL`` is used when set (MinIO, moto, SeaweedFS, Ceph), and credentials come from
the usual AWS variables or profile; they are never logged (see :func:`redact`).
"""

from __future__ import annotations

import json
import os
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

PART_PREFIX = "part-"
PART_SUFFIX = ".parquet"
_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
#: Object-store settings a driver hands to its workers (see :func:`storage_env`).
STORAGE_ENV = (
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REQUEST_CHECKSUM_CALCULATION",
    "AWS_RESPONSE_CHECKSUM_VALIDATION",
)


def protocol_of(uri: str) -> str:
    """The fsspec protocol of ``uri`` (``'file'`` for plain paths)."""
    if "://" not in uri:
        return "file"
    return uri.split("://", 1)[0].lower()


def storage_options_for(uri: str) -> dict[str, Any]:
    """Keyword arguments for the filesystem of ``uri`` (the S3 endpoint from ``$AWS_ENDPOINT_URL``)."""
    protocol = protocol_of(uri)
    if protocol in ("s3", "s3a"):
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        return {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}
    return {}


def storage_env() -> dict[str, str]:
    """The driver's object-store settings (:data:`STORAGE_ENV` that are set), for its workers.

    Handed to Ray tasks in their arguments, never in a runtime env, a log line or ``_job.json``: workers
    then read exactly the store the driver checked, even when the cluster was started with another
    environment.
    """
    return {key: os.environ[key] for key in STORAGE_ENV if os.environ.get(key)}


def apply_storage_env(env: dict[str, str] | None) -> None:
    """Adopt the driver's object-store settings in a worker (no-op for ``None``)."""
    changed = False
    for key, value in (env or {}).items():
        if os.environ.get(key) != value:
            os.environ[key] = value
            changed = True
    if changed:  # cached clients hold the old endpoint/credentials
        try:
            fsspec.get_filesystem_class("s3").clear_instance_cache()
        except (ImportError, ValueError):
            pass


def filesystem_for(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """``(filesystem, path inside it)`` for any fsspec URI or local path."""
    fs, path = fsspec.core.url_to_fs(uri, **storage_options_for(uri))
    return fs, path


def full_uri(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """The URI a worker can open again: ``s3://bucket/key`` for object stores, an absolute local path."""
    protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    if protocol in ("file", "local"):
        return os.path.abspath(path)
    return fs.unstrip_protocol(path)


def join_uri(base: str, *names: str) -> str:
    """``base`` + ``/name...`` for local paths and URLs alike, without doubling slashes
    (``s3://b/x/`` + ``a`` -> ``s3://b/x/a``)."""
    return "/".join([base.rstrip("/"), *(name.strip("/") for name in names)])


def redact(text: str) -> str:
    """``text`` with any secret credential value from the environment replaced by ``***``."""
    for key in _SECRET_ENV:
        value = os.environ.get(key)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return text


def part_name(block_key: str) -> str:
    """File name of the Parquet part holding one block: ``part-<block key>.parquet``."""
    return f"{PART_PREFIX}{block_key}{PART_SUFFIX}"


def write_parquet_part(table: pa.Table, dst: str, block_key: str) -> str:
    """Write ``table`` as ``DST/part-<block_key>.parquet`` and return its URI.

    The write is all-or-nothing: a local file is written under a temporary name and renamed; an object
    store PUT is atomic. A retried block therefore replaces its earlier file and a reader never sees half
    a part.
    """
    fs, root = filesystem_for(dst)
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
