"""The stages of the upscale job that differ from the score job's, each run by Ray Data on job blocks.

``fetch_and_decode_blocks`` (the score job's, CPU tasks) -> :class:`BlockUpscaler` (actor pool, GPU or
CPU) -> :func:`write_upscaled_blocks` (CPU tasks: encode, write the images, then the block's index part).

A job block is one row (the ids and URIs of one index part), so a retried task rewrites the same images
and the same part. The part is written only after every image of its block: an image without an index
row is rewritten by the next run, and an index row always names an image that exists.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa

from iqa_plugin.data.reasons import SCORE_ERROR
from ray_jobs.io import put_bytes, write_parquet_part
from ray_jobs.runtime import StorageSettings, join_uri

IMAGES_DIR = "images"
INDEX_DIR = "index"

#: Schema of every ``index/part-*.parquet`` row (one row per input).
INDEX_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("uri", pa.string(), nullable=False),
    pa.field("bytes", pa.int64()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("output", pa.string()),
    pa.field("out_width", pa.int32()),
    pa.field("out_height", pa.int32()),
    pa.field("out_bytes", pa.int64()),
    pa.field("model", pa.string()),
    pa.field("weights_sha256", pa.string()),
    pa.field("error", pa.string()),
])

_UNSAFE = re.compile(r'[\x00-\x1f\x7f\\:*?"<>|]')
_LIST_COLUMNS = {"ids": pa.string(), "uris": pa.string(), "bytes": pa.int64(), "width": pa.int32(),
                 "height": pa.int32(), "error": pa.string()}


def output_name(id_: str, suffix: str) -> str:
    """Where the image of input ``id_`` goes, relative to ``DST/images/``: the id plus ``.<suffix>``
    (``sub/cat.jpg`` -> ``sub/cat.jpg.png``), so two inputs never share an output.

    An id that is not a clean relative path (a manifest's URI, ``..``, characters object stores or
    file systems refuse) is made one and gets 8 hex digits of its sha256, which keeps names unique:
    ``s3://b/x.jpg`` -> ``s3/b/x.jpg-1a2b3c4d.png``.
    """
    parts = [_UNSAFE.sub("_", part) for part in id_.replace("://", "/", 1).split("/") if part not in ("", ".")]
    parts = ["_" + part if part.startswith(".") else part for part in parts] or ["_"]
    safe = "/".join(parts)
    if safe != id_:
        safe += "-" + hashlib.sha256(id_.encode("utf-8")).hexdigest()[:8]
    return f"{safe}.{suffix}"


class BlockUpscaler:
    """Ray Data callable class: builds the SR model once, then upscales the decoded images of each block.

    Args:
        card: the :class:`~iqa_plugin.hub.cards.ModelCard` the driver resolved (so actors never need the
            driver's registry folder).
        weights: ``--weights`` (replaces the card's file), resolved with the worker's own environment.
        arch_options: replace the card's (``scale``).
        sr_options: ``tile``, ``tile_overlap``, ``device``, ``precision`` of :class:`~iqa_plugin.inference.sr.SRModel`.
        torch_threads: intra-op threads on CPU.
    """

    def __init__(self, card: Any, weights: str | None, arch_options: dict[str, Any], sr_options: dict[str, Any],
                 torch_threads: int | None = None) -> None:
        import torch

        from iqa_plugin.build import build_network
        from iqa_plugin.inference.sr import SRModel

        if sr_options.get("device") == "cpu" and torch_threads:
            torch.set_num_threads(int(torch_threads))
        network = build_network(card, pretrained_model_path=weights, **arch_options)
        self.model = SRModel(network, name=card.name, **sr_options)
        self.model_name = str(card.name)
        self.weights_sha256 = network.weights_sha256

    def upscale(self, array: np.ndarray) -> np.ndarray | None:
        """HxWx3 uint8/uint16 -> the upscaled HxWx3 uint8 (``None`` when the model fails on it)."""
        import torch

        from iqa_plugin.data.tensors import array_to_tensor

        try:
            with torch.inference_mode():  # the in-place ops below act on the model's inference tensor
                x = array_to_tensor(array).unsqueeze(0).to(self.model.device)
                sr = self.model.upscale_batch(x)[0]
                return sr.mul_(255.0).round_().to(torch.uint8).permute(1, 2, 0).contiguous().cpu().numpy()
        except Exception:  # out of memory or a model failure on this image: a row, not a crash
            if self.model.device.type == "cuda":
                torch.cuda.empty_cache()
            return None

    def __call__(self, batch: pa.Table) -> pa.Table:
        columns = {name: batch.column(name).to_pylist() for name in ("block", *_LIST_COLUMNS)}
        pixel_lists = batch.column("pixels")
        shapes = batch.column("shape").to_pylist()
        dtypes = batch.column("dtype").to_pylist()
        sr_pixels: list[list[bytes | None]] = []
        sr_shapes: list[list[list[int] | None]] = []
        for i in range(batch.num_rows):
            row_pixels = pixel_lists[i].values
            errors = columns["error"][i]
            pixels: list[bytes | None] = [None] * len(errors)
            out_shapes: list[list[int] | None] = [None] * len(errors)
            for j, error in enumerate(errors):
                if error is not None:
                    continue
                array = np.frombuffer(row_pixels[j].as_buffer(), dtype=dtypes[i][j]).reshape(shapes[i][j])
                sr = self.upscale(array)
                if sr is None:
                    errors[j] = SCORE_ERROR
                    continue
                pixels[j], out_shapes[j] = sr.tobytes(), list(sr.shape)
            sr_pixels.append(pixels)
            sr_shapes.append(out_shapes)
        return pa.table({
            "block": pa.array(columns["block"], pa.string()),
            **{name: pa.array(columns[name], pa.list_(kind)) for name, kind in _LIST_COLUMNS.items()},
            "sr_pixels": pa.array(sr_pixels, pa.list_(pa.large_binary())),
            "sr_shape": pa.array(sr_shapes, pa.list_(pa.list_(pa.int32()))),
            "model": pa.array([self.model_name] * batch.num_rows, pa.string()),
            "weights_sha256": pa.array([self.weights_sha256] * batch.num_rows, pa.string()),
        })


def encode_image(pixels: bytes, shape: list[int], options: dict[str, Any]) -> bytes:
    """The bytes of an HxWx3 uint8 image file (PIL ``save`` ``options``: format and its settings)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.frombuffer(pixels, np.uint8).reshape(shape), "RGB").save(buffer, **options)
    return buffer.getvalue()


def _write_block_images(row: dict[str, Any], dst: str, suffix: str, encode_options: dict[str, Any], threads: int,
                        settings: StorageSettings | None) -> tuple[list[str | None], list[int | None]]:
    """Encode and write the images of one upscaled block; return their URIs and sizes (None on error rows)."""
    def write(j: int) -> tuple[str | None, int | None]:
        if row["sr_pixels"][j] is None:
            return None, None
        data = encode_image(row["sr_pixels"][j], row["sr_shape"][j], encode_options)
        return put_bytes(join_uri(dst, IMAGES_DIR, output_name(row["ids"][j], suffix)), data, settings), len(data)

    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(row["ids"])))) as pool:
        written = list(pool.map(write, range(len(row["ids"]))))
    return [uri for uri, _ in written], [size for _, size in written]


