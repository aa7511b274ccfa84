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
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from ray_jobs.errors import UserError
from ray_jobs.io import find_files
from ray_jobs.runtime import filesystem_for, full_uri, protocol_of, redact

MANIFEST_SUFFIXES = (".parquet", ".csv", ".jsonl", ".ndjson")
URI_COLUMNS = ("uri", "path", "url")


class SourceError(UserError):
    """The source (or destination) cannot be used at all: the job fails before it starts (exit 2)."""


def is_manifest(src: str) -> bool:
    """True when ``src`` names a manifest file (by its suffix) rather than a folder or prefix."""
    return src.lower().rstrip("/").endswith(MANIFEST_SUFFIXES)


def describe_access_error(src: str, error: BaseException) -> SourceError:
    """A :class:`SourceError` that says what failed and what to check, without any secret value.

    Credential and endpoint advice is given for object stores only; a local path gets file advice.
    """
    text = redact(f"{type(error).__name__}: {error}".splitlines()[0])[:300]
    local = protocol_of(src) == "file"
    if isinstance(error, PermissionError) or "AccessDenied" in text or "InvalidAccessKeyId" in text \
            or "SignatureDoesNotMatch" in text or "Forbidden" in text:
        hint = ("permission denied: check the file permissions of this path" if local else
                "access denied: check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or "
                "AWS_PROFILE) and AWS_ENDPOINT_URL")
    elif isinstance(error, FileNotFoundError) or "NoSuchBucket" in text:
        hint = ("not found: check the path" if local else
                "not found: check the bucket and prefix name (and AWS_ENDPOINT_URL for a non-AWS store)")
    else:
        hint = "cannot be read"
    return SourceError(f"{src}: {hint} ({text})")


@dataclass
class Listing:
    """The inputs of a source and what its listing saw but did not take (counted, never silent).

    Attributes:
        inputs: ``id: string, uri: string`` sorted by id, ids unique.
        excluded: rule -> count: ``hidden`` (a dot-file or a file under a dot-folder), ``output``
            (the job's own ``--out`` inside SRC) and ``special`` (FIFOs, sockets, devices: reading one
            could block the job forever).
    """

    inputs: pa.Table
    excluded: dict[str, int] = field(default_factory=dict)

    def excluded_text(self) -> str:
        """``"excluded: 12 hidden files, 3 files of the job's own output"`` or ``""``."""
        names = {"hidden": "hidden files (names starting with '.')", "output": "files of the job's own --out",
                 "special": "special files (FIFOs, sockets, devices)", "not_tar": "files that are not .tar shards"}
        parts = [f"{count} {names.get(rule, rule)}" for rule, count in sorted(self.excluded.items()) if count]
        return f"excluded: {', '.join(parts)}" if parts else ""


def list_source(src: str, *, exclude: str | None = None) -> Listing:
    """Every input of ``src`` (folder, prefix or manifest) plus the counts of what was excluded.

    A folder or prefix: every object is an input (``_DSC0001.JPG``, ``_raw/x.jpg`` included), except
    dot-files and files under dot-folders (``hidden``), the objects under ``exclude`` (``output``, the
    job's own output folder) and special files (``special``); each rule's count is in the summary. A subfolder that cannot be listed fails the job (never skipped silently).

    Raises:
        SourceError: ``src`` does not exist, cannot be read (credentials), a part of it cannot be listed,
            or it holds no input.
        UserError: a manifest without a URI column, with empty URIs or with duplicate ids.
    """
    try:
        listing = _list_manifest(src) if is_manifest(src) else _list_prefix(src, exclude)
    except (SourceError, ValueError):
        raise
    except Exception as error:  # s3fs/botocore/OS errors: turn into one clear line
        raise describe_access_error(src, error) from None
    if listing.inputs.num_rows == 0:
        more = f" ({listing.excluded_text()})" if listing.excluded_text() else ""
        raise SourceError(f"{src}: no input found (an empty folder, prefix or manifest{more}); check SRC")
    listing.inputs = listing.inputs.sort_by("id")
    return listing


def list_inputs(src: str, *, limit: int | None = None, exclude: str | None = None) -> pa.Table:
    """The inputs of :func:`list_source` (``id, uri`` sorted by id), the first ``limit`` of them if given."""
    table = list_source(src, exclude=exclude).inputs
    return table.slice(0, limit) if limit is not None else table


