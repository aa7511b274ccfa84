"""The stages of the score job, each a plain function or callable class that Ray Data runs on blocks.

The unit that flows through the pipeline is one *job block*: a row holding the lists of ids and URIs
that end up in one ``part-<block>.parquet``. Because a job block is a single row, Ray can never split it
across tasks, so a retried task rewrites exactly the same file with exactly the same ids.

``fetch_and_decode_blocks`` (CPU tasks) -> ``BlockScorer`` (actor pool, GPU or CPU) -> ``write_blocks``.

Reason codes in the ``error`` column come from the one table, :data:`iqa_plugin.data.reasons.REASONS`
(everything else of a row is null where it cannot be known). Reading is tried once here: the storage
client already retried transient errors (botocore, s3fs) before ``fetch_error`` is recorded.

Arguments of these tasks and actors carry :class:`ray_jobs.runtime.StorageSettings` (an endpoint, no
credential): each worker takes its credentials from its own environment.
"""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa

from iqa_plugin.data.reasons import (
    ACCESS_DENIED,
    DECODE_ERROR,
    FETCH_ERROR,
    MISSING,
    NOT_AN_IMAGE,
    REASONS,
    SCORE_ERROR,
)
from ray_jobs.io import write_parquet_part
from ray_jobs.runtime import StorageSettings, filesystem_for

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


def fetch_bytes(uri: str, settings: StorageSettings | None = None) -> bytes:
    """The bytes of ``uri`` (one attempt: the storage client has its own retries).

    Raises:
        FetchError: with reason ``missing`` (no such object), ``access_denied``, ``not_an_image`` (a
            folder) or ``fetch_error`` (anything else, after the client's retries).
    """
    from ray_jobs.score.sources_hf import ROW_SCHEME, fetch_row_bytes

    if uri.startswith(ROW_SCHEME):  # one image cell of a Hugging Face dataset row
        return fetch_row_bytes(uri, settings)
    try:
        fs, path = filesystem_for(uri, settings)
        return fs.cat_file(path)
    except FileNotFoundError:
        raise FetchError(MISSING) from None
    except PermissionError:
        raise FetchError(ACCESS_DENIED) from None
    except IsADirectoryError:
        raise FetchError(NOT_AN_IMAGE) from None
    except Exception:  # throttling, 5xx, resets that outlived the client's retries; timeouts
        raise FetchError(FETCH_ERROR) from None


def _fetch_one(uri: str, settings: StorageSettings | None) -> tuple[bytes | None, str | None]:
    try:
        return fetch_bytes(uri, settings), None
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
        reason = getattr(error, "reason", DECODE_ERROR)
        return None, None, None, reason if reason in REASONS else DECODE_ERROR
    except Exception:  # a decoder bug on one file must not stop the job
        return None, None, None, DECODE_ERROR


def fetch_and_decode_blocks(batch: pa.Table, *, max_pixels: int, min_side: int, short_side: int | None,
                            threads: int, settings: StorageSettings | None = None) -> pa.Table:
    """Fetch and decode every input of each job block; failures become per-input reason codes."""
    tables = []
    for row in batch.to_pylist():
        uris: list[str] = row["uris"]
        with ThreadPoolExecutor(max_workers=max(1, min(threads, len(uris)))) as pool:
            fetched = list(pool.map(lambda uri: _fetch_one(uri, settings), uris))
        tables.append(decode_block(row["block"], row["ids"], uris, fetched, max_pixels=max_pixels,
                                   min_side=min_side, short_side=short_side))
    if not tables:
        return decode_block("", [], [], [], max_pixels=max_pixels, min_side=min_side, short_side=None).slice(0, 0)
    return pa.concat_tables(tables)


def decode_block(block: str, ids: list[str], uris: list[str], fetched: list[tuple[bytes | None, str | None]], *,
                 max_pixels: int, min_side: int, short_side: int | None) -> pa.Table:
    """The one-row decoded job block of inputs already fetched: ``fetched[i]`` is ``(bytes, None)`` or
    ``(None, reason)`` for ``ids[i]`` (other sources' readers, e.g. WebDataset shards, call this too)."""
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
    values = {"ids": ids, "uris": uris, "bytes": sizes, "width": widths, "height": heights, "error": errors}
    return pa.table({
        "block": pa.array([block], pa.string()),
        **{name: pa.array([values[name]], _LIST_TYPES[name]) for name in _LIST_COLUMNS},
        "pixels": pa.array([pixels], pa.list_(pa.large_binary())),
        "shape": pa.array([shapes], pa.list_(pa.list_(pa.int32()))),
        "dtype": pa.array([dtypes], pa.list_(pa.string())),
    })


class BlockScorer:
    """Ray Data callable class: loads the model once, then scores the decoded images of each job block.

    Args:
        scorer_kwargs: keyword arguments of :class:`iqa_plugin.inference.scorer.BatchScorer`.
        torch_threads: intra-op threads on CPU (Ray sets ``OMP_NUM_THREADS`` to the actor's CPUs).

    The weights are the ones the driver already resolved into the plugin's cache (``check_weights``); on
    another node the plugin resolves them again with that node's own environment and credentials.
    """

    def __init__(self, scorer_kwargs: dict[str, Any], torch_threads: int | None = None) -> None:
        import torch

        from iqa_plugin.inference.scorer import BatchScorer

        kwargs = dict(scorer_kwargs)
        if kwargs.get("device") == "cpu" and torch_threads:
            torch.set_num_threads(int(torch_threads))
        model = kwargs.pop("model")
        self.scorer = BatchScorer(model, **kwargs)
        self.model_name = str(self.scorer.model_name)
        self.weights_sha256 = self.scorer.weights_sha256

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
                    errors[j] = SCORE_ERROR
                    columns["width"][i][j] = columns["height"][i][j] = None
                else:
                    scores[j] = score
            all_scores.append(scores)
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


def write_blocks(batch: pa.Table, *, dst: str, settings: StorageSettings | None = None) -> pa.Table:
    """Write each scored job block to ``DST/part-<block>.parquet``; return one summary row per block.

    Transient store errors are retried by the store's client (botocore, s3fs); a write that still fails
    fails the job, and a rerun resumes (the part is written whole or not at all).
    """
    summary: dict[str, list[Any]] = {"block": [], "rows": [], "scored": [], "errors": [], "model": [],
                                     "weights_sha256": []}
    for row in batch.to_pylist():
        write_parquet_part(block_output_table(row), dst, row["block"], settings)
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
