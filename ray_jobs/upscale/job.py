"""``iqa upscale`` / ``python -m ray_jobs.upscale``: super-resolve an image collection with Ray Data.

Listing or manifest -> job blocks -> fetch + decode (CPU tasks) -> upscaling actors (GPU in bf16, or
CPU) -> encode + write (CPU tasks). Without ``$RAY_ADDRESS`` a local Ray is started; with it the job
joins that cluster (``ray job submit -- python -m ray_jobs.upscale ...``). The listing, block planning,
fetch/decode, lock, identity and reconcile steps are the score job's (:mod:`ray_jobs.score`), so the
guarantees are the same: every input exactly once, resume after the driver dies, bad inputs as rows.

Output layout (``DST``)::

    DST/images/<id>.<suffix>         the upscaled image of each input (``sub/cat.jpg`` -> ``sub/cat.jpg.png``;
                                     see :func:`ray_jobs.upscale.stages.output_name`)
    DST/index/part-<block>.parquet   the index: one row per input (below)
    DST/_iqa/identity.json, job.json, lock.json    run identity, run record, lock

==================  =======  ===============================================================
column              type     meaning
==================  =======  ===============================================================
``id``              string   input id: path relative to SRC, or the manifest's ``id`` (or URI)
``uri``             string   where the bytes were read from
``bytes``           int64    input size; null when it could not be read
``width/height``    int32    decoded input size after EXIF rotation; null on error
``output``          string   URI of the upscaled image; null on error
``out_width/...``   int32    ``out_width``, ``out_height``: the output's size (scale x input)
``out_bytes``       int64    size of the file written
``model``           string   SR card name
``weights_sha256``  string   sha256 of the generator weights
``error``           string   null when upscaled, else a reason code (``iqa_plugin.data.reasons``)
==================  =======  ===============================================================

A block's images are written before its index part, so a driver that dies in between leaves images
without rows: the next run upscales those inputs again and overwrites them (never counted twice). The
identity (:data:`IDENTITY_FIELDS`) holds everything that changes the pixels written; another one is
refused unless ``--redo`` (which drops the index and the images and starts again).
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from ray_jobs.cli import job_main
from ray_jobs.io import meta_uri, read_json, write_json
from ray_jobs.lock import OutputLock
from ray_jobs.pipeline import decode_then_actors, prepare_actor_pool, progress_lines
from ray_jobs.runtime import StorageSettings, ensure_ray, filesystem_for, join_uri, redact
from ray_jobs.score.job import plan_blocks, verify_output
from ray_jobs.score.output import check_identity, describe, drop_all, reconcile, scan_output, write_identity
from ray_jobs.score.sources import Listing, SourceError, check_destination, check_not_source, list_source
from ray_jobs.upscale.config import UpscaleJobConfig
from ray_jobs.upscale.stages import IMAGES_DIR, INDEX_DIR, output_name

Log = Callable[[str], None]

#: What an output folder is bound to: a rerun with other values is refused unless ``--redo``.
IDENTITY_FIELDS = ("source", "model", "weights_sha256", "scale", "tile", "tile_overlap", "precision", "format",
                   "quality", "min_side", "max_pixels")


def _log(message: str) -> None:
    print(message, flush=True)


def identity_of(config: UpscaleJobConfig, weights_sha256: str, scale: int) -> dict[str, Any]:
    """The run identity of ``config`` with its weights and the scale they upscale by."""
    values = {"source": config.src.rstrip("/"), "model": config.model, "weights_sha256": weights_sha256,
              "scale": scale, "quality": None if config.format == "png" else config.quality}
    return {name: values[name] if name in values else getattr(config, name) for name in IDENTITY_FIELDS}


def check_model(config: UpscaleJobConfig, log: Log) -> tuple[Any, str, int]:
    """Build the generator once in the driver (card, weights, scale checked before Ray starts); return
    ``(card, weights sha256, scale)``.

    Raises:
        SourceError: unknown or non-SR card, weights missing, or a file that does not fit the card.
    """
    from iqa_plugin.build import build_network
    from iqa_plugin.hub.cards import get_card

    try:
        card = get_card(config.model)
    except (ValueError, KeyError) as error:
        raise SourceError(f"--model {config.model}: {str(error).splitlines()[0]}") from None
    if card.kind != "sr":
        raise SourceError(f"--model {config.model} is a {card.kind} card, not an SR model; give a card of kind 'sr' "
                          "(iqa models lists them)")
    what = f"--model {config.model}" + (f" --weights {config.weights}" if config.weights else "") + \
        (f" --scale {config.scale}" if config.scale else "")
    try:
        network = build_network(card, pretrained_model_path=config.weights, **config.arch_options())
    except Exception as error:  # noqa: BLE001 - missing weights, wrong layout or scale: all the user's to fix
        raise SourceError(f"{what}: {redact(str(error))}") from None
    scale = int(getattr(network.network, "scale", config.scale or 0))
    sha = str(network.weights_sha256)
    del network
    log(f"model: {card.name} x{scale} (weights sha256 {sha[:12]})")
    return card, sha, scale


def stage_arguments(config: UpscaleJobConfig, card: Any, device: str,
                    settings: StorageSettings) -> dict[str, dict[str, Any]]:
    """The arguments Ray pickles into the stages' tasks and actors (a test checks they hold no secret)."""
    return {
        "decode": {"max_pixels": config.max_pixels, "min_side": config.min_side, "short_side": None,
                   "threads": config.io_threads, "settings": settings},
        "upscaler": {"card": card, "weights": config.weights, "arch_options": config.arch_options(),
                     "sr_options": {"tile": config.tile, "tile_overlap": config.tile_overlap, "device": device,
                                    "precision": config.precision},
                     "torch_threads": config.torch_threads or max(1, int(config.cpus_per_actor))},
        "write": {"dst": config.out, "suffix": config.suffix, "encode_options": config.encode_options(),
                  "threads": config.io_threads, "settings": settings},
    }


