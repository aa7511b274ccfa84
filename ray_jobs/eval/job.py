"""``iqa eval`` / ``python -m ray_jobs.eval``: how well metrics agree with people, as IQA papers report it.

Rated images (:mod:`iqa_plugin.eval.load`, or the synthetic benchmark) -> every image hashed once in Ray
tasks -> per metric, the images not in the score cache scored through the score job's Ray Data path
(:mod:`ray_jobs.eval.scoring`) -> SRCC / KRCC / PLCC (raw and logistic-fitted) with bootstrap intervals
(:mod:`iqa_plugin.eval.summary`) -> ``OUT/results.json``, ``OUT/results.md`` (also printed),
``OUT/report.html`` and ``OUT/scores.parquet`` (one row per rated image, one column per metric).

The synthetic benchmark always adds two baselines, ``random`` and ``mean_brightness``, so a reader sees
in the same table what a metric that knows nothing scores.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from ray_jobs.cli import job_main
from ray_jobs.errors import UserError
from ray_jobs.eval.config import EvalJobConfig
from ray_jobs.runtime import StorageSettings, ensure_ray, filesystem_for, join_uri

Log = Callable[[str], None]
CONFIG = EvalJobConfig


def _log(message: str) -> None:
    print(message, flush=True)


def load_dataset(config: EvalJobConfig, log: Log):
    """The rated images of this run (the synthetic set is built once per recipe, locally)."""
    from iqa_plugin.env import cache_dir
    from iqa_plugin.eval.datasets import DatasetError
    from iqa_plugin.eval.load import load_mos_dataset
    from iqa_plugin.eval.synthetic import build_synthetic

    try:
        if config.synthetic:
            recipe = json.dumps([config.synthetic_size, config.seed, config.synthetic_photos,
                                 config.synthetic_kinds, config.synthetic_levels], sort_keys=True)
            folder = cache_dir() / "eval-synthetic" / hashlib.sha256(recipe.encode()).hexdigest()[:12]
            return build_synthetic(folder, size=config.synthetic_size, seed=config.seed,
                                   photos=config.synthetic_photos, kinds=config.synthetic_kinds,
                                   levels=config.synthetic_levels, progress=log)
        return load_mos_dataset(config.dataset or "", fmt=config.format, root=config.root, images=config.images,
                                path_column=config.path_column, score_column=config.score_column,
                                image_column=config.image_column, split=config.split,
                                mos_lower_better=config.mos_lower_better)
    except (DatasetError, ValueError) as error:
        raise UserError(str(error)) from None


def check_metrics(config: EvalJobConfig) -> list[Any]:
    """The :class:`~iqa_plugin.eval.metrics.MetricInfo` of every metric (baselines added for --synthetic);
    checked before any data is read."""
    from iqa_plugin.eval.metrics import BASELINES, MetricError, metric_info

    names = list(config.model) + ([b for b in BASELINES if b not in config.model] if config.synthetic else [])
    infos = []
    for name in names:
        try:
            info = metric_info(name)
        except MetricError as error:
            raise UserError(str(error)) from None
        infos.append(info)
    unknown = sorted(set(config.weights) - set(names))
    if unknown:
        raise UserError(f"--weights names {', '.join(unknown)}, which are not among --model {', '.join(names)}")
    return infos


def resolve_weight_keys(config: EvalJobConfig, infos: list[Any], log: Log) -> dict[str, str]:
    """Each metric's weights key, resolving (and verifying) weights on the driver before Ray starts."""
    from iqa_plugin.eval.metrics import weights_key
    from iqa_plugin.hub.weights import WeightsError

    keys = {}
    for info in infos:
        try:
            keys[info.name] = weights_key(info.name, config.weights.get(info.name))
        except (WeightsError, FileNotFoundError, ValueError) as error:
            raise UserError(f"--model {info.name}: {str(error).splitlines()[0]}") from None
        log(f"{info.name}: {info.family} metric, {'FR' if info.full_reference else 'NR'}, "
            f"{'lower' if info.lower_better else 'higher'} is better, weights {keys[info.name][:16]}")
    return keys