def _list_prefix(src: str, exclude: str | None = None) -> Listing:
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
    special: list[str] = []
    try:
        found = find_files(fs, root, src, special)
    except UserError as error:
        raise SourceError(str(error)) from None
    ids: list[str] = []
    uris: list[str] = []
    excluded = {"hidden": 0, "output": 0, "special": len(special)}
    for path in found:
        if skip and (path + "/").startswith(skip):
            excluded["output"] += 1  # the job's own output folder inside SRC
            continue
        rel = posixpath.relpath(path, root) if protocol_of(src) != "file" else _local_rel(path, root)
        if any(part.startswith(".") for part in rel.split("/")):
            excluded["hidden"] += 1
            continue
        ids.append(rel)
        uris.append(full_uri(fs, path))
    table = pa.table({"id": pa.array(ids, pa.string()), "uri": pa.array(uris, pa.string())})
    return Listing(table, excluded)


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
    if not data.strip():
        raise SourceError(f"manifest {src} is empty: expected a table with a 'uri' column (and optionally 'id'), "
                          "one row per input")
    lower = src.lower()
    try:
        if lower.endswith(".parquet"):
            return pq.read_table(io.BytesIO(data))
        if lower.endswith(".csv"):
            return pacsv.read_csv(io.BytesIO(data), convert_options=pacsv.ConvertOptions(
                column_types={"id": pa.string(), "uri": pa.string(), "path": pa.string(), "url": pa.string()}))
        return pajson.read_json(io.BytesIO(data))
    except (pa.ArrowInvalid, OSError) as error:  # malformed file: the user's input, not a job failure
        kind = "Parquet" if lower.endswith(".parquet") else "CSV" if lower.endswith(".csv") else "JSON Lines"
        first = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise SourceError(f"manifest {src} is not a readable {kind} file ({first}); expected a table with a "
                          "'uri' column (and optionally 'id'), one row per input") from None


def _list_manifest(src: str) -> Listing:
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
    return Listing(table)


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


def check_not_source(src: str, dst: str) -> None:
    """Refuse ``--out`` equal to the source folder (the listing would take the scores for inputs)."""
    if not is_manifest(src) and protocol_of(src) == protocol_of(dst) \
            and filesystem_for(src)[1].rstrip("/") == filesystem_for(dst)[1].rstrip("/"):
        raise SourceError(f"--out {dst} is the source folder itself: the scores would be mixed with the images; "
                          "give an --out outside SRC (or a subfolder of it, which the listing skips)")


def check_destination(dst: str, src: str | None = None) -> None:
    """Fail fast when ``dst`` cannot hold a job's output: it is the source itself, a file, a missing
    bucket, or not writable (read-only folder, wrong credentials). Writes (and removes) one probe file
    under ``DST/_iqa/``; call it only once the job is sure to start (nothing is left behind otherwise)."""
    from ray_jobs.io import META_DIR

    fs, root = filesystem_for(dst)
    root = root.rstrip("/")
    if src is not None:
        check_not_source(src, dst)
    try:
        fs.invalidate_cache()
        if protocol_of(dst) != "file":
            bucket = root.split("/", 1)[0]
            if not fs.exists(bucket):
                raise SourceError(f"{dst}: bucket '{bucket}' not found; create it or fix --out")
        if fs.isfile(root):
            raise SourceError(f"--out {dst} is a file; give a folder or prefix for the output")
        probe = f"{root}/{META_DIR}/probe-{os.getpid()}"
        if protocol_of(dst) == "file":
            fs.makedirs(f"{root}/{META_DIR}", exist_ok=True)
        fs.pipe_file(probe, b"")
        fs.rm_file(probe)
    except SourceError:
        raise
    except Exception as error:
        from fsspec.implementations.local import LocalFileSystem

        local = isinstance(fs, LocalFileSystem)
        if isinstance(error, PermissionError) or (isinstance(error, OSError) and error.errno == 30):
            how = "check the folder's permissions" if local else "check the credentials' write permission"
            raise SourceError(f"--out {dst} is not writable ({type(error).__name__}: "
                              f"{redact(str(error)).splitlines()[0][:200]}): {how}, or give a writable --out") from None
        raise describe_access_error(dst, error) from None
