"""The QualiCLIP training recipe, Ray-free: config, one optimisation step, scoring, state for checkpoints.

One batch is ``[B, 2 crops, L levels, 3, h, w]`` in [0, 1] (what
:func:`iqa_plugin.data.materialize.materialize_qualiclip_batch` gives from shard rows): the recipe scores
all ``B * 2 * L`` images, turns the features into prompt similarities and minimises the QualiCLIP losses.

>>> recipe = QualiCLIPRecipe(QualiCLIPRecipeConfig(arch="tiny"), total_steps=100)
>>> metrics = recipe.step(torch.rand(1, 2, 5, 3, 64, 64))      # one batch: 1 image x 2 crops x 5 levels
>>> sorted(k for k in ("loss", "consistency", "lr") if k in metrics)
['consistency', 'loss', 'lr']
>>> state = recipe.state_dict()     # model, optimiser, scheduler, step, RNG: what a checkpoint holds
"""

from __future__ import annotations

import contextlib
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from iqa_plugin.losses.qualiclip import QualiCLIPLossConfig, prompt_similarities, qualiclip_losses
from iqa_plugin.training.optim import OptimizerConfig, SchedulerConfig, build_optimizer, build_scheduler
from iqa_plugin.training.qualiclip_net import ARCH_PRESETS, QualiCLIPTrainNet, build_train_net

__all__ = ["QualiCLIPRecipe", "QualiCLIPRecipeConfig"]


