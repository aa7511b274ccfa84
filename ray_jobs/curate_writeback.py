"""``iqa curate --write-to DST``: the kept subset written back in the format its source came in.

* A Hugging Face dataset (hub, ``save_to_disk`` folder or imagefolder): the kept rows, in the dataset's
  own order, with the score as a new column (``--score-column``, default ``score``), saved with
  ``DatasetDict({split: subset}).save_to_disk(DST)`` (images embedded, so DST stands on its own).
* WebDataset shards: new shards ``DST/kept-000000.tar``, ... of ``--shard-size`` samples each, every
  member of a kept sample copied in source order, the score added to the sample's ``.json`` (a sample
  without one gets a ``.json`` holding only the score; a ``.json`` that is not an object is kept and the
  score goes to ``<key>.<score column>.txt``).

The source and its options come from the score job's run record (``SCORES/_iqa/job.json``). A rerun
writes the same bytes to the same names (tar members carry fixed owners and times) and removes shards
of an earlier, larger subset, so it is idempotent. Each file is written whole or not at all.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import tarfile
import uuid
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ray_jobs.errors import UserError
from ray_jobs.io import meta_uri, read_json
from ray_jobs.runtime import filesystem_for, protocol_of, storage_options_for

SHARD_PATTERN = "kept-{:06d}.tar"


def scored_source(scores: str) -> dict[str, Any]:
    """``{kind, src, split, image_column, id_column}`` of the run that wrote ``scores``.

    Raises:
        UserError: ``scores`` has no run record (not written by ``iqa score``).
    """
    from ray_jobs.score.source_kinds import source_kind

    record = read_json(meta_uri(scores, "job.json"))
    if not record or "config" not in record:
        raise UserError(f"{scores} has no run record (_iqa/job.json): --write-to needs the output of `iqa score`, "
                        "which records the source it read")
    config = record["config"]
    kind = record.get("source_kind")
    if kind is None:
        from types import SimpleNamespace

        kind = source_kind(SimpleNamespace(src=config["src"], source_format=config.get("source_format", "auto")))
    return {"kind": kind, "src": config["src"], "split": config.get("split"),
            "image_column": config.get("image_column"), "id_column": config.get("id_column")}


def write_back(scores: str, kept: pa.Table, dst: str, *, score_column: str = "score",
               shard_size: int = 1000) -> tuple[int, int]:
    """Write the ``kept`` rows (``id, uri, score``) of ``scores`` to ``dst`` in the source's format.

    Returns:
        ``(samples written, files written)``.

    Raises:
        UserError: the source is single files (use ``--copy-to``), changed since it was scored, or
            already has a column named ``score_column``.
    """
    source = scored_source(scores)
    if source["kind"] == "hf":
        return write_dataset(source, kept, dst, score_column), 1
    if source["kind"] == "webdataset":
        return write_shards(kept, dst, score_column=score_column, shard_size=shard_size)
    raise UserError(f"--write-to: {source['src']} was scored as single files; copy the kept files with --copy-to "
                    "(--write-to writes Hugging Face datasets and WebDataset shards back in their format)")


def write_dataset(source: dict[str, Any], kept: pa.Table, dst: str, score_column: str) -> int:
    """The kept rows of a Hugging Face source as a new ``save_to_disk`` dataset with a score column."""
    import datasets

    from ray_jobs.score.sources_hf import open_dataset

    dataset, split = open_dataset(source["src"], source["split"])
    if score_column in dataset.column_names:
        raise UserError(f"{source['src']} already has a column {score_column!r}; name the new one with "
                        "--score-column")
    kept_ids = kept.column("id").cast(pa.string())
    if source["id_column"]:
        ids = pc.cast(dataset.with_format("arrow")[source["id_column"]], pa.string())
        where = pc.index_in(ids, value_set=kept_ids)
        indices = pc.indices_nonzero(pc.is_valid(where))
        order = pc.take(where, indices)
    else:
        prefix = f"{dataset._fingerprint}/"
        stale = pc.sum(pc.invert(pc.starts_with(kept_ids, prefix))).as_py() or 0
        if stale:
            raise UserError(f"{source['src']} changed since it was scored ({stale} kept ids are of another dataset "
                            "fingerprint): score it again, then curate")
        rows = pc.cast(pc.utf8_slice_codeunits(kept_ids, len(prefix)), pa.int64())
        by_row = pc.sort_indices(rows)
        indices, order = pc.take(rows, by_row), by_row
    if len(indices) != kept.num_rows:
        raise UserError(f"{source['src']}: {kept.num_rows - len(indices)} kept ids are no longer in the dataset; "
                        "score it again, then curate")
    subset = dataset.select(indices.to_pylist()).add_column(score_column, pc.take(kept.column("score"), order)
                                                            .to_pylist())
    options = storage_options_for(dst) if protocol_of(dst) != "file" else None
    datasets.disable_progress_bars()
    datasets.DatasetDict({split or "train": subset}).save_to_disk(dst, storage_options=options)
    return subset.num_rows


def _kept_by_shard(kept: pa.Table) -> dict[tuple[str, str], dict[str, float]]:
    """``(shard id, shard uri) -> {sample id: score}`` from the ids ``<shard>/<key>`` and uris ``<uri>#<key>``."""
    shards: dict[tuple[str, str], dict[str, float]] = {}
    for id_, uri, score in zip(kept.column("id").to_pylist(), kept.column("uri").to_pylist(),
                               kept.column("score").to_pylist(), strict=True):
        shard_uri, _, key = uri.rpartition("#")
        base = id_ if id_.endswith("/" + key) else id_.rpartition("@")[0]  # a repeated key: <shard>/<key>@<offset>
        shard_id = base[: -(len(key) + 1)]
        shards.setdefault((shard_id, shard_uri), {})[id_] = score
    return shards


