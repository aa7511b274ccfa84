"""Adversarial losses on discriminator logits (any shape: per image or per pixel).

``gan_type``: ``'vanilla'`` (binary cross-entropy; the generator side is the non-saturating form, as in
SeD and BasicSR's ``GANLoss('vanilla')``), ``'lsgan'`` (least squares) or ``'hinge'``. A logit above zero
means "real". The generator loss falls as the discriminator's logits on its output rise; the
discriminator loss falls as real logits rise and fake logits fall (tests/plugin/test_sfd_disc.py).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

__all__ = ["GanType", "discriminator_loss", "generator_loss"]

GanType = Literal["vanilla", "lsgan", "hinge"]


def _target(logits: torch.Tensor, real: bool, gan_type: GanType) -> torch.Tensor:
    if gan_type == "vanilla":
        return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(real)))
    if gan_type == "lsgan":
        return F.mse_loss(logits, torch.full_like(logits, float(real)))
    if gan_type == "hinge":
        return F.relu(1.0 - logits).mean() if real else F.relu(1.0 + logits).mean()
    raise ValueError(f"gan_type={gan_type!r}: expected 'vanilla', 'lsgan' or 'hinge'")


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor,
                       gan_type: GanType = "vanilla") -> torch.Tensor:
    """Loss of a discriminator that should call ``real_logits`` real and ``fake_logits`` fake (the fakes
    detached by the caller so no gradient reaches the generator)."""
    return _target(real_logits, True, gan_type) + _target(fake_logits, False, gan_type)


def generator_loss(fake_logits: torch.Tensor, gan_type: GanType = "vanilla") -> torch.Tensor:
    """Loss of a generator whose outputs got ``fake_logits``: lower when the discriminator calls them real."""
    if gan_type == "hinge":
        return -fake_logits.mean()
    return _target(fake_logits, True, gan_type)
