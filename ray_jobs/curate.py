"""``iqa curate``: keep the best-scored images of a score job's output, list them and optionally copy them.

Reads ``DST/part-*.parquet`` written by ``iqa score`` (pure pyarrow + fsspec, no Ray), keeps the scored
rows selected by exactly one of ``--min-score``, ``--top-k`` or ``--top-percent`` (error rows are never
kept; ties are broken by score descending, then id ascending), writes them as Parquet (id, uri, score,
rank, dest) and, with ``--copy-to PREFIX``, copies the kept objects there. Each object lands at its path
relative to the collection's common prefix, so a rerun maps it to the same place and copies nothing
that is already there with the same size. Copies use fsspec's single-file calls (``cp_file``, ``open``),
never its globbing ones, so names holding ``[``, ``*`` or ``?`` are copied as they are.

The kept list goes to ``--out``, by default ``<SCORES>-curated/kept.parquet``: next to the scores folder,
never inside it, so that a Parquet reader of SCORES still sees one row per input.

Example::

    iqa curate --scores s3://bucket/scores/ --top-percent 20 --copy-to s3://bucket/clean/
"""

from __future__ import annotations

import hashlib
import math
import os
import posixpath
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ray_jobs.cli import job_main
from ray_jobs.config import JobConfig, cli
from ray_jobs.errors import UserError
from ray_jobs.runtime import filesystem_for, join_uri

COPY_CHUNK_BYTES = 8 * 1024 * 1024
SCORE_COLUMNS = ("id", "uri", "bytes", "model", "score", "error")


def list_part_files(scores: str) -> tuple[Any, list[str]]:
    """The filesystem and sorted part files of a score job's output ``scores``; UserError if none."""
    from ray_jobs.io import list_parts

    fs, _ = filesystem_for(scores)
    parts = list_parts(scores)  # a listing, not a glob: folder names may hold [ * ?
    if not parts:
        raise UserError(
            f"no score files at {scores!r}: expected Parquet files named part-*.parquet written by "
            f"`iqa score ... --out {scores}`; check the path (and that the score job has finished)"
        )
    return fs, parts


