"""iqa-plugin: CLIP-based image quality metrics for pyiqa (QualiCLIP, SFD-IQA) and the SFD SR model.

Installing the package is enough to serve its metrics through pyiqa (its ``iqa_plugin_autoload.pth``
imports this light package at interpreter start, which registers the metrics right after pyiqa is
imported); importing it does the same where the ``.pth`` is off or absent::

    import pyiqa
    metric = pyiqa.create_metric("qualiclip")
    score = metric("photo.jpg")  # tensor [1, 1] in [0, 1], higher is better

For many images of mixed sizes use :class:`iqa_plugin.BatchScorer`.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from iqa_plugin.registration import register, register_when_pyiqa_imports

__version__ = "0.1.0"
__all__ = ["BatchScorer", "build_network", "register", "__version__"]

if TYPE_CHECKING:
    from iqa_plugin.build import build_network
    from iqa_plugin.inference.scorer import BatchScorer


def __getattr__(name: str):
    if name == "BatchScorer":
        from iqa_plugin.inference.scorer import BatchScorer

        return BatchScorer
    if name == "build_network":
        from iqa_plugin.build import build_network

        return build_network
    raise AttributeError(f"module 'iqa_plugin' has no attribute {name!r}")


# Register into pyiqa now if it is loaded, else right after it is first imported: ``import iqa_plugin``
# stays light (Ray decode workers import ``iqa_plugin.data.images`` without paying for pyiqa), and
# ``pyiqa.create_metric('qualiclip')`` still finds our entries whichever package is imported first.
if "pyiqa" in sys.modules:
    register()
else:
    register_when_pyiqa_imports()
