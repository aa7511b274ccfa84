"""The training job: ``iqa train RECIPE --shards SRC --out RUN [--workers N] [--gpus-per-worker G] [--config run.yaml]``.

::

    iqa shards --source photos/ --out shards/ --kind qualiclip --crop 96
    iqa train qualiclip --shards shards/ --out runs/demo --workers 2 --steps 300
    iqa shards --source photos/ --out sr-shards/ --kind sr --hr-size 128 --realworld-fraction 0
    iqa train sfd --shards sr-shards/ --out runs/sfd --workers 2 --config sfd.yaml
    python -m ray_jobs.train qualiclip ...       # the same (ray job submit -- python -m ray_jobs.train ...)

The driver builds the Ray Data dataset over the shards and runs Ray Train's ``TorchTrainer`` (DDP; gloo
on CPU, nccl on GPU) with :func:`ray_jobs.train.harness.train_loop_per_worker`. The run lives under
``<out>/<run_name>/`` (Ray Train's checkpoints ``step_<n>``), the export under ``<out>/export/``.

* A worker that dies: Ray Train restarts the group from the last checkpoint (``max_failures`` times).
* The driver killed: the same command finds the run in storage and resumes ("resuming from step K").
* A finished run (its export card exists): the same command says so and does nothing.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Callable
from typing import Any

from ray_jobs.errors import UserError
from ray_jobs.train.config import TrainJobConfig

CONFIG = TrainJobConfig
_STEP_DIR = re.compile(r"step_(\d{8})$")
#: Ray Train's run snapshot (ray.train.v2._internal.constants.CHECKPOINT_MANAGER_SNAPSHOT_FILENAME).
SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"


def latest_checkpoint_step(out: str, run_name: str) -> int | None:
    """The step of the checkpoint Ray Train will restore run ``run_name`` under ``out`` from (None: none).

    That is the latest checkpoint Ray Train *recorded* in its run snapshot
    (``checkpoint_manager_snapshot.json``), not the newest ``step_<n>`` folder: a driver killed while a
    checkpoint was being written or reported can leave a folder that was never recorded, and the rerun
    restores the recorded one before it.
    """
    import json

    from ray_jobs.runtime import filesystem_for, join_uri

    fs, path = filesystem_for(join_uri(out, run_name, SNAPSHOT_FILE))
    if not fs.exists(path):
        return None
    try:
        latest = json.loads(fs.cat_file(path)).get("latest_checkpoint_result")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return None  # unreadable snapshot: Ray Train itself will say so when it starts
    match = _STEP_DIR.search(str((latest or {}).get("checkpoint_dir_name", "")))
    return int(match.group(1)) if match else None


def finished_card(config: TrainJobConfig) -> str | None:
    """The export card's URI when the run already finished, else None."""
    from ray_jobs.runtime import filesystem_for, full_uri, join_uri

    fs, path = filesystem_for(join_uri(config.out, "export", f"{config.card_name()}.yaml"))
    return full_uri(fs, path) if fs.exists(path) else None


def _print_progress(queue: Any, steps: int, stop: threading.Event, describe: Callable[[dict], str]) -> None:
    """Driver-side progress lines from rank 0's reports (worker output is not forwarded by default)."""
    from ray.util.queue import Empty

    while not stop.is_set():
        try:
            item = queue.get(timeout=1.0)
        except Empty:
            continue
        except Exception:  # the queue actor is gone (Ray shutting down)
            return
        if item.get("event") == "start":
            print(f"iqa train: {item['world']} workers started at step {item['step']}", flush=True)
            continue
        print(f"iqa train: step {item['step']}/{steps} {describe(item)} {item['samples_per_s']:.1f} samples/s", flush=True)


def _storage_path(out: str) -> str:
    import os

    from ray_jobs.runtime import protocol_of

    return os.path.abspath(out) if protocol_of(out) == "file" else out


def _trainer(config: TrainJobConfig, dataset: Any, loop_config: dict[str, Any]) -> Any:
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from ray_jobs.train.harness import train_loop_per_worker

    resources = {"CPU": config.cpus_per_worker}
    if config.gpus_per_worker:
        resources["GPU"] = config.gpus_per_worker
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=config.workers, use_gpu=config.gpus_per_worker > 0, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=config.run_name,
            storage_path=_storage_path(config.out),
            failure_config=FailureConfig(max_failures=config.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=config.keep_checkpoints),
        ),
        datasets={"train": dataset},
        dataset_config=DataConfig(datasets_to_split=["train"]),
    )


def _check_shards(config: TrainJobConfig, spec: Any) -> None:
    """Fail before Ray starts when the shards are missing, unfinished or unfit for the recipe."""
    from ray_jobs.shards.data import read_manifest

    try:
        spec.check_shards(read_manifest(config.shards), spec.config_class.model_validate(config.recipe))
    except (FileNotFoundError, ValueError) as error:
        raise UserError(f"--shards {config.shards}: {error}") from None