def read_scores(scores: str, columns: tuple[str, ...] = SCORE_COLUMNS, optional: tuple[str, ...] = ()):
    """All rows of ``scores``/part-*.parquet as one pyarrow Table with ``columns`` (+ ``optional`` if present)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, parts = list_part_files(scores)
    tables = []
    for part in parts:
        table = pq.read_table(part, filesystem=fs)
        missing = [c for c in columns if c not in table.column_names]
        if missing:
            raise UserError(
                f"score file {part!r} lacks columns {missing}: expected the `iqa score` output schema "
                f"({', '.join(columns)}); point at a score job's output directory"
            )
        for name in optional:
            if name not in table.column_names:
                table = table.append_column(name, pa.nulls(table.num_rows, pa.int64()))
        tables.append(table.select([*columns, *optional]))
    return pa.concat_tables(tables, promote_options="permissive")


def default_kept_uri(scores: str) -> str:
    """``<scores>-curated/kept.parquet``: beside the scores folder, so its Parquet readers never see it."""
    return join_uri(scores.rstrip("/") + "-curated", "kept.parquet")


class CurateConfig(JobConfig):
    """What to keep: exactly one of ``min_score``, ``top_k``, ``top_percent``."""

    job_name: ClassVar[str] = "curate"
    cli_required_groups: ClassVar[tuple[str, ...]] = ("selection",)

    scores: str = Field(description="a score job's output directory (local or s3://...)")
    min_score: float | None = Field(default=None, description="keep images scoring at least X",
                                    json_schema_extra=cli(exclusive="selection"))
    top_k: int | None = Field(default=None, ge=1, description="keep the K best images",
                              json_schema_extra=cli(exclusive="selection"))
    top_percent: float | None = Field(default=None, description="keep the best P% of scored images, P in (0, 100]",
                                      json_schema_extra=cli(exclusive="selection"))
    model: str | None = Field(default=None, description="only rows of this model (needed when SCORES holds several)")
    out: str | None = Field(default=None, description="where to write the kept list "
                                                      "(default SCORES-curated/kept.parquet, next to SCORES, "
                                                      "never inside it)")
    copy_to: str | None = Field(default=None, description="copy the kept objects under this prefix (local or s3://...)")
    copy_workers: int = Field(default=8, ge=1, le=256, description="parallel copies")
    write_to: str | None = Field(default=None, description="write the kept subset here in the format the source "
                                 "came in: a Hugging Face dataset (save_to_disk, score as a new column) or "
                                 "WebDataset shards (score added to each sample's json); see ray_jobs.curate_writeback")
    shard_size: int = Field(default=1000, ge=1, description="samples per WebDataset shard written by --write-to "
                            "(1000 keeps a tar of ~100 KB images near 100 MB, the size WebDataset readers stream well)")
    score_column: str = Field(default="score", min_length=1, description="name of the score column / json key "
                              "that --write-to adds")

    @model_validator(mode="after")
    def _one_selection(self) -> CurateConfig:
        chosen = [n for n in ("min_score", "top_k", "top_percent") if getattr(self, n) is not None]
        if len(chosen) != 1:
            raise ValueError(
                f"choose exactly one of min_score, top_k, top_percent (got {chosen or 'none'}); "
                "e.g. --top-percent 10"
            )
        if self.top_percent is not None and not 0 < self.top_percent <= 100:
            raise ValueError(f"top_percent must be in (0, 100], got {self.top_percent}; e.g. --top-percent 10")
        if self.min_score is not None and not math.isfinite(self.min_score):
            raise ValueError(f"min_score must be a finite number, got {self.min_score}")
        def where(uri: str) -> str:
            return (uri if "://" in uri else os.path.abspath(os.path.expanduser(uri))).rstrip("/") + "/"

        for name in ("out", "copy_to", "write_to"):
            value = getattr(self, name)
            if value is not None and where(value).startswith(where(self.scores)):
                raise ValueError(
                    f"{name}={value} is inside the scores folder {self.scores}, where every Parquet reader of the "
                    f"scores would pick it up; put it beside it (e.g. {self.scores.rstrip('/')}-curated/)")
        return self


class CurateResult(BaseModel):
    """What ``curate`` did: row counts, where the list went and the copy counts."""

    model_config = ConfigDict(extra="forbid")

    scores: str
    out: str
    n_rows: int
    n_scored: int
    n_errors: int
    n_kept: int
    lowest_kept_score: float | None
    copy_to: str | None = None
    copied: int = 0
    skipped: int = 0
    failed: int = 0
    bytes_copied: int = 0
    failures: list[str] = Field(default_factory=list)
    write_to: str | None = None
    written: int = 0
    written_files: int = 0


def _select(table, config: CurateConfig):
    """Scored rows of ``table`` kept by ``config``, one per id, sorted by (score desc, id asc)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if config.model is not None:
        models = sorted(set(pc.unique(table["model"]).drop_null().to_pylist()))
        if config.model not in models:
            raise UserError(f"model {config.model!r} not in {config.scores!r}: it holds {models}")
        table = table.filter(pc.equal(table["model"], config.model))
    else:
        models = pc.unique(table["model"].drop_null()).to_pylist()
        if len(models) > 1:
            raise UserError(
                f"{config.scores!r} holds scores of several models {sorted(models)}: pick one with --model NAME"
            )
    scored = pc.and_(pc.is_null(table["error"]), pc.is_finite(table["score"]))
    table = table.filter(pc.fill_null(scored, False))
    order = pc.sort_indices(table, sort_keys=[("score", "descending"), ("id", "ascending")])
    table = table.take(order).append_column("_pos", pa.array(range(table.num_rows), pa.int64()))
    first = table.group_by("id", use_threads=False).aggregate([("_pos", "min")])["_pos_min"]
    positions = pc.take(first, pc.sort_indices(first))
    table = table.take(positions).drop_columns(["_pos"])  # best row per id, (score desc, id asc) kept
    n = table.num_rows
    if config.min_score is not None:
        keep = int(pc.sum(pc.greater_equal(table["score"], config.min_score)).as_py() or 0)
    elif config.top_k is not None:
        keep = min(config.top_k, n)
    else:
        keep = min(n, math.ceil(n * float(config.top_percent or 0) / 100.0 - 1e-9))
    return table.slice(0, keep), n


