"""``iqa score`` / ``python -m ray_jobs.score``: score an image collection with Ray Data.

Listing or manifest -> job blocks (assigned here, before execution) -> fetch + decode (CPU tasks) ->
scoring actors (GPU, or CPU without one) -> one Parquet part per block. Sources: single files, Hugging
Face datasets and WebDataset shards (:mod:`ray_jobs.score.source_kinds`; for shards the unit of listing,
retry and resume is the shard: :mod:`ray_jobs.score.job_wds`). Without ``$RAY_ADDRESS`` a local
Ray is started; with it the job joins that cluster (``ray job submit -- python -m ray_jobs.score ...``).

Output (``DST/part-<block key>.parquet``, every input exactly once):

==================  =========  =================================================================
column              type       meaning
==================  =========  =================================================================
``id``              string     input id: path relative to SRC, the manifest's ``id`` (or URI), a dataset row's
                               id, or ``<tar name>/<key>`` of a WebDataset sample
``uri``             string     where the bytes were read from
``bytes``           int64      object size; null when it could not be read
``width``           int32      decoded width after EXIF rotation, before any resize; null on error
``height``          int32      decoded height, same rules
``model``           string     metric name (``qualiclip``)
``weights_sha256``  string     sha256 of the checkpoint the scores came from
``score``           float64    quality score (higher is better); null on error
``error``           string     null when scored, else a reason code (``iqa_plugin.data.reasons``)
==================  =========  =================================================================

Block keys come from a hash of the block's ids, and blocks are fixed-size runs of the id-sorted listing
of what is still missing: a retried block overwrites its own file. One run writes into ``DST`` at a
time (:mod:`ray_jobs.lock`); a rerun checks the folder's run identity, drops the rows of inputs that
left the source and the transient error rows, and scores what has no row (:mod:`ray_jobs.score.output`,
which also gives the folder's layout: everything but the parts lives under ``DST/_iqa/``).

Before any work: the source is listed (every object is an input except dot-files and the job's own
``--out`` and special files, each counted in the summary), the weights are opened in the driver, ``DST`` is checked to be
writable, and the actors are checked to fit the Ray cluster (a request it can never satisfy fails at
once with what it has; a command-started local Ray has ``ray_jobs.runtime.local_ray_cpus()`` CPUs).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from ray_jobs.cli import job_main
from ray_jobs.io import chunked, meta_uri, read_json, write_json
from ray_jobs.lock import OutputLock
from ray_jobs.pipeline import decode_then_actors, prepare_actor_pool, progress_lines
from ray_jobs.runtime import StorageSettings, ensure_ray, redact
from ray_jobs.score.config import ScoreJobConfig
from ray_jobs.score.output import (
    check_identity,
    describe,
    drop_all,
    identity_difference,
    identity_of,
    migrate_legacy_layout,
    reconcile,
    record_uri,
    scan_output,
    write_identity,
)
from ray_jobs.score.source_kinds import list_config_source
from ray_jobs.score.sources import Listing, check_destination, check_not_source
from ray_jobs.score.weights import check_weights

Log = Callable[[str], None]


def _log(message: str) -> None:
    print(message, flush=True)


def block_key(ids: list[str]) -> str:
    """Deterministic key of a job block: the first 20 hex digits of sha256 over its ids."""
    digest = hashlib.sha256()
    for item in ids:
        digest.update(item.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()[:20]


def plan_blocks(inputs: pa.Table, done: set[str], block_size: int) -> list[pa.Table]:
    """One single-row table ``{block, ids, uris}`` per block of the inputs not in ``done``.

    ``inputs`` is sorted by id, so the first run and any resume cut the same boundaries wherever whole
    blocks were finished: a late write of an old block rewrites the same file with the same ids.
    """
    ids = inputs.column("id").to_pylist()
    uris = inputs.column("uri").to_pylist()
    pending = ((i, u) for i, u in zip(ids, uris, strict=True) if i not in done)
    tables = []
    for chunk in chunked(pending, block_size):
        block_ids = [i for i, _ in chunk]
        tables.append(pa.table({
            "block": pa.array([block_key(block_ids)], pa.string()),
            "ids": pa.array([block_ids], pa.list_(pa.string())),
            "uris": pa.array([[u for _, u in chunk]], pa.list_(pa.string())),
        }))
    return tables


def stage_arguments(config: ScoreJobConfig, device: str, settings: StorageSettings) -> dict[str, dict[str, Any]]:
    """The arguments Ray pickles into the stages' tasks and actors (a test checks they hold no secret)."""
    return {
        "decode": {"max_pixels": config.max_pixels, "min_side": config.min_side, "short_side": config.short_side,
                   "threads": config.fetch_threads, "settings": settings},
        "scorer": {"scorer_kwargs": config.scorer_kwargs(device),
                   "torch_threads": config.torch_threads or max(1, int(config.cpus_per_actor))},
        "write": {"dst": config.out, "settings": settings},
    }


