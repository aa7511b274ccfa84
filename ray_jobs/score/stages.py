"""The stages of the score job, each a plain function or callable class that Ray Data runs on blocks.

The unit that flows through the pipeline is one *job block*: a row holding the lists of ids and URIs
that end up in one ``part-<block>.parquet``. Because a job block is a single row, Ray can never split it
across tasks, so a retried task rewrites exactly the same file with exactly the same ids.

``fetch_and_decode_blocks`` (CPU tasks) -> ``BlockScorer`` (actor pool, GPU or CPU) -> ``write_blocks``.

With device decoding (``decode: gpu``, or ``auto`` on CUDA actors) the fetch tasks pass the JPEGs a GPU
decoder can take (:func:`iqa_plugin.data.jpeg_header.device_fallback`) still encoded (dtype
:data:`ENCODED_JPEG`, shape and size from the header) and decode the rest as before; the actor decodes
each block's JPEGs in one batch on its device, resizes them there, and sends any JPEG the device decoder
refuses through the CPU decoder (:func:`decode_one`), so rows and reason codes do not depend on where
an image was decoded.

Reason codes in the ``error`` column come from the one table, :data:`iqa_plugin.data.reasons.REASONS`
(everything else of a row is null where it cannot be known). Reading is tried once here: the storage
client already retried transient errors (botocore, s3fs) before ``fetch_error`` is recorded.

Arguments of these tasks and actors carry :class:`ray_jobs.runtime.StorageSettings` (an endpoint, no
credential): each worker takes its credentials from its own environment.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
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


#: ``dtype`` of an entry whose ``pixels`` are still the encoded JPEG: the scoring actor decodes it.
ENCODED_JPEG = "jpeg"


def fetch_and_decode_blocks(batch: pa.Table, *, max_pixels: int, min_side: int, short_side: int | None,
                            threads: int, settings: StorageSettings | None = None,
                            device_decode: bool = False) -> pa.Table:
    """Fetch and decode every input of each job block; failures become per-input reason codes.
    ``device_decode``: JPEGs a GPU decoder can take stay encoded (:data:`ENCODED_JPEG`) for the actor."""
    limits = {"max_pixels": max_pixels, "min_side": min_side, "short_side": short_side,
              "device_decode": device_decode}
    tables = []
    for row in batch.to_pylist():
        uris: list[str] = row["uris"]
        with ThreadPoolExecutor(max_workers=max(1, min(threads, len(uris)))) as pool:
            fetched = list(pool.map(lambda uri: _fetch_one(uri, settings), uris))
        tables.append(decode_block(row["block"], row["ids"], uris, fetched, **limits))
    if not tables:
        return decode_block("", [], [], [], **{**limits, "short_side": None}).slice(0, 0)
    return pa.concat_tables(tables)


def decode_block(block: str, ids: list[str], uris: list[str], fetched: list[tuple[bytes | None, str | None]], *,
                 max_pixels: int, min_side: int, short_side: int | None, device_decode: bool = False) -> pa.Table:
    """The one-row decoded job block of inputs already fetched: ``fetched[i]`` is ``(bytes, None)`` or
    ``(None, reason)`` for ``ids[i]`` (other sources' readers, e.g. WebDataset shards, call this too).
    ``device_decode``: JPEGs a GPU decoder can take stay encoded (:data:`ENCODED_JPEG`) for the actor."""
    from iqa_plugin.data.jpeg_header import route_jpeg

    sizes, widths, heights, errors, pixels, shapes, dtypes = [], [], [], [], [], [], []
    for uri, (data, reason) in zip(uris, fetched, strict=True):
        array = width = height = None
        if data is not None and device_decode:
            header, fallback = route_jpeg(data, max_pixels=max_pixels, min_side=min_side)
            if header is not None and fallback is None:  # the actor decodes it, on its device
                for column, value in ((sizes, len(data)), (widths, header.width), (heights, header.height),
                                      (errors, None), (pixels, data), (shapes, [header.height, header.width, 3]),
                                      (dtypes, ENCODED_JPEG)):
                    column.append(value)
                continue
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
        decode: with device decoding, the fetch stage's ``{max_pixels, min_side, short_side}``: encoded
            JPEGs (:data:`ENCODED_JPEG`) are decoded on the scorer's device, anything it refuses on the CPU.
        warmup_sizes: ``(height, width)`` input sizes compiled before the first block (with ``compile``).

    The weights are the ones the driver already resolved into the plugin's cache (``check_weights``); on
    another node the plugin resolves them again with that node's own environment and credentials.
    """

    decode: dict[str, Any] | None = None
    jpeg_decoder: Any = None

    def __init__(self, scorer_kwargs: dict[str, Any], torch_threads: int | None = None,
                 decode: dict[str, Any] | None = None, warmup_sizes: Sequence[tuple[int, int]] = ()) -> None:
        import torch

        from iqa_plugin.inference.scorer import BatchScorer

        kwargs = dict(scorer_kwargs)
        if kwargs.get("device") == "cpu" and torch_threads:
            torch.set_num_threads(int(torch_threads))
        model = kwargs.pop("model")
        self.scorer = BatchScorer(model, **kwargs)
        if self.scorer.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # batches hold one shape, and shapes repeat over a job
        self.model_name = str(self.scorer.model_name)
        self.weights_sha256 = self.scorer.weights_sha256
        self.decode = decode
        if decode is not None:
            self.jpeg_decoder = self.make_jpeg_decoder(self.scorer.device)
        if warmup_sizes:
            self.scorer.warm_up(warmup_sizes)

    def make_jpeg_decoder(self, device: Any) -> Any:
        """The batched JPEG decoder on ``device`` (:data:`iqa_plugin.data.device_decode.JpegBatchDecoder`):
        torchvision's (nvjpeg on CUDA). Subclasses inject another (tests: one that refuses some images)."""
        from iqa_plugin.data.device_decode import torchvision_jpeg_decoder

        return torchvision_jpeg_decoder(device)

    def _score_images(self, images: list[Any]) -> list[float]:
        if all(isinstance(image, np.ndarray) for image in images):
            return self.scorer.score_arrays(images)
        from iqa_plugin.data.images import array_to_tensor

        return self.scorer.score_tensors([array_to_tensor(image) if isinstance(image, np.ndarray) else image
                                          for image in images])

    def _score(self, arrays: list[Any]) -> list[float | None]:
        """Scores of decoded images (arrays, or uint8 tensors decoded on the device); None where it fails."""
        try:
            return [float(s) for s in self._score_images(arrays)]
        except Exception:
            scores: list[float | None] = []
            for array in arrays:  # isolate the image the model cannot take
                try:
                    scores.append(float(self._score_images([array])[0]))
                except Exception:
                    scores.append(None)
            return scores

    def _decode_on_device(self, encoded: dict[int, tuple[bytes, str, list[int]]], images: dict[int, Any],
                          errors: list[str | None], widths: list[int | None], heights: list[int | None]) -> None:
        """Decode the block's encoded JPEGs (index -> (bytes, uri, shape)) in one device batch into
        ``images``; each one the device refuses takes the CPU path, its reason included."""
        from iqa_plugin.data.device_decode import decode_jpegs, resize_uint8_short_side

        assert self.decode is not None
        indices = list(encoded)
        decoded = decode_jpegs([encoded[j][0] for j in indices], self.jpeg_decoder,
                               expected_sizes=[tuple(encoded[j][2][:2]) for j in indices])
        short_side = self.decode["short_side"]
        for j, image in zip(indices, decoded, strict=True):
            if image is not None:
                images[j] = image if short_side is None else resize_uint8_short_side(image, short_side)
                continue
            data, uri, _ = encoded[j]
            array, widths[j], heights[j], errors[j] = decode_one(data, uri=uri, **self.decode)
            if array is not None:
                images[j] = array

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
            images: dict[int, Any] = {}
            encoded: dict[int, tuple[bytes, str, list[int]]] = {}
            for j, err in enumerate(errors):
                if err is not None:
                    continue
                if dtypes[i][j] == ENCODED_JPEG:
                    encoded[j] = (row_pixels[j].as_py(), columns["uris"][i][j], shapes[i][j])
                else:
                    images[j] = np.frombuffer(row_pixels[j].as_buffer(), dtype=dtypes[i][j]).reshape(shapes[i][j])
            if encoded:
                self._decode_on_device(encoded, images, errors, columns["width"][i], columns["height"][i])
            index = sorted(images)
            scores: list[float | None] = [None] * len(errors)
            for j, score in zip(index, self._score([images[j] for j in index]) if index else [], strict=True):
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