class QualiCLIPRecipeConfig(BaseModel):
    """Every choice of QualiCLIP training; the paper publishes few of them (REFERENCE.md). Unknown keys
    are rejected. The crop size and levels are those of the shards (``iqa shards --crop --levels``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arch: Literal["tiny", "small", "rn50"] = Field(
        "tiny", description="Image tower preset (iqa_plugin.training.qualiclip_net.ARCH_PRESETS); rn50 = the paper's."
    )
    init: str = Field(
        "random",
        description="'random', a model card name (the paper starts from CLIP RN50: a card holding it), or a "
        "checkpoint file in the QualiCLIP layout (QualiCLIP.pth or an export of this recipe).",
    )
    prompts: Literal["auto", "checkpoint", "text_tower", "random"] = Field(
        "auto",
        description="Prompt features: from the init checkpoint, encoded once by the frozen text tower, or "
        "fixed random unit vectors (the only option for a reduced tower without text tower).",
    )
    prompt_seed: int = Field(0, ge=0, description="Seed of the random prompt features.")
    logit_scale: float = Field(
        10.0,
        gt=0.0,
        description="Multiplier of the cosine in training and in the exported metric. CLIP's 100 saturates "
        "the pair probabilities of a small model and training collapses; 10 learns (REFERENCE.md probe). "
        "Fine-tuning a pretrained RN50 may keep 100.",
    )
    temperature: float = Field(
        1.0, gt=0.0, description="Pair softmax temperature in training; the exported card serves the same."
    )
    loss: QualiCLIPLossConfig = Field(default_factory=QualiCLIPLossConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    batchnorm: Literal["auto", "train", "frozen"] = Field(
        "auto",
        description="'train': batch statistics and affine parameters learn (needed from random init); "
        "'frozen': eval-mode statistics and fixed affine (the usual choice when fine-tuning a pretrained "
        "CLIP with small per-worker batches); 'auto': frozen when init is not random. Each DDP worker "
        "normalises with its own batch (no SyncBatchNorm).",
    )
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="bf16 autocast ('auto': on CUDA only).")
    gradient_checkpointing: bool = Field(False, description="Recompute ResNet stages in backward (saves memory).")
    grad_clip: float | None = Field(1.0, gt=0.0, description="Clip the global gradient norm (None: no clipping).")
    seed: int = Field(0, ge=0, description="Seed of the random initialisation (same on every worker).")
    exclude_distortions: tuple[str, ...] = Field(
        (), description="Distortion kinds held out of training (their shard rows are skipped); validation still reports them."
    )

    @field_validator("exclude_distortions")
    @classmethod
    def _known_kinds(cls, kinds: tuple[str, ...]) -> tuple[str, ...]:
        from iqa_plugin.data.degradations import KINDS

        unknown = sorted(set(kinds) - set(KINDS))
        if unknown:
            raise ValueError(f"unknown distortion kinds {unknown}; expected names of {list(KINDS)}")
        return kinds

    def vision(self) -> dict | None:
        return ARCH_PRESETS[self.arch]


class QualiCLIPRecipe:
    """Network, optimiser, schedule and step of QualiCLIP training on one device.

    Args:
        config: the recipe config.
        total_steps: optimiser steps of the whole run (the schedule's length).
        device: where the network lives.
    """

    def __init__(self, config: QualiCLIPRecipeConfig, total_steps: int, device: str | torch.device = "cpu") -> None:
        self.config = config
        self.device = torch.device(device)
        self.total_steps = total_steps
        self.net: QualiCLIPTrainNet = build_train_net(
            config.arch, config.init, config.prompts, config.prompt_seed, config.gradient_checkpointing, config.seed
        ).to(self.device)
        self.frozen_bn = config.batchnorm == "frozen" or (config.batchnorm == "auto" and config.init != "random")
        if self.frozen_bn:
            for module in self.net.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.requires_grad_(False)
        self.module: nn.Module = self.net  # replaced by a DDP wrapper in distributed runs
        self.optimizer = build_optimizer(self.net.named_parameters(), config.optimizer)
        self.scheduler = build_scheduler(self.optimizer, config.scheduler, total_steps)
        self.step_count = 0

    def distribute(self, wrap) -> None:
        """Wrap the network for data parallelism (e.g. ``ray.train.torch.prepare_model``); the optimiser
        keeps the same parameters."""
        self.module = wrap(self.net)

    def _train_mode(self) -> None:
        self.module.train()
        if self.frozen_bn:
            for module in self.net.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()

    def _autocast(self):
        bf16 = self.config.precision == "bf16" or (self.config.precision == "auto" and self.device.type == "cuda")
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def similarities(self, features: torch.Tensor) -> torch.Tensor:
        """Image features ``[N, D]`` -> ``[N, 7, 2]`` pair similarities in the configured form."""
        return prompt_similarities(
            features, self.net.prompt_features, logit_scale=self.config.logit_scale,
            form=self.config.loss.similarity, temperature=self.config.temperature,
        )  # fmt: skip

    def step(self, crops: torch.Tensor) -> dict[str, float]:
        """One optimisation step on ``crops`` ``[B, 2, L, 3, h, w]``; returns plain-number metrics
        (``loss``, ``consistency``, ``positive``, ``negative``, ``lr``, ``grad_norm``)."""
        if crops.ndim != 6 or crops.shape[1] != 2:
            raise ValueError(f"crops has shape {tuple(crops.shape)}, expected [B, 2 crops, L levels, 3, h, w]")
        self._train_mode()
        b, _, levels = crops.shape[:3]
        images = crops.to(self.device, non_blocking=True).flatten(0, 2)
        with self._autocast():
            features = self.module(images)
        sims = self.similarities(features.float()).view(b, 2, levels, -1, 2)
        terms = qualiclip_losses(sims, self.config.loss)
        self.optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        params = [p for p in self.net.parameters() if p.grad is not None]
        max_norm = self.config.grad_clip if self.config.grad_clip is not None else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.step_count += 1
        metrics = {name: float(value.detach()) for name, value in terms.items()}
        metrics.update(lr=float(lr), grad_norm=float(grad_norm))
        return metrics

    @torch.no_grad()
    def score(self, images: torch.Tensor) -> torch.Tensor:
        """Quality ``[N]`` of RGB ``[N, 3, H, W]`` in [0, 1], exactly as the exported metric computes it:
        mean over the 7 pairs of ``sigmoid((l+ - l-) / temperature)`` at the training logit scale."""
        self.net.eval()
        with self._autocast():
            features = self.net(images.to(self.device))
        sims = prompt_similarities(
            features.float(), self.net.prompt_features, logit_scale=self.config.logit_scale,
            form="probability", temperature=self.config.temperature,
        )  # fmt: skip
        return sims[..., 0].mean(dim=1)

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs: network, optimiser, scheduler, step and the CPU RNG state."""
        return {
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step_count,
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (the network must have the same arch)."""
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step_count = int(state["step"])
        torch.set_rng_state(state["rng_cpu"])
        if state.get("rng_cuda") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])

    def export_state(self) -> dict[str, torch.Tensor]:
        """Tensors of the trained model in the QualiCLIP layout (see ``QualiCLIPTrainNet.export_state``)."""
        return self.net.export_state(self.config.logit_scale)

    def arch_options(self, card_name: str) -> dict[str, Any]:
        """The card's ``arch_options`` that make ``IqaPluginQualiCLIP`` compute this model's score."""
        options: dict[str, Any] = {"model_type": "qualiclip", "temperature": self.config.temperature}
        if self.config.vision() is not None:
            options["vision"] = self.config.vision()
        return options
