"""WebDataset tar shards as a score job's source: listing the shards and reading their samples.

SRC: a brace pattern (``s3://bucket/shards-{0000..0099}.tar``, expanded with ``braceexpand``, the
expansion WebDataset itself uses), one ``.tar`` file, or a folder / prefix of ``.tar`` files, local or any
fsspec store. A sample is the run of tar members sharing a key (the member name up to the first dot
of its base name: ``000123.jpg`` + ``000123.json`` are sample ``000123``), as in WebDataset and Ray's
``read_webdataset``.

Why not ``ray.data.read_webdataset``: in Ray 2.60 a truncated tar or a damaged header raises inside the
read task (the whole file's rows are lost or the job fails) and a header that Python's ``tarfile`` cannot
parse after the first member silently ends the archive. Here each shard is read by one task with
``tarfile`` over fsspec (:func:`iter_samples`), which checks that the archive really ends with its end
marker, and every sample becomes exactly one row:

* ``<shard>/<key>`` scored, or an error row: ``no_image`` (no image member), an image reason
  (``decode_error``, ``truncated``...), ``truncated_archive`` (the tar ends inside this sample);
* ``<shard>@<byte offset>`` for what cannot be read at all from that offset on: ``corrupt_archive``
  (not a tar, a damaged header), ``truncated_archive`` (cut at a member boundary), ``missing`` /
  ``fetch_error`` / ``access_denied`` (the shard itself; transient, retried by a rerun), ``empty``;
* a key whose members are not contiguous appears again as ``<shard>/<key>@<byte offset>`` (never twice
  the same id).

The unit of listing, retry and resume is the shard (see :mod:`ray_jobs.score.job_wds`).
"""

from __future__ import annotations

import posixpath
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from iqa_plugin.data.reasons import (
    ACCESS_DENIED,
    CORRUPT_ARCHIVE,
    EMPTY,
    FETCH_ERROR,
    MISSING,
    NO_IMAGE,
    TRUNCATED_ARCHIVE,
)
from ray_jobs.runtime import StorageSettings, filesystem_for, full_uri
from ray_jobs.score.sources import Listing, SourceError, list_source

#: Member extensions taken as the image, in order of preference (``--image-column`` picks one).
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff")
_KEY = re.compile(r"^((?:.*/|)[^./][^/]*?)\.([^/]*)$")
_READ_BLOCK = 8 * 2**20  # fsspec read-ahead while streaming one shard


def is_shard_pattern(src: str) -> bool:
    """True for a brace pattern or a single file naming ``.tar`` shards."""
    return src.lower().rstrip("/").endswith(".tar")


def split_key(name: str) -> tuple[str | None, str | None]:
    """``("dir/000123", "JPG")`` for ``dir/000123.JPG``; ``(None, None)`` for a name without extension."""
    match = _KEY.match(name)
    return (match.group(1), match.group(2)) if match else (None, None)


def list_shards(src: str, *, exclude: str | None = None) -> Listing:
    """The shards of ``src``: ``id`` = path relative to the pattern's / prefix's folder, ``uri``.

    A shard named by a brace pattern but absent is still listed (its row says ``missing``, a rerun
    retries it); none present at all, or a prefix without ``.tar`` files, fails at once.
    """
    if "{" in src:
        return _expand_pattern(src)
    if is_shard_pattern(src):
        fs, path = filesystem_for(src)
        if not fs.isfile(path):
            raise SourceError(f"{src}: not found; check the shard path (and AWS_ENDPOINT_URL for S3)")
        return Listing(pa.table({"id": [posixpath.basename(path)], "uri": [full_uri(fs, path)]}))
    listing = list_source(src, exclude=exclude)
    is_tar = [i.lower().endswith(".tar") for i in listing.inputs.column("id").to_pylist()]
    if not any(is_tar):
        raise SourceError(f"{src}: no .tar shard found; give WebDataset shards (a prefix of .tar files or a "
                          "pattern like shards-{0000..0099}.tar)")
    excluded = dict(listing.excluded)
    excluded["not_tar"] = len(is_tar) - sum(is_tar)
    return Listing(listing.inputs.filter(pa.array(is_tar)), excluded)


def _expand_pattern(src: str) -> Listing:
    from braceexpand import braceexpand

    uris = sorted(set(braceexpand(src)))
    root = src[: src.index("{")].rsplit("/", 1)[0]
    fs, _ = filesystem_for(src.split("{", 1)[0] or ".")
    present: set[str] = set()
    for folder in sorted({posixpath.dirname(filesystem_for(u)[1]) for u in uris}):
        try:
            fs.invalidate_cache(folder)
            present.update(path.rstrip("/") for path in fs.ls(folder, detail=False))
        except FileNotFoundError:
            continue
    paths = [filesystem_for(u)[1] for u in uris]
    if not any(path in present for path in paths):
        raise SourceError(f"{src}: none of its {len(uris)} shards exists; check the pattern (and AWS_ENDPOINT_URL "
                          "for S3)")
    ids = [u[len(root):].lstrip("/") if u.startswith(root) else u for u in uris]
    table = pa.table({"id": pa.array(ids, pa.string()), "uri": pa.array([full_uri(fs, p) for p in paths])})
    return Listing(table.sort_by("id"))  # an absent shard's row says 'missing' (transient: a rerun retries it)


