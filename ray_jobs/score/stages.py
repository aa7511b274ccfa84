"""The stages of the score job, each a plain function or callable class that Ray Data runs on blocks.

The unit that flows through the pipeline is one *job block*: a row holding the lists of ids and URIs
that end up in one ``part-<block>.parquet``. Because a job block is a single row, Ray can never split it
across tasks, so a retried task rewrites exactly the same file with exactly the same ids.

``fetch_and_decode_blocks`` (CPU tasks) -> ``BlockScorer`` (actor pool, GPU or CPU) -> ``write_blocks``.

Reason codes in the ``error`` column (stable; everything else of a row is null where it cannot be known):

==================  ==============================================================================
``missing``         the object does not exist (a manifest entry pointing nowhere, deleted meanwhile)
``access_denied``   the object exists but cannot be read with these credentials
``fetch_error``     reading failed after ``fetch_retries`` retries of a transient error
``empty``           zero bytes
``not_an_image``    bytes that no decoder recognises
``truncated``       an image cut short (partial download, truncated JPEG)
``too_many_pixels`` above ``max_pixels`` (decompression bomb); the pixels are never allocated
``too_small``       a side below ``min_side`` (e.g. a 1x1 tracking pixel)
``decode_error``    any other decoder failure (``bad_values``/``bad_shape``/``unsupported_type`` pass through)
``score_error``     the model failed on this image or returned a non-finite score
==================  ==============================================================================
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ray_jobs.io import apply_storage_env, filesystem_for, write_parquet_part

#: Schema of every ``part-*.parquet`` row (one row per input).
OUTPUT_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("uri", pa.string(), nullable=False),
    pa.field("bytes", pa.int64()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("model", pa.string()),
    pa.field("weights_sha256", pa.string()),
    pa.field("score", pa.float64()),
    pa.field("error", pa.string()),
])

_LIST_COLUMNS = ("ids", "uris", "bytes", "width", "height", "error")
_LIST_TYPES = {
    "ids": pa.list_(pa.string()), "uris": pa.list_(pa.string()), "bytes": pa.list_(pa.int64()),
    "width": pa.list_(pa.int32()), "height": pa.list_(pa.int32()), "error": pa.list_(pa.string()),
}


class FetchError(Exception):
    """Reading one object failed; ``reason`` is the row's error code."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def fetch_bytes(uri: str, *, retries: int = 4, backoff_s: float = 0.2,
                sleep: Callable[[float], None] = time.sleep) -> bytes:
    """The bytes of ``uri``; transient errors are retried ``retries`` times with exponential backoff.

    Raises:
        FetchError: with reason ``missing`` (no such object), ``access_denied`` or ``fetch_error``.
    """
    for attempt in range(retries + 1):
        try:
            fs, path = filesystem_for(uri)
            return fs.cat_file(path)
        except FileNotFoundError:
            raise FetchError("missing") from None
        except PermissionError:
            raise FetchError("access_denied") from None
        except IsADirectoryError:
            raise FetchError("not_an_image") from None
        except Exception:  # throttling, 5xx, connection resets, timeouts: worth another try
            if attempt == retries:
                raise FetchError("fetch_error") from None
            sleep(min(backoff_s * (2 ** attempt), 5.0))
    raise AssertionError("unreachable")


def _fetch_one(uri: str, retries: int) -> tuple[bytes | None, str | None]:
    try:
        return fetch_bytes(uri, retries=retries), None
    except FetchError as error:
        return None, error.reason


def decode_one(data: bytes, *, uri: str, max_pixels: int, min_side: int,
               short_side: int | None) -> tuple[np.ndarray | None, int | None, int | None, str | None]:
    """``(array to score, native width, native height, None)`` or ``(None, None, None, reason)``."""
    from iqa_plugin.data.images import ImageInputError, decode_image_array, resize_array_short_side

    try:
        array = decode_image_array(data, max_pixels=max_pixels, source=uri, min_side=min_side)
        height, width = int(array.shape[0]), int(array.shape[1])
        if short_side is not None:
            array = resize_array_short_side(array, short_side)
        return np.ascontiguousarray(array), width, height, None
    except ImageInputError as error:
        reason = getattr(error, "reason", "decode_error")
        return None, None, None, reason if reason in _DECODE_REASONS else "decode_error"
    except Exception:  # a decoder bug on one file must not stop the job
        return None, None, None, "decode_error"