def destination_names(uris: list[str], root: str) -> list[str]:
    """Deterministic, collision-free names for ``uris`` relative to their common prefix ``root``."""
    names: list[str] = []
    for uri in uris:
        rel = uri[len(root):] if uri.startswith(root) else uri
        rel = rel.replace("://", "/").lstrip("/")
        parts = [p if p not in ("", ".", "..") else "_" for p in rel.split("/")]
        names.append("/".join(parts) or "_")
    seen: dict[str, str] = {}
    for i, (uri, name) in enumerate(zip(uris, names, strict=True)):
        if seen.setdefault(name, uri) != uri:  # two different sources would land on one name
            stem, ext = posixpath.splitext(name)
            names[i] = f"{stem}-{hashlib.sha1(uri.encode()).hexdigest()[:12]}{ext}"
    return names


def common_root(all_uris) -> str:
    """The longest ``/``-ending prefix shared by every uri (min and max bound the common prefix)."""
    import pyarrow.compute as pc

    bounds = pc.min_max(all_uris)
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    if low is None:
        return ""
    prefix = os.path.commonprefix([low, high])
    return prefix[: prefix.rfind("/") + 1]


def _copy_one(src: str, dest: str, size: int | None, existing: dict[str, int]) -> tuple[str, int, str]:
    """Copy ``src`` to ``dest`` streamed unless it is already there with the same size."""
    try:
        src_fs, src_path = filesystem_for(src)
        dest_fs, dest_path = filesystem_for(dest)
        there = existing.get(dest_path.rstrip("/"))
        if there is not None and there != size:
            size = int(src_fs.size(src_path))  # the recorded size may be stale: ask the source
        if there is not None and there == size:
            return "skipped", 0, ""
        parent = posixpath.dirname(dest_path)
        if parent and _is_local(dest_fs):  # object stores have no directories to create
            dest_fs.makedirs(parent, exist_ok=True)
        if src_fs is dest_fs:  # within one store: server-side copy; cp_file never expands [ * ?
            src_fs.cp_file(src_path, dest_path)
            return "copied", int(size if size is not None else dest_fs.size(dest_path)), ""
        copied = 0
        with src_fs.open(src_path, "rb") as reader, dest_fs.open(dest_path, "wb") as writer:
            while chunk := reader.read(COPY_CHUNK_BYTES):
                writer.write(chunk)
                copied += len(chunk)
        return "copied", copied, ""
    except Exception as error:  # noqa: BLE001 - one bad object must not stop the others; reported
        return "failed", 0, f"{src} -> {dest}: {type(error).__name__}: {error}"


def _is_local(fs: Any) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    return "file" in protocols or "local" in protocols


def _existing_sizes(prefix: str) -> dict[str, int]:
    """Path -> size of every object already under ``prefix`` (one listing, not one request per object)."""
    fs, root = filesystem_for(prefix)
    fs.invalidate_cache()
    bucket = root.strip("/").split("/", 1)[0]
    if not _is_local(fs) and not fs.exists(bucket):
        raise UserError(f"cannot copy to {prefix!r}: bucket {bucket!r} does not exist; create it first")
    if not fs.exists(root):
        return {}
    found = fs.find(root, detail=True)
    return {path.rstrip("/"): int(info.get("size") or 0) for path, info in found.items()}