@dataclass
class Sample:
    """One sample of a shard: its id, where it came from, its members, or why it has no usable image."""

    id: str
    uri: str
    members: dict[str, bytes] = field(default_factory=dict)
    reason: str | None = None

    def image(self, extension: str | None) -> tuple[bytes | None, str | None]:
        """``(image bytes, None)`` or ``(None, reason)``."""
        if self.reason is not None:
            return None, self.reason
        by_ext = {ext.lower(): data for ext, data in self.members.items()}
        for ext in ([extension.lower().lstrip(".")] if extension else IMAGE_EXTENSIONS):
            if ext in by_ext:
                return by_ext[ext], None
        return None, NO_IMAGE


def _shard_error(error: BaseException) -> str:
    if isinstance(error, FileNotFoundError):
        return MISSING
    if isinstance(error, PermissionError):
        return ACCESS_DENIED
    return FETCH_ERROR


def iter_samples(shard_id: str, uri: str, settings: StorageSettings | None = None) -> Iterator[Sample]:
    """Every sample of one shard in tar order, then one error row for whatever could not be read."""
    try:
        fs, path = filesystem_for(uri, settings)
        size = fs.size(path)
        handle = fs.open(path, "rb", block_size=_READ_BLOCK)
    except Exception as error:  # the shard itself: transient reasons, a rerun retries it
        yield Sample(f"{shard_id}@0", uri, reason=_shard_error(error))
        return
    if not size:
        handle.close()
        yield Sample(f"{shard_id}@0", uri, reason=EMPTY)
        return
    with handle:
        yield from _read_tar(shard_id, uri, handle)


def _read_tar(shard_id: str, uri: str, handle: Any) -> Iterator[Sample]:
    try:
        tar = tarfile.open(fileobj=handle, mode="r:")
    except tarfile.ReadError:
        yield Sample(f"{shard_id}@0", uri, reason=CORRUPT_ARCHIVE)
        return
    except Exception as error:
        yield Sample(f"{shard_id}@0", uri, reason=_shard_error(error))
        return
    current: Sample | None = None
    current_key: str | None = None
    seen: set[str] = set()
    try:
        for member in tar:
            key, ext = split_key(member.name)
            if not member.isreg() or key is None or ext is None:
                continue
            if key != current_key:
                if current is not None:
                    yield current
                sample_id = f"{shard_id}/{key}"
                # a key whose members are not contiguous: a new, distinct row (never one id twice)
                unique = f"{sample_id}@{member.offset}" if sample_id in seen else sample_id
                seen.add(sample_id)
                current, current_key = Sample(unique, f"{uri}#{key}"), key
            reader = tar.extractfile(member)
            try:
                current.members[ext] = reader.read() if reader is not None else b""
            except tarfile.ReadError:
                current.reason = TRUNCATED_ARCHIVE  # the data stops inside this member
                current.members.clear()
                yield current
                return
    except tarfile.ReadError as error:  # a header after the first that tarfile refuses outright
        if current is not None:
            yield current
        cut = "unexpected end of data" in str(error)
        yield Sample(f"{shard_id}@{tar.offset}", uri, reason=TRUNCATED_ARCHIVE if cut else CORRUPT_ARCHIVE)
        return
    if current is not None:
        yield current
    end = _end_problem(handle, tar.offset)
    if end is not None:  # tarfile stopped early on a bad or cut header without saying so
        yield Sample(f"{shard_id}@{tar.offset}", uri, reason=end)


def _end_problem(handle: Any, offset: int) -> str | None:
    """``None`` when the archive ends properly at ``offset`` (two zero blocks), else the reason."""
    handle.seek(offset)
    tail = handle.read(2 * tarfile.BLOCKSIZE)
    if len(tail) >= tarfile.BLOCKSIZE and tail[: tarfile.BLOCKSIZE].strip(b"\0"):
        return CORRUPT_ARCHIVE  # a whole header block that tarfile would not parse
    if tail.strip(b"\0") or len(tail) < 2 * tarfile.BLOCKSIZE:
        return TRUNCATED_ARCHIVE  # cut inside a header, or before the end marker
    return None


def shard_blocks(batch: pa.Table, *, block_size: int, image_extension: str | None, max_pixels: int, min_side: int,
                 short_side: int | None, settings: StorageSettings | None = None) -> Iterator[pa.Table]:
    """Ray Data stage: read each shard of ``batch`` (``shard, uri, prefix``) and yield decoded job blocks
    of up to ``block_size`` samples, keyed ``<prefix>-<n>`` and ``<prefix>-<n>-end`` for the shard's last."""
    decode = {"max_pixels": max_pixels, "min_side": min_side, "short_side": short_side}
    for row in batch.to_pylist():
        chunk: list[Sample] = []
        number = 0
        for sample in iter_samples(row["shard"], row["uri"], settings):
            if len(chunk) == block_size:  # a sample follows, so this block is not the shard's last
                yield _decoded(f"{row['prefix']}-{number:05d}", chunk, image_extension, decode)
                chunk, number = [], number + 1
            chunk.append(sample)
        yield _decoded(f"{row['prefix']}-{number:05d}-end", chunk, image_extension, decode)


def _decoded(block: str, samples: list[Sample], image_extension: str | None, decode: dict[str, Any]) -> pa.Table:
    from ray_jobs.score.stages import decode_block

    return decode_block(block, [s.id for s in samples], [s.uri for s in samples],
                        [s.image(image_extension) for s in samples], **decode)
