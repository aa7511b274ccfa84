"""Configuration of the training job (``iqa train RECIPE``): where data and run live, how many workers,
how long, how often to checkpoint, report and validate. The recipe's own choices (network, losses,
optimiser...) sit under ``recipe:`` in the YAML file and are validated by the recipe's config class."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from ray_jobs.config import JobConfig, cli


class TrainJobConfig(JobConfig):
    """Everything ``iqa train`` needs; unknown keys are rejected (also inside ``recipe:``)."""

    job_name: ClassVar[str] = "train job"

    recipe_name: Literal["qualiclip", "sfd"] = Field(
        description="what to train", json_schema_extra=cli(positional=True, metavar="RECIPE")
    )
    shards: str = Field(description="folder or fsspec prefix of the shards (iqa shards --out)")
    out: str = Field(description="run folder or fsspec prefix: checkpoints, progress, export")
    workers: int = Field(2, ge=1, description="Ray Train workers (DDP ranks)")
    gpus_per_worker: float = Field(0.0, ge=0.0, description="GPUs per worker (0: CPU with gloo; >0: nccl)")
    cpus_per_worker: float = Field(
        0.5, gt=0.0, description="logical CPUs per worker (below 1 leaves room for Ray Data's read tasks on small machines)"
    )
    batch_size: int = Field(
        4, ge=1, description="samples per worker per step (qualiclip: one sample = 2 crops x L levels; sfd: one HR patch)"
    )
    steps: int = Field(300, ge=1, description="optimiser steps of the whole run")
    time_limit_s: float | None = Field(
        None, gt=0, description="stop (validate, export) at the first report after this many seconds of training; "
        "the schedule still spans --steps (for time-boxed benchmarks)",
    )
    checkpoint_every: int = Field(50, ge=1, description="steps between checkpoints")
    keep_checkpoints: int = Field(2, ge=1, description="checkpoints kept in storage (older ones pruned)")
    report_every: int = Field(10, ge=1, description="steps between progress reports (each costs ~2 s of Ray Train sync)")
    validate_every: int = Field(100, ge=0, description="steps between validations on held-out photos (0: only at the end)")
    validation_images: list[str] = Field(
        default_factory=list,
        description="held-out photos (paths): qualiclip measures the SRCC between score and degradation level, "
        "sfd the PSNR/SSIM of x-scale upscaling next to bicubic; "
        "empty: flower.jpg and grace_hopper.jpg shipped in scikit-learn / matplotlib when installed",
    )
    validation_crop: int = Field(
        96, ge=32, description="crop side of the validation images (qualiclip: near the training crop; sfd: the "
        "HR crop, whose LR input is crop / scale)"
    )
    shuffle_buffer: int = Field(64, ge=0, description="rows in each worker's local shuffle buffer (0: no shuffle)")
    seed: int = Field(0, ge=0, description="seed of shuffling and of the recipe's randomness")
    max_failures: int = Field(3, ge=0, description="worker-group restarts from the last checkpoint before the run fails")
    run_name: str = Field("run", description="Ray Train run name inside --out (the same name resumes)")
    export_name: str | None = Field(None, description="model card name of the export (default: <recipe>-<run name>)")
    register_to: str | None = Field(
        None, description="copy the exported card into this registry folder (use $IQA_PLUGIN_REGISTRY to serve it)"
    )
    recipe: dict[str, Any] = Field(default_factory=dict, description="the recipe's config fields (YAML only)")

    @model_validator(mode="after")
    def _check(self) -> TrainJobConfig:
        from pydantic import ValidationError

        from ray_jobs.train.recipes import recipe_spec

        config_class = recipe_spec(self.recipe_name).config_class
        try:
            config_class.model_validate(self.recipe)
        except ValidationError as error:
            problems = "; ".join(
                f"recipe.{'.'.join(map(str, e['loc']))}: "
                + ("unknown key (known: " + ", ".join(config_class.model_fields) + ")"
                   if e["type"] == "extra_forbidden" else str(e["msg"]).removeprefix("Value error, "))
                for e in error.errors()
            )  # fmt: skip
            raise ValueError(problems) from None
        if self.checkpoint_every % self.report_every:
            raise ValueError(
                f"checkpoint_every={self.checkpoint_every} is not a multiple of report_every={self.report_every}: "
                "checkpoints are written at reports; pick multiples"
            )
        return self

    def card_name(self) -> str:
        return self.export_name or f"{self.recipe_name}-{self.run_name}".lower()
