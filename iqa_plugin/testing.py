"""Helpers for tests, benchmarks and demos that must run without any download.

* :func:`real_photo_paths` finds real photographs that ship inside installed packages
  (scikit-image, scikit-learn, matplotlib); :func:`pyiqa_photo_paths` the 9 more that pyiqa's wheel installs
  (5 pristine TID2013/Kodak references, 4 photos of its efficiency test).
* :func:`fabricate_qualiclip_checkpoint` and :func:`fabricate_qualiclip_plus_params` write seeded random
  checkpoints in the exact published layouts (``QualiCLIP.pth``: the whole OpenAI CLIP RN50 under
  ``clip_model.*`` plus ``prompts_features``; ``QualiCLIP+_*.pth``: ``{'params': {prompt_learner.*}}``).
  Scores from such weights are meaningless; layouts, shapes and dtypes are real.
* :func:`build_native_qualiclip` builds pyiqa 0.1.16's own QualiCLIP offline from such files: the
  reference of the parity test and the benchmark.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import torch

from iqa_plugin.archs.prompts import PROMPT_PAIRS

#: (package, path inside the package) of real photos; portrait and odd sizes included on purpose.
PACKAGED_PHOTOS: tuple[tuple[str, str], ...] = (
    ("skimage", "data/astronaut.png"),  # 512x512
    ("skimage", "data/coffee.png"),  # 600x400
    ("skimage", "data/rocket.jpg"),  # 640x427
    ("skimage", "data/chelsea.png"),  # 451x300
    ("skimage", "data/motorcycle_left.png"),  # 741x500
    ("sklearn", "datasets/images/china.jpg"),  # 640x427
    ("sklearn", "datasets/images/flower.jpg"),  # 640x427
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),  # 512x600 portrait
)


def real_photo_paths() -> list[Path]:
    """Paths of the real photos in :data:`PACKAGED_PHOTOS` whose package is installed.

    Raises:
        RuntimeError: none of scikit-image, scikit-learn and matplotlib is installed.
    """
    found = []
    for package, relative in PACKAGED_PHOTOS:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        path = Path(next(iter(spec.submodule_search_locations))) / relative
        if path.is_file():
            found.append(path)
    if not found:
        raise RuntimeError(
            "No sample photos found: install scikit-image, scikit-learn or matplotlib "
            "(pip install 'iqa-plugin[demo]')."
        )
    return found


#: Paths, inside pyiqa 0.1.16's installed distribution, of real photos its wheel ships next to the package:
#: the 5 pristine references of its calibration check (TID2013 / Kodak, 512x384 BMP) and the 4 photos of its
#: efficiency test (a SPAQ smartphone photo and three video frames, 800-1152 px JPEG).
PYIQA_PHOTOS: tuple[str, ...] = (
    "ResultsCalibra/ref_dir/I03.bmp",
    "ResultsCalibra/ref_dir/I04.bmp",
    "ResultsCalibra/ref_dir/I06.bmp",
    "ResultsCalibra/ref_dir/I08.bmp",
    "ResultsCalibra/ref_dir/I19.bmp",
    "tests/test_efficiency_img_dir/SPAQ_10241.jpg",
    "tests/test_efficiency_img_dir/frame_4wrwr48cdk6rbcjl.jpg",
    "tests/test_efficiency_img_dir/frame_7gzdcz9sif0ekg31.jpg",
    "tests/test_efficiency_img_dir/frame_9ogwhvvy7gfj6jzh.jpg",
)


def pyiqa_photo_paths() -> list[Path]:
    """Paths of the :data:`PYIQA_PHOTOS` that the installed pyiqa distribution holds (``[]`` without pyiqa, or
    for a pyiqa whose wheel does not ship them). Found through the distribution's file list, not a guess."""
    import importlib.metadata

    try:
        files = importlib.metadata.distribution("pyiqa").files or []
    except importlib.metadata.PackageNotFoundError:
        return []
    wanted = {str(f): Path(str(f.locate())) for f in files if str(f) in PYIQA_PHOTOS}
    return [wanted[p] for p in PYIQA_PHOTOS if p in wanted and wanted[p].is_file()]


