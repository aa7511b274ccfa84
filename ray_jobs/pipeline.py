"""The Ray Data pipeline shape the block jobs share (``iqa score``, ``iqa upscale``): job blocks -> fetch +
decode in CPU tasks -> a pool of model actors (GPU when the cluster has one, else CPU) -> the job's own
write stage, with progress lines while it streams. The configs passed here need ``actors``, ``cpus_per_actor``, ``gpus_per_actor``,
``actor_resources``, ``device``, ``progress_bars``, ``cpus_per_decode_task`` and ``decode_memory_mb``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa

from ray_jobs.runtime import check_fits
from ray_jobs.score.sources import SourceError


def use_gpu(config: Any) -> bool:
    """Whether the actors of ``config`` (``device``, ``gpus_per_actor``) take GPUs of the cluster."""
    import ray

    if config.device == "cpu":
        return False
    gpus = ray.cluster_resources().get("GPU", 0)
    if config.device == "cuda" and gpus <= 0:
        raise SourceError("--device cuda: the Ray cluster has no GPU; use --device auto or cpu")
    return gpus > 0 and config.gpus_per_actor > 0


def prepare_actor_pool(config: Any) -> tuple[str, dict[str, Any]]:
    """Set Ray Data's context for a job and check that its actors fit the cluster; return the actors'
    device and the resource arguments of their ``map_batches`` (``config``: ``actors``, ``cpus_per_actor``,
    ``gpus_per_actor``, ``actor_resources``, ``device``, ``progress_bars``)."""
    import ray

    gpus = use_gpu(config)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = config.progress_bars
    context.print_on_execution_start = False
    actor_args: dict[str, Any] = {"num_cpus": config.cpus_per_actor}
    if gpus:
        actor_args["num_gpus"] = config.gpus_per_actor
    if config.actor_resources:
        actor_args["resources"] = dict(config.actor_resources)
    check_fits(actors=config.actors, what=f"--actors {config.actors}", per_actor={
        "CPU": config.cpus_per_actor, **({"GPU": config.gpus_per_actor} if gpus else {}),
        **config.actor_resources})
    return ("cuda" if gpus else "cpu"), actor_args


def decode_then_actors(config: Any, blocks: list[pa.Table], read_fn: Callable[..., pa.Table],
                       read_kwargs: dict[str, Any], actor_cls: type, actor_kwargs: dict[str, Any],
                       actor_args: dict[str, Any]) -> Any:
    """The Ray Data pipeline's first two stages over job ``blocks``: ``read_fn`` (fetch + decode, e.g.
    :func:`ray_jobs.score.stages.fetch_and_decode_blocks`) in CPU tasks, then a pool of ``config.actors``
    ``actor_cls`` actors (one block per call)."""
    import ray

    ds: Any = ray.data.from_arrow(blocks)  # Dataset; Ray's stubs reject pyarrow batch functions
    ds = ds.map_batches(
        # the memory reservation also keeps Ray Data from fusing decoding into the actors
        read_fn, batch_size=1, batch_format="pyarrow", num_cpus=config.cpus_per_decode_task,
        memory=config.decode_memory_mb * 2**20, fn_kwargs=read_kwargs)
    return ds.map_batches(
        actor_cls, batch_size=1, batch_format="pyarrow", zero_copy_batch=True,
        compute=ray.data.ActorPoolStrategy(size=config.actors), fn_constructor_kwargs=actor_kwargs, **actor_args)


@contextlib.contextmanager
def progress_lines(describe: Callable[[float], str], interval_s: float,
                   log: Callable[[str], None]) -> Iterator[None]:
    """Log ``describe(elapsed seconds)`` every ``interval_s`` seconds while the block runs (a daemon thread,
    stopped and joined on leaving, also on an error)."""
    started = time.monotonic()
    stop = threading.Event()

    def report() -> None:
        while not stop.wait(interval_s):
            log(describe(time.monotonic() - started))

    reporter = threading.Thread(target=report, name="job-progress", daemon=True)
    reporter.start()
    try:
        yield
    finally:
        stop.set()
        reporter.join()
