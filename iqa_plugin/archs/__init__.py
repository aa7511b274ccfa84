"""Networks, one per file, and the one table of them.

:data:`ARCHS` maps the arch name a model card gives (``arch: IqaPluginQualiCLIP``) to the class that
implements it, as an import path so that reading the table imports nothing heavy. A new network is one
file here plus one line in the table; :func:`iqa_plugin.build.build_network` and the pyiqa registration
read nothing else. Arch names are our own (never pyiqa's, e.g. never ``QualiCLIP``) so that pyiqa's
``ARCH_REGISTRY`` never collides.
"""

from __future__ import annotations

import difflib
import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

__all__ = ["ARCHS", "arch_class"]

#: arch name -> ``"module:Class"``.
ARCHS: dict[str, str] = {
    "IqaPluginQualiCLIP": "iqa_plugin.archs.qualiclip:IqaPluginQualiCLIP",
    "IqaPluginRRDBNet": "iqa_plugin.archs.rrdbnet:RRDBNet",
    "IqaPluginSFDIQA": "iqa_plugin.archs.sfd_iqa:IqaPluginSFDIQA",
}


def arch_class(name: str) -> type[nn.Module]:
    """The class of the arch called ``name``.

    Raises:
        ValueError: ``name`` is not in :data:`ARCHS` (lists the close names and all known ones).
    """
    if name not in ARCHS:
        close = difflib.get_close_matches(name, list(ARCHS), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"arch={name!r} is not a network of iqa_plugin.{hint} Known archs: {', '.join(sorted(ARCHS))}. "
            "Fix: correct the card's `arch`, or add the class to iqa_plugin.archs.ARCHS."
        )
    module, _, attribute = ARCHS[name].partition(":")
    cls: type[nn.Module] = getattr(importlib.import_module(module), attribute)
    return cls
