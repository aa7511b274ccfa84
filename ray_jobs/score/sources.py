"""What a score job reads: a local folder, any fsspec prefix (``s3://bucket/photos/``) or a manifest
file (Parquet, CSV or JSONL of URIs with optional ids), listed as rows ``{id, uri}`` sorted by id.

Ids are what the output is keyed by: for a folder or prefix the object's path relative to it
(``sub/cat.jpg``), for a manifest its ``id`` column or, without one, the URI as written. Relative URIs
in a manifest are resolved against the manifest's own folder. The source is checked before anything is
started, so a missing bucket or wrong credentials fail at once with :class:`SourceError`.
"""

from __future__ import annotations

import io
import os
import posixpath

import pyarrow as pa
import pyarrow.compute as pc

from ray_jobs.errors import UserError
from ray_jobs.runtime import filesystem_for, full_uri, protocol_of, redact

MANIFEST_SUFFIXES = (".parquet", ".csv", ".jsonl", ".ndjson")
URI_COLUMNS = ("uri", "path", "url")


class SourceError(UserError):
    """The source (or destination) cannot be used at all: the job fails before it starts (exit 2)."""


def is_manifest(src: str) -> bool:
    """True when ``src`` names a manifest file (by its suffix) rather than a folder or prefix."""
    return src.lower().rstrip("/").endswith(MANIFEST_SUFFIXES)


def describe_access_error(src: str, error: BaseException) -> SourceError:
    """A :class:`SourceError` that says what failed and what to check, without any secret value."""
    text = redact(f"{type(error).__name__}: {error}".splitlines()[0])[:300]
    if isinstance(error, PermissionError) or "AccessDenied" in text or "InvalidAccessKeyId" in text \
            or "SignatureDoesNotMatch" in text or "Forbidden" in text:
        hint = ("access denied: check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or "
                "AWS_PROFILE) and AWS_ENDPOINT_URL")
    elif isinstance(error, FileNotFoundError) or "NoSuchBucket" in text:
        hint = "not found: check the bucket and prefix name (and AWS_ENDPOINT_URL for a non-AWS store)"
    else:
        hint = "cannot be read"
    return SourceError(f"{src}: {hint} ({text})")


def list_inputs(src: str, *, limit: int | None = None, exclude: str | None = None) -> pa.Table:
    """All inputs of ``src`` as a table ``id: string, uri: string`` sorted by id, ids unique.

    ``exclude``: a folder or prefix (the job's output) whose objects are never inputs, even inside ``src``.

    Raises:
        SourceError: ``src`` does not exist, cannot be read (credentials), or holds no input.
        UserError: a manifest without a URI column, with empty URIs or with duplicate ids.
    """
    try:
        table = _list_manifest(src) if is_manifest(src) else _list_prefix(src, exclude)
    except (SourceError, ValueError):
        raise
    except Exception as error:  # s3fs/botocore/OS errors: turn into one clear line
        raise describe_access_error(src, error) from None
    if table.num_rows == 0:
        raise SourceError(f"{src}: no input found (an empty folder, prefix or manifest); check SRC")
    table = table.sort_by("id")
    if limit is not None:
        table = table.slice(0, limit)
    return table


def _list_prefix(src: str, exclude: str | None = None) -> pa.Table:
    fs, root = filesystem_for(src)
    skip = None
    if exclude and protocol_of(exclude) == protocol_of(src):
        skip = filesystem_for(exclude)[1].rstrip("/") + "/"
    fs.invalidate_cache()
    if not fs.exists(root):
        raise SourceError(f"{src}: not found (expected a folder, an object-store prefix or a manifest file "
                          f"ending in {', '.join(MANIFEST_SUFFIXES)})")
    if fs.isfile(root):
        raise SourceError(f"{src} is a single file; SRC must be a folder, a prefix or a manifest "
                          f"({', '.join(MANIFEST_SUFFIXES)})")
    root = root.rstrip("/")
    ids: list[str] = []
    uris: list[str] = []
    for path in sorted(fs.find(root)):
        if skip and (path + "/").startswith(skip):
            continue  # the job's own output folder inside SRC
        rel = posixpath.relpath(path, root) if protocol_of(src) != "file" else _local_rel(path, root)
        if any(part.startswith((".", "_")) for part in rel.split("/")):
            continue  # hidden files and job outputs (_job.json, _tmp-*) are not inputs
        ids.append(rel)
        uris.append(full_uri(fs, path))
    return pa.table({"id": pa.array(ids, pa.string()), "uri": pa.array(uris, pa.string())})


