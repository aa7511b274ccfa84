"""Degradation shards -> Ray Data datasets for training (one row = one training sample).

Schema (Parquet, written by :mod:`ray_jobs.shards`; column names shared with :mod:`iqa_plugin.data.materialize`):

QualiCLIP shards, one row per crop pair
    ``sample_id`` (``"<image_id>#<k>"``), ``image_id`` (path under the source), ``source_uri``,
    ``sample_index`` (k), ``crop_a`` / ``crop_b`` (lossless PNG bytes, RGB 8-bit, ``crop`` px square),
    ``box_a`` / ``box_b`` ([x, y, w, h] in the pristine image; the boxes overlap), ``distortion`` (one of
    ``iqa_plugin.data.degradations.KINDS``), ``levels`` (increasing levels, 1..5), ``seeds`` (one per level).
SR shards, one row per HR patch
    ``sample_id``, ``image_id``, ``source_uri``, ``sample_index``, ``hr`` (PNG bytes), ``box``,
    ``degradation`` (``"bicubic"`` | ``"realworld"``), ``seed``, ``scale``, ``realsr_config`` (JSON of the
    ``RealSRConfig`` for realworld rows, ``""`` for bicubic).

Typical use in a Ray Train worker::

    train_ds = shards_dataset("s3://bucket/shards/qualiclip/")           # driver
    trainer = TorchTrainer(..., datasets={"train": train_ds})
    # worker:
    shard = ray.train.get_dataset_shard("train")
    for crops in shard.iter_torch_batches(batch_size=16, collate_fn=QualiCLIPCollate("cuda"), device="cuda"):
        ...  # crops: [B, 2, L, 3, crop, crop] degraded on the GPU
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from ray.data.collate_fn import NumpyBatchCollateFn

from iqa_plugin.data.materialize import materialize_qualiclip_batch, materialize_sr_batch

if TYPE_CHECKING:
    import ray.data
    import torch

MANIFEST_NAME = "manifest.json"

QUALICLIP_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("image_id", pa.string()),
        ("source_uri", pa.string()),
        ("sample_index", pa.int32()),
        ("crop_a", pa.binary()),
        ("crop_b", pa.binary()),
        ("box_a", pa.list_(pa.int32())),
        ("box_b", pa.list_(pa.int32())),
        ("distortion", pa.string()),
        ("levels", pa.list_(pa.int8())),
        ("seeds", pa.list_(pa.int64())),
    ]
)

SR_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("image_id", pa.string()),
        ("source_uri", pa.string()),
        ("sample_index", pa.int32()),
        ("hr", pa.binary()),
        ("box", pa.list_(pa.int32())),
        ("degradation", pa.string()),
        ("seed", pa.int64()),
        ("scale", pa.int8()),
        ("realsr_config", pa.string()),
    ]
)

SCHEMAS: dict[str, pa.Schema] = {"qualiclip": QUALICLIP_SCHEMA, "sr": SR_SCHEMA}


def read_manifest(dst: str, *, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read ``<dst>/manifest.json`` written by a finished shards job.

    Raises:
        FileNotFoundError: no manifest (the job has not finished there: run ``iqa shards`` again).
    """
    from ray_jobs.runtime import StorageSettings, filesystem_for

    fs, root = filesystem_for(dst, StorageSettings.from_env(storage_options))
    path = f"{root.rstrip('/')}/{MANIFEST_NAME}"
    if not fs.exists(path):
        raise FileNotFoundError(
            f"No {MANIFEST_NAME} under {dst!r}: it is written when the shards job finishes. Run "
            f"`iqa shards --out {dst} ...` (a rerun completes a crashed job) or check the path."
        )
    with fs.open(path, "rb") as handle:
        return json.loads(handle.read().decode("utf-8"))


def shards_dataset(
    dst: str, *, kind: str | None = None, storage_options: dict[str, Any] | None = None
) -> ray.data.Dataset:
    """A Ray Data dataset over the shards of a finished shards job: one row per training sample.

    Args:
        dst: the job's ``--out`` (folder or fsspec prefix holding ``manifest.json`` and the shards).
        kind: ``"qualiclip"`` or ``"sr"`` to check the shards are of that kind; ``None`` accepts either.
        storage_options: non-secret fsspec options for ``dst`` (the S3 endpoint defaults to
            ``$AWS_ENDPOINT_URL``); credentials come from each process's environment (``ray_jobs.runtime``).

    Returns:
        A dataset with the columns of :data:`QUALICLIP_SCHEMA` or :data:`SR_SCHEMA`, ready for
        ``TorchTrainer(datasets={'train': ...})`` and ``iter_torch_batches(collate_fn=QualiCLIPCollate(dev))``.

    Raises:
        FileNotFoundError: the job has not finished under ``dst``.
        UserError: ``storage_options`` holds credentials.
        ValueError: ``kind`` differs from the shards' kind, or the job kept no sample at all.
    """
    import ray.data
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    from ray_jobs.runtime import StorageSettings, filesystem_for

    manifest = read_manifest(dst, storage_options=storage_options)
    shards_kind = manifest["kind"]
    if kind is not None and kind != shards_kind:
        raise ValueError(
            f"Shards under {dst!r} are of kind {shards_kind!r}, but kind={kind!r} was asked for: "
            f"pass kind={shards_kind!r} or point at the {kind} shards."
        )
    fs, root = filesystem_for(dst, StorageSettings.from_env(storage_options))
    paths = [f"{root.rstrip('/')}/{shard['name']}" for shard in manifest["shards"] if shard["rows"] > 0]
    if not paths:
        raise ValueError(
            f"The shards job under {dst!r} kept no sample ({manifest['counts']['images_skipped']} images "
            "skipped, see manifest.json 'skipped'): give it pristine images at least as large as the crop."
        )
    return ray.data.read_parquet(
        paths, filesystem=PyFileSystem(FSSpecHandler(fs)), schema=SCHEMAS[shards_kind], file_extensions=None
    )


class QualiCLIPCollate(NumpyBatchCollateFn):
    """``iter_torch_batches`` collate function: a numpy batch of QualiCLIP rows -> degraded crops
    ``[B, 2, L, 3, crop, crop]`` float in [0, 1] on ``device`` (see ``materialize_qualiclip_batch``).
    Pass the same ``device`` to ``iter_torch_batches``."""

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = device

    def __call__(self, batch: dict[str, Any]) -> torch.Tensor:
        return materialize_qualiclip_batch(batch, self.device)


class SRCollate(NumpyBatchCollateFn):
    """``iter_torch_batches`` collate function: a numpy batch of SR rows -> ``(hr, lr)`` on ``device``
    (see ``materialize_sr_batch``). Pass the same ``device`` to ``iter_torch_batches``."""

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = device

    def __call__(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        return materialize_sr_batch(batch, self.device)