def _check_init(config: TrainJobConfig, spec: Any) -> None:
    """Resolve the recipe's initial weights (``recipe.init``: a card such as ``clip_rn50_openai``, a file or
    a URL) in the driver before Ray starts: downloaded and verified once here, and missing or offline
    weights fail at once in one line (URL, expected path, ``IQA_PLUGIN_CACHE``) instead of in every worker."""
    init = getattr(spec.config_class.model_validate(config.recipe), "init", None)
    if not isinstance(init, str) or init == "random":
        return
    from iqa_plugin.hub.clip_checkpoint import clip_weights_path
    from iqa_plugin.hub.weights import WeightsError

    try:
        clip_weights_path(init)
    except (WeightsError, ValueError, KeyError, FileNotFoundError) as error:
        detail = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        raise UserError(f"recipe.init {init}: {detail}") from None


def _resolve(config: TrainJobConfig, spec: Any) -> TrainJobConfig:
    """The job config with the recipe's machine-dependent choices made in the driver (``spec.resolve``),
    printed; the workers and the export's provenance get the concrete values."""
    recipe = spec.resolve(dict(config.recipe))
    for key, value in recipe.items():
        if config.recipe.get(key) != value:
            before = config.recipe.get(key, "its default")
            print(f"iqa train: recipe.{key}: {value} (resolved on this driver from {before}; every worker uses it)")
    return config.model_copy(update={"recipe": recipe})


def _dataset(config: TrainJobConfig, spec: Any) -> Any:
    from ray_jobs.shards.data import shards_dataset

    try:
        dataset = shards_dataset(config.shards, kind=spec.shards_kind)
    except (FileNotFoundError, ValueError) as error:
        raise UserError(f"--shards {config.shards}: {error}") from None
    excluded = set(spec.excluded(spec.config_class.model_validate(config.recipe)))
    if excluded:
        dataset = dataset.filter(lambda row: row["distortion"] not in excluded)
    return dataset


def run(config: TrainJobConfig, *, before_step: Callable[[int, int, int], None] | None = None) -> int:
    """Train, checkpoint, export; 0 when the run finished (now or before). ``before_step``: see :func:`train`."""
    metrics = train(config, before_step=before_step)
    return 0 if metrics is None else _summarise(config, metrics)


def train(config: TrainJobConfig, *, before_step: Callable[[int, int, int], None] | None = None
          ) -> dict[str, Any] | None:
    """Run the training (or find it finished: returns None); returns rank 0's last reported metrics.

    ``before_step`` (for tests, e.g. to kill a worker): called in every worker before each optimiser step
    as ``before_step(step, rank, world)``, ``step`` counting from 1; Ray ships it to the workers by
    value when it is defined inside a function.
    """
    from ray.util.queue import Queue

    from ray_jobs.runtime import check_fits, ensure_ray
    from ray_jobs.train.recipes import default_validation_images, recipe_spec

    card = finished_card(config)
    if card is not None:
        print(f"iqa train: run {config.out} already finished; its export is {card}. Nothing to do "
              "(use another --out or --run-name to train again).")  # fmt: skip
        return None
    spec = recipe_spec(config.recipe_name)
    _check_init(config, spec)
    config = _resolve(config, spec)
    _check_shards(config, spec)
    resume = latest_checkpoint_step(config.out, config.run_name)
    print(f"iqa train: resuming {config.recipe_name} run {config.out} from step {resume}" if resume is not None
          else f"iqa train: starting {config.recipe_name} run {config.out} ({config.steps} steps, {config.workers} workers)")
    images = config.validation_images or default_validation_images()
    command = "iqa train " + " ".join(sys.argv[1:]) if sys.argv and "train" in sys.argv else "iqa train"
    with ensure_ray(min_cpus=config.workers * config.cpus_per_worker + 1):
        per_worker = {"CPU": config.cpus_per_worker, **({"GPU": config.gpus_per_worker} if config.gpus_per_worker else {})}
        check_fits(actors=config.workers, per_actor=per_worker, what=f"--workers {config.workers}", kind="worker",
                   fix="lower --workers, --gpus-per-worker or --cpus-per-worker, or use a bigger cluster (RAY_ADDRESS)")
        queue = Queue()
        loop_config = {"job": config.model_dump(mode="json"), "progress": queue, "validation_images": images,
                       "command": command, "before_step": before_step}  # fmt: skip
        stop = threading.Event()
        printer = threading.Thread(target=_print_progress, args=(queue, config.steps, stop, spec.progress), daemon=True)
        printer.start()
        try:
            result = _trainer(config, _dataset(config, spec), loop_config).fit()
        finally:
            stop.set()
            printer.join(timeout=5)
    return dict(result.metrics or {})


def _summarise(config: TrainJobConfig, metrics: dict[str, Any]) -> int:
    card = finished_card(config)
    if card is None:
        print(f"iqa train: the run ended at step {metrics.get('step')} without an export", file=sys.stderr)
        return 1
    if config.register_to:
        from iqa_plugin.hub.user_registry import add_card

        added = add_card(card, config.register_to, force=True)  # this run's export replaces an older one
        print(f"iqa train: card registered as {added.card} (serve it with IQA_PLUGIN_REGISTRY={added.card.parent})")
    from ray_jobs.train.recipes import recipe_spec

    spec = recipe_spec(config.recipe_name)
    usage = spec.front_door.format(name=config.card_name())
    print(f"iqa train: done: {metrics.get('step')} steps{spec.summary(metrics)}; model card {card} "
          f"({usage} once the card is in the registry)")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m ray_jobs.train``: the same options as ``iqa train``."""
    from ray_jobs.cli import job_main

    return job_main("train", argv)


if __name__ == "__main__":
    sys.exit(main())
