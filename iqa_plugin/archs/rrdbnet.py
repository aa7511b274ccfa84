"""RRDBNet (ESRGAN's generator, the one SFD trains) in the official ESRGAN/KAIR/SFD key layout.

Parameter names are those of the SFD repository's ``rrdbnet_arch.py`` (``conv_first``,
``RRDB_trunk.<i>.RDB<k>.conv<j>``, ``trunk_conv``, ``upconv1``, ``upconv2``, ``HRconv``, ``conv_last``),
so the authors' weights load as they are. BasicSR's (and Real-ESRGAN's) layout (``body.<i>.rdb<k>``,
``conv_body``, ``conv_up1/2``, ``conv_hr``; x2 and x1 as pixel-unshuffle + two upsamplings; weights under
``params_ema``/``params``) loads through :func:`to_official_keys`. :func:`rrdbnet_from_state_dict` reads
the configuration (features, blocks, growth, scale) from the tensors' shapes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from iqa_plugin.hub.cards import ModelCard

__all__ = ["RRDBNet", "config_from_state_dict", "rrdbnet_from_state_dict", "to_official_keys", "unwrap_checkpoint"]


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convolutions, residual scaled by 0.2 (ESRGAN)."""

    conv5: nn.Conv2d

    def __init__(self, features: int, growth: int) -> None:
        super().__init__()
        for j in range(1, 6):
            out = features if j == 5 else growth
            setattr(self, f"conv{j}", nn.Conv2d(features + (j - 1) * growth, out, 3, 1, 1))
        for j in range(1, 6):  # ESRGAN's init: Kaiming scaled by 0.1 keeps the deep residual trunk stable
            conv = getattr(self, f"conv{j}")
            nn.init.kaiming_normal_(conv.weight, a=0, mode="fan_in")
            conv.weight.data.mul_(0.1)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [x]
        for j in range(1, 5):
            outputs.append(F.leaky_relu(getattr(self, f"conv{j}")(torch.cat(outputs, 1)), 0.2))
        return self.conv5(torch.cat(outputs, 1)) * 0.2 + x


class RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks, residual scaled by 0.2."""

    def __init__(self, features: int, growth: int) -> None:
        super().__init__()
        self.RDB1 = ResidualDenseBlock(features, growth)
        self.RDB2 = ResidualDenseBlock(features, growth)
        self.RDB3 = ResidualDenseBlock(features, growth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.RDB3(self.RDB2(self.RDB1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """ESRGAN generator: ``[B, 3, h, w]`` in [0, 1] -> ``[B, 3, scale*h, scale*w]`` (not clamped).

    Args:
        scale: 1, 2 or 4 (x8 also works: three upsamplings).
        features: trunk width (64 in ESRGAN/SFD).
        blocks: number of RRDB blocks (23 in ESRGAN/SFD).
        growth: dense-block growth channels (32 in ESRGAN/SFD).
        unshuffle: pixel-unshuffle factor on the input (1 in the official layout; BasicSR's x2 models use 2
            and its x1 models 4, then upsample by ``scale * unshuffle``).
        in_channels / out_channels: 3 for RGB.
        residual: ``'none'`` (ESRGAN/SFD: the network outputs the image) or ``'bicubic'``: the network
            outputs a correction added to the bicubic upscaling of its input, and ``conv_last`` starts at
            zero, so an untrained network *is* bicubic upscaling (VDSR's global residual learning, Kim et
            al. 2016; a small generator trained for minutes then starts from bicubic quality instead of
            having to learn it). The state dict is the same in both modes; a card's ``arch_options`` say
            which one a file was trained with.
    """

    def __init__(
        self,
        scale: int = 4,
        features: int = 64,
        blocks: int = 23,
        growth: int = 32,
        unshuffle: int = 1,
        in_channels: int = 3,
        out_channels: int = 3,
        residual: Literal["none", "bicubic"] = "none",
    ) -> None:
        super().__init__()
        if residual not in ("none", "bicubic"):
            raise ValueError(f"residual={residual!r}: expected 'none' (ESRGAN/SFD) or 'bicubic' (VDSR-style)")
        if residual == "bicubic" and (in_channels != 3 or out_channels != 3):
            raise ValueError("residual='bicubic' needs in_channels == out_channels == 3")
        ups = math.log2(scale * unshuffle)
        if scale < 1 or unshuffle < 1 or ups != int(ups):
            raise ValueError(
                f"scale={scale}, unshuffle={unshuffle}: scale * unshuffle must be a power of two >= 1 "
                "(official layout: scale 2 or 4, unshuffle 1; BasicSR x2: scale 2, unshuffle 2)"
            )
        self.scale, self.unshuffle, self.upsamplings = scale, unshuffle, int(ups)
        self.residual = residual
        #: the shape-defining options (what :func:`config_from_state_dict` can read back from a file)
        self.config = {"scale": scale, "features": features, "blocks": blocks, "growth": growth,
                       "unshuffle": unshuffle, "in_channels": in_channels, "out_channels": out_channels}
        self.conv_first = nn.Conv2d(in_channels * unshuffle**2, features, 3, 1, 1)
        self.RRDB_trunk = nn.Sequential(*(RRDB(features, growth) for _ in range(blocks)))
        self.trunk_conv = nn.Conv2d(features, features, 3, 1, 1)
        for i in range(1, self.upsamplings + 1):
            setattr(self, f"upconv{i}", nn.Conv2d(features, features, 3, 1, 1))
        self.HRconv = nn.Conv2d(features, features, 3, 1, 1)
        self.conv_last = nn.Conv2d(features, out_channels, 3, 1, 1)
        if residual == "bicubic":
            nn.init.zeros_(self.conv_last.weight)
            nn.init.zeros_(self.conv_last.bias)

    def load_card_weights(self, files: Mapping[str, Path], card: ModelCard) -> None:
        """Load the card's ``'model'`` file in either layout (the builder's hook for published files); the
        file's configuration must be the one this network was built with."""
        from iqa_plugin.hub.weights import load_checkpoint

        path = files["model"]
        state = load_checkpoint(path)
        key = card.weights["model"].key
        if key is not None and isinstance(state.get(key), Mapping):
            state = state[key]
        tensors = to_official_keys(unwrap_checkpoint(state, str(path)))
        found = config_from_state_dict(tensors, str(path))
        if found != self.config:
            differ = {k: found[k] for k in found if found[k] != self.config[k]}
            raise ValueError(
                f"{path}: this generator has {differ}, but card {card.name!r} builds {({k: self.config[k] for k in differ})}. "
                f"Fix: pass the matching options (e.g. create_sr_model({card.name!r}, ..., {', '.join(f'{k}={v}' for k, v in differ.items())})) "
                "or use the card this file was exported with."
            )
        self.load_state_dict(tensors)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = x
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.unshuffle)
        fea = self.conv_first(x)
        fea = fea + self.trunk_conv(self.RRDB_trunk(fea))
        for i in range(1, self.upsamplings + 1):
            fea = F.leaky_relu(getattr(self, f"upconv{i}")(F.interpolate(fea, scale_factor=2, mode="nearest")), 0.2)
        out = self.conv_last(F.leaky_relu(self.HRconv(fea), 0.2))
        if self.residual == "bicubic":
            out = out + F.interpolate(base, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return out


# BasicSR name -> official name, applied to each dotted key in order.
_BASICSR_TO_OFFICIAL: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^body\.(\d+)\.rdb(\d)\."), r"RRDB_trunk.\1.RDB\2."),
    (re.compile(r"^conv_body\."), "trunk_conv."),
    (re.compile(r"^conv_up(\d)\."), r"upconv\1."),
    (re.compile(r"^conv_hr\."), "HRconv."),
)


