"""Optimiser and learning-rate schedule builders shared by the training recipes (typed configs, no Ray)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["OptimizerConfig", "SchedulerConfig", "build_optimizer", "build_scheduler"]


class OptimizerConfig(BaseModel):
    """The optimiser; the QualiCLIP paper does not publish its choice."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal["adamw", "adam", "sgd"] = Field(
        "adamw", description="AdamW: the usual choice for fine-tuning CLIP towers and for small CNNs from scratch."
    )
    lr: float = Field(
        1.5e-3,
        gt=0.0,
        description="1.5e-3 for a small network from random init (measured here with 16 samples per step; "
        "REFERENCE.md's probe used 1e-3 with 4); fine-tuning "
        "CLIP RN50 wants ~1e-5 to 1e-6 (set it in the run's YAML).",
    )
    weight_decay: float = Field(0.01, ge=0.0, description="Decoupled weight decay (AdamW); not applied to norms and biases.")
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam(W) betas.")
    momentum: float = Field(0.9, ge=0.0, description="SGD momentum.")


class SchedulerConfig(BaseModel):
    """Learning-rate schedule over the run's optimiser steps."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal["cosine", "constant"] = Field(
        "cosine", description="Linear warm-up then cosine decay to min_lr_ratio * lr (a run of known length)."
    )
    warmup_steps: int = Field(20, ge=0, description="Linear warm-up steps (stabilises Adam's early moments).")
    min_lr_ratio: float = Field(0.05, ge=0.0, le=1.0, description="Final lr as a fraction of the peak lr.")


def _param_groups(parameters: Iterable[tuple[str, torch.nn.Parameter]], weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, param in parameters:
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(named_parameters: Iterable[tuple[str, torch.nn.Parameter]], config: OptimizerConfig) -> torch.optim.Optimizer:
    """The optimiser over the trainable parameters of ``named_parameters`` (norms and biases without decay)."""
    groups = _param_groups(named_parameters, config.weight_decay)
    if not any(group["params"] for group in groups):
        raise ValueError("No trainable parameter: every parameter has requires_grad=False (is the whole network frozen?)")
    if config.name == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas)
    if config.name == "adam":
        return torch.optim.Adam(groups, lr=config.lr, betas=config.betas)
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: SchedulerConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step schedule over ``total_steps`` optimiser steps (call ``scheduler.step()`` after each)."""
    if total_steps < 1:
        raise ValueError(f"total_steps={total_steps}: a schedule needs at least one step")
    warmup = min(config.warmup_steps, max(total_steps - 1, 0))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if config.name == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