def run_eval(config: EvalJobConfig, *, log: Log = _log) -> dict[str, Any]:
    """Run the evaluation end to end; return what ``results.json`` holds."""
    from iqa_plugin.eval.summary import group_names, ranking, scatter_points, summarize_metric
    from ray_jobs.eval.render import html_page, markdown
    from ray_jobs.eval.scoring import (
        cache_folder,
        cache_identity,
        hash_uris,
        needs_ray,
        score_metric,
        settings_key,
    )

    started_at = dt.datetime.now(dt.timezone.utc)
    t0 = time.monotonic()
    infos = check_metrics(config)
    dataset = load_dataset(config, log)
    if not dataset.items:
        raise UserError(f"{dataset.source}: no usable rated image ({len(dataset.skipped)} rows skipped: "
                        f"{dataset.skipped_by_reason()}); check the paths and the score column")
    for info in infos:
        if info.full_reference and not dataset.full_reference:
            raise UserError(f"--model {info.name}: a full-reference metric, but the dataset has no reference "
                            "images; use a dataset with a reference column, a pyiqa FR layout, or --synthetic")
    keys = resolve_weight_keys(config, infos, log)
    items = dataset.items
    log(f"dataset: {dataset.name}, {len(items)} rated images"
        + (f", {len(dataset.skipped)} rows skipped {dataset.skipped_by_reason()}" if dataset.skipped else ""))
    needs_refs = any(info.full_reference for info in infos)
    uris = [item.uri for item in items] + ([item.ref_uri for item in items if item.ref_uri] if needs_refs else [])
    runs = {}
    ray_started: list[bool] = []
    with contextlib.ExitStack() as stack:
        def start_ray() -> None:  # only when something needs it: a fully cached local run starts no Ray
            if not ray_started:
                stack.enter_context(ensure_ray(min_cpus=config.actors * config.cpus_per_actor + 1, log=log))
                ray_started.append(True)

        if needs_ray(uris):
            start_ray()
        log(f"hashing {len(set(uris))} files (the score cache is keyed by content)")
        hashes = hash_uris(uris, settings=StorageSettings.from_env())
        references = {hashes[i.ref_uri][0]: i.ref_uri for i in items if i.ref_uri and hashes.get(i.ref_uri, (None,))[0]}
        item_keys: dict[str, list[str | None]] = {}
        for info in infos:
            per_item, wanted = [], {}
            for item in items:
                image_sha = hashes[item.uri][0]
                ref_sha = hashes[item.ref_uri][0] if info.full_reference and item.ref_uri else None
                key = None if image_sha is None or (info.full_reference and ref_sha is None) else \
                    (f"{image_sha}.{ref_sha}" if info.full_reference else image_sha)
                per_item.append(key)
                if key is not None:
                    wanted.setdefault(key, item.uri)
            item_keys[info.name] = per_item
            settings = config.score_config(info.name, "-")
            folder = cache_folder(config.cache_root, info.name, keys[info.name], settings_key(settings, info.family))
            runs[info.name] = score_metric(config.score_config(info.name, folder), wanted, references,
                                           keys[info.name], log, start_ray,
                                           cache_identity(settings, keys[info.name], info.family))
    metrics, scatter, columns = {}, {}, {}
    for info in infos:
        run = runs[info.name]
        scores, failures = [], []
        for item, key in zip(items, item_keys[info.name], strict=True):
            score = run.scores.get(key) if key else None
            scores.append(score)
            failures.append(None if score is not None else (run.errors.get(key, "score_error") if key else
                                                            hashes[item.uri][1] or "missing_reference"))
        log(f"statistics: {info.name} ({config.bootstrap} bootstrap resamples)")
        summary = summarize_metric(items, scores, failures, lower_better=info.lower_better,
                                   bootstrap=config.bootstrap, confidence=config.confidence, seed=config.seed)
        metrics[info.name] = {"family": info.family, "full_reference": info.full_reference,
                              "lower_better": info.lower_better, "weights_key": keys[info.name],
                              "cache": run.folder, "n_cached": run.n_cached, "n_scored_now": run.n_scored_now,
                              "scoring_s": run.elapsed_s, **summary}
        scatter[info.name] = [list(p) for p in scatter_points(items, scores, config.scatter_points, config.seed)]
        columns[info.name] = scores
    results = {
        "dataset": {"name": dataset.name, "source": dataset.source, "n_items": len(items),
                    "n_skipped": len(dataset.skipped), "skipped_by_reason": dataset.skipped_by_reason(),
                    "skipped": [vars(s) for s in dataset.skipped[:1000]], "notes": dataset.notes,
                    "mos_lower_better": dataset.mos_lower_better},
        "metrics": metrics, "ranking": ranking(metrics), "groups": group_names(items), "scatter": scatter,
        "config": config.model_dump(mode="json"), "started": started_at.isoformat(),
        "elapsed_s": round(time.monotonic() - t0, 3),
    }
    _write_outputs(config.out, results, items, columns, markdown(results), html_page(results))
    print(markdown(results), flush=True)
    log(f"results: {join_uri(config.out, 'results.json')}  report: {join_uri(config.out, 'report.html')}")
    return results


def _write_outputs(out: str, results: dict[str, Any], items: list[Any], columns: dict[str, list],
                   table: str, page: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, root = filesystem_for(out)
    fs.makedirs(root, exist_ok=True)
    for name, text in (("results.json", json.dumps(results, indent=2, sort_keys=True) + "\n"),
                       ("results.md", table), ("report.html", page)):
        with fs.open(join_uri(root, name), "w") as handle:
            handle.write(text)
    table_data = {"id": [i.id for i in items], "uri": [i.uri for i in items], "mos": [i.mos for i in items],
                  "group": [i.group for i in items], **{f"score_{k}": v for k, v in columns.items()}}
    with fs.open(join_uri(root, "scores.parquet"), "wb") as handle:
        pq.write_table(pa.table(table_data), handle)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """``--weights NAME=PATH`` (repeatable): the one option that is not a plain config field."""
    parser.add_argument("--weights", action="append", metavar="NAME=PATH", dest="weights_flag",
                        help="checkpoint of one metric (path or URL), e.g. qualiclip=QualiCLIP.pth; repeatable")


def prepare_values(args: argparse.Namespace, values: dict[str, Any]) -> dict[str, Any]:
    """Turn ``--weights NAME=PATH`` flags into the ``weights`` mapping."""
    pairs = getattr(args, "weights_flag", None) or []
    if pairs:
        weights = {}
        for pair in pairs:
            name, sep, path = pair.partition("=")
            if not sep or not name.strip() or not path.strip():
                raise UserError(f"--weights {pair}: expected NAME=PATH, e.g. qualiclip=/models/QualiCLIP.pth")
            weights[name.strip()] = path.strip()
        values["weights"] = weights
    return values


def run(config: EvalJobConfig) -> int:
    """Run the evaluation; 0 when it completed (images that could not be scored are counted, not fatal)."""
    run_eval(config)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m ray_jobs.eval``: the same options as ``iqa eval``."""
    return job_main("eval", argv)


if __name__ == "__main__":
    sys.exit(main())
