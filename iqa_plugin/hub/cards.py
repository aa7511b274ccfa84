"""Model cards: the typed schema for ``registry/*.yaml`` and the functions that find and load them.

A card is data describing one published model: its architecture and options, where its weights live
(mirrors, sha256, size, file format), the license and paper, the input contract and, for metrics, the
score range and direction. The weights resolver (:mod:`iqa_plugin.hub.weights`) and the pyiqa registration
read cards; nothing here downloads anything.

Where cards come from:

* the packaged registry: in a wheel, ``iqa_plugin/_registry/`` (hatchling force-includes the repository's
  ``registry/`` there); in a source checkout or editable install, ``<repo root>/registry``;
* ``$IQA_PLUGIN_REGISTRY`` (read on every call): a directory of extra ``*.yaml`` cards, e.g. exported by
  the training jobs. An extra card may not reuse a packaged card's name.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import warnings
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from iqa_plugin import env

__all__ = [
    "CardError",
    "CardWarning",
    "InputContract",
    "ModelCard",
    "UnknownCardError",
    "WeightFile",
    "get_card",
    "list_cards",
    "load_card_file",
    "packaged_registry_dir",
]

_SHA256 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[a-z0-9][a-z0-9_.+\-]*")


class CardError(ValueError):
    """A model card file cannot be read or does not match the schema, or two cards share a name."""


class UnknownCardError(KeyError, ValueError):
    """No card has the requested name (a ``KeyError`` and a ``ValueError``)."""

    def __str__(self) -> str:  # KeyError would repr() the message and show it in quotes
        return str(self.args[0]) if self.args else ""


class WeightFile(BaseModel):
    """One weights file: the mirrors it can be fetched from and how to check and read it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    urls: list[str] = Field(
        min_length=1, description="Mirrors, tried in order (http(s), s3://..., or a path)."
    )
    sha256: str | None = Field(None, description="64 lowercase hex digits; null when not published.")
    bytes: PositiveInt | None = Field(None, description="File size in bytes, checked when given.")
    format: Literal["pth", "safetensors", "torchscript"] = "pth"
    key: str | None = Field(None, description="Sub-dict of the checkpoint to take, e.g. 'params'.")
    manual_download: str | None = Field(
        None,
        description="Set when no URL serves the file itself (a Google Drive folder, a form): how a person gets "
        "it. The resolver then never downloads; it uses the file placed at "
        "<cache dir>/manual/<card name>/<role>.<format>, else fails with these instructions and that path.",
    )

    @field_validator("urls")
    @classmethod
    def _urls_not_blank(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.strip():
                raise ValueError("every entry of urls must be a non-empty URL or path")
        return urls

    @field_validator("sha256")
    @classmethod
    def _sha256_hex(cls, value: str | None) -> str | None:
        if value is not None and not _SHA256.fullmatch(value):
            raise ValueError(
                f"sha256 must be 64 lowercase hex digits (as printed by `sha256sum`), got {value!r} "
                f"({len(value)} characters); use null when the checksum is not published"
            )
        return value


class InputContract(BaseModel):
    """What the network expects to receive: colour, value range, minimum size, resizing, normalisation.

    ``resize``: ``'native'`` keeps the image size; an int resizes the shorter side to it; a pair
    ``[height, width]`` resizes to exactly that size. ``mean``/``std`` are applied after scaling to
    ``value_range`` (the defaults are the identity).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    color: Literal["RGB"] = "RGB"
    value_range: tuple[float, float] = (0.0, 1.0)
    min_side: PositiveInt = 32
    resize: Literal["native"] | PositiveInt | tuple[PositiveInt, PositiveInt] = "native"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @field_validator("value_range")
    @classmethod
    def _range_increasing(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not value[0] < value[1]:
            raise ValueError(f"value_range must be [low, high] with low < high, got {list(value)}")
        return value

    @field_validator("std")
    @classmethod
    def _std_positive(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(s <= 0 for s in value):
            raise ValueError(f"every std entry must be > 0, got {list(value)}")
        return value


class ModelCard(BaseModel):
    """One published model. ``weights`` maps a role to a file: ``'model'`` always; QualiCLIP+ cards also
    name ``'base'``, the QualiCLIP checkpoint their learned prompts sit on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: Literal["metric", "sr", "backbone", "discriminator"] = Field(
        description="metric (served by pyiqa), sr (create_sr_model, iqa upscale), backbone (a network other "
        "models build on), discriminator (SFD's trained Feat-D + LPP, which the SFD-IQA metric reads)."
    )
    arch: str = Field(min_length=1)
    arch_options: dict[str, Any] = Field(default_factory=dict)
    weights: dict[str, WeightFile]
    license: str = Field(min_length=1)
    paper: str = Field(min_length=1, description="arXiv id (arXiv:2403.11176) or URL.")
    input: InputContract = Field(default_factory=InputContract)
    score_range: tuple[float, float] | None = None
    lower_better: bool = False
    metric_mode: Literal["NR", "FR"] = "NR"
    description: str = ""

    @field_validator("name")
    @classmethod
    def _name_usable(cls, name: str) -> str:
        if not _NAME.fullmatch(name):
            raise ValueError(
                f"name must be lowercase letters, digits and _ . + - (starting with a letter or digit), got {name!r}"
            )
        if "fid" in name:
            raise ValueError(
                f"name {name!r} contains 'fid', which pyiqa routes down its FID code path; rename it"
            )
        return name

    @model_validator(mode="after")
    def _consistent(self) -> ModelCard:
        if "model" not in self.weights:
            raise ValueError(f"weights must have a 'model' entry, got roles {sorted(self.weights)}")
        if self.kind == "metric":
            if self.score_range is None:
                raise ValueError("a metric card needs score_range: [low, high]")
            if not self.score_range[0] < self.score_range[1]:
                raise ValueError(
                    f"score_range must be [low, high] with low < high, got {list(self.score_range)}"
                )
        return self


def load_card_file(path: str | os.PathLike[str]) -> ModelCard:
    """Read and validate one card file; any problem raises :class:`CardError` naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CardError(f"Cannot read model card {path}: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CardError(f"Model card {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise CardError(f"Model card {path} must be a YAML mapping of fields, got {type(data).__name__}")
    _weights_next_to_card(data, path.resolve().parent)
    try:
        return ModelCard.model_validate(data)
    except ValidationError as exc:
        problems = "\n".join(
            f"  - {'.'.join(str(p) for p in err['loc']) or '<card>'}: {err['msg']}" for err in exc.errors()
        )
        raise CardError(
            f"Model card {path} does not match the schema (iqa_plugin.hub.cards.ModelCard):\n{problems}"
        ) from exc


def _weights_next_to_card(data: dict[str, Any], folder: Path) -> None:
    """A weights URL that is a bare relative path (``demo.safetensors``) names a file next to the card,
    so cards shipped with their weights (registry/, a wheel) work from any working directory."""
    weights = data.get("weights")
    for entry in weights.values() if isinstance(weights, dict) else ():
        urls = entry.get("urls") if isinstance(entry, dict) else None
        if isinstance(urls, list):
            entry["urls"] = [
                str(folder / url)
                if isinstance(url, str) and url.strip() and "://" not in url and not url.startswith(("/", "~"))
                else url
                for url in urls
            ]


def packaged_registry_dir() -> Path:
    """Directory of the cards shipped with the package (wheel layout first, then the source checkout)."""
    in_wheel = Path(__file__).resolve().parents[1] / "_registry"
    if in_wheel.is_dir():
        return in_wheel
    return Path(__file__).resolve().parents[2] / "registry"


class _Invalid:
    """A card file that could not be used in a lenient scan: its error, and its name where it has one."""

    def __init__(self, error: CardError, name: str | None) -> None:
        self.error, self.name = error, name


def _declared_name(path: Path) -> str | None:
    """The ``name:`` a card file declares, if it can be read at all (to match ``get_card`` to a bad card)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) else None


