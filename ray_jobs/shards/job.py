"""The degradation-shards job: pristine images -> Parquet shards of lossless crops plus degradation recipes.

::

    iqa shards --source s3://bucket/pristine/ --out s3://bucket/shards/qualiclip/ --kind qualiclip \\
        --crop 224 --pairs-per-image 4 --seed 0
    python -m ray_jobs.shards ...   # same options

The sorted image listing is cut into shards of ``images_per_shard`` images (shard i always holds the same
images). Each shard is built by one Ray Data task: read and decode each image, draw its samples with a
seed derived from (seed, image id), encode the crops as PNG, write ``shard-<i>.parquet`` and then the
done marker ``_done/shard-<i>.json`` (sha256, rows, skipped images). A rerun re-verifies each marker
against the shard's sha256 and rebuilds only missing or partial shards, so a crashed run completes without
duplicates; ``manifest.json`` is written last. Degradations are not applied here: training workers
materialise them on their own device (:mod:`iqa_plugin.data.materialize`). Row schema: :mod:`ray_jobs.shards.data`.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ray_jobs.shards.config import ShardsJobConfig, load_config
from ray_jobs.shards.data import MANIFEST_NAME, SCHEMAS
from ray_jobs.shards.sampling import decode_pristine, image_seed, realsr_config_json, sample_rows

CONFIG_NAME = "_config.json"
DONE_DIR = "_done"
FORMAT_VERSION = 1


def resolve_filesystem(url: str, storage_options: dict[str, Any]) -> tuple[Any, str]:
    """``(fsspec filesystem, path without protocol)`` for ``url``.

    For ``s3://`` the endpoint and keys come from the AWS_* variables of *this* process when
    ``storage_options`` does not give them, so the filesystem still works once pickled to Ray workers
    whose environment lacks them.
    """
    import fsspec

    options = json.loads(json.dumps(storage_options))  # deep copy; the caller's dict stays untouched
    protocol = fsspec.utils.get_protocol(url)
    if protocol in ("file", "local"):
        options.setdefault("auto_mkdir", True)  # writes create their folders, as on object stores
    if protocol in ("s3", "s3a"):
        client_kwargs = options.setdefault("client_kwargs", {})
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint and "endpoint_url" not in options and "endpoint_url" not in client_kwargs:
            client_kwargs["endpoint_url"] = endpoint
        if "key" not in options and os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
            options["key"] = os.environ["AWS_ACCESS_KEY_ID"]
            options["secret"] = os.environ["AWS_SECRET_ACCESS_KEY"]
            if os.environ.get("AWS_SESSION_TOKEN"):
                options["token"] = os.environ["AWS_SESSION_TOKEN"]
    return fsspec.core.url_to_fs(url, **options)


def list_images(fs: Any, root: str, extensions: tuple[str, ...]) -> tuple[list[tuple[str, str]], int]:
    """Sorted ``(image_id, path)`` of the image files under ``root`` and the number of other files.

    ``image_id`` is the path relative to ``root`` (posix); hidden files and folders are ignored.

    Raises:
        FileNotFoundError: ``root`` holds no file at all.
    """
    root = root.rstrip("/")
    files = sorted(fs.find(root))
    if not files:
        raise FileNotFoundError(
            f"No file under the pristine source {fs.unstrip_protocol(root)!r}: check the --source folder or "
            "prefix (and the S3 endpoint/credentials in AWS_* or storage_options)."
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


def _sha256_of(fs: Any, path: str) -> str | None:
    try:
        return hashlib.sha256(fs.cat_file(path)).hexdigest()
    except FileNotFoundError:
        return None


def _completed_marker(out_fs: Any, out_root: str, name: str) -> dict[str, Any] | None:
    """The shard's done marker if the shard on storage still has the sha256 it records, else None."""
    marker_path = f"{out_root}/{DONE_DIR}/{name.replace('.parquet', '.json')}"
    try:
        marker = json.loads(out_fs.cat_file(marker_path).decode("utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    if _sha256_of(out_fs, f"{out_root}/{name}") != marker.get("sha256"):
        return None
    return marker


def build_shard(
    spec: dict[str, Any], config: ShardsJobConfig, kinds: tuple[str, ...], src_fs: Any, out_fs: Any, out_root: str
) -> dict[str, Any]:
    """Build (or verify and reuse) one shard; returns its done marker plus ``reused``. Runs in a Ray task."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    name = spec["name"]
    marker = _completed_marker(out_fs, out_root, name)
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
        "skipped": skipped,
    }
    out_fs.pipe_file(f"{out_root}/{DONE_DIR}/{name.replace('.parquet', '.json')}", json.dumps(marker).encode())
    return {**marker, "reused": False}


def _build_shard_row(row: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    return {"marker": json.dumps(build_shard(json.loads(row["spec"]), **kwargs))}


def _check_previous_config(out_fs: Any, out_root: str, config: ShardsJobConfig) -> None:
    """Refuse to mix shards of two configs under one ``out``; record the config on first use."""
    path = f"{out_root}/{CONFIG_NAME}"
    wanted = config.content_fields()
    if out_fs.exists(path):
        previous = json.loads(out_fs.cat_file(path).decode("utf-8"))
        if previous != wanted:
            differing = sorted(k for k in set(previous) | set(wanted) if previous.get(k) != wanted.get(k))
            raise ValueError(
                f"{out_fs.unstrip_protocol(out_root)!r} already holds shards built with another config "
                f"(fields differing: {', '.join(differing)}). Use a new --out, or delete that folder to rebuild."
            )
        return
    out_fs.pipe_file(path, json.dumps(wanted, sort_keys=True, indent=2).encode())


def _start_ray() -> bool:
    """Join ``$RAY_ADDRESS`` or an already initialised Ray, else start a local one; True if started here."""
    import ray

    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"])
    else:
        ray.init(num_cpus=max(4, os.cpu_count() or 1), include_dashboard=False)
    return True


def run_shards_job(
    config: ShardsJobConfig, *, progress: Callable[[str], None] = print, progress_every_s: float = 5.0
) -> dict[str, Any]:
    """Build the shards described by ``config`` on Ray and write ``manifest.json``; returns the manifest
    plus a ``run`` entry (shards built and reused, seconds, images/s, samples/s) that is not written.

    Raises:
        FileNotFoundError: the source holds no file.
        ValueError: no image in the source, or ``out`` holds shards of another config.
    """
    import ray

    from iqa_plugin.data.degradations import KINDS, LEVELS

    if config.levels > LEVELS:
        raise ValueError(f"levels={config.levels} but the degradation library has {LEVELS} levels: use <= {LEVELS}.")
    if config.kind == "sr":
        realsr_config_json(config)  # a bad realsr mapping fails here, before any Ray task
    started = time.perf_counter()
    src_fs, src_root = resolve_filesystem(config.source, config.storage_options)
    out_fs, out_root = resolve_filesystem(config.out, config.storage_options)
    out_root = out_root.rstrip("/")
    images, ignored = list_images(src_fs, src_root, config.extensions)
    if config.max_images is not None:
        images = images[: config.max_images]
    if not images:
        raise ValueError(
            f"No image file under {config.source!r} ({ignored} other files; endings read: "
            f"{', '.join(config.extensions)}): point --source at the pristine images."
        )
    _check_previous_config(out_fs, out_root, config)
    per = config.images_per_shard
    specs = [
        {"index": i, "name": f"shard-{i:05d}.parquet", "images": images[start : start + per]}
        for i, start in enumerate(range(0, len(images), per))
    ]
    progress(f"iqa shards: {len(images)} images -> {len(specs)} shards of <= {per} under {config.out}")
    started_ray = _start_ray()
    try:
        build = functools.partial(
            _build_shard_row, config=config, kinds=tuple(KINDS), src_fs=src_fs, out_fs=out_fs, out_root=out_root
        )
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
    finally:
        if started_ray:
            ray.shutdown()
    markers.sort(key=lambda m: m["index"])
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


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the shards job's options (``iqa shards`` and ``python -m ray_jobs.shards``)."""
    parser.add_argument("--source", help="folder or fsspec prefix (s3://...) of pristine images")
    parser.add_argument("--out", help="folder or fsspec prefix for the shards and manifest.json")
    parser.add_argument("--kind", choices=["qualiclip", "sr"], help="qualiclip: crop pairs; sr: HR patches")
    parser.add_argument("--config", help="YAML file of ShardsJobConfig fields; options given here override it")
    parser.add_argument("--crop", type=int, help="QualiCLIP crop side (default 224)")
    parser.add_argument(
        "--pairs-per-image", "--samples-per-image", dest="samples_per_image", type=int,
        help="crop pairs (qualiclip) or HR patches (sr) per image (default 4)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, help="root seed (default 0)")
    parser.add_argument("--levels", type=int, help="distortion levels per QualiCLIP sample (default 5)")
    parser.add_argument("--hr-size", dest="hr_size", type=int, help="SR HR patch side (default 256)")
    parser.add_argument("--scale", type=int, choices=[2, 4], help="SR scale (default 4)")
    parser.add_argument("--realworld-fraction", dest="realworld_fraction", type=float, help="SR realworld share (0.5)")
    parser.add_argument("--images-per-shard", dest="images_per_shard", type=int, help="images per shard (32)")
    parser.add_argument("--max-images", dest="max_images", type=int, help="use only the first N sorted images")


_CONFIG_OPTIONS = (
    "source", "out", "kind", "crop", "samples_per_image", "seed", "levels", "hr_size", "scale",
    "realworld_fraction", "images_per_shard", "max_images",
)  # fmt: skip


def config_from_args(args: argparse.Namespace) -> ShardsJobConfig:
    """The job config from parsed options (``--config`` file first, then the options given)."""
    overrides = {name: getattr(args, name, None) for name in _CONFIG_OPTIONS}
    if args.config:
        return load_config(args.config, **overrides)
    return ShardsJobConfig.model_validate({k: v for k, v in overrides.items() if v is not None})


def run_from_args(args: argparse.Namespace) -> int:
    """Run the job from parsed options; 0 on success, 2 on a bad config or input."""
    from pydantic import ValidationError

    try:
        config = config_from_args(args)
    except (ValidationError, ValueError, OSError) as error:
        print(f"iqa shards: invalid configuration: {error}", file=sys.stderr)
        return 2
    try:
        run_shards_job(config)
    except (ValueError, FileNotFoundError) as error:
        print(f"iqa shards: {error}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m ray_jobs.shards``: the same options as ``iqa shards``."""
    from ray_jobs.cli import job_main

    return job_main("shards", argv)


if __name__ == "__main__":
    sys.exit(main())
