"""Build pyiqa 0.1.16's own QualiCLIP arch offline from a local checkpoint (tests and benchmarks only).

pyiqa's path downloads OpenAI's RN50 and the QualiCLIP weights and imports ``pkg_resources`` (through
openai-clip), which current setuptools no longer ships. Here, inside the test process only: a minimal
``pkg_resources`` shim, and pyiqa's loaders pointed at local fabricated files. pyiqa's network code itself
runs unchanged: it is the reference our implementation is compared against.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import torch


def _shim_pkg_resources() -> None:
    try:
        import pkg_resources  # noqa: F401
    except ModuleNotFoundError:
        import packaging.version

        shim = types.ModuleType("pkg_resources")
        shim.packaging = types.SimpleNamespace(version=packaging.version)
        sys.modules["pkg_resources"] = shim


def build_native_qualiclip(model_type: str, base_checkpoint: Path, plus_params: Path | None = None, **kwargs):
    """pyiqa's native ``QualiCLIP(model_type=...)`` loaded from local files, in eval mode on CPU."""
    _shim_pkg_resources()
    from pyiqa.archs import arch_util, clip_model, qualiclip_arch

    state = torch.load(base_checkpoint, map_location="cpu", weights_only=True)
    clip_state = {k.replace("clip_model.", ""): v for k, v in state.items() if k.startswith("clip_model.")}

    def local_clip(name, device="cpu"):
        return clip_model.build_model(dict(clip_state)).float()

    def local_file(url, *args, **kw):
        return str(base_checkpoint)

    def local_network(net, model_path, strict=True, weight_keys=None):
        loaded = torch.load(plus_params, map_location="cpu", weights_only=True)
        loaded = loaded[weight_keys] if weight_keys else loaded
        net.load_state_dict(arch_util.clean_state_dict(loaded), strict=strict)

    saved = (qualiclip_arch.load, qualiclip_arch.load_file_from_url, qualiclip_arch.load_pretrained_network)
    qualiclip_arch.load, qualiclip_arch.load_file_from_url, qualiclip_arch.load_pretrained_network = (
        local_clip,
        local_file,
        local_network,
    )
    try:
        net = qualiclip_arch.QualiCLIP(model_type=model_type, **kwargs)
    finally:
        qualiclip_arch.load, qualiclip_arch.load_file_from_url, qualiclip_arch.load_pretrained_network = saved
    return net.eval()