_DECODE_REASONS = {"empty", "not_an_image", "truncated", "too_many_pixels", "too_small", "missing", "bad_values",
                   "bad_shape", "unsupported_type", "decode_error"}


def fetch_and_decode_blocks(batch: pa.Table, *, max_pixels: int, min_side: int, short_side: int | None,
                            retries: int, threads: int, env: dict[str, str] | None = None) -> pa.Table:
    """Fetch and decode every input of each job block; failures become per-input reason codes."""
    apply_storage_env(env)
    out: dict[str, list[Any]] = {name: [] for name in ("block", *_LIST_COLUMNS, "pixels", "shape", "dtype")}
    for row in batch.to_pylist():
        uris: list[str] = row["uris"]
        with ThreadPoolExecutor(max_workers=max(1, min(threads, len(uris)))) as pool:
            fetched = list(pool.map(lambda uri: _fetch_one(uri, retries), uris))
        sizes, widths, heights, errors, pixels, shapes, dtypes = [], [], [], [], [], [], []
        for uri, (data, reason) in zip(uris, fetched, strict=True):
            array = width = height = None
            if data is not None:
                array, width, height, reason = decode_one(
                    data, uri=uri, max_pixels=max_pixels, min_side=min_side, short_side=short_side)
            sizes.append(None if data is None else len(data))
            widths.append(width)
            heights.append(height)
            errors.append(reason)
            pixels.append(None if array is None else array.tobytes())
            shapes.append(None if array is None else list(array.shape))
            dtypes.append(None if array is None else str(array.dtype))
        for name, values in zip(("block", "ids", "uris", "bytes", "width", "height", "error", "pixels", "shape",
                                 "dtype"),
                                (row["block"], row["ids"], uris, sizes, widths, heights, errors, pixels, shapes,
                                 dtypes), strict=True):
            out[name].append(values)
    return pa.table({
        "block": pa.array(out["block"], pa.string()),
        **{name: pa.array(out[name], _LIST_TYPES[name]) for name in _LIST_COLUMNS},
        "pixels": pa.array(out["pixels"], pa.list_(pa.large_binary())),
        "shape": pa.array(out["shape"], pa.list_(pa.list_(pa.int32()))),
        "dtype": pa.array(out["dtype"], pa.list_(pa.string())),
    })


