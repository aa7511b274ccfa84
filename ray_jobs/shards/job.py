"""The degradation-shards job: pristine images -> Parquet shards of lossless crops plus degradation recipes.

::

    iqa shards --source s3://bucket/pristine/ --out s3://bucket/shards/qualiclip/ --kind qualiclip \\
        --crop 224 --pairs-per-image 4 --seed 0
    python -m ray_jobs.shards ...   # same options

The sorted image listing is cut into shards of ``images_per_shard`` images (shard i always holds the same
images). Each shard is built by one Ray Data task: read and decode each image, draw its samples with a
seed derived from (seed, image id), encode the crops as PNG, write ``shard-<i>.parquet`` and then the
done marker ``_done/shard-<i>.json`` (sha256, rows, skipped images, and the sha256 of the image ids it
was built from). A rerun reuses a shard only when its marker matches both the shard's bytes and the
image ids the current listing puts in it, and rebuilds the others; shards beyond the current listing are
deleted. So after any sequence of runs over a changing source every usable image is in exactly one
shard: images added to the source are taken in (every shard from the first one whose images changed is
rebuilt), images removed leave. ``manifest.json`` is removed when a run starts and written last, so a
folder whose run did not finish is refused by ``shards_dataset`` instead of read half-updated. A run
that keeps no sample at all (e.g. a crop larger than every image) is refused (exit 2) without a manifest. Degradations are not applied here: training workers
materialise them on their own device (:mod:`iqa_plugin.data.materialize`). Row schema: :mod:`ray_jobs.shards.data`.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from ray_jobs.cli import job_main
from ray_jobs.errors import UserError
from ray_jobs.io import find_files
from ray_jobs.lock import OutputLock
from ray_jobs.runtime import StorageSettings, ensure_ray, filesystem_for
from ray_jobs.shards.config import ShardsJobConfig
from ray_jobs.shards.data import MANIFEST_NAME, SCHEMAS
from ray_jobs.shards.sampling import decode_pristine, image_seed, realsr_config_json, sample_rows

CONFIG_NAME = "_config.json"
DONE_DIR = "_done"
FORMAT_VERSION = 1


def list_images(fs: Any, root: str, extensions: tuple[str, ...]) -> tuple[list[tuple[str, str]], int]:
    """Sorted ``(image_id, path)`` of the image files under ``root`` and the number of other files.

    ``image_id`` is the path relative to ``root`` (posix); dot-files and files under dot-folders are not
    images (counted with the other files); ``_``-prefixed names are images like any other.

    Raises:
        UserError: ``root`` holds no file at all, or a folder under it cannot be listed.
    """
    root = root.rstrip("/")
    where = fs.unstrip_protocol(root)
    files = find_files(fs, root, where)
    if not files:
        local = "file" in ((fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol))
        raise UserError(
            f"No file under the pristine source {where!r}: check the --source folder"
            + ("." if local else " or prefix (and the S3 endpoint and credentials in AWS_*).")
        )
    endings = tuple(ext.lower() for ext in extensions)
    images, ignored = [], 0
    for path in files:
        relative = path[len(root) + 1 :] if path.startswith(root + "/") else path.rsplit("/", 1)[-1]
        if any(part.startswith(".") for part in relative.split("/")) or not relative.lower().endswith(endings):
            ignored += 1
            continue
        images.append((relative, path))
    return images, ignored


def images_digest(images: list[Any]) -> str:
    """sha256 of a shard's image ids: a shard is reused only for exactly the images it was built from."""
    return hashlib.sha256(json.dumps([image_id for image_id, _ in images]).encode()).hexdigest()


def _sha256_of(fs: Any, path: str) -> str | None:
    try:
        return hashlib.sha256(fs.cat_file(path)).hexdigest()
    except FileNotFoundError:
        return None