def curate(
    scores: str,
    *,
    min_score: float | None = None,
    top_k: int | None = None,
    top_percent: float | None = None,
    copy_to: str | None = None,
    out: str | None = None,
    model: str | None = None,
    copy_workers: int = 8,
    write_to: str | None = None,
    shard_size: int = 1000,
    score_column: str = "score",
) -> CurateResult:
    """Keep the best-scored images of the score job output ``scores`` and optionally copy them.

    Exactly one of ``min_score`` (keep score >= it), ``top_k`` (the K best) or ``top_percent`` (the best
    ceil(P% of scored) images, P in (0, 100]) selects. The kept list goes to ``out`` (default
    ``<scores>-curated/kept.parquet``, outside the scores folder); with ``copy_to`` each kept object is copied to
    ``copy_to/<its path relative to the collection's common prefix>``, skipping ones already there with
    the same size. With ``write_to`` the kept subset of a Hugging Face dataset or WebDataset source is
    written there in its own format (:func:`ray_jobs.curate_writeback.write_back`). Raises UserError (a
    ValueError) on invalid options or when ``scores`` holds no part files.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    config = CurateConfig.load(
        scores=scores, min_score=min_score, top_k=top_k, top_percent=top_percent, model=model,
        out=out, copy_to=copy_to, copy_workers=copy_workers, write_to=write_to, shard_size=shard_size,
        score_column=score_column,
    )
    table = read_scores(scores)
    n_errors = int(pc.sum(pc.is_valid(table["error"])).as_py() or 0)
    kept, n_scored = _select(table, config)
    uris = kept["uri"].to_pylist()
    dests: list[str | None] = [None] * len(uris)
    result = CurateResult(
        scores=scores, out=config.out or default_kept_uri(scores), n_rows=table.num_rows,
        n_scored=n_scored, n_errors=n_errors, n_kept=kept.num_rows,
        lowest_kept_score=kept["score"][-1].as_py() if kept.num_rows else None, copy_to=copy_to, write_to=write_to,
    )
    if write_to is not None:
        from ray_jobs.curate_writeback import write_back

        result.written, result.written_files = write_back(scores, kept, write_to, score_column=score_column,
                                                          shard_size=shard_size)
    if copy_to is not None and any(u.startswith("hf-row:") or ".tar#" in u for u in uris[:1]):
        raise UserError(f"--copy-to copies single files, but {scores} holds rows of a Hugging Face dataset or samples "
                        "of WebDataset shards: write the kept subset in its own format with --write-to")
    if copy_to is not None:
        names = destination_names(uris, common_root(table["uri"]))
        dests = [join_uri(copy_to, name) for name in names]
        existing = _existing_sizes(copy_to)
        sizes = kept["bytes"].to_pylist()
        with ThreadPoolExecutor(max_workers=config.copy_workers) as pool:
            outcomes = list(pool.map(_copy_one, uris, dests, sizes, [existing] * len(uris)))
        for status, nbytes, message in outcomes:
            setattr(result, status, getattr(result, status) + 1)
            result.bytes_copied += nbytes
            if message:
                result.failures.append(message)
    listing = pa.table({
        "id": kept["id"].cast(pa.string()),
        "uri": kept["uri"].cast(pa.string()),
        "score": kept["score"].cast(pa.float64()),
        "rank": pa.array(range(1, kept.num_rows + 1), pa.int64()),
        "dest": pa.array(dests, pa.string()),
    })
    out_fs, out_path = filesystem_for(result.out)
    parent = posixpath.dirname(out_path)
    if parent:
        out_fs.makedirs(parent, exist_ok=True)
    pq.write_table(listing, out_path, filesystem=out_fs)
    return result


CONFIG = CurateConfig


def run(config: CurateConfig) -> int:
    """Run ``iqa curate``; 0 on success, 1 if some copies failed."""
    result = curate(**config.model_dump())
    lowest = "-" if result.lowest_kept_score is None else f"{result.lowest_kept_score:.4f}"
    print(
        f"kept {result.n_kept} of {result.n_scored} scored images ({result.n_errors} error rows never kept; "
        f"lowest kept score {lowest}) -> {result.out}"
    )
    if result.copy_to is not None:
        print(
            f"copy to {result.copy_to}: copied {result.copied} ({result.bytes_copied} bytes), "
            f"skipped {result.skipped} already there, failed {result.failed}"
        )
        for message in result.failures[:20]:
            print(f"  failed: {message}", file=sys.stderr)
    if result.write_to is not None:
        print(f"write to {result.write_to}: {result.written} samples in {result.written_files} files")
    return 1 if result.failed else 0


def main(argv: list[str] | None = None) -> int:
    """``python -m ray_jobs.curate``: the same options as ``iqa curate``."""
    return job_main("curate", argv)


if __name__ == "__main__":
    sys.exit(main())
