"""Fixtures of the job tests that several modules share (the session-wide ones live in tests/conftest.py)."""

from __future__ import annotations

import shutil

import pytest

#: The tiny SFD recipe of the training job tests: random CLIP, small generator and heads, two warm-up steps.
SFD_TINY_RECIPE = {"features": 8, "blocks": 1, "growth": 4, "feat_hidden": 8, "n_ctx": 2, "clip": None,
                   "perceptual_backbone": "clip", "warmup_steps": 2, "lr_g": 1e-3, "lr_d": 1e-3,
                   "residual": "bicubic", "ema_decay": 0.9}  # fmt: skip


def two_photo_shards(root, photos, **fields) -> str:
    """Shards (``ShardsJobConfig`` ``fields``) of two training photos (never the held-out validation ones)."""
    from ray_jobs.shards.config import ShardsJobConfig
    from ray_jobs.shards.job import run_shards_job

    (root / "pristine").mkdir()
    for photo in [p for p in photos if p.name not in ("flower.jpg", "grace_hopper.jpg")][:2]:
        shutil.copyfile(photo, root / "pristine" / photo.name)
    out = str(root / "shards")
    run_shards_job(ShardsJobConfig(source=str(root / "pristine"), out=out, images_per_shard=1, **fields),
                   progress=lambda line: None)
    return out


@pytest.fixture(scope="session")
def sr_shards(tmp_path_factory, photos, ray_local):
    """SR shards (x4, 64-px HR patches, half of them real-world degraded) of two training photos: 16 samples."""
    return two_photo_shards(tmp_path_factory.mktemp("sr-train-shards"), photos, kind="sr", hr_size=64, scale=4,
                            samples_per_image=8, realworld_fraction=0.5)