def _randomize_batchnorm(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Give every BatchNorm non-trivial affine parameters and running statistics."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.weight.data = 0.5 + 0.5 * torch.rand(n, generator=generator)
            module.bias.data = 0.1 * torch.randn(n, generator=generator)
            module.running_mean.data = 0.1 * torch.randn(n, generator=generator)
            module.running_var.data = 0.5 + torch.rand(n, generator=generator)


def fabricated_clip_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A seeded random OpenAI-layout CLIP RN50 state dict (fp32), as QualiCLIP stores it."""
    from iqa_plugin.archs.clip_backbone import build_rn50_clip

    torch.manual_seed(seed)  # open_clip's initialisers use the global RNG
    clip = build_rn50_clip()
    generator = torch.Generator().manual_seed(seed)
    _randomize_batchnorm(clip.visual, generator)
    clip.logit_scale.data.fill_(torch.log(torch.tensor(100.0)).item())
    return {k: v.detach().clone().float() if v.is_floating_point() else v.clone() for k, v in clip.state_dict().items()}


def fabricate_qualiclip_checkpoint(path: str | Path, seed: int = 0) -> Path:
    """Write a fabricated ``QualiCLIP.pth`` (about 408 MB, the published layout) and return its path."""
    path = Path(path)
    state = {f"clip_model.{k}": v for k, v in fabricated_clip_state_dict(seed).items()}
    generator = torch.Generator().manual_seed(seed + 7919)
    features = torch.randn(len(PROMPT_PAIRS) * 2, 1024, generator=generator)
    state["prompts_features"] = features / features.norm(dim=-1, keepdim=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def fabricate_qualiclip_plus_params(path: str | Path, seed: int = 1, n_ctx: int = 16) -> Path:
    """Write a fabricated ``QualiCLIP+_*.pth`` (pyiqa's ``{'params': ...}`` layout) and return its path."""
    path = Path(path)
    generator = torch.Generator().manual_seed(seed)
    n_prompts = len(PROMPT_PAIRS) * 2
    width, context = 512, 77
    params = {
        "prompt_learner.ctx": 0.02 * torch.randn(n_prompts, n_ctx, width, generator=generator),
        "prompt_learner.token_prefix": 0.02 * torch.randn(n_prompts, 1, width, generator=generator),
        "prompt_learner.token_suffix": 0.02 * torch.randn(n_prompts, context - 1 - n_ctx, width, generator=generator),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"params": params}, path)
    return path


class TinyQualityNet(torch.nn.Module):
    """A tiny quality arch for tests of the builder and the scorer: one conv, global mean, a sigmoid.

    Its checkpoint is its own state dict (the builder's default loading path, as our safetensors exports).
    """

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, width, 3, padding=1)
        self.head = torch.nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head(self.conv(x).mean(dim=(2, 3))))


def fabricate_tiny_checkpoint(path: str | Path, seed: int = 0, width: int = 4) -> Path:
    """Write a seeded :class:`TinyQualityNet` state dict as safetensors and return its path."""
    from safetensors.torch import save_file

    path = Path(path)
    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in TinyQualityNet(width).state_dict().items()}, str(path))
    return path