def index_table(row: dict[str, Any], outputs: list[str | None], sizes: list[int | None]) -> pa.Table:
    """The index rows of one written block in :data:`INDEX_SCHEMA`."""
    n = len(row["ids"])
    shapes = row["sr_shape"]
    return pa.table({
        "id": pa.array(row["ids"], pa.string()),
        "uri": pa.array(row["uris"], pa.string()),
        "bytes": pa.array(row["bytes"], pa.int64()),
        "width": pa.array([None if s is None else w for w, s in zip(row["width"], shapes, strict=True)], pa.int32()),
        "height": pa.array([None if s is None else h for h, s in zip(row["height"], shapes, strict=True)],
                           pa.int32()),
        "output": pa.array(outputs, pa.string()),
        "out_width": pa.array([None if s is None else s[1] for s in shapes], pa.int32()),
        "out_height": pa.array([None if s is None else s[0] for s in shapes], pa.int32()),
        "out_bytes": pa.array(sizes, pa.int64()),
        "model": pa.array([row["model"]] * n, pa.string()),
        "weights_sha256": pa.array([row["weights_sha256"]] * n, pa.string()),
        "error": pa.array(row["error"], pa.string()),
    }, schema=INDEX_SCHEMA)


def write_upscaled_blocks(batch: pa.Table, *, dst: str, suffix: str, encode_options: dict[str, Any], threads: int,
                          settings: StorageSettings | None = None) -> pa.Table:
    """Write each block's images under ``DST/images/``, then its ``DST/index/part-<block>.parquet``;
    return one summary row per block (a write that fails after the store client's retries fails the
    task: Ray retries it, and a rerun resumes)."""
    summary: dict[str, list[Any]] = {"rows": [], "upscaled": [], "errors": [], "model": [], "weights_sha256": []}
    for row in batch.to_pylist():
        outputs, sizes = _write_block_images(row, dst, suffix, encode_options, threads, settings)
        write_parquet_part(index_table(row, outputs, sizes), join_uri(dst, INDEX_DIR), row["block"], settings)
        reasons = Counter(reason for reason in row["error"] if reason is not None)
        summary["rows"].append(len(row["ids"]))
        summary["upscaled"].append(len(row["ids"]) - sum(reasons.values()))
        summary["errors"].append(json.dumps(dict(reasons), sort_keys=True))
        summary["model"].append(row["model"])
        summary["weights_sha256"].append(row["weights_sha256"])
    return pa.table({
        "rows": pa.array(summary["rows"], pa.int64()), "upscaled": pa.array(summary["upscaled"], pa.int64()),
        "errors": pa.array(summary["errors"], pa.string()), "model": pa.array(summary["model"], pa.string()),
        "weights_sha256": pa.array(summary["weights_sha256"], pa.string()),
    })