def _completed_marker(out_fs: Any, out_root: str, name: str, digest: str) -> dict[str, Any] | None:
    """The shard's done marker if it was built from the images of ``digest`` and the shard on storage
    still has the sha256 it records, else None."""
    marker_path = f"{out_root}/{DONE_DIR}/{name.replace('.parquet', '.json')}"
    try:
        marker = json.loads(out_fs.cat_file(marker_path).decode("utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    if marker.get("images_sha256") != digest:
        return None  # the source changed: this shard's images are not the ones it holds
    if _sha256_of(out_fs, f"{out_root}/{name}") != marker.get("sha256"):
        return None
    return marker


def build_shard(
    spec: dict[str, Any], config: ShardsJobConfig, kinds: tuple[str, ...], settings: StorageSettings
) -> dict[str, Any]:
    """Build (or verify and reuse) one shard; returns its done marker plus ``reused``. Runs in a Ray task,
    which opens the filesystems itself: credentials come from the task's own environment."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    src_fs, _ = filesystem_for(config.source, settings)
    out_fs, out_root = filesystem_for(config.out, settings)
    out_root = out_root.rstrip("/")

    name = spec["name"]
    digest = images_digest(spec["images"])
    marker = _completed_marker(out_fs, out_root, name, digest)
    if marker is not None:
        return {**marker, "reused": True}
    realsr_json = realsr_config_json(config) if config.kind == "sr" else ""
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for image_id, path in spec["images"]:
        uri = src_fs.unstrip_protocol(path)
        try:
            data = src_fs.cat_file(path)
        except FileNotFoundError as error:
            skipped.append({"image_id": image_id, "uri": uri, "reason": "missing", "detail": str(error)})
            continue
        decoded = decode_pristine(data, uri=uri, max_pixels=config.max_pixels, min_side=config.sample_side())
        if isinstance(decoded, dict):
            skipped.append({"image_id": image_id, "uri": uri, **decoded})
            continue
        rng = np.random.default_rng(image_seed(config.seed, image_id))
        rows.extend(
            sample_rows(
                decoded, image_id=image_id, uri=uri, config=config, rng=rng, kinds=kinds, realsr_json=realsr_json
            )
        )
    table = pa.Table.from_pylist(rows, schema=SCHEMAS[config.kind])
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="snappy")
    payload = sink.getvalue()
    out_fs.pipe_file(f"{out_root}/{name}", payload)
    marker = {
        "name": name,
        "index": spec["index"],
        "sha256": hashlib.sha256(payload).hexdigest(),
        "bytes": len(payload),
        "rows": table.num_rows,
        "images": len(spec["images"]),
        "images_used": len(spec["images"]) - len(skipped),
        "images_sha256": digest,
        "skipped": skipped,
    }
    out_fs.pipe_file(f"{out_root}/{DONE_DIR}/{name.replace('.parquet', '.json')}", json.dumps(marker).encode())
    return {**marker, "reused": False}


def _build_shard_row(row: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    return {"marker": json.dumps(build_shard(json.loads(row["spec"]), **kwargs))}


def shard_task(config: ShardsJobConfig, kinds: tuple[str, ...], settings: StorageSettings) -> Callable:
    """The function Ray runs per shard, with what it pickles bound in (a test checks it holds no secret)."""
    return functools.partial(_build_shard_row, config=config, kinds=kinds, settings=settings)


def _check_previous_config(out_fs: Any, out_root: str, config: ShardsJobConfig) -> None:
    """Refuse to mix shards of two configs under one ``out``; record the config on first use."""
    path = f"{out_root}/{CONFIG_NAME}"
    wanted = config.content_fields()
    if out_fs.exists(path):
        previous = json.loads(out_fs.cat_file(path).decode("utf-8"))
        if previous != wanted:
            differing = sorted(k for k in set(previous) | set(wanted) if previous.get(k) != wanted.get(k))
            raise UserError(
                f"{out_fs.unstrip_protocol(out_root)!r} already holds shards built with another config "
                f"(fields differing: {', '.join(differing)}). Use a new --out, or delete that folder to rebuild."
            )
        return
    out_fs.pipe_file(path, json.dumps(wanted, sort_keys=True, indent=2).encode())


def run_shards_job(
    config: ShardsJobConfig, *, progress: Callable[[str], None] = print, progress_every_s: float = 5.0
) -> dict[str, Any]:
    """Build the shards described by ``config`` on Ray and write ``manifest.json``; returns the manifest
    plus a ``run`` entry (shards built and reused, seconds, images/s, samples/s) that is not written.

    Raises:
        UserError: the source holds no file or no image, or ``out`` holds shards of another config.
    """
    import ray
    from pydantic import ValidationError

    from iqa_plugin.data.degradations import KINDS, LEVELS

    if config.levels > LEVELS:
        raise UserError(f"levels={config.levels} but the degradation library has {LEVELS} levels: use <= {LEVELS}.")
    if config.kind == "sr":
        try:
            realsr_config_json(config)  # a bad realsr mapping fails here, before any Ray task
        except ValidationError as error:
            problems = "; ".join(f"realsr.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
            raise UserError(f"invalid shards job config: {problems}") from None
    started = time.perf_counter()
    settings = StorageSettings.from_env(config.storage_options)
    src_fs, src_root = filesystem_for(config.source, settings)
    out_fs, out_root = filesystem_for(config.out, settings)
    out_root = out_root.rstrip("/")
    images, ignored = _list_and_check(config, src_fs, src_root, out_fs, out_root)
    if config.max_images is not None:
        images = images[: config.max_images]
    if not images:
        raise UserError(
            f"No image file under {config.source!r} ({ignored} other files; endings read: "
            f"{', '.join(config.extensions)}): point --source at the pristine images."
        )
    _guarded(config.out, lambda: _check_previous_config(out_fs, out_root, config))
    per = config.images_per_shard
    specs = [
        {"index": i, "name": f"shard-{i:05d}.parquet", "images": images[start : start + per]}
        for i, start in enumerate(range(0, len(images), per))
    ]
    progress(f"iqa shards: {len(images)} images -> {len(specs)} shards of <= {per} under {config.out}")
    # one writer per shards folder: two runs over a changing source would mix listings (see ray_jobs.lock)
    with OutputLock(f"{config.out.rstrip('/')}/_iqa/lock.json", what=f"--out {config.out}"):
        if out_fs.exists(f"{out_root}/{MANIFEST_NAME}"):
            out_fs.rm_file(f"{out_root}/{MANIFEST_NAME}")  # until this run ends, the folder is not a finished job
        with ensure_ray(min_cpus=1, log=progress):
            build = shard_task(config, tuple(KINDS), settings)
            dataset = ray.data.from_items([{"spec": json.dumps(s)} for s in specs], override_num_blocks=len(specs))
            markers: list[dict[str, Any]] = []
            last = time.perf_counter()
            for row in dataset.map(build, num_cpus=1).iter_rows():
                markers.append(json.loads(row["marker"]))
                if time.perf_counter() - last >= progress_every_s or len(markers) == len(specs):
                    last = time.perf_counter()
                    done_images = sum(m["images"] for m in markers)
                    progress(
                        f"iqa shards: {len(markers)}/{len(specs)} shards ({sum(m['reused'] for m in markers)} reused), "
                        f"{done_images} images, {sum(m['rows'] for m in markers)} samples, "
                        f"{done_images / max(last - started, 1e-9):.1f} images/s"
                    )
        markers.sort(key=lambda m: m["index"])
        removed = _remove_stale_shards(out_fs, out_root, {str(spec["name"]) for spec in specs})
        if removed:
            progress(f"iqa shards: removed {removed} shard(s) of an earlier, longer listing")
        if not any(m["rows"] for m in markers):
            reasons = Counter(entry["reason"] for m in markers for entry in m["skipped"])
            raise UserError(
                f"no sample from the {len(images)} images of {config.source!r}: every image was skipped "
                f"({', '.join(f'{k}: {v}' for k, v in sorted(reasons.items()))}, see {DONE_DIR}/ for each image); "
                f"lower --{'crop' if config.kind == 'qualiclip' else 'hr-size'} below the images' shorter side "
                "or give larger pristine images")
        manifest = _manifest(config, markers, images_listed=len(images), files_ignored=ignored)
        out_fs.pipe_file(f"{out_root}/{MANIFEST_NAME}", json.dumps(manifest, indent=2, sort_keys=True).encode())
        seconds = time.perf_counter() - started
        counts = manifest["counts"]
        run = {
            "built": sum(not m["reused"] for m in markers),
            "reused": sum(m["reused"] for m in markers),
            "seconds": seconds,
            "images_per_s": counts["images"] / seconds,
            "samples_per_s": counts["samples"] / seconds,
        }
        progress(
            f"iqa shards: done in {seconds:.1f} s: {counts['samples']} samples from {counts['images_used']} images "
            f"({counts['images_skipped']} skipped), {counts['shards']} shards ({run['built']} built, "
            f"{run['reused']} reused); manifest {config.out.rstrip('/')}/{MANIFEST_NAME}"
        )
        return {**manifest, "run": run}


def _guarded(where: str, action: Callable[[], Any]) -> Any:
    """Run a storage ``action`` of the driver; a store or OS error becomes one line with advice."""
    from ray_jobs.score.sources import describe_access_error

    try:
        return action()
    except UserError:
        raise
    except Exception as error:  # botocore / s3fs / OS errors: one line, local or object-store advice
        raise UserError(str(describe_access_error(where, error))) from None


def _list_and_check(config: ShardsJobConfig, src_fs: Any, src_root: str, out_fs: Any,
                    out_root: str) -> tuple[list[tuple[str, str]], int]:
    """The source's images, after checking that the source can be listed and ``out`` is not a file."""
    images, ignored = _guarded(config.source, lambda: list_images(src_fs, src_root, config.extensions))
    if _guarded(config.out, lambda: out_fs.isfile(out_root)):
        raise UserError(f"--out {config.out} is a file; give a folder or prefix for the shards")
    return images, ignored


def _remove_stale_shards(out_fs: Any, out_root: str, current: set[str]) -> int:
    """Delete shards (and their markers) that the current listing no longer has; return how many."""
    names = [path.rsplit("/", 1)[-1] for path in out_fs.find(out_root, maxdepth=1)]
    stale = [name for name in names if name.startswith("shard-") and name.endswith(".parquet") and name not in current]
    for name in stale:
        out_fs.rm_file(f"{out_root}/{name}")
        marker = f"{out_root}/{DONE_DIR}/{name.replace('.parquet', '.json')}"
        if out_fs.exists(marker):
            out_fs.rm_file(marker)
    return len(stale)


def _manifest(config: ShardsJobConfig, markers: list[dict[str, Any]], *, images_listed: int, files_ignored: int) -> dict:
    skipped = [entry for m in markers for entry in m["skipped"]]
    return {
        "format": "iqa-plugin degradation shards",
        "version": FORMAT_VERSION,
        "kind": config.kind,
        "source": config.source,
        "config": config.content_fields(),
        "columns": SCHEMAS[config.kind].names,
        "counts": {
            "images": images_listed,
            "images_used": images_listed - len(skipped),
            "images_skipped": len(skipped),
            "files_ignored": files_ignored,
            "samples": sum(m["rows"] for m in markers),
            "shards": len(markers),
        },
        "skipped": skipped,
        "shards": [{k: m[k] for k in ("name", "rows", "images", "images_used", "sha256", "bytes")} for m in markers],
    }


CONFIG = ShardsJobConfig


def run(config: ShardsJobConfig) -> int:
    """Build the shards; 0 when done."""
    run_shards_job(config)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m ray_jobs.shards``: the same options as ``iqa shards``."""
    return job_main("shards", argv)


if __name__ == "__main__":
    sys.exit(main())
