"""Registration of the plugin's metrics into pyiqa (DESIGN decision 1).

:func:`register` runs right after pyiqa is imported (an import hook that the installed
``iqa_plugin_autoload.pth`` sets up in every interpreter, and that ``import iqa_plugin`` sets up too),
and from pyiqa's ``pyiqa.archs`` entry point. It is idempotent and uses pyiqa's public registry API only:

* every arch of :data:`iqa_plugin.archs.ARCHS` is registered in ``ARCH_REGISTRY`` as a builder that calls
  :func:`iqa_plugin.build.build_network` (so pyiqa gets the same network as every other front door);
* one ``DEFAULT_CONFIGS`` entry per metric card, written only where the entry is absent, is pyiqa's own
  original of a name we take over (:data:`TAKEN_OVER`: same scores on the same weights, see the parity
  test), or is exactly what we wrote before. An entry the user edited is never overwritten; a name pyiqa
  defines with another arch is left alone with a warning.

This module imports neither torch nor pyiqa at import time (the ``.pth`` hook imports it in every
interpreter start).
"""

from __future__ import annotations

import copy
import functools
import importlib.abc
import importlib.util
import sys
import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from iqa_plugin.hub.cards import ModelCard

__all__ = ["TAKEN_OVER", "build_for_pyiqa", "config_entry", "register", "register_when_pyiqa_imports"]

#: Names pyiqa ships whose entries this plugin deliberately takes over.
TAKEN_OVER = ("qualiclip", "qualiclip+", "qualiclip+-clive", "qualiclip+-flive", "qualiclip+-spaq")

#: name -> the DEFAULT_CONFIGS entry we last wrote (a deep copy, to recognise a user's later edit).
_WRITTEN: dict[str, dict[str, Any]] = {}


def build_for_pyiqa(card: str | None = None, **options: Any) -> nn.Module:
    """What pyiqa's ``ARCH_REGISTRY`` calls for our arch names: :func:`iqa_plugin.build.build_network`.

    ``card`` comes from the ``DEFAULT_CONFIGS`` entry (``metric_opts.card``); the other options are the
    entry's ``metric_opts`` updated by the keywords given to ``pyiqa.create_metric``.
    """
    from iqa_plugin.build import build_network

    name = card if card is not None else options.get("model_type")
    if name is None:
        raise ValueError(
            "metric_opts has no 'card': expected the model card name, e.g. {'type': 'IqaPluginQualiCLIP', "
            "'card': 'qualiclip'}. Fix: add it to your DEFAULT_CONFIGS entry."
        )
    return build_network(name, **options)


def config_entry(card: ModelCard) -> dict[str, Any]:
    """The pyiqa ``DEFAULT_CONFIGS`` entry for a metric model card."""
    assert card.score_range is not None  # the card schema requires it for metrics
    low, high = card.score_range
    return {
        "metric_opts": {"type": card.arch, "card": card.name, **card.arch_options},
        "metric_mode": card.metric_mode,
        "score_range": f"{low:g}, {high:g}",
        "lower_better": card.lower_better,
    }


@functools.lru_cache(maxsize=1)
def _pyiqa_originals() -> dict[str, Any]:
    """pyiqa's own DEFAULT_CONFIGS as its module file defines them (re-read: the live dict may be edited)."""
    import runpy

    import pyiqa.default_model_configs as configs

    return dict(runpy.run_path(configs.__file__)["DEFAULT_CONFIGS"])


def _register_archs() -> None:
    from pyiqa.utils.registry import ARCH_REGISTRY

    from iqa_plugin.archs import ARCHS

    for name in ARCHS:
        try:
            ARCH_REGISTRY.register(build_for_pyiqa, name=name)
        except AssertionError:  # already registered: by us (idempotent) or by something else (replace it)
            if ARCH_REGISTRY.get(name) is not build_for_pyiqa:
                ARCH_REGISTRY.register(build_for_pyiqa, name=name, override=True)


def _may_write(name: str, existing: dict[str, Any] | None) -> bool:
    if existing is None or existing == _WRITTEN.get(name):
        return True
    return name in TAKEN_OVER and existing == _pyiqa_originals().get(name)


def register() -> list[str]:
    """Register every metric card into pyiqa; returns the names now served by this plugin.

    An invalid card (e.g. in ``$IQA_PLUGIN_REGISTRY``) is skipped with one warning line: it must not break
    ``import pyiqa`` for the other metrics; ``get_card`` of its name and ``iqa models`` raise its error.
    """
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    from iqa_plugin.archs import ARCHS
    from iqa_plugin.hub.cards import list_cards

    _register_archs()
    served = []
    for card in list_cards(skip_invalid=True):
        if card.kind != "metric" or card.arch not in ARCHS:
            continue
        existing = DEFAULT_CONFIGS.get(card.name)
        if _may_write(card.name, existing):
            entry = config_entry(card)
            DEFAULT_CONFIGS[card.name] = entry
            _WRITTEN[card.name] = copy.deepcopy(entry)
            served.append(card.name)
        elif existing.get("metric_opts", {}).get("type") in ARCHS:  # ours, edited by the user: keep it
            served.append(card.name)
        else:
            warnings.warn(
                f"Model card {card.name!r} not registered: pyiqa already defines {card.name!r} "
                f"(arch {existing.get('metric_opts', {}).get('type')!r}). Rename the card.",
                RuntimeWarning,
                stacklevel=2,
            )
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
        try:
            register()
        except Exception as exc:  # noqa: BLE001 -- never break `import pyiqa`; pyiqa's own metrics still work
            message = " ".join(str(exc).split())
            print(f"iqa_plugin: warning: not registered into pyiqa: {type(exc).__name__}: {message}. "
                  "Fix: see `iqa models`; IQA_PLUGIN_AUTOLOAD=0 turns the autoload off", file=sys.stderr)

    def __getattr__(self, name):
        return getattr(self._loader, name)


def register_when_pyiqa_imports() -> None:
    """Arrange for :func:`register` to run right after ``pyiqa`` is first imported (idempotent)."""
    if "pyiqa" in sys.modules:
        register()
    elif not any(isinstance(finder, _PyiqaImportHook) for finder in sys.meta_path):
        sys.meta_path.insert(0, _PyiqaImportHook())