def _local_rel(path: str, root: str) -> str:
    return os.path.relpath(path, root).replace(os.sep, "/")


def read_manifest_table(src: str) -> pa.Table:
    """The raw manifest table (Parquet, CSV or JSONL by suffix)."""
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    fs, path = filesystem_for(src)
    if not fs.exists(path):
        raise SourceError(f"{src}: manifest not found; check the path (and AWS_ENDPOINT_URL for S3)")
    with fs.open(path, "rb") as handle:
        data = handle.read()
    lower = src.lower()
    if lower.endswith(".parquet"):
        return pq.read_table(io.BytesIO(data))
    if lower.endswith(".csv"):
        return pacsv.read_csv(io.BytesIO(data), convert_options=pacsv.ConvertOptions(
            column_types={"id": pa.string(), "uri": pa.string(), "path": pa.string(), "url": pa.string()}))
    return pajson.read_json(io.BytesIO(data))


def _list_manifest(src: str) -> pa.Table:
    raw = read_manifest_table(src)
    column = next((name for name in URI_COLUMNS if name in raw.column_names), None)
    if column is None:
        raise UserError(f"manifest {src} has columns {raw.column_names}; expected a URI column named one of "
                         f"{list(URI_COLUMNS)} (and optionally 'id')")
    uris = raw.column(column).cast(pa.string())
    if uris.null_count:
        raise UserError(f"manifest {src}: {uris.null_count} rows have an empty '{column}'; fill or drop them")
    ids = raw.column("id").cast(pa.string()) if "id" in raw.column_names else uris
    if ids.null_count:
        raise UserError(f"manifest {src}: {ids.null_count} rows have an empty 'id'; fill or drop them")
    base_fs, base_path = filesystem_for(src)
    base_dir = posixpath.dirname(base_path) if protocol_of(src) != "file" else _local_dir(base_path)
    resolved = [_resolve(uri, base_fs, base_dir, src) for uri in uris.to_pylist()]
    table = pa.table({"id": ids.combine_chunks(), "uri": pa.array(resolved, pa.string())})
    counts = pc.value_counts(table.column("id"))
    duplicates = [item["values"] for item in counts.to_pylist() if item["counts"] > 1]
    if duplicates:
        raise UserError(f"manifest {src}: {len(duplicates)} ids occur more than once (e.g. "
                         f"{duplicates[:3]}); every id must be unique, the output is keyed by it")
    return table


def _local_dir(path: str) -> str:
    return os.path.dirname(os.path.abspath(path))


def _resolve(uri: str, fs, base_dir: str, src: str) -> str:
    if "://" in uri:
        return uri
    if protocol_of(src) == "file":
        return uri if os.path.isabs(uri) else os.path.normpath(os.path.join(base_dir, uri))
    if uri.startswith("/"):
        return uri  # an absolute local path listed in a remote manifest
    return full_uri(fs, posixpath.join(base_dir, uri))


def check_destination(dst: str) -> None:
    """Fail fast when ``dst`` cannot be written: a missing bucket or wrong credentials."""
    fs, root = filesystem_for(dst)
    try:
        if protocol_of(dst) == "file":
            fs.makedirs(root, exist_ok=True)
            return
        bucket = root.split("/", 1)[0]
        fs.invalidate_cache()
        if not fs.exists(bucket):
            raise SourceError(f"{dst}: bucket '{bucket}' not found; create it or fix --out")
        fs.ls(root.rstrip("/")) if fs.exists(root) else None
    except SourceError:
        raise
    except Exception as error:
        raise describe_access_error(dst, error) from None