def unwrap_checkpoint(state: Mapping[str, object], source: str = "<state dict>") -> dict[str, torch.Tensor]:
    """The generator tensors of a checkpoint: BasicSR's ``params_ema`` (preferred) or ``params`` sub-dict
    when present, a DDP ``module.`` prefix stripped; anything else is returned as it is."""
    for key in ("params_ema", "params"):
        if key in state and isinstance(state[key], Mapping):
            state = state[key]  # type: ignore[assignment]
            break
    tensors = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError(f"{source}: no tensors found (top-level keys {sorted(state)[:6]}); expected an RRDBNet state dict")
    return tensors


def to_official_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename BasicSR RRDBNet keys to the official ESRGAN/SFD ones; official keys pass through unchanged."""
    renamed = {}
    for key, value in state.items():
        for pattern, replacement in _BASICSR_TO_OFFICIAL:
            key = pattern.sub(replacement, key)
        renamed[key] = value
    return renamed


def config_from_state_dict(state: Mapping[str, torch.Tensor], source: str = "<state dict>") -> dict[str, int]:
    """RRDBNet keyword arguments read from an official-layout state dict's shapes."""
    try:
        first, last = state["conv_first.weight"], state["conv_last.weight"]
        growth = state["RRDB_trunk.0.RDB1.conv1.weight"].shape[0]
    except KeyError as exc:
        raise ValueError(
            f"{source}: not an RRDBNet state dict (missing {exc.args[0]!r}; keys start with {sorted(state)[:4]}). "
            "Expected the ESRGAN/SFD layout (conv_first, RRDB_trunk.*, ...) or BasicSR's (conv_first, body.*, ...)."
        ) from None
    blocks = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("RRDB_trunk."))
    upsamplings = sum(1 for k in state if re.fullmatch(r"upconv\d\.weight", k))
    out_channels = last.shape[0]
    unshuffle = int(round(math.sqrt(first.shape[1] / out_channels)))
    return {
        "scale": 2**upsamplings // unshuffle,
        "features": first.shape[0],
        "blocks": blocks,
        "growth": growth,
        "unshuffle": unshuffle,
        "in_channels": first.shape[1] // unshuffle**2,
        "out_channels": out_channels,
    }


def rrdbnet_from_state_dict(state: Mapping[str, object], source: str = "<state dict>",
                            scale: int | None = None, residual: Literal["none", "bicubic"] = "none") -> RRDBNet:
    """An RRDBNet built to the checkpoint's shapes with its weights loaded (either layout). ``residual``
    cannot be read from the tensors: pass the mode the file was trained with (see :class:`RRDBNet`).

    Raises:
        ValueError: not an RRDBNet checkpoint, or its scale differs from ``scale`` when one is asked for.
    """
    tensors = to_official_keys(unwrap_checkpoint(state, source))
    config = config_from_state_dict(tensors, source)
    if scale is not None and config["scale"] != scale:
        raise ValueError(
            f"{source}: this generator upscales x{config['scale']}, but x{scale} was asked for; "
            f"pass scale={config['scale']} or a x{scale} checkpoint"
        )
    net = RRDBNet(**config, residual=residual)
    missing, unexpected = net.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{source}: RRDBNet weights do not match: missing {missing[:3]}, unexpected {unexpected[:3]} "
            "(expected the ESRGAN/SFD or BasicSR RRDBNet layout)"
        )
    return net
