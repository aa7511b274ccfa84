"""Configuration of the degradation-shards job (``iqa shards``), loadable from YAML.

A :class:`ShardsJobConfig` fixes every choice that changes the bytes of the shards (kind, crop size,
samples per image, seed, levels, SR patch size and recipe mix, images per shard, PNG level): two runs with
equal configs over the same pristine images write byte-identical shards. ``out`` and
``storage_options`` only say where things live and are not part of that identity (``storage_options``
takes non-secret settings such as the endpoint; options holding credentials are refused, since credentials
come from each process's own environment).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from ray_jobs.config import DEFAULT_MAX_PIXELS, JobConfig, cli

#: File name endings read as pristine images (case-insensitive); other files are counted and ignored.
DEFAULT_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

#: Fields that only locate data; everything else defines the content of the shards.
LOCATION_FIELDS: frozenset[str] = frozenset({"source", "out", "storage_options"})


class ShardsJobConfig(JobConfig):
    """Everything the shards job needs; unknown keys are rejected.

    One *sample* is one training example: for ``kind='qualiclip'`` a pair of overlapping crops plus a
    distortion recipe (one distortion type, ``levels`` increasing levels, one seed per level); for
    ``kind='sr'`` one HR patch plus an SR recipe (``bicubic`` or ``realworld`` LR synthesis and a seed).
    """

    job_name: ClassVar[str] = "shards job"

    source: str = Field(description="Folder or fsspec prefix (s3://bucket/prefix/) of pristine images.")
    out: str = Field(description="Folder or fsspec prefix the shards and manifest.json are written to.")
    kind: Literal["qualiclip", "sr"] = Field(description="qualiclip: crop pairs; sr: HR patches.")
    crop: int = Field(224, ge=32, le=4096, description="QualiCLIP crop side in pixels.")
    samples_per_image: int = Field(
        4, ge=1, le=1024, description="Crop pairs (qualiclip) or HR patches (sr) sampled per image.",
        json_schema_extra=cli(aliases=("--pairs-per-image",)),
    )
    seed: int = Field(0, ge=0, lt=2**63, description="Root seed; per-image seeds derive from it and the id.")
    levels: int = Field(5, ge=1, le=5, description="Distortion levels per QualiCLIP sample (of the 5).")
    max_shift: float = Field(
        0.5,
        gt=0.0,
        lt=1.0,
        description="The second QualiCLIP crop is shifted from the first by at most this fraction of the "
        "crop side on each axis, so the two boxes always overlap (>= (1-max_shift)^2 of their area).",
    )
    hr_size: int = Field(256, ge=32, le=4096, description="SR HR patch side in pixels.")
    scale: Literal[2, 4] = Field(4, description="SR downscaling factor of both bicubic and realworld LR.")
    realworld_fraction: float = Field(
        0.5, ge=0.0, le=1.0, description="Probability that an SR sample uses the real-world pipeline."
    )
    realsr: dict[str, Any] | None = Field(
        None, description="Fields of iqa_plugin.data.degradations.RealSRConfig for realworld samples (None: defaults)."
    )
    images_per_shard: int = Field(32, ge=1, le=100_000, description="Sorted images per Parquet shard.")
    max_images: int | None = Field(None, ge=1, description="Use only the first N listed images.")
    max_pixels: int = Field(
        DEFAULT_MAX_PIXELS, ge=1024, description="Pristine images with more pixels are skipped (too_many_pixels)."
    )
    png_compress_level: int = Field(3, ge=0, le=9, description="zlib level of the lossless PNG crops.")
    extensions: tuple[str, ...] = Field(DEFAULT_EXTENSIONS, description="File endings read as images.")
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Non-secret fsspec options for source and out (never written out). Credentials come from "
        "each node's environment or credential chain (ray_jobs.runtime), never from here.",
    )

    @field_validator("storage_options")
    @classmethod
    def _no_credentials(cls, value: dict[str, Any]) -> dict[str, Any]:
        from ray_jobs.runtime import check_no_credentials

        check_no_credentials(value)
        return value

    @model_validator(mode="after")
    def _check_sizes(self) -> ShardsJobConfig:
        if self.kind == "sr":
            if self.hr_size % self.scale:
                raise ValueError(
                    f"hr_size={self.hr_size} is not divisible by scale={self.scale}: "
                    f"pick an HR patch side that is a multiple of the scale (e.g. {self.hr_size // self.scale * self.scale})."
                )
            realsr_scale = (self.realsr or {}).get("scale", self.scale)
            if self.realworld_fraction > 0 and realsr_scale != self.scale:
                raise ValueError(
                    f"realsr.scale={realsr_scale} differs from scale={self.scale}: realworld and bicubic samples "
                    "of one job share the scale; drop realsr.scale or make them equal."
                )
        if not self.extensions:
            raise ValueError("extensions is empty: list the file endings to read, e.g. ['.jpg', '.png'].")
        return self

    def content_fields(self) -> dict[str, Any]:
        """The fields that define the shards' bytes (JSON-ready), as recorded in the manifest."""
        return self.model_dump(mode="json", exclude=set(LOCATION_FIELDS))

    def sample_side(self) -> int:
        """Smallest image side this config can sample from (the crop or HR patch side)."""
        return self.crop if self.kind == "qualiclip" else self.hr_size
