"""Registration of the plugin's metrics into pyiqa (DESIGN decision 1).

``register()`` runs on ``import iqa_plugin`` and from pyiqa's ``pyiqa.archs`` entry point. It is
idempotent: it adds our arch classes to ``ARCH_REGISTRY`` under names of our own and writes one
``DEFAULT_CONFIGS`` entry per metric model card. The five QualiCLIP names that pyiqa 0.1.16 ships are
re-pointed at our implementation on purpose (same scores on the same weights, see the parity test); any
other name that pyiqa already defines with a different arch is left alone with a warning, never overwritten.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import warnings

from torch import nn

#: Names pyiqa ships whose entries this plugin deliberately takes over.
TAKEN_OVER = ("qualiclip", "qualiclip+", "qualiclip+-clive", "qualiclip+-flive", "qualiclip+-spaq")


def arch_classes() -> dict[str, type[nn.Module]]:
    """Arch name -> class for every network this plugin provides to pyiqa."""
    from iqa_plugin.archs.qualiclip import IqaPluginQualiCLIP

    return {"IqaPluginQualiCLIP": IqaPluginQualiCLIP}


def config_entry(card) -> dict:
    """The pyiqa ``DEFAULT_CONFIGS`` entry for a metric model card."""
    low, high = card.score_range
    return {
        "metric_opts": {"type": card.arch, **card.arch_options},
        "metric_mode": card.metric_mode,
        "score_range": f"{low:g}, {high:g}",
        "lower_better": card.lower_better,
    }


def _ours(entry: dict, archs: dict[str, type]) -> bool:
    return entry.get("metric_opts", {}).get("type") in archs


def register() -> list[str]:
    """Register every metric card into pyiqa; returns the names now served by this plugin."""
    from pyiqa.default_model_configs import DEFAULT_CONFIGS
    from pyiqa.utils.registry import ARCH_REGISTRY

    from iqa_plugin.hub.cards import list_cards

    archs = arch_classes()
    for name, cls in archs.items():
        if ARCH_REGISTRY._obj_map.get(name) is not cls:
            ARCH_REGISTRY.register(cls, name=name, override=True)
    served = []
    for card in list_cards():
        if card.kind != "metric" or card.arch not in archs:
            continue
        existing = DEFAULT_CONFIGS.get(card.name)
        if existing is not None and card.name not in TAKEN_OVER and not _ours(existing, archs):
            warnings.warn(
                f"Model card {card.name!r} not registered: pyiqa already defines {card.name!r} "
                f"(arch {existing.get('metric_opts', {}).get('type')!r}). Rename the card.",
                RuntimeWarning,
                stacklevel=2,
            )
            continue
        DEFAULT_CONFIGS[card.name] = config_entry(card)
        served.append(card.name)
    return served


class _PyiqaImportHook(importlib.abc.MetaPathFinder):
    """Finds ``pyiqa`` through the normal finders and calls :func:`register` once its import finished."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "pyiqa":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)  # one-shot; also keeps find_spec below from recursing
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _RegisteringLoader(spec.loader)
        return spec


class _RegisteringLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        register()

    def __getattr__(self, name):
        return getattr(self._loader, name)


def register_when_pyiqa_imports() -> None:
    """Arrange for :func:`register` to run right after ``pyiqa`` is first imported (idempotent)."""
    if "pyiqa" in sys.modules:
        register()
    elif not any(isinstance(finder, _PyiqaImportHook) for finder in sys.meta_path):
        sys.meta_path.insert(0, _PyiqaImportHook())
