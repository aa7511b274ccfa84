"""CLIP RN50 from open_clip (built without any download) and its image tower without positional embedding.

QualiCLIP's checkpoint holds the whole OpenAI CLIP RN50 under ``clip_model.<key>``; open_clip's
``RN50-quickgelu`` uses the same key names (QuickGELU as in OpenAI's text tower), so it loads directly.
"""

from __future__ import annotations

import logging
import warnings

import torch
import torch.nn.functional as F
from torch import nn

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: The checkpoint prefix QualiCLIP.pth uses for the CLIP keys.
CLIP_PREFIX = "clip_model."


def build_rn50_clip() -> nn.Module:
    """An open_clip CLIP RN50 (OpenAI layout, QuickGELU) with random weights; never downloads."""
    import open_clip

    open_clip_logger = logging.getLogger()
    level = open_clip_logger.level
    open_clip_logger.setLevel(logging.ERROR)  # silence "No pretrained weights loaded" (intended here)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return open_clip.create_model("RN50-quickgelu", pretrained=None)
    finally:
        open_clip_logger.setLevel(level)


class ImageOnlyCLIP(nn.Module):
    """A CLIP without text tower: an open_clip ``ModifiedResNet`` of any size plus ``logit_scale``, with
    the RN50 key names (``visual.*``, ``logit_scale``), for small QualiCLIP models trained from scratch
    (their prompt features are stored, so no text tower is needed)."""

    def __init__(self, layers: tuple[int, int, int, int], width: int, heads: int, output_dim: int) -> None:
        super().__init__()
        from open_clip.modified_resnet import ModifiedResNet

        # image_size only sizes the attention pool's positional embedding, which ImageTower never uses
        self.visual = ModifiedResNet(list(layers), output_dim=output_dim, heads=heads, image_size=64, width=width)
        self.logit_scale = nn.Parameter(torch.tensor(float(torch.log(torch.tensor(100.0)))))


def build_image_only_clip(vision: dict) -> ImageOnlyCLIP:
    """An :class:`ImageOnlyCLIP` from a config ``{layers: [4 ints], width, heads, output_dim}``."""
    expected = {"layers", "width", "heads", "output_dim"}
    if set(vision) != expected:
        raise ValueError(f"vision={vision!r}: expected exactly the keys {sorted(expected)} (a reduced ModifiedResNet)")
    if (int(vision["width"]) * 32) % int(vision["heads"]):
        raise ValueError(f"vision={vision!r}: heads must divide width * 32 (the attention pool's width)")
    return ImageOnlyCLIP(tuple(vision["layers"]), int(vision["width"]), int(vision["heads"]), int(vision["output_dim"]))


def split_qualiclip_checkpoint(state: dict[str, torch.Tensor], source: str) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Split a QualiCLIP.pth dict into (CLIP state dict without prefix, prompts_features [14, 1024]).

    Raises:
        ValueError: the dict is not in the QualiCLIP.pth layout (names ``source`` and the missing keys).
    """
    if "prompts_features" not in state:
        raise ValueError(
            f"{source}: not a QualiCLIP checkpoint: it has no 'prompts_features' entry "
            f"(top-level keys start with {sorted(state)[:5]}). Expected the QualiCLIP.pth layout: "
            f"'{CLIP_PREFIX}<OpenAI CLIP key>' tensors plus 'prompts_features' [14, 1024]."
        )
    clip_state = {k[len(CLIP_PREFIX) :]: v for k, v in state.items() if k.startswith(CLIP_PREFIX)}
    features = state["prompts_features"]
    if features.ndim != 2 or features.shape[0] != 14:
        raise ValueError(f"{source}: 'prompts_features' has shape {tuple(features.shape)}, expected [14, 1024].")
    return clip_state, features


def load_clip_weights(clip: nn.Module, clip_state: dict[str, torch.Tensor], source: str) -> None:
    """Load OpenAI-layout CLIP weights into an open_clip model, with an error that lists what differs."""
    expected = set(clip.state_dict())
    missing = sorted(expected - set(clip_state))
    unexpected = sorted(set(clip_state) - expected)
    if missing or unexpected:
        raise ValueError(
            f"{source}: CLIP weights do not match RN50: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}). Pass a QualiCLIP RN50 checkpoint."
        )
    clip.load_state_dict(clip_state, strict=True)


class ImageTower(nn.Module):
    """CLIP's ModifiedResNet image encoder whose attention pool skips the positional embedding.

    Without positional embedding the pool accepts any feature map, so any input >= 32 px works. Only the
    pooled (mean) token is used, so only its query is computed: attention costs O(HW) instead of O(HW^2),
    with the same result as the full attention's first row.
    """

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        self.visual = visual
        self.num_heads = visual.attnpool.num_heads

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage_features(x, ("layer4",))["layer4"]

    def stage_features(self, x: torch.Tensor, stages: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """Outputs of the named residual stages (``'layer1'`` .. ``'layer4'``: 1/4 .. 1/32 resolution), running
        only as deep as the deepest one asked for."""
        v = self.visual
        x = x.to(v.conv1.weight.dtype)
        x = v.act1(v.bn1(v.conv1(x)))
        x = v.act2(v.bn2(v.conv2(x)))
        x = v.act3(v.bn3(v.conv3(x)))
        x = v.avgpool(x)
        out = {}
        for name in ("layer1", "layer2", "layer3", "layer4"):
            if len(out) == len(stages):
                break
            x = getattr(v, name)(x)
            if name in stages:
                out[name] = x
        return out

    def attention_pool(self, x: torch.Tensor) -> torch.Tensor:
        pool = self.visual.attnpool
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # [B, HW, C]
        tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)  # [B, HW+1, C]
        heads, dim = self.num_heads, c // self.num_heads
        q = F.linear(tokens[:, :1], pool.q_proj.weight, pool.q_proj.bias)
        k = F.linear(tokens, pool.k_proj.weight, pool.k_proj.bias)
        v = F.linear(tokens, pool.v_proj.weight, pool.v_proj.bias)
        q, k, v = (t.view(b, -1, heads, dim).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)  # [B, heads, 1, dim]
        out = out.transpose(1, 2).reshape(b, c)
        return F.linear(out, pool.c_proj.weight, pool.c_proj.bias)

    @torch.no_grad()
    def fold_batchnorm(self) -> ImageTower:
        """Fold every eval-mode BatchNorm into the convolution before it (inference only; same outputs
        up to float rounding, one memory pass less per convolution). Frozen networks only: the folded
        tower no longer has BatchNorm parameters to train."""
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        def fold(parent: nn.Module, conv_name: str, bn_name: str) -> None:
            conv, bn = getattr(parent, conv_name), getattr(parent, bn_name)
            if isinstance(bn, nn.BatchNorm2d):
                setattr(parent, conv_name, fuse_conv_bn_eval(conv.eval(), bn.eval()))
                setattr(parent, bn_name, nn.Identity())

        v = self.visual
        for i in (1, 2, 3):
            fold(v, f"conv{i}", f"bn{i}")
        for layer in (v.layer1, v.layer2, v.layer3, v.layer4):
            for block in layer:
                for i in (1, 2, 3):
                    fold(block, f"conv{i}", f"bn{i}")
                if block.downsample is not None:
                    fold(block.downsample, "0", "1")
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: CLIP-normalised ``[B, 3, H, W]`` -> image features ``[B, 1024]`` (not normalised)."""
        return self.attention_pool(self.feature_map(x))
