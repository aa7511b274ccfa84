"""Adding a model card to the user registry (``iqa models add CARD``): checked, copied with the weights
that travel with it, idempotent, never silently replacing another card.

The user registry is ``$IQA_PLUGIN_REGISTRY``, else ``$XDG_DATA_HOME/iqa_plugin/registry``
(:func:`iqa_plugin.env.user_registry_dir`); the card lookup reads it, so once a card is added,
``pyiqa.create_metric('<name>')`` (with nothing else imported) and ``iqa score --model <name>`` serve it.

>>> add_card("runs/demo/export/qualiclip-demo.yaml")  # doctest: +SKIP
AddedCard(name='qualiclip-demo', card=PosixPath('.../registry/qualiclip-demo.yaml'), weights=[...], changed=True)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import yaml

from iqa_plugin import env
from iqa_plugin.hub.cards import CardError, ModelCard, load_card_file, packaged_registry_dir

__all__ = ["AddedCard", "add_card"]


class AddedCard(NamedTuple):
    name: str
    card: Path  # the card file in the registry
    weights: list[Path]  # weights files copied next to it (those the card names by a relative path)
    changed: bool  # False: the registry already held exactly this card (and weights)


def _relative_weights(data: dict, source: str) -> list[str]:
    """The weights paths the card names relative to its own folder (they travel with the card)."""
    found = []
    for entry in (data.get("weights") or {}).values():
        for url in (entry or {}).get("urls") or []:
            if isinstance(url, str) and url.strip() and "://" not in url and not url.startswith(("/", "~")):
                if ".." in PurePosixPath(url).parts:
                    raise CardError(f"{source}: weights path {url!r} leaves the card's folder; give a path inside "
                                    "it, an absolute path or a URL")
                found.append(url)
    return found


def _fetch(source: str, folder: Path) -> tuple[Path, list[str]]:
    """A local copy of the card ``source`` (any fsspec URL) and of the weights it names relatively."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(source)
    local = folder / PurePosixPath(path).name
    try:
        local.write_bytes(fs.cat_file(path))
    except FileNotFoundError:
        raise FileNotFoundError(f"{source}: no such card file; give the path or URL of a card .yaml") from None
    data = _read_yaml(local, source)
    relative = _relative_weights(data, source)
    for url in relative:
        target = folder / url
        target.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(f"{PurePosixPath(path).parent}/{url}", str(target))
    return local, relative


def _read_yaml(path: Path, source: str) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise CardError(f"Model card {source} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise CardError(f"Model card {source} must be a YAML mapping of fields")
    return data


def _check_weights(card: ModelCard, source: str) -> None:
    """Local weights must exist and match the card's sha256 and size; remote ones are fetched on first use."""
    from iqa_plugin.hub.weights import resolve_weights

    for role, entry in card.weights.items():
        if entry.manual_download is not None:
            continue
        for url in entry.urls:
            if "://" not in url or url.startswith("file://"):
                try:
                    resolve_weights(url, sha256=entry.sha256, size=entry.bytes)
                except FileNotFoundError:
                    raise FileNotFoundError(f"{source}: its {role} weights {url} do not exist; put the file there "
                                            "or fix weights.{role}.urls") from None


def _same_file(a: Path, b: Path) -> bool:
    def digest(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    return a.is_file() and b.is_file() and a.stat().st_size == b.stat().st_size and digest(a) == digest(b)


def _cards_named(registry: Path, name: str) -> list[Path]:
    found = []
    for path in sorted(registry.glob("*.yaml")) + sorted(registry.glob("*.yml")):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            continue
        if isinstance(data, dict) and data.get("name") == name:
            found.append(path)
    return found


def _copy_atomic(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.parent / f".{target.name}.{uuid.uuid4().hex}.part"
    shutil.copyfile(source, partial)
    os.replace(partial, target)


def add_card(source: str | os.PathLike[str], registry: str | os.PathLike[str] | None = None, *,
             force: bool = False) -> AddedCard:
    """Check the card ``source`` (a path or fsspec URL) and copy it into ``registry`` (default: the user
    registry, see the module docstring) as ``<name>.yaml``, with the weights files it names by a path
    relative to its folder copied to the same relative place.

    Adding the same card again changes nothing. A different card (or weights file) already there under
    the same name is replaced only with ``force``; a packaged card's name can never be reused.

    Raises:
        CardError: the card does not validate, reuses a packaged name, or would replace a different card
            without ``force``.
        FileNotFoundError / WeightsError: local weights are missing or do not match the card's sha256.
    """
    source = os.fspath(source)
    target_dir = Path(registry).expanduser() if registry is not None else env.user_registry_dir()
    with tempfile.TemporaryDirectory() as scratch:
        if "://" in source and not source.startswith("file://"):
            local, relative = _fetch(source, Path(scratch))
        else:
            local = Path(source.removeprefix("file://")).expanduser()
            if not local.is_file():
                raise FileNotFoundError(f"{source}: no such card file; give the path or URL of a card .yaml")
            relative = _relative_weights(_read_yaml(local, source), source)
        card = load_card_file(local)
        packaged = _cards_named(packaged_registry_dir(), card.name)
        if packaged:
            raise CardError(f"{source}: {card.name!r} is the name of a card shipped with iqa-plugin ({packaged[0]}); "
                            "rename the card (its name: field)")
        _check_weights(card, source)
        target = target_dir / f"{card.name}.yaml"
        pairs = [(local.parent / url, target_dir / url) for url in relative]
        others = [p for p in _cards_named(target_dir, card.name) if p != target] if target_dir.is_dir() else []
        if target.is_file() and _same_file(local, target) and not others and all(_same_file(a, b) for a, b in pairs):
            return AddedCard(card.name, target, [b for _, b in pairs], changed=False)
        clashes = [str(p) for p in ([target] if target.is_file() else []) + others]
        clashes += [str(b) for a, b in pairs if b.is_file() and not _same_file(a, b)]
        if clashes and not force:
            raise CardError(f"{source}: the registry {target_dir} already has a different {card.name!r} "
                            f"({', '.join(clashes)}); pass --force (force=True) to replace it, or rename the card")
        for weights_source, weights_target in pairs:
            if not _same_file(weights_source, weights_target):
                _copy_atomic(weights_source, weights_target)
        _copy_atomic(local, target)
        for other in others:
            other.unlink()
    return AddedCard(card.name, target, [b for _, b in pairs], changed=True)