class BlockScorer:
    """Ray Data callable class: loads the model once, then scores the decoded images of each job block.

    Args:
        scorer_kwargs: keyword arguments of :class:`iqa_plugin.inference.scorer.BatchScorer`.
        torch_threads: intra-op threads on CPU (Ray sets ``OMP_NUM_THREADS`` to the actor's CPUs).
        faults: :class:`ray_jobs.score.config.FaultInjection` as a dict (tests only).
        env: the driver's object-store settings (:func:`ray_jobs.io.storage_env`).
    """

    def __init__(self, scorer_kwargs: dict[str, Any], torch_threads: int | None = None,
                 faults: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> None:
        import torch

        apply_storage_env(env)  # weights may live on the object store too

        from iqa_plugin.inference.scorer import BatchScorer

        kwargs = dict(scorer_kwargs)
        if kwargs.get("device") == "cpu" and torch_threads:
            torch.set_num_threads(int(torch_threads))
        model = kwargs.pop("model")
        self.scorer = BatchScorer(model, **kwargs)
        self.model_name = str(self.scorer.model_name)
        self.weights_sha256 = self.scorer.weights_sha256
        self.faults = faults or {}
        self.blocks_done = 0

    def _maybe_inject_fault(self) -> None:
        exit_after = self.faults.get("actor_exit_after_blocks")
        marker = self.faults.get("marker")
        if exit_after is not None and self.blocks_done >= exit_after and marker and not os.path.exists(marker):
            Path(marker).write_text(f"actor pid {os.getpid()} exited after {self.blocks_done} blocks\n")
            os._exit(1)
        if self.faults.get("sleep_per_block_s"):
            time.sleep(float(self.faults["sleep_per_block_s"]))

    def _score(self, arrays: list[np.ndarray]) -> list[float | None]:
        try:
            return [float(s) for s in self.scorer.score_arrays(arrays)]
        except Exception:
            scores: list[float | None] = []
            for array in arrays:  # isolate the image the model cannot take
                try:
                    scores.append(float(self.scorer.score_arrays([array])[0]))
                except Exception:
                    scores.append(None)
            return scores

    def __call__(self, batch: pa.Table) -> pa.Table:
        self._maybe_inject_fault()
        columns: dict[str, list[Any]] = {name: batch.column(name).to_pylist() for name in ("block",
                                                                                         *_LIST_COLUMNS)}
        pixel_lists = batch.column("pixels")
        shapes = batch.column("shape").to_pylist()
        dtypes = batch.column("dtype").to_pylist()
        all_scores: list[list[float | None]] = []
        for i in range(batch.num_rows):
            row_pixels = pixel_lists[i].values
            errors = columns["error"][i]
            index = [j for j, err in enumerate(errors) if err is None]
            arrays = [np.frombuffer(row_pixels[j].as_buffer(), dtype=dtypes[i][j]).reshape(shapes[i][j])
                      for j in index]
            scores: list[float | None] = [None] * len(errors)
            for j, score in zip(index, self._score(arrays) if arrays else [], strict=True):
                if score is None or not np.isfinite(score):
                    errors[j] = "score_error"
                    columns["width"][i][j] = columns["height"][i][j] = None
                else:
                    scores[j] = score
            all_scores.append(scores)
        self.blocks_done += 1
        return pa.table({
            "block": pa.array(columns["block"], pa.string()),
            **{name: pa.array(columns[name], _LIST_TYPES[name]) for name in _LIST_COLUMNS},
            "score": pa.array(all_scores, pa.list_(pa.float64())),
            "model": pa.array([self.model_name] * batch.num_rows, pa.string()),
            "weights_sha256": pa.array([self.weights_sha256] * batch.num_rows, pa.string()),
        })


def block_output_table(row: dict[str, Any]) -> pa.Table:
    """The rows of one scored job block in :data:`OUTPUT_SCHEMA`."""
    n = len(row["ids"])
    return pa.table({
        "id": pa.array(row["ids"], pa.string()),
        "uri": pa.array(row["uris"], pa.string()),
        "bytes": pa.array(row["bytes"], pa.int64()),
        "width": pa.array(row["width"], pa.int32()),
        "height": pa.array(row["height"], pa.int32()),
        "model": pa.array([row["model"]] * n, pa.string()),
        "weights_sha256": pa.array([row["weights_sha256"]] * n, pa.string()),
        "score": pa.array(row["score"], pa.float64()),
        "error": pa.array(row["error"], pa.string()),
    }, schema=OUTPUT_SCHEMA)


def write_blocks(batch: pa.Table, *, dst: str, env: dict[str, str] | None = None, write_retries: int = 4) -> pa.Table:
    """Write each scored job block to ``DST/part-<block>.parquet``; return one summary row per block."""
    apply_storage_env(env)
    summary: dict[str, list[Any]] = {"block": [], "rows": [], "scored": [], "errors": [], "model": [],
                                     "weights_sha256": []}
    for row in batch.to_pylist():
        table = block_output_table(row)
        for attempt in range(write_retries + 1):
            try:
                write_parquet_part(table, dst, row["block"])
                break
            except (FileNotFoundError, PermissionError):
                raise  # a vanished bucket or revoked credentials: no retry will help
            except Exception:  # throttling, 5xx, resets: the part is rewritten whole, so retrying is safe
                if attempt == write_retries:
                    raise
                time.sleep(min(0.5 * 2**attempt, 8.0))
        reasons = Counter(reason for reason in row["error"] if reason is not None)
        summary["block"].append(row["block"])
        summary["rows"].append(len(row["ids"]))
        summary["scored"].append(len(row["ids"]) - sum(reasons.values()))
        summary["errors"].append(json.dumps(dict(reasons), sort_keys=True))
        summary["model"].append(row["model"])
        summary["weights_sha256"].append(row["weights_sha256"])
    return pa.table({
        "block": pa.array(summary["block"], pa.string()), "rows": pa.array(summary["rows"], pa.int64()),
        "scored": pa.array(summary["scored"], pa.int64()), "errors": pa.array(summary["errors"], pa.string()),
        "model": pa.array(summary["model"], pa.string()),
        "weights_sha256": pa.array(summary["weights_sha256"], pa.string()),
    })
