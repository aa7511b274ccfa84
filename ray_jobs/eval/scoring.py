"""Scoring for ``iqa eval``: the score job's own Ray Data pipeline, with a cache in front of it.

1. **Hash** every image (and reference) once, in Ray tasks: sha256 of the bytes is the image's identity.
2. **Per metric**, the cache is a score-job output folder ``CACHE/<metric>/<weights key>/<settings>/part-*.parquet``
   (``<settings>``: every other setting that changes scores, :func:`settings_key`, also recorded in its
   ``_iqa/identity.json``) whose ids are content keys (``<image sha256>`` or, for full-reference metrics,
   ``<image sha256>.<reference sha256>``). The keys already there are not scored again; the rest go
   through :func:`ray_jobs.score.job.execute_blocks` (fetch + decode tasks -> scoring actors -> one Parquet
   part per block, retried blocks rewrite themselves) with :class:`~ray_jobs.score.stages.BlockScorer`
   subclassed only to build any metric (plugin, pyiqa, baseline) and to hand references to FR metrics.
   Rows whose error is transient (``iqa_plugin.data.reasons``) are dropped and scored again, as the score
   job's reruns do (:func:`ray_jobs.score.output.reconcile`).

A second evaluation of the same images is all cache hits (no model is loaded); a changed checkpoint has
another weights key (:func:`iqa_plugin.eval.metrics.weights_key`), another resolution, dtype or decode limit
another settings key, and so another folder: it is rescored.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ray_jobs.config import DEFAULT_MAX_PIXELS
from ray_jobs.io import chunked, iter_part_columns
from ray_jobs.runtime import StorageSettings, join_uri, protocol_of
from ray_jobs.score.stages import BlockScorer, FetchError, decode_one, fetch_bytes

Log = Callable[[str], None]
_HASH_BLOCK = 256  # URIs per hashing task


def hash_blocks(batch: pa.Table, *, threads: int, settings: StorageSettings | None = None) -> pa.Table:
    """Ray Data stage: sha256 of each URI's bytes (``None`` and a reason code when it cannot be read)."""
    out: dict[str, list[Any]] = {"uri": [], "sha256": [], "error": []}
    uris = [uri for row in batch.column("uris").to_pylist() for uri in row]

    def digest(uri: str) -> tuple[str | None, str | None]:
        try:
            return hashlib.sha256(fetch_bytes(uri, settings)).hexdigest(), None
        except FetchError as error:
            return None, error.reason

    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(uris)))) as pool:
        for uri, (sha, reason) in zip(uris, pool.map(digest, uris), strict=True):
            out["uri"].append(uri)
            out["sha256"].append(sha)
            out["error"].append(reason)
    return pa.table({k: pa.array(v, pa.string()) for k, v in out.items()})


def hash_uris(uris: list[str], *, threads: int = 16, settings: StorageSettings | None = None) -> dict[str, tuple]:
    """``uri -> (sha256, None)`` or ``(None, reason)`` for every URI.

    Local files are hashed here in threads (a second evaluation then starts no Ray at all); remote
    objects in Ray tasks, started or joined by the caller, so the reads scale with the cluster.
    """
    unique = sorted(set(uris))
    if not unique:
        return {}
    blocks = [pa.table({"uris": pa.array([chunk], pa.list_(pa.string()))}) for chunk in chunked(unique, _HASH_BLOCK)]
    if all(protocol_of(uri) == "file" for uri in unique):
        tables = [hash_blocks(block, threads=threads, settings=settings) for block in blocks]
    else:
        import ray

        ds = ray.data.from_arrow(blocks).map_batches(
            hash_blocks, batch_size=1, batch_format="pyarrow", num_cpus=0.5,
            fn_kwargs={"threads": threads, "settings": settings})
        tables = list(ds.iter_batches(batch_size=None, batch_format="pyarrow"))
    return {row["uri"]: (row["sha256"], row["error"]) for table in tables for row in table.to_pylist()}


