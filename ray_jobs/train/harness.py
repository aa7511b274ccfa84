"""The per-worker training loop of every recipe (Ray Train's ``train_loop_per_worker``).

Each DDP rank builds the recipe (same seed, so the same initial weights), restores the last checkpoint if
Ray Train hands one over (after a worker failure or a driver restart), reads its share of the shards
through ``get_dataset_shard('train')``, materialises each batch on its own device and steps. Every
``report_every`` steps all ranks call ``ray.train.report`` (a barrier); every ``checkpoint_every`` steps
rank 0 attaches a checkpoint named ``step_<8 digits>`` holding the recipe's state (every network,
optimiser, scheduler, EMA, step, RNG) and the data position (epoch, batches consumed in it). Rank 0
validates on held-out photos, and at the last step writes the recipe's export (``RecipeSpec.export``:
safetensors + cards) to ``<out>/export/`` before the final checkpoint.

Data position on resume: the epoch's stream is re-read and the consumed batches are skipped without
materialising them. Ray Data's streaming split does not pin rows to ranks, so the skipped rows are the
same *number*, not necessarily the same rows: the resumed run sees each epoch about once, not exactly.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

STATE_FILE = "state.pt"


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}"


def _restore(recipe: Any) -> dict[str, int]:
    """Load the checkpoint Ray Train hands over (if any) into ``recipe``; return the data position."""
    import ray.train
    import torch

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return {"epoch": 0, "batch_in_epoch": 0}
    with checkpoint.as_directory() as directory:
        state = torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)
    recipe.load_state_dict(state["recipe"])
    return {"epoch": int(state["epoch"]), "batch_in_epoch": int(state["batch_in_epoch"])}


def _checkpoint(recipe: Any, position: dict[str, int], directory: str) -> Any:
    import ray.train
    import torch

    torch.save({"recipe": recipe.state_dict(), **position}, Path(directory) / STATE_FILE)
    return ray.train.Checkpoint.from_directory(directory)


def _out_of_time(job: Any, started: float, world: int) -> bool:
    """Whether the time limit is reached, as rank 0 sees it (every rank gets the same answer)."""
    if job.time_limit_s is None:
        return False
    import torch
    import torch.distributed as dist

    flag = torch.tensor([1 if time.perf_counter() - started > job.time_limit_s else 0])
    if world > 1:
        dist.broadcast(flag, src=0)  # gloo handles CPU tensors; ranks must not disagree on the last step
    return bool(flag.item())


def _export(job: Any, spec: Any, recipe: Any, validation: dict[str, float], command: str) -> str:
    """Write the recipe's export (``spec.export``) under ``<out>/export/``; returns the main card's URI."""
    from iqa_plugin.training.export import write_export
    from ray_jobs.runtime import filesystem_for, full_uri, join_uri

    fs, root = filesystem_for(join_uri(job.out, "export"))
    provenance = {
        "command": command,
        "shards": job.shards,
        "steps": job.steps,
        "workers": job.workers,
        "batch_size_per_worker": job.batch_size,
        "recipe": recipe.config.model_dump(mode="json"),
        "validation": {k: round(v, 4) for k, v in validation.items()},
    }

    def write(name: str, tensors: Any, card_for: Any, also: Any = None) -> tuple[str, str]:
        return write_export(fs, root, name, tensors, card_for, lambda p: full_uri(fs, p), also)

    return spec.export(recipe, job.card_name(), provenance, write)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry point; ``loop_config``: ``job`` (TrainJobConfig as a dict), ``progress`` (a
    ``ray.util.queue.Queue`` or None), ``validation_images``, ``command``, ``before_step`` (None or a
    callable ``(step, rank, world)`` run before each optimiser step, ``step`` counting from 1: a test hook,
    see :func:`ray_jobs.train.job.train`)."""
    import ray.train
    import ray.train.torch
    import torch

    from ray_jobs.train.config import TrainJobConfig
    from ray_jobs.train.recipes import recipe_spec

    job = TrainJobConfig.model_validate(loop_config["job"])
    spec = recipe_spec(job.recipe_name)
    recipe_config = spec.config_class.model_validate(job.recipe)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(max(1, round(job.cpus_per_worker)))
    device = ray.train.torch.get_device()
    recipe = spec.build(recipe_config, job.steps, str(device))
    position = _restore(recipe)
    recipe.distribute(ray.train.torch.prepare_model)
    progress = loop_config.get("progress")
    before_step = loop_config.get("before_step")
    validate = None
    if rank == 0 and loop_config.get("validation_images"):
        validate = spec.validator(recipe_config, loop_config["validation_images"], job.validation_crop, job.seed)
    validation: dict[str, float] = {}
    shard = ray.train.get_dataset_shard("train")
    step = recipe.step_count
    started = window_start = time.perf_counter()
    window_steps = 0
    if rank == 0 and progress is not None:
        progress.put({"event": "start", "step": step, "world": world})
    finished = step >= job.steps
    while not finished:
        batches = shard.iter_batches(
            batch_size=job.batch_size, batch_format="numpy", drop_last=True,
            local_shuffle_buffer_size=job.shuffle_buffer or None, local_shuffle_seed=job.seed + position["epoch"],
        )  # fmt: skip
        seen = 0
        for index, rows in enumerate(batches):
            seen += 1
            if index < position["batch_in_epoch"]:
                continue  # consumed before the checkpoint this run resumed from
            if before_step is not None:
                before_step(step + 1, rank, world)
            metrics = recipe.step(spec.materialize(rows, str(device)))
            step, window_steps = recipe.step_count, window_steps + 1
            position["batch_in_epoch"] = index + 1
            if step % job.report_every and step < job.steps:
                continue
            elapsed = time.perf_counter() - window_start
            metrics.update(step=step, epoch=position["epoch"], samples_per_s=world * job.batch_size * window_steps / elapsed)
            last = step >= job.steps or _out_of_time(job, started, world)
            if validate is not None and (last or (job.validate_every and step % job.validate_every == 0)):
                validation = validate(recipe)
                metrics.update(validation)
            if last and rank == 0:
                metrics["export_card"] = _export(job, spec, recipe, validation, loop_config.get("command", ""))
            if rank == 0 and progress is not None:
                progress.put({"event": "report", **metrics})
            report_metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
            if last or step % job.checkpoint_every == 0:
                with tempfile.TemporaryDirectory() as directory:
                    checkpoint = _checkpoint(recipe, position, directory) if rank == 0 else None
                    ray.train.report(report_metrics, checkpoint=checkpoint, checkpoint_dir_name=checkpoint_name(step))
            else:
                ray.train.report(report_metrics)
            window_start, window_steps = time.perf_counter(), 0
            if last:
                finished = True
                break
        else:
            if seen == 0:
                raise RuntimeError(
                    f"worker {rank} got no batch of {job.batch_size} rows from the shards: too few samples "
                    f"for {world} workers; lower --batch-size or --workers, or build more shards"
                )
            position = {"epoch": position["epoch"] + 1, "batch_in_epoch": 0}
