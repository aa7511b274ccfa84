"""What a score job's output folder holds, and how a rerun brings it in line with the source.

Layout (``DST``)::

    DST/part-<block>.parquet      the scores: one row per input, nothing else ends in .parquet here
    DST/_iqa/identity.json        the run identity this folder belongs to (written by the first run)
    DST/_iqa/job.json             the record of the last run that changed something
    DST/_iqa/report.html          the HTML report of that run
    DST/_iqa/lock.json            held while a run writes (:mod:`ray_jobs.lock`)
    DST/_iqa/tmp/                 local part files being written (renamed into place when whole)

Every Parquet reader opens ``DST`` and sees exactly one row per input: pyarrow / pandas / Spark skip the
``_iqa`` folder (``_`` prefix), Ray's ``read_parquet`` and duckdb's ``DST/*.parquet`` read only
``.parquet`` files and nothing under ``_iqa`` ends so. An output of an older version (``DST/_job.json``,
``DST/report.html``) is moved out of the readers' way on its first rerun (:func:`migrate_legacy_layout`).

**Identity.** :data:`IDENTITY_FIELDS`: the source, the model, the sha256 of its weights, the resolution,
the dtype and the decode limits that decide which inputs become error rows (``min_side``,
``max_pixels``). A rerun with the same identity resumes; any other is refused with one line naming what
differs, unless ``--rescore`` is given, which deletes the old rows and records the new identity.
Settings that do not change scores (actors, batch and block sizes, devices) may differ between runs.

**Reconcile** (each rerun, under the lock, before scoring): the rows kept are those of inputs still in
the source's current listing whose error is not transient (``iqa_plugin.data.reasons``, ``transient``);
rows of inputs that left the source, transient error rows (retried) and any second row of an id are
dropped by rewriting their part files; inputs without a kept row are scored.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from iqa_plugin.data.reasons import TRANSIENT
from ray_jobs.errors import UserError
from ray_jobs.io import META_DIR, list_parts, meta_uri, read_json, write_json
from ray_jobs.runtime import filesystem_for, full_uri, join_uri

#: The settings that make two runs' scores comparable; an output folder belongs to one value of them.
IDENTITY_FIELDS = ("source", "model", "weights_sha256", "resolution", "dtype", "min_side", "max_pixels")
_SCAN_COLUMNS = ["id", "error", "model", "weights_sha256"]


def identity_of(config: Any, weights_sha256: str) -> dict[str, Any]:
    """The run identity of ``config`` (a :class:`ray_jobs.score.config.ScoreJobConfig`) with its weights."""
    from ray_jobs.score.source_kinds import source_identity

    values = {"source": source_identity(config), "model": config.model, "weights_sha256": weights_sha256,
              "resolution": config.resolution, "dtype": config.dtype, "min_side": config.min_side,
              "max_pixels": config.max_pixels}
    return {name: values[name] for name in IDENTITY_FIELDS}


def _short(value: Any) -> str:
    text = str(value)
    return text[:12] if len(text) == 64 and all(c in "0123456789abcdef" for c in text) else text


def identity_difference(recorded: dict[str, Any], wanted: dict[str, Any],
                        fields: Sequence[str] = IDENTITY_FIELDS) -> str:
    """``"weights_sha256 1a2b.. -> 3c4d.., dtype fp32 -> bf16"`` over ``fields`` (empty when equal)."""
    return ", ".join(f"{name} {_short(recorded.get(name))} -> {_short(wanted.get(name))}"
                     for name in fields if recorded.get(name) != wanted.get(name))


@dataclass
class Existing:
    """The rows already in ``DST``: part file -> its ids and errors, plus the (model, sha256) pairs seen."""

    parts: dict[str, tuple[list[str], list[str | None]]] = field(default_factory=dict)
    models: set[tuple[str | None, str | None]] = field(default_factory=set)

    @property
    def n_rows(self) -> int:
        return sum(len(ids) for ids, _ in self.parts.values())


def scan_output(out: str) -> Existing:
    """Read the id, error, model and weights of every part file of ``out``.

    Raises:
        UserError: a ``part-*.parquet`` that is not a score part (another writer's file).
    """
    fs, _ = filesystem_for(out)
    existing = Existing()
    for path in list_parts(out):
        try:
            with fs.open(path, "rb") as handle:
                schema = pq.read_schema(handle)
                missing = [name for name in _SCAN_COLUMNS if name not in schema.names]
                if missing:
                    raise UserError(f"--out {out} holds {path.rsplit('/', 1)[-1]}, which is not a score part "
                                    f"(no column {', '.join(missing)}): move it out of --out, or give a new --out")
                handle.seek(0)
                table = pq.read_table(handle, columns=_SCAN_COLUMNS)
        except UserError:
            raise
        except Exception as error:
            raise UserError(f"--out {out} holds {path.rsplit('/', 1)[-1]}, which is not readable Parquet "
                            f"({type(error).__name__}): move it out of --out, or give a new --out") from None
        existing.parts[path] = (table.column("id").to_pylist(), table.column("error").to_pylist())
        existing.models.update(zip(table.column("model").to_pylist(), table.column("weights_sha256").to_pylist(),
                                   strict=True))
    return existing


def check_identity(out: str, wanted: dict[str, Any], existing: Existing, *, rescore: bool, meta: str | None = None,
                   redo: str = "--rescore to drop those rows and score everything again") -> dict[str, Any] | None:
    """Compare ``wanted`` with the identity recorded in ``out`` (or, for an output of an older version
    without one, with its rows' model and weights). Another job whose rows live below its ``--out``
    passes that folder as ``meta`` (where ``_iqa/identity.json`` is) and its own ``redo`` advice.

    Returns:
        The recorded identity (``None`` for a new folder).

    Raises:
        UserError: the identities differ and ``rescore`` is not set (one line: what differs, the two ways on).
    """
    recorded = read_json(meta_uri(meta or out, "identity.json"))
    if recorded is None and existing.n_rows:
        model, sha = sorted(existing.models, key=str)[0] if len(existing.models) == 1 else (None, None)
        recorded = {**wanted, "model": model, "weights_sha256": sha} if len(existing.models) == 1 else \
            {**wanted, "model": "several", "weights_sha256": "several"}
    if recorded is None:
        return None
    rows_differ = any(pair != (wanted["model"], wanted["weights_sha256"]) for pair in existing.models)
    difference = identity_difference(recorded, wanted, tuple(wanted))
    if (difference or rows_differ) and not rescore:
        what = difference or "rows of other weights"
        raise UserError(f"--out {meta or out} holds {existing.n_rows} rows of another run identity ({what}): give "
                        f"a new --out, or add {redo}")
    return recorded


def drop_all(out: str, existing: Existing) -> int:
    """Delete every part file (``--rescore``); return the number of rows dropped."""
    fs, _ = filesystem_for(out)
    for path in existing.parts:
        fs.rm_file(path)
    rows = existing.n_rows
    existing.parts.clear()
    existing.models.clear()
    return rows


def reconcile(out: str, existing: Existing, listed: set[str]) -> tuple[set[str], Counter[str]]:
    """Drop the rows a rerun must not keep (see the module docstring) by rewriting their part files.

    Returns:
        ``(ids kept, rows dropped by why)``: why is ``left_source``, ``transient`` or ``duplicate``.
    """
    fs, _ = filesystem_for(out)
    kept: set[str] = set()
    dropped: Counter[str] = Counter()
    for path, (ids, errors) in sorted(existing.parts.items()):
        keep_rows = []
        for index, (id_, error) in enumerate(zip(ids, errors, strict=True)):
            why = ("left_source" if id_ not in listed else "transient" if error in TRANSIENT
                   else "duplicate" if id_ in kept else None)
            if why:
                dropped[why] += 1
            else:
                kept.add(id_)
                keep_rows.append(index)
        if len(keep_rows) == len(ids):
            continue
        if not keep_rows:
            fs.rm_file(path)
            continue
        with fs.open(path, "rb") as handle:
            table = pq.read_table(handle)
        _replace_part(out, path, table.take(pa.array(keep_rows, pa.int64())))
    return kept, dropped


def _replace_part(out: str, path: str, table: pa.Table) -> None:
    """Rewrite one part file whole (local: temporary file and rename; object store: one PUT)."""
    import os
    import uuid

    fs, root = filesystem_for(out)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("file", "local"):
        tmp_dir = join_uri(root, META_DIR, "tmp")
        fs.makedirs(tmp_dir, exist_ok=True)
        tmp = join_uri(tmp_dir, f"rewrite-{uuid.uuid4().hex}.tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    else:
        with fs.open(path, "wb") as handle:
            pq.write_table(table, handle)


def migrate_legacy_layout(out: str, log: Any = print) -> list[str]:
    """Move what older versions wrote at the top of ``DST`` under ``DST/_iqa/`` (``_job.json`` becomes
    ``_iqa/job.json`` unless that exists; ``report.html`` is dropped, the next report replaces it), so
    that Parquet readers of ``DST`` stop tripping over it; warn about an old ``curated/`` kept list.

    Returns:
        What was done, one phrase per item (also logged).
    """
    fs, root = filesystem_for(out)
    root = root.rstrip("/")
    done: list[str] = []
    if fs.isfile(f"{root}/_job.json"):
        if read_json(record_uri(out)) is None:
            write_json(record_uri(out), read_json(join_uri(out, "_job.json")) or {})
        fs.rm_file(f"{root}/_job.json")
        done.append("moved _job.json to _iqa/job.json")
    if fs.isfile(f"{root}/report.html"):
        fs.rm_file(f"{root}/report.html")
        done.append("dropped the old top-level report.html (the report now lives in _iqa/)")
    if fs.isdir(f"{root}/curated"):
        log(f"warning: {join_uri(out, 'curated')} (an older iqa curate's kept list) is inside the scores folder, "
            "where Parquet readers of it count its rows too; move it out (iqa curate now writes beside it)")
    for item in done:
        log(f"layout: {item}")
    return done


def write_identity(out: str, identity: dict[str, Any]) -> None:
    """Record ``identity`` in ``DST/_iqa/identity.json``."""
    write_json(meta_uri(out, "identity.json"), identity)


def record_uri(out: str) -> str:
    """Where the run record lives: ``DST/_iqa/job.json``."""
    return meta_uri(out, "job.json")


def describe(out: str) -> str:
    """``DST/part-*.parquet`` as a reader would glob it."""
    fs, root = filesystem_for(out)
    return join_uri(full_uri(fs, root), "part-*.parquet")