def execute_blocks(config: ScoreJobConfig, blocks: list[pa.Table], n_pending: int | None, log: Log,
             scorer_cls: type | None = None, read_stage: tuple[Callable, dict[str, Any]] | None = None
             ) -> dict[str, Any]:
    """Run the Ray Data pipeline over ``blocks``; return counts of this run. ``read_stage`` (function,
    arguments) replaces fetch+decode for sources whose inputs are read in bulk (WebDataset shards)."""
    from ray_jobs.score.stages import BlockScorer, fetch_and_decode_blocks, write_blocks

    device, actor_args = prepare_actor_pool(config)
    log(f"pipeline: fetch+decode on CPU tasks -> {config.actors} {device.upper()} actor(s) "
        f"({config.model}, {config.resolution}, {config.dtype}, batch {config.batch_size or 'auto'}) -> Parquet per block")
    arguments = stage_arguments(config, device, StorageSettings.from_env())
    read_fn, read_args = read_stage or (fetch_and_decode_blocks, arguments["decode"])
    ds = decode_then_actors(config, blocks, read_fn, read_args, scorer_cls or BlockScorer, arguments["scorer"],
                            actor_args)
    ds = ds.map_batches(write_blocks, batch_size=1, batch_format="pyarrow", num_cpus=0.25,
                        fn_kwargs=arguments["write"])
    started = time.monotonic()
    counts: dict[str, Any] = {"rows": 0, "scored": 0, "errors": Counter(), "model": None, "weights_sha256": None,
                              "first": None, "n_errors": 0}

    def describe_progress(elapsed: float) -> str:
        rows = counts["rows"]
        state = f"{rows / elapsed:.1f} images/s" if rows else "starting actors and loading the model"
        total = "" if n_pending is None else f"/{n_pending}"
        return (f"progress: {rows}{total} done ({counts['scored']} scored, {counts['n_errors']} errors), "
                f"{elapsed:.0f} s, {state}")

    with progress_lines(describe_progress, config.progress_interval_s, log):
        _consume(ds, counts)
    end = time.monotonic()
    counts["elapsed_s"] = end - started
    first = counts.pop("first")
    if first is not None and counts["rows"] > first[1] and end > first[0]:
        counts["steady_images_per_s"] = (counts["rows"] - first[1]) / (end - first[0])
    return counts


def _consume(ds: Any, counts: dict[str, Any]) -> None:
    """Aggregate the per-block summaries as they stream in (nothing per image is kept)."""
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        for row in batch.to_pylist():
            counts["rows"] += row["rows"]
            counts["scored"] += row["scored"]
            errors = json.loads(row["errors"])
            counts["errors"].update(errors)
            counts["n_errors"] += sum(errors.values())
            counts["model"] = counts["model"] or row["model"]
            counts["weights_sha256"] = counts["weights_sha256"] or row["weights_sha256"]
        if counts["first"] is None:  # the model is loaded and the pipeline full from here on
            counts["first"] = (time.monotonic(), counts["rows"])


def _write_report(out: str, log: Log) -> str | None:
    try:
        from ray_jobs.report import write_report
    except ImportError:
        log("report: ray_jobs.report is not installed; skipped")
        return None
    try:
        path = write_report(out)
    except Exception as error:  # the scores are written; a report failure must not hide that
        log(f"report: failed ({type(error).__name__}: {redact(str(error)).splitlines()[0][:200]})")
        return None
    log(f"report: {path}")
    return path


def _prepare_output(config: ScoreJobConfig, listing: Listing, sha: str, log: Log,
                    reconcile_fn: Callable = reconcile) -> tuple[set[str], dict[str, int]]:
    """Under the lock: check the identity, drop what a rerun must not keep; return (ids kept, dropped)."""
    wanted = identity_of(config, sha)
    migrate_legacy_layout(config.out, log)
    existing = scan_output(config.out)
    recorded = check_identity(config.out, wanted, existing, rescore=config.rescore)
    dropped: Counter[str] = Counter()
    if config.rescore and existing.n_rows and recorded is not None:
        dropped["rescore"] = drop_all(config.out, existing)
        log(f"rescore: dropped the {dropped['rescore']} rows of {config.out} "
            f"({identity_difference(recorded, wanted) or 'same identity'})")
    if recorded != wanted:
        write_identity(config.out, wanted)
    listed = set(listing.inputs.column("id").to_pylist())
    kept, more = reconcile_fn(config.out, existing, listed)
    dropped.update(more)
    if more:
        names = {"left_source": "of inputs no longer in the source", "transient": "with transient errors, retried",
                 "duplicate": "duplicated", "incomplete": "of shards left unfinished, read again"}
        log("rerun: dropped " + ", ".join(f"{n} rows {names[k]}" for k, n in sorted(more.items())))
    return kept, dict(dropped)