def _with_score(key: str, members: dict[str, bytes], column: str, score: float) -> Iterator[tuple[str, bytes]]:
    added = False
    for ext, data in members.items():
        if ext.lower() == "json":
            try:
                meta = json.loads(data)
            except ValueError:
                meta = None
            if isinstance(meta, dict):
                data, added = json.dumps({**meta, column: score}, ensure_ascii=False).encode("utf-8"), True
        yield f"{key}.{ext}", data
    if not added:
        text = "json" not in {ext.lower() for ext in members}
        yield (f"{key}.json", json.dumps({column: score}).encode()) if text else \
            (f"{key}.{column}.txt", repr(score).encode())


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid = len(data), 0, 0o644, 0, 0
    tar.addfile(info, io.BytesIO(data))


class _ShardWriter:
    """Writes ``DST/kept-NNNNNN.tar`` files of ``size`` samples, each whole or not at all."""

    def __init__(self, dst: str, size: int) -> None:
        self.fs, self.root = filesystem_for(dst)
        self.root = self.root.rstrip("/")
        self.local = protocol_of(dst) == "file"
        self.size, self.count, self.files = size, 0, 0
        self.buffer: io.BytesIO | None = None
        self.tar: tarfile.TarFile | None = None
        bucket = self.root.split("/", 1)[0]
        if not self.local and not self.fs.exists(bucket):
            raise UserError(f"--write-to {dst}: bucket {bucket!r} does not exist; create it first")

    def add(self, members: list[tuple[str, bytes]]) -> None:
        if self.tar is None:
            self.buffer = io.BytesIO()
            self.tar = tarfile.open(fileobj=self.buffer, mode="w", format=tarfile.PAX_FORMAT)
        for name, data in members:
            _add(self.tar, name, data)
        self.count += 1
        if self.count % self.size == 0:
            self.flush()

    def flush(self) -> None:
        if self.tar is None or self.buffer is None:
            return
        self.tar.close()
        path = f"{self.root}/{SHARD_PATTERN.format(self.files)}"
        if self.local:
            os.makedirs(self.root, exist_ok=True)
            tmp = f"{path}.tmp-{uuid.uuid4().hex}"
            with open(tmp, "wb") as handle:
                handle.write(self.buffer.getvalue())
            os.replace(tmp, path)
        else:
            self.fs.pipe_file(path, self.buffer.getvalue())  # one PUT: the object appears whole
        self.files += 1
        self.tar = self.buffer = None

    def remove_stale(self) -> None:
        """Delete ``kept-*.tar`` files numbered past this run's last (an earlier run kept more)."""
        self.fs.invalidate_cache()
        if not self.fs.exists(self.root):
            return
        for path in self.fs.ls(self.root, detail=False):
            name = posixpath.basename(path.rstrip("/"))
            if name.startswith("kept-") and name.endswith(".tar") and name[5:-4].isdigit() \
                    and int(name[5:-4]) >= self.files:
                self.fs.rm_file(path)


def write_shards(kept: pa.Table, dst: str, *, score_column: str, shard_size: int) -> tuple[int, int]:
    """The kept samples of WebDataset shards as new shards under ``dst`` (see the module docstring).

    A shard is buffered in memory while it is written (``shard_size`` samples at a time).
    """
    from ray_jobs.score.sources_wds import iter_samples

    writer = _ShardWriter(dst, shard_size)
    written = 0
    for (shard_id, shard_uri), wanted in sorted(_kept_by_shard(kept).items()):
        for sample in iter_samples(shard_id, shard_uri):
            if sample.id in wanted and sample.reason is None:
                key = sample.uri.rpartition("#")[2]
                writer.add(list(_with_score(key, sample.members, score_column, wanted[sample.id])))
                written += 1
    if written != kept.num_rows:
        raise UserError(f"{kept.num_rows - written} kept samples are no longer readable in their shards (changed "
                        f"since they were scored?); score the shards again, then curate into {dst}")
    writer.flush()
    writer.remove_stale()
    return written, writer.files
