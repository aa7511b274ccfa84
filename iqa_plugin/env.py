"""Every environment variable iqa_plugin reads, in one place, each read when it is used (never at import).

=========================  =====================================================================
``IQA_PLUGIN_CACHE``       Directory for downloaded weights. Default: ``$XDG_CACHE_HOME/iqa_plugin``
                           or ``~/.cache/iqa_plugin``.
``IQA_PLUGIN_OFFLINE``     ``1``/``true``/``yes``: never download; a file that is not cached fails
                           at once with the URL, the path it was expected at and these variables.
``IQA_PLUGIN_REGISTRY``    Extra directory of model cards (``*.yaml``) read after the packaged ones.
``IQA_PLUGIN_AUTOLOAD``    ``0``/``false``/``no``/``off``: the installed ``iqa_plugin_autoload.pth``
                           does not import ``iqa_plugin`` at interpreter start (then pyiqa gets
                           the plugin only once ``iqa_plugin`` is imported). Read by the ``.pth``.
=========================  =====================================================================
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "IQA_PLUGIN_CACHE"
OFFLINE_ENV = "IQA_PLUGIN_OFFLINE"
REGISTRY_ENV = "IQA_PLUGIN_REGISTRY"
AUTOLOAD_ENV = "IQA_PLUGIN_AUTOLOAD"  # read by iqa_plugin/iqa_plugin_autoload.pth, which cannot import this

_TRUE = {"1", "true", "yes", "on"}


def cache_dir() -> Path:
    """Directory where downloaded weights are cached (``$IQA_PLUGIN_CACHE`` wins)."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "iqa_plugin"


def offline() -> bool:
    """True when ``$IQA_PLUGIN_OFFLINE`` asks never to download."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in _TRUE


def extra_registry_dir() -> Path | None:
    """Directory of extra model cards named by ``$IQA_PLUGIN_REGISTRY``, if any."""
    value = os.environ.get(REGISTRY_ENV)
    return Path(value).expanduser() if value else None