def run_job(config: ScoreJobConfig, *, log: Log = _log, scorer_cls: type | None = None) -> dict[str, Any]:
    """Run a score job end to end and return its record (``DST/_iqa/job.json`` when the run changed
    something; a rerun with nothing to do leaves the record and report of the real run alone).

    ``scorer_cls`` replaces :class:`ray_jobs.score.stages.BlockScorer` (a subclass, importable by the Ray
    workers, e.g. one that injects faults in tests); it takes the same constructor arguments.

    Raises:
        SourceError: SRC or DST cannot be used (missing bucket, wrong credentials, empty source, a file
            that is not a checkpoint, a read-only or foreign output, another identity, another run).
        RuntimeError: the output does not hold every input exactly once after the run.
    """
    started_at = dt.datetime.now(dt.timezone.utc)
    t0 = time.monotonic()
    from ray_jobs.score import job_wds

    check_not_source(config.src, config.out)
    kind, listing = list_config_source(config)
    shards = kind == "webdataset"  # the unit is a shard: its samples are known once it is read
    unit = "WebDataset shards" if shards else "inputs" if kind == "files" else "Hugging Face dataset rows"
    excluded = listing.excluded_text()
    log(f"listed {listing.inputs.num_rows} {unit} in {config.src}" + (f" ({excluded})" if excluded else ""))
    sha = check_weights(config, log)
    check_destination(config.out, config.src)
    with OutputLock(meta_uri(config.out, "lock.json"), what=f"--out {config.out}"):
        kept, dropped = _prepare_output(config, listing, sha, log,
                                        job_wds.reconcile_shards if shards else reconcile)
        targets = listing.inputs if config.limit is None else listing.inputs.slice(0, config.limit)
        target_ids = set(targets.column("id").to_pylist())
        done = kept & target_ids
        n_inputs = targets.num_rows
        blocks = job_wds.plan_shards(targets, done) if shards else plan_blocks(targets, done, config.block_size)
        n_pending = n_inputs - len(done)
        if done:
            log(f"resume: {len(done)} of {n_inputs} {unit} already in {config.out}; processing the {n_pending} "
                "missing")
        del targets, done
        counts: dict[str, Any] = {"rows": 0, "elapsed_s": 0.0, "model": None, "weights_sha256": None}
        if blocks:
            log(f"scoring {n_pending} {unit} from {config.src} in {len(blocks)} blocks of up to {config.block_size}"
                + (" samples each" if shards else ""))
            # what runs at once: the actors, one decode task and the writes (0.25 CPU each)
            needed = config.actors * config.cpus_per_actor + config.cpus_per_decode_task + 0.25
            with ensure_ray(min_cpus=needed, log=log):
                stage = job_wds.shard_stage(config, StorageSettings.from_env()) if shards else None
                counts = execute_blocks(config, blocks, None if shards else n_pending, log, scorer_cls, stage)
        del blocks
        verify = job_wds.verify_shards if shards else verify_output
        rows, scored, errors = verify(config.out, target_ids, set(listing.inputs.column("id").to_pylist()))
        if shards:  # inputs are samples from here on; the shards are counted apart
            n_shards, n_inputs, n_pending = n_inputs, rows, counts["rows"]
        elapsed = time.monotonic() - t0
        record = {
            "model": config.model, "weights_sha256": sha, "identity": identity_of(config, sha),
            "n_inputs": n_inputs, "n_scored": scored, "errors_by_reason": errors, "n_processed": counts["rows"],
            "n_resumed": n_inputs - n_pending, "excluded": listing.excluded, "dropped": dropped, "source_kind": kind,
            **({"n_shards": n_shards} if shards else {}),
            "images_per_s": round(counts["rows"] / counts["elapsed_s"], 3) if counts["elapsed_s"] else None,
            "steady_images_per_s": round(counts["steady_images_per_s"], 3) if "steady_images_per_s" in counts
            else None,
            "elapsed_s": round(elapsed, 3), "started": started_at.isoformat(),
            "finished": dt.datetime.now(dt.timezone.utc).isoformat(), "config": config.model_dump(mode="json"),
        }
        changed = bool(counts["rows"] or dropped) or read_json(record_uri(config.out)) is None
        if changed:
            write_json(record_uri(config.out), record)
        error_text = ", ".join(f"{k}={v}" for k, v in errors.items()) or "none"
        log(f"done: {n_inputs} inputs -> {rows} rows in {config.out} (scored {scored}; errors "
            f"{sum(errors.values())}: {error_text})" + (f"; {excluded}" if excluded else ""))
        if record["images_per_s"] is not None:
            steady = record["steady_images_per_s"]
            log(f"throughput: {record['images_per_s']:.1f} images/s ({counts['rows']} processed in "
                f"{counts['elapsed_s']:.1f} s, model loading included; {elapsed:.1f} s end to end"
                + (f"; {steady:.1f} images/s after the first block)" if steady else ")"))
        if not changed:
            log(f"nothing to do: {config.out} already holds every input; its run record and report are kept")
        elif config.report:
            record["report"] = _write_report(config.out, log)
        log(f"parquet: {describe(config.out)}  run record: {record_uri(config.out)}")
    return record


