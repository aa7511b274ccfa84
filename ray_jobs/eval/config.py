"""The ``iqa eval`` configuration: every setting once, as a field; the flags derive from it.

Example ``eval.yaml``::

    dataset: pyiqa:koniq10k
    root: /data/datasets          # the folder pyiqa calls ./datasets
    model: [qualiclip, piqe]
    weights: {qualiclip: s3://bucket/ckpt/QualiCLIP.pth}
    out: results/koniq
    bootstrap: 1000

``iqa eval --synthetic --model qualiclip,psnr`` needs no data at all.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from ray_jobs.config import DEFAULT_MAX_PIXELS, JobConfig, cli
from ray_jobs.score.config import ScoreJobConfig


def default_cache() -> str:
    """``$IQA_PLUGIN_CACHE/eval-scores`` (or ``~/.cache/iqa_plugin/eval-scores``)."""
    from iqa_plugin.env import cache_dir

    return str(cache_dir() / "eval-scores")


class EvalJobConfig(JobConfig):
    """Everything ``iqa eval`` needs. Unknown keys are rejected."""

    job_name: ClassVar[str] = "eval job"

    dataset: str | None = Field(
        default=None, json_schema_extra=cli(positional=True, exclusive="source"),
        description="rated images: a CSV of (path, score[, split]) or a folder/prefix holding one; a Hugging Face "
                    "imagefolder or save_to_disk folder, or hf:<owner>/<name>; pyiqa:<name> (with --root) or a "
                    "pyiqa meta_info_*.csv (with --images)")
    synthetic: bool = Field(default=False, json_schema_extra=cli(exclusive="source"),
                            description="the synthetic benchmark: packaged photos x 24 distortions x 5 levels")
    model: list[str] = Field(default_factory=lambda: ["qualiclip"], min_length=1,
                             description="metrics, comma-separated: plugin (qualiclip...), pyiqa (psnr, piqe...) "
                                         "or baselines (random, mean_brightness)")
    weights: dict[str, str] = Field(default_factory=dict,
                                    description="metric -> checkpoint path or URL (default: the card's)")
    out: str = Field(default="iqa-eval", description="folder for results.json, results.md, report.html, scores.parquet")
    cache: str | None = Field(default=None, description="score cache folder or prefix (default: "
                                                        "$IQA_PLUGIN_CACHE/eval-scores)")
    format: Literal["auto", "csv", "hf", "pyiqa"] = Field(default="auto", description="dataset reader")
    root: str | None = Field(default=None, description="pyiqa layout: the folder standing for pyiqa's ./datasets")
    images: str | None = Field(default=None, description="pyiqa meta_info CSV: folder its image names are under")
    path_column: str | None = Field(default=None, description="CSV column with the image paths (detected)")
    score_column: str | None = Field(default=None, description="column with the human scores (detected)")
    image_column: str | None = Field(default=None, description="Hugging Face dataset: the image column")
    split: str | None = Field(default=None, description="split to evaluate ('all' for every row; pyiqa datasets "
                                                        "default to their official test split)")
    mos_lower_better: bool | None = Field(default=None, description="the human score is lower-is-better (DMOS)")
    synthetic_size: int = Field(default=256, ge=32, description="synthetic benchmark: side of the square crops")
    synthetic_photos: int | None = Field(default=None, ge=1, description="synthetic: use the first N photos")
    synthetic_kinds: list[str] | None = Field(default=None, description="synthetic: distortion kinds (default all 24)")
    synthetic_levels: list[int] | None = Field(default=None, description="synthetic: levels 1..5 (default all)")
    seed: int = Field(default=0, description="seed of the synthetic distortions and of the bootstrap")
    bootstrap: int = Field(default=1000, ge=0, description="bootstrap resamples for the 95%% intervals (0: none)")
    confidence: float = Field(default=0.95, gt=0, lt=1, description="coverage of the bootstrap intervals")
    resolution: str = Field(default="native", description="'native' or 'short:N' before scoring")
    device: Literal["auto", "cuda", "cpu"] = Field(default="auto", description="where the actors score")
    dtype: Literal["fp32", "bf16", "fp16"] = Field(default="fp32", description="plugin metrics' precision")
    batch_size: int | None = Field(default=None, ge=1, description="images per forward pass (plugin metrics)")
    block_size: int = Field(default=32, ge=1, description="images per cached part file (unit of retry)")
    actors: int = Field(default=1, ge=1, description="scoring actors per metric")
    gpus_per_actor: float = Field(default=1.0, ge=0, description="GPUs per actor when CUDA is available")
    cpus_per_actor: float = Field(default=1.0, gt=0, description="logical CPUs per scoring actor")
    max_pixels: int = Field(default=DEFAULT_MAX_PIXELS, ge=1, description="refuse larger images")
    scatter_points: int = Field(default=2000, ge=10, description="most points per scatter plot in the HTML")
    progress_bars: bool = Field(default=False, description="Ray Data's progress bars (stderr)")
    progress_interval_s: float = Field(default=10.0, gt=0, description="seconds between progress lines")

    @field_validator("model", mode="before")
    @classmethod
    def _split_models(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, (list, tuple)):
            names = [name.strip() for item in value for name in str(item).split(",") if name.strip()]
            return list(dict.fromkeys(names))  # order kept, duplicates dropped
        return value

    @field_validator("out", "cache")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is None or "://" in value:
            return value
        return os.path.abspath(os.path.expanduser(value))

    @model_validator(mode="after")
    def _one_source(self) -> EvalJobConfig:
        if bool(self.dataset) == bool(self.synthetic):
            raise ValueError("give exactly one of DATASET or --synthetic")
        try:  # the same rule as iqa score
            ScoreJobConfig(src="-", out="-", resolution=self.resolution)
        except ValueError as error:
            raise ValueError(str(error).split("Value error, ")[-1].splitlines()[0]) from None
        return self

    @property
    def cache_root(self) -> str:
        return self.cache or default_cache()

    def score_config(self, metric: str, folder: str) -> ScoreJobConfig:
        """The score-job config that scores ``metric`` into its cache ``folder``."""
        return ScoreJobConfig(
            src=self.dataset or "synthetic", out=folder, model=metric, weights=self.weights.get(metric),
            resolution=self.resolution, dtype=self.dtype, batch_size=self.batch_size, block_size=self.block_size,
            actors=self.actors, gpus_per_actor=self.gpus_per_actor, cpus_per_actor=self.cpus_per_actor,
            device=self.device, max_pixels=self.max_pixels, report=False, progress_bars=self.progress_bars,
            progress_interval_s=self.progress_interval_s,
            # the evaluation scorers (pyiqa's, full-reference pairs) take decoded arrays; sets are small
            decode="cpu", compile=False)