def fabricated_weights_options(card_name: str, root: str | Path) -> dict[str, str]:
    """Keyword options that point the plugin metric ``card_name`` at fabricated files under ``root``
    (written once, reused): ``pretrained_model_path`` and, for QualiCLIP+, ``base_model_path``; nothing
    for a card whose weights ship with the package (they are real and need no network).

    Raises:
        ValueError: no fabricator is known for the card's arch.
    """
    from iqa_plugin.hub.cards import card_path, get_card

    card = get_card(card_name)
    root = Path(root)
    shipped = [url for url in card.weights["model"].urls if "://" not in url]
    if shipped and all((card_path(card_name).parent / url).is_file() for url in shipped):
        return {}  # weights that ship with the package (a demo model we trained): the real file is used
    if card.arch == "IqaPluginSFDIQA":
        return _fabricated_sfd_iqa_options(card, root)
    if card.arch != "IqaPluginQualiCLIP":
        raise ValueError(f"no fabricated weights for arch {card.arch!r} of card {card_name!r}; add one in iqa_plugin.testing")
    base = root / "QualiCLIP.pth"
    if not base.is_file():
        fabricate_qualiclip_checkpoint(base, seed=0)
    if "base" not in card.weights:
        return {"pretrained_model_path": str(base)}
    plus = root / "QualiCLIP+_params.pth"
    if not plus.is_file():
        fabricate_qualiclip_plus_params(plus, seed=1)
    return {"pretrained_model_path": str(plus), "base_model_path": str(base)}


