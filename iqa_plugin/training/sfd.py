"""SFD's training recipe without Ray: networks, losses, optimisers and one step.

``SFDTrainer(config).step({"hr": ...}) -> metrics`` runs a pixel-loss warm-up for ``warmup_steps`` steps,
then the GAN phase: a generator step (pixel + perceptual + Feat-D + TG-D adversarial losses, both
discriminators frozen) followed by a discriminator step (each discriminator on real HR vs detached SR, its
own optimiser). The Ray Train harness wraps each trainable network with ``wrap`` (``prepare_model``, i.e.
DDP) and saves :meth:`SFDTrainer.state_dict`; nothing here knows about Ray.

The paper's training details are not public (REFERENCE.md); every unknown below is a field whose
description gives the default's source.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from iqa_plugin.archs.rrdbnet import RRDBNet
from iqa_plugin.archs.sfd_disc import (
    DEFAULT_FEAT_STAGES,
    DEFAULT_PROMPT_WORDS,
    TGD,
    FeatD,
    FrozenCLIP,
    load_clip_rn50,
)
from iqa_plugin.data.degradations.sr import RealSRConfig
from iqa_plugin.losses.gan import GanType, discriminator_loss, generator_loss
from iqa_plugin.losses.pixel import PerceptualLoss, pixel_loss

__all__ = ["SFDConfig", "SFDTrainer", "make_lr"]


class SFDConfig(BaseModel):
    """Every setting of the SFD recipe (unknown keys rejected)."""

    model_config = ConfigDict(extra="forbid")

    scale: Literal[2, 4] = Field(4, description="Upscaling factor (SFD's released generator: x4).")
    features: PositiveInt = Field(64, description="RRDBNet width (ESRGAN/SFD: 64).")
    blocks: PositiveInt = Field(23, description="RRDB blocks (ESRGAN/SFD: 23).")
    growth: PositiveInt = Field(32, description="Dense growth channels (ESRGAN/SFD: 32).")
    residual: Literal["none", "bicubic"] = Field(
        "none", description="'none': the paper's RRDBNet outputs the image. 'bicubic': it outputs a correction "
        "added to the bicubic upscaling of its input, last conv zero-initialised (VDSR's global residual "
        "learning, a well-known design): training starts AT bicubic quality, so a small generator trained for "
        "minutes improves on bicubic instead of first having to learn it. Exported cards carry the mode.")
    generator_init: str | None = Field(None, description="PSNR-trained generator to start from (SeD starts from "
                                       "one); None trains the warm-up here.")
    degradation: Literal["bicubic", "realworld"] = Field(
        "bicubic", description="How LR is made from HR on the worker: antialiased bicubic (classical SR) or the "
        "second-order pipeline of iqa_plugin.data.degradations.sr (real-world SR).")
    realworld: RealSRConfig = Field(default_factory=RealSRConfig, description="Ranges of the real-world "
                                    "pipeline (Real-ESRGAN's defaults); its scale is taken from `scale`.")
    warmup_steps: int = Field(2000, ge=0, description="Pixel-loss-only steps before the GAN phase (a GAN from a "
                              "random generator diverges; SeD instead starts from a PSNR-trained RRDBNet).")
    lr_g: float = Field(1e-4, gt=0, description="Generator Adam lr (SeD: 1e-4; REFERENCE.md's probe: a small "
                        "generator warms up on a CPU budget only near 1e-3).")
    lr_d: float = Field(1e-4, gt=0, description="Feat-D and TG-D Adam lr (SeD: 1e-4).")
    betas: tuple[float, float] = Field((0.9, 0.99), description="Adam betas of every optimiser (SeD, BasicSR).")
    lr_milestones: tuple[int, ...] = Field((100_000, 200_000), description="Steps where every lr is multiplied "
                                           "by lr_gamma (SeD: 300k steps halved at 100k and 200k).")
    lr_gamma: float = Field(0.5, gt=0, description="lr factor at each milestone (SeD: 0.5).")
    pixel_weight: float = Field(1.0, ge=0, description="L1 weight (SeD: 1.0).")
    perceptual_weight: float = Field(1.0, ge=0, description="Perceptual weight in the GAN phase (SeD: 1.0); 0 "
                                     "skips the perceptual network's two forward passes.")
    perceptual_backbone: Literal["auto", "vgg19", "clip"] = Field(
        "auto", description="VGG19 conv5_4 when its file is on this machine, else the frozen CLIP's stages.")
    feat_adv_weight: float = Field(0.005, ge=0, description="Feat-D adversarial weight. SeD's single GAN term is "
                                   "0.01; it is split evenly over SFD's two discriminators.")
    tg_adv_weight: float = Field(0.005, ge=0, description="TG-D adversarial weight (the other half of SeD's 0.01).")
    gan_type: GanType = Field("vanilla", description="Adversarial loss (SeD: vanilla).")
    clip: str | None = Field("clip_rn50_openai", description="CLIP RN50 under both discriminators: a card name or "
                             "file; None = random weights (tests only).")
    feat_stages: tuple[str, ...] = Field(DEFAULT_FEAT_STAGES, description="CLIP stages Feat-D judges "
                                         "(iqa_plugin.archs.sfd_disc.DEFAULT_FEAT_STAGES says why).")
    feat_hidden: PositiveInt = Field(256, description="Feat-D head width.")
    spectral_norm: bool = Field(True, description="Spectral norm in Feat-D's heads (SeD, Real-ESRGAN).")
    prompt_words: tuple[str, str] = Field(DEFAULT_PROMPT_WORDS, description="TG-D's (real, fake) prompt words.")
    n_ctx: PositiveInt = Field(16, description="Learned context tokens per prompt (CoOp's default).")
    tg_logit_scale: float | None = Field(None, description="TG-D logit scale; None = CLIP's own (100).")
    ema_decay: float | None = Field(0.999, description="EMA of the generator (BasicSR: 0.999); None disables.")
    grad_clip: float | None = Field(None, description="Max gradient norm per network; None = no clipping (SeD).")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="bf16 autocast of the forward passes ('auto': on CUDA only); losses, optimisers and "
        "weights stay fp32.")
    seed: int = Field(0, description="Seeds initialisation and the real-world degradation draws.")


def make_lr(hr: torch.Tensor, config: SFDConfig, seed: int = 0) -> torch.Tensor:
    """Low-resolution inputs ``[B, 3, H/s, W/s]`` made from HR patches the way ``config`` says."""
    from iqa_plugin.data.degradations.sr import degrade_realworld, downscale_bicubic

    if config.degradation == "bicubic":
        return downscale_bicubic(hr, config.scale)
    return degrade_realworld(hr, seed, config.realworld.model_copy(update={"scale": config.scale}))


def _unwrap(module: nn.Module) -> nn.Module:
    return getattr(module, "module", module)


class SFDTrainer:
    """Networks, optimisers and the step of SFD.

    Args:
        config: the recipe.
        device: where everything runs.
        wrap: applied to each trainable network (generator, Feat-D, TG-D); the Ray harness passes
            ``ray.train.torch.prepare_model`` (DDP when there are several workers). Identity by default.
        clip: an already loaded CLIP RN50 (skips ``config.clip``), e.g. shared by tests.
    """

    def __init__(self, config: SFDConfig | None = None, *, device: str | torch.device = "cpu",
                 wrap: Callable[[nn.Module], nn.Module] = lambda m: m, clip: nn.Module | None = None) -> None:
        self.config = config = config or SFDConfig()
        self.device = torch.device(device)
        torch.manual_seed(config.seed)
        generator = RRDBNet(scale=config.scale, features=config.features, blocks=config.blocks, growth=config.growth,
                            residual=config.residual)
        if config.generator_init is not None:
            from iqa_plugin.archs.rrdbnet import rrdbnet_from_state_dict
            from iqa_plugin.hub.weights import load_checkpoint, resolve_weights

            path = resolve_weights(config.generator_init)
            generator = rrdbnet_from_state_dict(load_checkpoint(path), str(path), scale=config.scale,
                                                residual=config.residual)
        clip_model = clip if clip is not None else load_clip_rn50(config.clip)
        self.clip = FrozenCLIP(clip_model, config.feat_stages).to(self.device)
        self.generator = wrap(generator.to(self.device))
        self.feat_d = wrap(FeatD(self.clip.stage_channels(), config.feat_hidden, config.spectral_norm).to(self.device))
        self.tg_d = wrap(TGD(self.clip.clip, config.prompt_words, config.n_ctx, logit_scale=config.tg_logit_scale,
                             seed=config.seed).to(self.device))
        self.perceptual = PerceptualLoss(config.perceptual_backbone, clip=self.clip).to(self.device)
        self.ema = (AveragedModel(_unwrap(self.generator), multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay))
                    if config.ema_decay is not None else None)

        def adam(net: nn.Module, lr: float) -> torch.optim.Optimizer:
            return torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=lr, betas=config.betas)

        self.optimizers = {"generator": adam(self.generator, config.lr_g), "feat_d": adam(self.feat_d, config.lr_d),
                           "tg_d": adam(self.tg_d, config.lr_d)}
        self.schedulers = {name: torch.optim.lr_scheduler.MultiStepLR(opt, list(config.lr_milestones), config.lr_gamma)
                           for name, opt in self.optimizers.items()}
        self.steps_done = 0

    @property
    def step_count(self) -> int:
        """Optimiser steps done (the training harness's name for :attr:`steps_done`)."""
        return self.steps_done

    def distribute(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        """Wrap the generator, Feat-D and TG-D for data parallelism (``ray.train.torch.prepare_model``: DDP
        when there are several workers); call it after :meth:`load_state_dict`. The optimisers keep the same
        parameters; the frozen CLIP and the EMA copy are never wrapped (nothing of theirs is synchronised)."""
        self.generator = wrap(_unwrap(self.generator))
        self.feat_d = wrap(_unwrap(self.feat_d))
        self.tg_d = wrap(_unwrap(self.tg_d))

    @property
    def phase(self) -> str:
        return "warmup" if self.steps_done < self.config.warmup_steps else "gan"

    def _update(self, name: str, net: nn.Module, loss: torch.Tensor) -> None:
        optimizer = self.optimizers[name]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(net.parameters(), self.config.grad_clip)
        optimizer.step()

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One training step on ``{"hr": [B, 3, H, W]}`` (``"lr"`` optional: made from HR when absent).
        Returns plain numbers: the losses of this step, the phase (0 warm-up, 1 GAN) and the lr."""
        hr = batch["hr"].to(self.device, torch.float32)
        lr = batch.get("lr")
        lr = make_lr(hr, self.config, self.config.seed + self.steps_done * hr.shape[0]) if lr is None else lr
        lr = lr.to(self.device, torch.float32)
        metrics = self._warmup_step(lr, hr) if self.phase == "warmup" else self._gan_step(lr, hr)
        with warnings.catch_warnings():  # the discriminators' optimisers first step after the warm-up
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step", category=UserWarning)
            for scheduler in self.schedulers.values():
                scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(_unwrap(self.generator))
        self.steps_done += 1
        return {**metrics, "lr_g": self.optimizers["generator"].param_groups[0]["lr"], "step": self.steps_done}

    def _autocast(self) -> contextlib.AbstractContextManager:
        c = self.config
        bf16 = c.precision == "bf16" or (c.precision == "auto" and self.device.type == "cuda")
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def _warmup_step(self, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, float]:
        self.generator.train()
        with self._autocast():
            sr = self.generator(lr)
        loss = self.config.pixel_weight * pixel_loss(sr.float(), hr)
        self._update("generator", self.generator, loss)
        return {"phase": 0.0, "loss_pixel": loss.item()}

    def _gan_step(self, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, float]:
        c = self.config
        for net in (self.generator, self.feat_d, self.tg_d):
            net.train()
        discriminators = (self.feat_d, self.tg_d)
        for net in discriminators:  # frozen and called unwrapped: DDP synchronises only their own step
            net.requires_grad_(False)
        with self._autocast():
            sr = self.generator(lr)
            fake = self.clip(sr)
            perceptual = self.perceptual(sr, hr) if c.perceptual_weight else sr.new_zeros(())
            fake_feat, fake_tg = _unwrap(self.feat_d)(fake.stages), _unwrap(self.tg_d)(fake.embedding)
        sr = sr.float()
        losses = {
            "loss_pixel": c.pixel_weight * pixel_loss(sr, hr),
            "loss_perceptual": c.perceptual_weight * perceptual.float(),
            "loss_g_feat": c.feat_adv_weight * generator_loss(fake_feat.float(), c.gan_type),
            "loss_g_tg": c.tg_adv_weight * generator_loss(fake_tg.float(), c.gan_type),
        }
        self._update("generator", self.generator, sum(losses.values()))
        for net in discriminators:
            net.requires_grad_(True)
        with self._autocast():
            with torch.no_grad():  # the CLIP is frozen and the fakes are detached: no graph through it
                both = self.clip(torch.cat([hr, sr.detach()]))  # one forward per network, as DDP wants
            real_feat, fake_feat = self.feat_d(both.stages).float().chunk(2)
            real_tg, fake_tg = self.tg_d(both.embedding).float().chunk(2)
        d_feat = discriminator_loss(real_feat, fake_feat, c.gan_type)
        d_tg = discriminator_loss(real_tg, fake_tg, c.gan_type)
        self._update("feat_d", self.feat_d, d_feat)
        self._update("tg_d", self.tg_d, d_tg)
        metrics = {k: v.item() for k, v in losses.items()}
        return {**metrics, "phase": 1.0, "loss_d_feat": d_feat.item(), "loss_d_tg": d_tg.item(),
                "d_feat_real": torch.sigmoid(real_feat).mean().item(),
                "d_feat_fake": torch.sigmoid(fake_feat).mean().item(),
                "d_tg_real": torch.sigmoid(real_tg).mean().item(), "d_tg_fake": torch.sigmoid(fake_tg).mean().item()}

    def export_generator(self) -> nn.Module:
        """The generator to export: the EMA copy when enabled, else the trained one (unwrapped)."""
        return self.ema.module if self.ema is not None else _unwrap(self.generator)

    def generator_state(self) -> dict[str, torch.Tensor]:
        """The exported generator's tensors in the official ESRGAN/SFD layout (EMA when enabled)."""
        return {k: v.detach().cpu() for k, v in self.export_generator().state_dict().items()}

    def generator_options(self) -> dict[str, Any]:
        """The SR card's ``arch_options`` that rebuild the exported generator."""
        net = _unwrap(self.generator)
        options = {k: net.config[k] for k in ("scale", "features", "blocks", "growth")}
        if net.unshuffle != 1:
            options["unshuffle"] = net.unshuffle
        return {**options, "residual": net.residual}

    def discriminator_state(self) -> dict[str, torch.Tensor]:
        """Feat-D and TG-D tensors for export: ``feat_d.*`` with spectral normalisation folded into plain
        ``weight`` tensors (the weights the discriminator computes with in eval mode) and ``tg_d.*``."""
        feat = _unwrap(self.feat_d)
        training = feat.training
        feat.eval()  # eval: spectral norm divides by its current sigma estimate without a power iteration
        with torch.no_grad():  # (parametrize.remove_parametrizations would also strip the live module's class)
            tensors = {f"feat_d.{name}.{part}": getattr(module, part).detach().cpu().clone()
                       for name, module in feat.named_modules() if isinstance(module, nn.Conv2d)
                       for part in ("weight", "bias")}
        feat.train(training)
        tensors.update({f"tg_d.{k}": v.detach().cpu() for k, v in _unwrap(self.tg_d).state_dict().items()})
        return tensors

    def discriminator_options(self) -> dict[str, Any]:
        """The discriminator card's ``arch_options``: the CLIP, Feat-D's stages and sizes, TG-D's prompts."""
        c = self.config
        return {"clip": c.clip, "feat_stages": list(c.feat_stages), "feat_hidden": c.feat_hidden,
                "spectral_norm_folded": c.spectral_norm, "prompt_words": list(c.prompt_words), "n_ctx": c.n_ctx,
                "logit_scale": float(_unwrap(self.tg_d).logit_scale)}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: every network (unwrapped), the EMA, optimisers, schedulers, step
        and the RNG states (CPU, CUDA)."""
        state: dict[str, Any] = {
            "steps_done": self.steps_done,
            "rng": {"cpu": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
            "generator": _unwrap(self.generator).state_dict(),
            "feat_d": _unwrap(self.feat_d).state_dict(),
            "tg_d": _unwrap(self.tg_d).state_dict(),
            "optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
            "schedulers": {k: v.state_dict() for k, v in self.schedulers.items()},
        }
        if self.ema is not None:
            state["generator_ema"] = self.ema.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict` (same config)."""
        for name in ("generator", "feat_d", "tg_d"):
            _unwrap(getattr(self, name)).load_state_dict(state[name])
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        for name, scheduler in self.schedulers.items():
            scheduler.load_state_dict(state["schedulers"][name])
        if self.ema is not None and "generator_ema" in state:
            self.ema.load_state_dict(state["generator_ema"])
        self.steps_done = int(state["steps_done"])
        rng = state.get("rng") or {}
        if "cpu" in rng:
            torch.set_rng_state(rng["cpu"])
        if rng.get("cuda") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