def _read_dir(directory: Path, invalid: list[_Invalid] | None = None) -> list[tuple[ModelCard, Path]]:
    """All cards of one directory, sorted by file name; a name used twice is an error naming both files.

    With ``invalid`` (a lenient scan) a bad card or a second card of one name is appended there and skipped.
    """
    found: dict[str, tuple[ModelCard, Path]] = {}
    for path in sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml")):
        try:
            card = load_card_file(path)
            if card.name in found:
                raise CardError(f"Two model cards are named {card.name!r}: {found[card.name][1]} and {path}")
        except CardError as exc:
            if invalid is None:
                raise
            invalid.append(_Invalid(exc, _declared_name(path)))
            continue
        found[card.name] = (card, path)
    return list(found.values())


@functools.lru_cache(maxsize=1)
def _packaged_cards() -> tuple[tuple[ModelCard, Path], ...]:
    return tuple(_read_dir(packaged_registry_dir()))


def _all_cards(invalid: list[_Invalid] | None = None) -> dict[str, tuple[ModelCard, Path]]:
    """Packaged and extra cards by name; with ``invalid`` (lenient), problems of the extra cards go there."""
    cards = {card.name: (card, path) for card, path in _packaged_cards()}
    extra = env.extra_registry_dir()
    if extra is None:
        return cards
    if not extra.is_dir():
        error = CardError(
            f"{env.REGISTRY_ENV}={extra} is not a directory; point it at a folder of *.yaml cards or unset it"
        )
        if invalid is None:
            raise error
        invalid.append(_Invalid(error, None))
        return cards
    for card, path in _read_dir(extra, invalid):
        if card.name in cards:
            error = CardError(
                f"Model card {path} (from {env.REGISTRY_ENV}) reuses the name {card.name!r} of {cards[card.name][1]}; "
                "packaged names cannot be replaced: rename the extra card"
            )
            if invalid is None:
                raise error
            invalid.append(_Invalid(error, card.name))
            continue
        cards[card.name] = (card, path)
    return cards


