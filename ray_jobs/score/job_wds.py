"""The score job over WebDataset shards: the shard is the unit of listing, retry and resume.

How many samples a shard holds is known only once it is read, so the driver lists shards (never
samples: its memory does not grow with the sample count) and one task per shard streams the tar
(:func:`ray_jobs.score.sources_wds.shard_blocks`), cutting it into job blocks of ``block_size`` samples
written as ``part-<shard key>-<n>.parquet``, the shard's last one ``part-<shard key>-<n>-end.parquet``
(``<shard key>`` = :func:`ray_jobs.score.job.block_key` of the shard id). A retried task reads the same
tar in the same order and rewrites the same files.

A shard is **done** when its ``-end`` part and every part before it exist, its ids are unique and no row
has a transient error. A rerun keeps done shards and deletes every part of the others (unfinished when
the driver died, a transient error, a shard that left the source) before reading them again, so every
sample of every shard ends up in the output exactly once.
"""

from __future__ import annotations

import posixpath
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from iqa_plugin.data.reasons import TRANSIENT
from ray_jobs.runtime import StorageSettings, filesystem_for
from ray_jobs.score.output import Existing

_PART = re.compile(r"^part-([0-9a-f]{20})-(\d{5})(-end)?\.parquet$")


def shard_key(shard_id: str) -> str:
    """The key every part of one shard starts with."""
    from ray_jobs.score.job import block_key

    return block_key([shard_id])


def _group_parts(existing: Existing, shard_ids: Iterable[str]) -> tuple[dict[str, list[tuple[str, int, bool]]], list[str]]:
    """``(shard id -> [(part path, number, is_end)], paths of parts of no listed shard)``."""
    by_key = {shard_key(shard): shard for shard in shard_ids}
    groups: dict[str, list[tuple[str, int, bool]]] = {}
    strays: list[str] = []
    for path in existing.parts:
        match = _PART.match(posixpath.basename(path))
        if match is None or match.group(1) not in by_key:
            strays.append(path)
            continue
        groups.setdefault(by_key[match.group(1)], []).append((path, int(match.group(2)), bool(match.group(3))))
    return groups, strays


def shard_problem(existing: Existing, parts: list[tuple[str, int, bool]], *, transient_ok: bool) -> str | None:
    """Why a shard's parts are not a finished shard (``incomplete``, ``duplicate``, ``transient``), or None."""
    ends = [number for _, number, is_end in parts if is_end]
    if len(ends) != 1 or sorted(number for _, number, _ in parts) != list(range(ends[0] + 1)):
        return "incomplete"
    ids = [i for path, _, _ in parts for i in existing.parts[path][0]]
    if len(set(ids)) != len(ids):
        return "duplicate"
    if not transient_ok and any(e in TRANSIENT for path, _, _ in parts for e in existing.parts[path][1]):
        return "transient"
    return None


def reconcile_shards(out: str, existing: Existing, listed: set[str]) -> tuple[set[str], Counter[str]]:
    """Delete the parts of shards that are not done (see the module docstring); return (done shard ids,
    rows dropped by why: ``left_source``, ``incomplete``, ``duplicate``, ``transient``)."""
    fs, _ = filesystem_for(out)
    groups, strays = _group_parts(existing, listed)
    dropped: Counter[str] = Counter()
    doomed = [(path, "left_source") for path in strays]
    done: set[str] = set()
    for shard, parts in groups.items():
        why = shard_problem(existing, parts, transient_ok=False)
        if why is None:
            done.add(shard)
        else:
            doomed.extend((path, why) for path, _, _ in parts)
    for path, why in doomed:
        dropped[why] += len(existing.parts[path][0])
        fs.rm_file(path)
        del existing.parts[path]
    return done, dropped


def plan_shards(targets: pa.Table, done: set[str]) -> list[pa.Table]:
    """One single-row table ``{shard, uri, prefix}`` per shard still to read."""
    return [pa.table({"shard": [shard], "uri": [uri], "prefix": [shard_key(shard)]})
            for shard, uri in zip(targets.column("id").to_pylist(), targets.column("uri").to_pylist(), strict=True)
            if shard not in done]


def shard_stage(config: Any, settings: StorageSettings) -> tuple[Any, dict[str, Any]]:
    """The read+decode stage of a shard job and its arguments (no credential: each worker uses its own)."""
    from ray_jobs.score.sources_wds import shard_blocks

    return shard_blocks, {"block_size": config.block_size, "image_extension": config.image_column,
                          "max_pixels": config.max_pixels, "min_side": config.min_side,
                          "short_side": config.short_side, "settings": settings}


def verify_shards(out: str, target_ids: set[str], listed: set[str]) -> tuple[int, int, dict[str, int]]:
    """Check that every target shard is whole in ``out`` and nothing else is there; return (sample rows of
    the targets, scored, errors by reason)."""
    from ray_jobs.score.output import scan_output

    existing = scan_output(out)
    groups, strays = _group_parts(existing, listed)
    broken = sorted(shard for shard in target_ids
                    if shard not in groups or shard_problem(existing, groups[shard], transient_ok=True))
    if broken or strays:
        raise RuntimeError(f"{out}: {len(broken)} shards are not whole (e.g. {broken[:3]}) and {len(strays)} parts "
                           "belong to no listed shard; run the same command again to fill the gaps")
    rows = scored = 0
    errors: Counter[str] = Counter()
    for shard in target_ids:
        for path, _, _ in groups[shard]:
            for error in existing.parts[path][1]:
                rows += 1
                if error is None:
                    scored += 1
                else:
                    errors[error] += 1
    return rows, scored, dict(sorted(errors.items()))