def execute_blocks(config: UpscaleJobConfig, card: Any, blocks: list[pa.Table], n_pending: int, log: Log,
                   upscaler_cls: type | None = None) -> dict[str, Any]:
    """Run the Ray Data pipeline over ``blocks``; return the counts of this run."""
    from ray_jobs.score.stages import fetch_and_decode_blocks
    from ray_jobs.upscale.stages import BlockUpscaler, write_upscaled_blocks

    device, actor_args = prepare_actor_pool(config)
    log(f"pipeline: fetch+decode on CPU tasks -> {config.actors} {device.upper()} actor(s) ({config.model}, tile "
        f"{config.tile or 'off'}, precision {config.precision}) -> {config.format.upper()} images + index per block")
    arguments = stage_arguments(config, card, device, StorageSettings.from_env())
    ds = decode_then_actors(config, blocks, fetch_and_decode_blocks, arguments["decode"],
                            upscaler_cls or BlockUpscaler, arguments["upscaler"], actor_args)
    ds = ds.map_batches(write_upscaled_blocks, batch_size=1, batch_format="pyarrow",
                        num_cpus=config.cpus_per_write_task, fn_kwargs=arguments["write"])
    counts: dict[str, Any] = {"rows": 0, "upscaled": 0, "n_errors": 0, "out_pixels": 0}
    started = time.monotonic()

    def describe_progress(elapsed: float) -> str:
        rows = counts["rows"]
        state = f"{rows / elapsed:.2f} images/s" if rows else "starting actors and loading the model"
        return (f"progress: {rows}/{n_pending} done ({counts['upscaled']} upscaled, {counts['n_errors']} errors), "
                f"{elapsed:.0f} s, {state}")

    with progress_lines(describe_progress, config.progress_interval_s, log):
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            for row in batch.to_pylist():
                counts["rows"] += row["rows"]
                counts["upscaled"] += row["upscaled"]
                counts["n_errors"] += sum(json.loads(row["errors"]).values())
    counts["elapsed_s"] = time.monotonic() - started
    return counts


def _prepare_output(config: UpscaleJobConfig, listing: Listing, wanted: dict[str, Any],
                    log: Log) -> tuple[set[str], dict[str, int]]:
    """Under the lock: check the identity, drop what a rerun must not keep; return (ids kept, dropped)."""
    index = join_uri(config.out, INDEX_DIR)
    fs, root = filesystem_for(config.out)
    existing = scan_output(index)
    recorded = check_identity(index, wanted, existing, rescore=config.redo, meta=config.out,
                              redo="--redo to drop those rows and upscale everything again")
    dropped: Counter[str] = Counter()
    if config.redo and recorded is not None:
        dropped["redo"] = drop_all(index, existing)
        images = join_uri(root, IMAGES_DIR)
        if fs.exists(images):
            fs.rm(images, recursive=True)
        log(f"redo: dropped the {dropped['redo']} index rows and the images of {config.out}")
    if recorded != wanted:
        write_identity(config.out, wanted)
    listed = set(listing.inputs.column("id").to_pylist())
    gone = {id_ for ids, _ in existing.parts.values() for id_ in ids} - listed
    kept, more = reconcile(index, existing, listed)
    for id_ in sorted(gone):  # their images leave with their rows
        path = join_uri(root, IMAGES_DIR, output_name(id_, config.suffix))
        if fs.exists(path):
            fs.rm_file(path)
    dropped.update(more)
    if more:
        names = {"left_source": "of inputs no longer in the source (and their images)",
                 "transient": "with transient errors, retried", "duplicate": "duplicated"}
        log("rerun: dropped " + ", ".join(f"{n} rows {names[k]}" for k, n in sorted(more.items())))
    return kept, dict(dropped)


