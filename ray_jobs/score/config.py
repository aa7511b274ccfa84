"""The score job's configuration: one pydantic model, loadable from YAML, with CLI flags on top.

Example ``job.yaml``::

    src: s3://bucket/photos/
    out: s3://bucket/scores/
    model: qualiclip
    resolution: short:448
    dtype: bf16
    batch_size: 32
    actors: 4
    gpus_per_actor: 1

``iqa score --config job.yaml --actors 8`` uses the file and overrides ``actors``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

_RESOLUTION = re.compile(r"^(native|short:(\d+))$")


#: Same value as ``iqa_plugin.data.images.DEFAULT_MAX_PIXELS`` (a test keeps them equal); restated so that the
#: driver never imports torch (its memory must stay small).
DEFAULT_MAX_PIXELS = 89_478_485


class FaultInjection(BaseModel):
    """Test hooks that simulate failures (leave unset in real jobs)."""

    model_config = ConfigDict(extra="forbid")

    actor_exit_after_blocks: int | None = Field(
        default=None, ge=0, description="a scoring actor calls os._exit(1) after scoring this many blocks")
    marker: str | None = Field(
        default=None, description="file created just before the injected exit; while it exists no actor exits "
                                  "again, so the fault happens once per job")
    sleep_per_block_s: float = Field(default=0.0, ge=0, description="extra seconds per scored block (slows the "
                                                                      "job so a test can interrupt it)")


class ScoreJobConfig(BaseModel):
    """Everything a score job needs. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    src: str = Field(description="a local folder, an fsspec prefix (s3://bucket/photos/) or a manifest "
                                 "(.parquet/.csv/.jsonl with a 'uri' column and optional 'id')")
    out: str = Field(description="destination folder or prefix for part-*.parquet, _job.json and the report")
    model: str = Field(default="qualiclip", description="plugin metric name")
    weights: str | None = Field(default=None, description="checkpoint path or URL (default: the model card's)")
    resolution: str = Field(default="native", description="'native' or 'short:N' (resize the short side to N)")
    dtype: Literal["fp32", "bf16", "fp16"] = "fp32"
    batch_size: int | None = Field(default=None, ge=1, description="images per forward pass inside an actor "
                                   "(default: the scorer's, 32 on CUDA and 1 on CPU)")
    block_size: int = Field(default=64, ge=1, le=100_000,
                            description="inputs per output part file (the unit of retry and resume)")
    actors: int = Field(default=1, ge=1, description="scoring actors")
    gpus_per_actor: float = Field(default=1.0, ge=0, le=64, description="GPUs per actor when CUDA is available")
    cpus_per_actor: float = Field(default=1.0, gt=0, description="logical CPUs reserved per scoring actor")
    cpus_per_decode_task: float = Field(default=1.0, gt=0, description="logical CPUs per fetch+decode task")
    actor_resources: dict[str, float] = Field(
        default_factory=dict, description="custom Ray resources each scoring actor needs (pin actors to nodes)")
    decode_memory_mb: int = Field(default=512, ge=1, description="memory reserved per fetch+decode task")
    torch_threads: int | None = Field(default=None, ge=1,
                                      description="torch threads in a CPU actor (default: cpus_per_actor)")
    device: Literal["auto", "cuda", "cpu"] = Field(default="auto", description="where actors score")
    channels_last: bool = True
    compile: bool = False
    max_pixels: int = Field(default=DEFAULT_MAX_PIXELS, ge=1,
                            description="refuse images with more pixels (decompression bombs)")
    min_side: int = Field(default=32, ge=1, description="refuse images with a shorter side (reason too_small)")
    fetch_retries: int = Field(default=4, ge=0, description="retries of a transient read error, with backoff")
    fetch_threads: int = Field(default=16, ge=1, description="concurrent object reads inside a decode task")
    limit: int | None = Field(default=None, ge=1, description="score only the first N inputs (sorted by id)")
    forward_storage_env: bool = Field(
        default=True, description="hand the driver's AWS_* settings (endpoint, region, credentials) to the "
                                  "workers in task arguments; false where nodes have their own (instance roles)")
    report: bool = Field(default=True, description="write the HTML report next to the output")
    progress_bars: bool = Field(default=True, description="Ray Data's progress bars (stderr)")
    progress_interval_s: float = Field(default=5.0, gt=0, description="seconds between progress lines")
    faults: FaultInjection = Field(default_factory=FaultInjection)

    @field_validator("resolution")
    @classmethod
    def _check_resolution(cls, value: str) -> str:
        value = value.strip().lower()
        match = _RESOLUTION.match(value)
        if not match:
            raise ValueError(f"resolution={value!r}: expected 'native' or 'short:N' with N an integer >= 32 "
                             "(e.g. short:224)")
        if match.group(2) is not None and int(match.group(2)) < 32:
            raise ValueError(f"resolution={value!r}: N must be >= 32 (the network needs 32 px)")
        return value

    @field_validator("src", "out", "weights")
    @classmethod
    def _check_location(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.strip():
            raise ValueError("expected a non-empty path or URI")
        value = value.strip()
        # workers run in other directories (and on other nodes): local paths must be absolute
        return value if "://" in value else os.path.abspath(os.path.expanduser(value))

    @property
    def short_side(self) -> int | None:
        """The target short side for ``short:N``, ``None`` at native resolution."""
        return None if self.resolution == "native" else int(self.resolution.split(":", 1)[1])

    def scorer_kwargs(self, device: str) -> dict[str, Any]:
        """Keyword arguments for :class:`iqa_plugin.inference.scorer.BatchScorer` on ``device``."""
        kwargs: dict[str, Any] = {
            "model": self.model, "device": device, "dtype": self.dtype, "batch_size": self.batch_size,
            "channels_last": self.channels_last, "compile": self.compile, "max_pixels": self.max_pixels,
        }
        if self.weights:
            kwargs["pretrained_model_path"] = self.weights
        return kwargs


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping stored in a YAML job file (raises ValueError naming the file when it is not one)."""
    import yaml

    from ray_jobs.io import filesystem_for

    fs, inner = filesystem_for(str(path))
    if not fs.exists(inner):
        raise ValueError(f"--config {path}: file not found")
    with fs.open(inner, "r") as handle:
        data = yaml.safe_load(handle)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: expected a mapping of option: value, got {type(data).__name__}")
    return data


def build_config(yaml_path: str | Path | None = None, **overrides: Any) -> ScoreJobConfig:
    """A validated config from an optional YAML file plus ``overrides`` (``None`` values are ignored).

    Raises:
        ValueError: the file or a value is invalid; the message lists every problem with its key.
    """
    values: dict[str, Any] = load_yaml(yaml_path) if yaml_path else {}
    values.update({key: value for key, value in overrides.items() if value is not None})
    try:
        return ScoreJobConfig(**values)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in item['loc']) or 'config'}: {item['msg']}" for item in error.errors()
        )
        source = f" in {yaml_path}" if yaml_path else ""
        raise ValueError(f"invalid score job config{source}: {problems}") from None