def verify_output(out: str, target_ids: set[str], listed: set[str]) -> tuple[int, int, dict[str, int]]:
    """Check that ``out`` holds every target input exactly once and no row of an input outside the
    listing; return (rows of targets, scored, errors by reason)."""
    from ray_jobs.io import iter_part_columns

    seen: set[str] = set()
    duplicates = strays = 0
    scored = 0
    errors: Counter[str] = Counter()
    for table in iter_part_columns(out, ["id", "error"]):
        for id_, error in zip(table.column("id").to_pylist(), table.column("error").to_pylist(), strict=True):
            if id_ not in listed:
                strays += 1
                continue
            if id_ in seen:
                duplicates += 1
                continue
            seen.add(id_)
            if id_ not in target_ids:
                continue  # beyond --limit: kept from an earlier run, not counted
            if error is None:
                scored += 1
            else:
                errors[error] += 1
    missing = len(target_ids - seen)
    if duplicates or missing or strays:
        raise RuntimeError(f"{out} holds {missing} inputs too few, {duplicates} duplicate rows and {strays} rows of "
                           "inputs not in the source; run the same command again to fill the gaps")
    return len(seen & target_ids), scored, dict(sorted(errors.items()))


CONFIG = ScoreJobConfig


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """The one ``iqa score`` option that is not a config field."""
    parser.add_argument("--demo", action="store_true", default=False,
                        help="score sample photos (from installed packages, plus degraded and broken copies) "
                             "put into a local folder next to --out (default ./iqa-demo)")


def prepare_values(args: argparse.Namespace, values: dict[str, Any]) -> dict[str, Any]:
    """``--demo``: build the sample folder and point ``src`` / ``out`` at it."""
    if getattr(args, "demo", False):
        from ray_jobs.score.demo import DEMO_MODEL, prepare_demo

        values["src"], values["out"] = prepare_demo(values.get("src"), values.get("out"), _log)
        if values.get("model") is None and values.get("weights") is None:
            values["model"] = DEMO_MODEL
            _log(f"demo: scoring with {DEMO_MODEL}, a tiny QualiCLIP trained by this project's recipe on the "
                 "package photos and shipped with it (NOT the paper's weights); --model qualiclip scores with the "
                 "published QualiCLIP where the network allows")
    return values


def _log_demo_ranking(out: str) -> None:
    """For a demo folder: how often each photo scored above its own degraded copies."""
    from ray_jobs.io import iter_part_columns
    from ray_jobs.score.demo import pair_ranking, ranking_sentence

    scores: dict[str, float] = {}
    for table in iter_part_columns(out, ["id", "score"]):
        for id_, score in zip(table.column("id").to_pylist(), table.column("score").to_pylist(), strict=True):
            if score is not None:
                scores[id_] = score
    wins, pairs = pair_ranking(scores)
    if pairs:
        _log(f"demo: {ranking_sentence(wins, pairs)}")


def run(config: ScoreJobConfig) -> int:
    """Run the job; 0 when it completed (inputs that could not be scored are rows, not failures)."""
    from ray_jobs.score.demo import is_demo_folder

    run_job(config)
    if is_demo_folder(config.src):
        _log_demo_ranking(config.out)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m ray_jobs.score``: the same options as ``iqa score``."""
    return job_main("score", argv)


if __name__ == "__main__":
    sys.exit(main())
