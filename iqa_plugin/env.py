"""Every environment variable iqa_plugin reads, in one place, each read when it is used (never at import).

=========================  =====================================================================
``IQA_PLUGIN_CACHE``       Directory for downloaded weights. Default: ``$XDG_CACHE_HOME/iqa_plugin``
                           or ``~/.cache/iqa_plugin``.
``IQA_PLUGIN_OFFLINE``     ``1``/``true``/``yes``: never download; a file that is not cached fails
                           at once with the URL, the path it was expected at and these variables.
``IQA_PLUGIN_REGISTRY``    Extra directory of model cards (``*.yaml``) read after the packaged ones,
                           and where ``iqa models add`` puts cards. Default: the user registry
                           ``$XDG_DATA_HOME/iqa_plugin/registry`` or
                           ``~/.local/share/iqa_plugin/registry`` (read when it exists).
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


def user_registry_dir() -> Path:
    """Where ``iqa models add`` puts cards: ``$IQA_PLUGIN_REGISTRY`` when set, else the user registry
    ``$XDG_DATA_HOME/iqa_plugin/registry`` (``~/.local/share/iqa_plugin/registry``)."""
    value = os.environ.get(REGISTRY_ENV)
    if value:
        return Path(value).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share") / "iqa_plugin" / "registry"


def extra_registry_dir() -> Path | None:
    """Directory of extra model cards: ``$IQA_PLUGIN_REGISTRY`` when set (it must exist), else the user
    registry of :func:`user_registry_dir` when it exists, else None."""
    directory = user_registry_dir()
    if os.environ.get(REGISTRY_ENV) or directory.is_dir():
        return directory
    return None