def run_job(config: UpscaleJobConfig, *, log: Log = _log, upscaler_cls: type | None = None) -> dict[str, Any]:
    """Run an upscale job end to end and return its record (``DST/_iqa/job.json`` when the run changed
    something).

    ``upscaler_cls`` replaces :class:`ray_jobs.upscale.stages.BlockUpscaler` (a subclass importable by the
    Ray workers, e.g. one that injects faults in tests); it takes the same constructor arguments.

    Raises:
        SourceError: SRC, DST or the model cannot be used (missing bucket, credentials, empty source, a
            weights file that does not fit the card, another identity or another run in DST).
        RuntimeError: the index does not hold every input exactly once after the run.
    """
    started_at = dt.datetime.now(dt.timezone.utc)
    t0 = time.monotonic()
    check_not_source(config.src, config.out)
    listing = list_source(config.src, exclude=config.out)
    excluded = listing.excluded_text()
    log(f"listed {listing.inputs.num_rows} inputs in {config.src}" + (f" ({excluded})" if excluded else ""))
    card, sha, scale = check_model(config, log)
    check_destination(config.out, config.src)
    index = join_uri(config.out, INDEX_DIR)
    with OutputLock(meta_uri(config.out, "lock.json"), what=f"--out {config.out}"):
        wanted = identity_of(config, sha, scale)
        kept, dropped = _prepare_output(config, listing, wanted, log)
        targets = listing.inputs if config.limit is None else listing.inputs.slice(0, config.limit)
        target_ids = set(targets.column("id").to_pylist())
        done = kept & target_ids
        n_inputs, n_pending = targets.num_rows, targets.num_rows - len(done)
        if done:
            log(f"resume: {len(done)} of {n_inputs} inputs already in {config.out}; processing the {n_pending} "
                "missing")
        blocks = plan_blocks(targets, done, config.block_size)
        del targets, done
        counts: dict[str, Any] = {"rows": 0, "elapsed_s": 0.0}
        if blocks:
            log(f"upscaling {n_pending} inputs from {config.src} x{scale} in {len(blocks)} blocks of up to "
                f"{config.block_size}")
            needed = config.actors * config.cpus_per_actor + config.cpus_per_decode_task + config.cpus_per_write_task
            with ensure_ray(min_cpus=needed, log=log):
                counts = execute_blocks(config, card, blocks, n_pending, log, upscaler_cls)
        del blocks
        rows, upscaled, errors = verify_output(index, target_ids, set(listing.inputs.column("id").to_pylist()))
        elapsed = time.monotonic() - t0
        record = {
            "model": config.model, "weights_sha256": sha, "scale": scale, "identity": wanted, "n_inputs": n_inputs,
            "n_upscaled": upscaled, "errors_by_reason": errors, "n_processed": counts["rows"],
            "n_resumed": n_inputs - n_pending, "excluded": listing.excluded, "dropped": dropped,
            "images_per_s": round(counts["rows"] / counts["elapsed_s"], 3) if counts["elapsed_s"] else None,
            "elapsed_s": round(elapsed, 3), "started": started_at.isoformat(),
            "finished": dt.datetime.now(dt.timezone.utc).isoformat(), "config": config.model_dump(mode="json"),
        }
        changed = bool(counts["rows"] or dropped) or read_json(meta_uri(config.out, "job.json")) is None
        if changed:
            write_json(meta_uri(config.out, "job.json"), record)
        error_text = ", ".join(f"{k}={v}" for k, v in errors.items()) or "none"
        log(f"done: {n_inputs} inputs -> {rows} index rows in {index} (upscaled {upscaled} x{scale}; errors "
            f"{sum(errors.values())}: {error_text})" + (f"; {excluded}" if excluded else ""))
        if record["images_per_s"] is not None:
            log(f"throughput: {record['images_per_s']:.2f} images/s ({counts['rows']} processed in "
                f"{counts['elapsed_s']:.1f} s, model loading included; {elapsed:.1f} s end to end)")
        if not changed:
            log(f"nothing to do: {config.out} already holds every input; its run record is kept")
        log(f"images: {join_uri(config.out, IMAGES_DIR)}/  index: {describe(index)}  run record: "
            f"{meta_uri(config.out, 'job.json')}")
    return record


CONFIG = UpscaleJobConfig


def run(config: UpscaleJobConfig) -> int:
    """Run the job; 0 when it completed (inputs that could not be upscaled are rows, not failures)."""
    run_job(config)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m ray_jobs.upscale``: the same options as ``iqa upscale``."""
    return job_main("upscale", argv)


if __name__ == "__main__":
    sys.exit(main())