def fabricate_sfd_iqa_export(path: str | Path, *, feat_stages: tuple[str, ...] = ("layer2", "layer3"),
                             feat_hidden: int = 256, seed: int = 0) -> Path:
    """Write a fabricated SFD discriminator export for CLIP RN50 in the plugin's layout (``feat_d.*`` with
    spectral norm folded, ``tg_d.text_features`` ``[2, 1024]``, ``tg_d.logit_scale``); returns its path."""
    from safetensors.torch import save_file

    from iqa_plugin.archs.sfd_disc import FeatD

    rn50 = {"layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048}
    torch.manual_seed(seed)
    feat = FeatD({s: rn50[s] for s in feat_stages}, feat_hidden, spectral_norm=False)
    tensors = {f"feat_d.{k}": v.contiguous() for k, v in feat.state_dict().items()}
    generator = torch.Generator().manual_seed(seed)
    tensors["tg_d.text_features"] = torch.nn.functional.normalize(torch.randn(2, 1024, generator=generator), dim=-1)
    tensors["tg_d.logit_scale"] = torch.tensor(100.0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


def _fabricated_sfd_iqa_options(card, root: Path) -> dict[str, str]:
    from safetensors.torch import save_file

    export = root / f"sfd_iqa_export_{card.name}.safetensors"
    if not export.is_file():
        options = card.arch_options
        fabricate_sfd_iqa_export(export, feat_stages=tuple(options.get("feat_stages", ("layer2", "layer3"))),
                                 feat_hidden=int(options.get("feat_hidden", 256)))
    clip = root / "clip_rn50_openai_keys.safetensors"
    if not clip.is_file():
        save_file({k: v.contiguous() for k, v in fabricated_clip_state_dict(0).items()}, str(clip))
    return {"pretrained_model_path": str(export), "clip_model_path": str(clip)}


# --------------------------------------------------------------------------- pyiqa's own QualiCLIP, offline
# pyiqa's path downloads OpenAI's RN50 and the QualiCLIP weights and imports ``pkg_resources`` (through
# openai-clip), which current setuptools no longer ships. Here: a minimal ``pkg_resources`` shim (only
# when none is installed), and pyiqa's loaders pointed at local files while the network is built. pyiqa's
# network code itself runs unchanged: it is the reference our implementation is compared against.


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


# --------------------------------------------------------------------------- SFD / super-resolution


def _rrdbnet_key_shapes(layout: str, scale: int, features: int, blocks: int, growth: int) -> list[tuple[str, tuple]]:
    """(key, shape) of every RRDBNet tensor in the published layout, written out from the layouts
    themselves (not derived from our module), so a mapping test compares two independent descriptions.

    ``official``: ESRGAN/KAIR/SFD ``rrdbnet_arch.py`` (x2 = one upconv, x4 = two). ``basicsr``: BasicSR's
    ``RRDBNet`` (x4 = two conv_up; x2 = pixel-unshuffle by 2 into conv_first (12 channels) then two conv_up).
    """
    if layout not in ("official", "basicsr"):
        raise ValueError(f"layout={layout!r}: expected 'official' or 'basicsr'")
    official = layout == "official"
    unshuffle = 1 if official or scale == 4 else 4 // scale
    ups = (scale.bit_length() - 1) if official else 2
    conv = lambda cin, cout: [("weight", (cout, cin, 3, 3)), ("bias", (cout,))]  # noqa: E731
    keys: list[tuple[str, tuple]] = [(f"conv_first.{n}", s) for n, s in conv(3 * unshuffle**2, features)]
    for i in range(blocks):
        for k in range(1, 4):
            block = f"RRDB_trunk.{i}.RDB{k}" if official else f"body.{i}.rdb{k}"
            for j in range(1, 6):
                cout = features if j == 5 else growth
                keys += [(f"{block}.conv{j}.{n}", s) for n, s in conv(features + (j - 1) * growth, cout)]
    names = ["trunk_conv"] + [f"upconv{u}" for u in range(1, ups + 1)] + ["HRconv"]
    if not official:
        names = ["conv_body"] + [f"conv_up{u}" for u in range(1, ups + 1)] + ["conv_hr"]
    for name in names:
        keys += [(f"{name}.{n}", s) for n, s in conv(features, features)]
    keys += [(f"conv_last.{n}", s) for n, s in conv(features, 3)]
    return keys


def fabricated_rrdbnet_state_dict(layout: str = "official", *, scale: int = 4, features: int = 64, blocks: int = 23,
                                  growth: int = 32, seed: int = 0) -> dict[str, torch.Tensor]:
    """A seeded random RRDBNet state dict in the ``official`` (ESRGAN/SFD) or ``basicsr`` layout.

    Tensors are drawn in layout order from one generator, so both layouts of the same seed and config
    hold the same numbers under different names (x4; BasicSR's x2 differs in structure)."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in _rrdbnet_key_shapes(layout, scale, features, blocks, growth):
        fan_in = shape[1] * 9 if len(shape) == 4 else 1
        std = (2.0 / fan_in) ** 0.5 * (0.1 if ".RDB" in key or ".rdb" in key else 1.0)
        state[key] = std * torch.randn(shape, generator=generator) if len(shape) == 4 else 0.01 * torch.randn(
            shape, generator=generator)
    return state


def fabricate_rrdbnet_checkpoint(path: str | Path, layout: str = "official", *, wrap: str | None = None,
                                 **config) -> Path:
    """Write a fabricated RRDBNet ``.pth``: a flat state dict (the ESRGAN/SFD release style) or, with
    ``wrap='params_ema'`` (BasicSR/Real-ESRGAN release style), ``{wrap: state}``. ``config`` as
    :func:`fabricated_rrdbnet_state_dict`."""
    path = Path(path)
    state = fabricated_rrdbnet_state_dict(layout, **config)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({wrap: state} if wrap else state, path)
    return path


def fabricate_openai_clip_archive(path: str | Path, seed: int = 0) -> Path:
    """Write a fabricated OpenAI ``RN50.pt``: a TorchScript archive of the whole CLIP RN50 in fp16 (as OpenAI
    publishes it, about 200 MB) whose state dict has the OpenAI key names plus the model sizes OpenAI's
    archives carry as tensors (``input_resolution``, ``context_length``, ``vocab_size``); returns its path."""
    path = Path(path)
    state = fabricated_clip_state_dict(seed)
    state.update(input_resolution=torch.tensor(224), context_length=torch.tensor(77), vocab_size=torch.tensor(49408))

    class _Holder(torch.nn.Module):  # the archive only has to carry the tensors under their names
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    holder = _Holder()
    for key, value in state.items():
        *parents, leaf = key.split(".")
        module = holder
        for name in parents:
            if not hasattr(module, name):
                module.add_module(name, torch.nn.Module())
            module = getattr(module, name)
        module.register_buffer(leaf, value.half() if value.is_floating_point() else value)
    path.parent.mkdir(parents=True, exist_ok=True)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(holder), str(path))
    return path
