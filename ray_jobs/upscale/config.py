"""The upscale job's configuration: one pydantic model, loadable from YAML, with CLI flags on top.

Example ``job.yaml``::

    src: s3://bucket/lowres/
    out: s3://bucket/x4/
    model: sfd_rrdb_x4
    weights: s3://bucket/weights/sfd_x4.pth
    tile: 256
    actors: 4
    gpus_per_actor: 1

``iqa upscale --config job.yaml --actors 8`` uses the file and overrides ``actors``.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from ray_jobs.config import JobConfig, cli

#: Default input limit: 2048 x 2048. The output holds scale**2 times the pixels, kept as float32 on the
#: device while it is assembled (about 0.8 GB at x4 for 4 MP in); at x4 the output (67 MP) also stays
#: below PIL's own decompression-bomb limit (89.5 MP), so PIL-based tools can open every image written.
DEFAULT_UPSCALE_MAX_PIXELS = 2048 * 2048

#: File suffix of each output format.
SUFFIXES = {"png": "png", "jpeg": "jpg", "webp": "webp"}


class UpscaleJobConfig(JobConfig):
    """Everything an upscale job needs. Unknown keys are rejected; each field is also a flag of ``iqa upscale``."""

    job_name: ClassVar[str] = "upscale job"

    src: str = Field(description="a local folder, an fsspec prefix (s3://bucket/lowres/) or a manifest "
                                 "(.parquet/.csv/.jsonl with a 'uri' column and optional 'id')",
                     json_schema_extra=cli(positional=True))
    out: str = Field(description="destination folder or prefix: images/ (the upscaled images), index/ (one "
                                 "Parquet row per input) and _iqa/ (run record, identity, lock)")
    model: str = Field(default="sfd_rrdb_x4", description="SR model card (kind 'sr')")
    weights: str | None = Field(default=None, description="generator checkpoint path or URL (default: the "
                                "card's); the ESRGAN/SFD and BasicSR layouts both load")
    scale: int | None = Field(default=None, ge=1, le=8, description="upscaling factor; default: the card's. "
                              "Another value builds the card's arch at that scale (give --weights of that scale)")
    tile: int = Field(default=256, ge=0, description="low-resolution tile side inside an actor (0: whole images); "
                      "bounds the model's working memory")
    tile_overlap: int = Field(default=32, ge=0, description="context pixels around each tile (low resolution)")
    precision: Literal["auto", "fp32", "bf16"] = Field(default="auto", description="'auto': bf16 on GPU, fp32 "
                                                       "on CPU")
    format: Literal["png", "jpeg", "webp"] = Field(default="png", description="format of the images written "
                                                    "(8-bit RGB)")
    quality: int = Field(default=95, ge=1, le=100, description="JPEG/WebP quality (ignored for PNG)")
    png_compress_level: int = Field(default=6, ge=0, le=9, description="zlib level of PNG outputs (PIL's "
                                    "default 6; lower levels encode faster and write larger files)")
    block_size: int = Field(default=8, ge=1, le=10_000, description="inputs per index part (the unit of retry "
                            "and resume); the block's upscaled pixels travel together, so keep it small")
    actors: int = Field(default=1, ge=1, description="upscaling actors")
    gpus_per_actor: float = Field(default=1.0, ge=0, le=64, description="GPUs per actor when CUDA is available")
    cpus_per_actor: float = Field(default=1.0, gt=0, description="logical CPUs reserved per upscaling actor")
    cpus_per_decode_task: float = Field(default=1.0, gt=0, description="logical CPUs per fetch+decode task")
    cpus_per_write_task: float = Field(default=1.0, gt=0, description="logical CPUs per encode+write task")
    actor_resources: dict[str, float] = Field(
        default_factory=dict, description="custom Ray resources each upscaling actor needs (pin actors to nodes)")
    decode_memory_mb: int = Field(default=512, ge=1, description="memory reserved per fetch+decode task")
    torch_threads: int | None = Field(default=None, ge=1,
                                      description="torch threads in a CPU actor (default: cpus_per_actor)")
    device: Literal["auto", "cuda", "cpu"] = Field(default="auto", description="where actors upscale")
    max_pixels: int = Field(default=DEFAULT_UPSCALE_MAX_PIXELS, ge=1,
                            description="refuse inputs with more pixels (reason too_many_pixels): the output "
                                        "is scale^2 times larger")
    min_side: int = Field(default=1, ge=1, description="refuse inputs with a shorter side (reason too_small)")
    io_threads: int = Field(default=16, ge=1, description="concurrent object reads or writes inside a task")
    redo: bool = Field(default=False, description="drop the index rows already in --out and upscale everything "
                       "again (needed when the model, weights, scale, tiling, precision, format or source "
                       "differ from the run identity recorded there)")
    limit: int | None = Field(default=None, ge=1, description="upscale only the first N inputs (sorted by id)")
    progress_bars: bool = Field(default=True, description="Ray Data's progress bars (stderr)")
    progress_interval_s: float = Field(default=5.0, gt=0, description="seconds between progress lines")

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
    def suffix(self) -> str:
        """File suffix of the images written (``png``, ``jpg``, ``webp``)."""
        return SUFFIXES[self.format]

    def arch_options(self) -> dict[str, Any]:
        """What replaces the card's ``arch_options`` (``scale`` when given)."""
        return {} if self.scale is None else {"scale": self.scale}

    def encode_options(self) -> dict[str, Any]:
        """PIL ``save`` options of the chosen format."""
        if self.format == "png":
            return {"format": "PNG", "compress_level": self.png_compress_level}
        return {"format": self.format.upper(), "quality": self.quality}