def needs_ray(uris: list[str]) -> bool:
    """True when hashing ``uris`` reads an object store (done in Ray tasks)."""
    return any(protocol_of(uri) != "file" for uri in uris)


def eval_scorer_class(references: dict[str, str], short_side: int | None = None) -> type[BlockScorer]:
    """A :class:`BlockScorer` for any evaluation metric; ``references`` maps a reference's sha256 to its URI
    (decoded and resized like the images: ``short_side``).

    Defined in a function so Ray ships it to the workers by value, references included.
    """

    class EvalBlockScorer(BlockScorer):
        """Builds the metric with :func:`iqa_plugin.eval.metrics.build_scorer`; FR metrics get references."""

        def __init__(self, scorer_kwargs: dict[str, Any], torch_threads: int | None = None,
                     settings: StorageSettings | None = None) -> None:
            import torch

            from iqa_plugin.eval.metrics import build_scorer, metric_info

            kwargs = dict(scorer_kwargs)
            name = kwargs.pop("model")
            device = kwargs.pop("device", "cpu")
            weights = kwargs.pop("pretrained_model_path", None)
            if device == "cpu" and torch_threads:
                torch.set_num_threads(int(torch_threads))
            info = metric_info(name)
            self.settings = settings
            self.scorer = build_scorer(name, device=device, weights=weights,
                                       **(kwargs if info.family == "plugin" else {}))
            self.model_name = name
            self.weights_sha256 = self.scorer.weights_sha256
            self.full_reference = info.full_reference
            self.max_pixels = kwargs.get("max_pixels") or DEFAULT_MAX_PIXELS
            self._refs: OrderedDict[str, np.ndarray | None] = OrderedDict()
            self._pending: list[list[str]] = []

        def _reference(self, ref_sha: str) -> np.ndarray | None:
            if ref_sha not in self._refs:
                uri = references.get(ref_sha)
                array = None
                if uri is not None:
                    try:
                        array = decode_one(fetch_bytes(uri, self.settings), uri=uri, max_pixels=self.max_pixels,
                                           min_side=1, short_side=short_side)[0]
                    except FetchError:
                        array = None
                self._refs[ref_sha] = array
                while len(self._refs) > 64:  # a few references serve many distorted images
                    self._refs.popitem(last=False)
            return self._refs[ref_sha]

        def __call__(self, batch: pa.Table) -> pa.Table:
            if self.full_reference:
                ids, errors = batch.column("ids").to_pylist(), batch.column("error").to_pylist()
                self._pending = [[key.split(".", 1)[1] for key, err in zip(row_ids, row_err, strict=True)
                                  if err is None] for row_ids, row_err in zip(ids, errors, strict=True)]
            return super().__call__(batch)

        def _score(self, arrays: list[np.ndarray]) -> list[float | None]:
            if not self.full_reference:
                return super()._score(arrays)
            ref_keys = self._pending.pop(0)
            scores: list[float | None] = []
            for array, ref_key in zip(arrays, ref_keys, strict=True):
                reference = self._reference(ref_key)
                try:
                    scores.append(None if reference is None else
                                  float(self.scorer.score_arrays([array], refs=[reference])[0]))
                except Exception:  # a size mismatch or a metric failure on this pair only
                    scores.append(None)
            return scores

    return EvalBlockScorer


@dataclass
class MetricScores:
    """One metric's scores by content key, and what this run had to compute."""

    name: str
    weights_key: str
    folder: str
    scores: dict[str, float]
    errors: dict[str, str]
    n_cached: int
    n_scored_now: int
    elapsed_s: float = 0.0


def settings_key(config: Any, family: str) -> str:
    """The settings of ``config`` (a :class:`ray_jobs.score.config.ScoreJobConfig`) besides the weights that
    change a metric's scores or error rows: ``native-fp32-min32-px89478485`` (``dtype`` for plugin metrics
    only: the others ignore it)."""
    parts = [config.resolution.replace(":", ""), *([config.dtype] if family == "plugin" else []),
             f"min{config.min_side}", f"px{config.max_pixels}"]
    return "-".join(parts)