#: One-line warnings already given in this process (a bad card is reported once, not on every lookup).
_WARNED: set[str] = set()


class CardWarning(UserWarning):
    """A model card was skipped because it is invalid (lenient listing, e.g. the pyiqa registration)."""


def _warn_skipped(invalid: list[_Invalid]) -> None:
    for problem in invalid:
        message = " ".join(line.strip() for line in str(problem.error).splitlines())
        if message in _WARNED:
            continue
        _WARNED.add(message)
        # warn_explicit with lineno 0: Python prints exactly one line (no source line follows it)
        warnings.warn_explicit(
            f"skipped: {message}. Fix: correct or remove the card (`iqa models` shows the error)",
            CardWarning,
            filename="iqa_plugin",
            lineno=0,
        )


def list_cards(*, skip_invalid: bool = False) -> list[ModelCard]:
    """The packaged cards followed by those in ``$IQA_PLUGIN_REGISTRY`` (read on each call).

    A bad extra card raises :class:`CardError`; with ``skip_invalid`` it is skipped with one
    :class:`CardWarning` line instead (what the registration into pyiqa does, so ``import pyiqa`` never breaks).
    """
    if not skip_invalid:
        return [card for card, _ in _all_cards().values()]
    invalid: list[_Invalid] = []
    cards = [card for card, _ in _all_cards(invalid).values()]
    _warn_skipped(invalid)
    return cards


def card_path(name: str) -> Path:
    """The file the card ``name`` was read from."""
    return _lookup(name)[1]


def get_card(name: str) -> ModelCard:
    """The card called ``name``; an unknown name raises :class:`UnknownCardError` with close matches."""
    return _lookup(name)[0]


def _lookup(name: str) -> tuple[ModelCard, Path]:
    """A valid card is found even if another extra card is bad; a bad card of this name raises its error."""
    invalid: list[_Invalid] = []
    cards = _all_cards(invalid)
    for problem in invalid:
        if problem.name == name:
            raise problem.error
    if name in cards:
        _warn_skipped(invalid)
        return cards[name]
    unnamed = [problem.error for problem in invalid if problem.name is None]
    if unnamed:  # the card asked for may be the one that cannot be read
        raise unnamed[0]
    close = difflib.get_close_matches(name, list(cards), n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UnknownCardError(
        f"No model card named {name!r}.{hint} Known cards: {', '.join(sorted(cards))}. "
        f"Add a card directory with {env.REGISTRY_ENV}=<dir of *.yaml>."
    )
