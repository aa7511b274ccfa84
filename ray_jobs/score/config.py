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

``iqa score --config job.yaml --actors 8`` uses the file and overrides ``actors``. Object-store retries
are the storage client's own (botocore: ``AWS_RETRY_MODE`` / ``AWS_MAX_ATTEMPTS``), not a setting here.
"""

from __future__ import annotations

import os
import re
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from ray_jobs.config import DEFAULT_MAX_PIXELS, JobConfig, cli

_RESOLUTION = re.compile(r"^(native|short:(\d+))$")


class ScoreJobConfig(JobConfig):
    """Everything a score job needs. Unknown keys are rejected; each field is also a flag of ``iqa score``."""

    job_name: ClassVar[str] = "score job"

    src: str = Field(description="a local folder, an fsspec prefix (s3://bucket/photos/) or a manifest "
                                 "(.parquet/.csv/.jsonl with a 'uri' column and optional 'id')",
                     json_schema_extra=cli(positional=True))
    out: str = Field(description="destination folder or prefix: part-*.parquet, and _iqa/ (run record, "
                                 "identity, report)")
    source_format: Literal["auto", "files", "hf", "webdataset"] = Field(
        default="auto", description="how to read SRC. auto: 'hf:<owner>/<name>' or a save_to_disk folder is a "
        "Hugging Face dataset, a .tar brace pattern (shards-{0000..0099}.tar) or a prefix holding only .tar files "
        "is WebDataset, anything else single files; 'hf' on a plain folder loads it with datasets' imagefolder "
        "(ray_jobs.score.source_kinds)")
    split: str | None = Field(default=None, description="Hugging Face split to score (default: the only split, "
                              "else 'train')")
    image_column: str | None = Field(default=None, description="Hugging Face: the image column (default: the "
                                     "first Image-typed column); WebDataset: the image member's extension, "
                                     "e.g. 'png' (default: the first of jpg, jpeg, png, webp, bmp, tif, tiff)")
    id_column: str | None = Field(default=None, description="Hugging Face: a column of unique row ids (default: "
                                  "the dataset fingerprint + row index); WebDataset ids are always tar name + key")
    model: str = Field(default="qualiclip", description="plugin metric name")
    weights: str | None = Field(default=None, description="checkpoint path or URL (default: the model card's)")
    resolution: str = Field(default="native", description="'native' or 'short:N' (resize the short side to N)")
    dtype: Literal["fp32", "bf16", "fp16"] = Field(default="fp32", description="compute precision of the model")
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
    channels_last: bool = Field(default=True, description="channels-last memory layout on CUDA")
    compile: bool = Field(default=False, description="torch.compile the network (slow start, faster steady state)")
    max_pixels: int = Field(default=DEFAULT_MAX_PIXELS, ge=1,
                            description="refuse images with more pixels (decompression bombs)")
    min_side: int = Field(default=32, ge=1, description="refuse images with a shorter side (reason too_small)")
    fetch_threads: int = Field(default=16, ge=1, description="concurrent object reads inside a decode task")
    rescore: bool = Field(default=False, description="drop the rows already in --out and score everything again "
                          "(needed when the model, weights, resolution, dtype or source differ from the run "
                          "identity recorded there)")
    limit: int | None = Field(default=None, ge=1, description="score only the first N inputs (sorted by id; "
                                                           "WebDataset: the first N shards)")
    report: bool = Field(default=True, description="write the HTML report next to the output")
    progress_bars: bool = Field(default=True, description="Ray Data's progress bars (stderr)")
    progress_interval_s: float = Field(default=5.0, gt=0, description="seconds between progress lines")

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
        remote = "://" in value or value.startswith("hf:")  # hf:<owner>/<name>: a dataset on the hub
        return value if remote else os.path.abspath(os.path.expanduser(value))

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