def cache_identity(config: Any, weights_key: str, family: str) -> dict[str, Any]:
    """What a cache folder's scores depend on (recorded in its ``_iqa/identity.json``)."""
    return {"model": config.model, "weights_key": weights_key, "resolution": config.resolution,
            "dtype": config.dtype if family == "plugin" else None, "min_side": config.min_side,
            "max_pixels": config.max_pixels}


def cache_folder(cache: str, metric: str, key: str, settings: str) -> str:
    """``CACHE/<metric>/<weights key>/<settings key>`` (file-name safe)."""
    safe = re.sub(r"[^A-Za-z0-9_.+-]", "_", metric)
    return join_uri(cache, safe, re.sub(r"[^A-Za-z0-9_.+-]", "_", key)[:80],
                    re.sub(r"[^A-Za-z0-9_.+-]", "_", settings))


def _check_cache_identity(folder: str, wanted: dict[str, Any]) -> None:
    """Record ``wanted`` in a new cache folder; refuse one recorded for other settings."""
    from ray_jobs.errors import UserError
    from ray_jobs.io import meta_uri, read_json
    from ray_jobs.score.output import write_identity

    recorded = read_json(meta_uri(folder, "identity.json"))
    if recorded is None:
        write_identity(folder, wanted)
    elif recorded != wanted:
        differs = ", ".join(f"{k} {recorded.get(k)} -> {v}" for k, v in wanted.items() if recorded.get(k) != v)
        raise UserError(f"--cache {folder} holds scores of other settings ({differs}): delete that folder, "
                        "or give another --cache")


def score_metric(config: Any, keys: dict[str, str], references: dict[str, str], key: str,
                 log: Log, start_ray: Callable[[], None], identity: dict[str, Any] | None = None) -> MetricScores:
    """Score every content key of ``keys`` (key -> image URI) not yet in the cache (or cached with a
    transient error), through the score job's pipeline; ``config`` is the
    :class:`ray_jobs.score.config.ScoreJobConfig` of this metric (``out`` = its cache folder, whose recorded
    ``identity`` must match). ``start_ray`` is called first when anything is left to score."""
    import time

    from ray_jobs.score.job import execute_blocks, plan_blocks
    from ray_jobs.score.output import reconcile, scan_output

    if identity is not None:
        _check_cache_identity(config.out, identity)
    ordered = sorted(keys)
    inputs = pa.table({"id": pa.array(ordered, pa.string()), "uri": pa.array([keys[k] for k in ordered], pa.string())})
    existing = scan_output(config.out)
    every_id = {id_ for ids, _ in existing.parts.values() for id_ in ids}  # the cache serves other datasets too
    kept, dropped = reconcile(config.out, existing, every_id)
    if dropped.get("transient"):
        log(f"{config.model}: {dropped['transient']} cached rows with a transient error are scored again")
    done = kept & set(ordered)
    blocks = plan_blocks(inputs, done, config.block_size)
    n_pending = len(ordered) - len(done)
    log(f"{config.model}: {len(done)} of {len(ordered)} images cached in {config.out}; scoring {n_pending}")
    started = time.monotonic()
    if blocks:
        start_ray()
        execute_blocks(config, blocks, n_pending, log, eval_scorer_class(references, config.short_side))
    scores: dict[str, float] = {}
    errors: dict[str, str] = {}
    wanted = set(ordered)
    for table in iter_part_columns(config.out, ["id", "score", "error"]):
        for id_, score, error in zip(*(table.column(c).to_pylist() for c in ("id", "score", "error")), strict=True):
            if id_ not in wanted:
                continue
            if error is None and score is not None:
                scores[id_] = float(score)
            else:
                errors[id_] = error or "score_error"
    return MetricScores(config.model, key, config.out, scores, errors, len(done), n_pending,
                        round(time.monotonic() - started, 3))
