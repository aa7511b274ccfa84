"""``iqa models``: list the model cards this installation serves, with their weights and cache state;
``iqa models add CARD [--registry DIR] [--force]``: put a card (e.g. a training export) where the
registry finds it (:func:`iqa_plugin.hub.user_registry.add_card`)."""

from __future__ import annotations

import json
import sys
from typing import ClassVar, Literal

from pydantic import Field

from ray_jobs.cli import job_main
from ray_jobs.config import JobConfig, cli
from ray_jobs.errors import UserError


class ModelsConfig(JobConfig):
    """Options of ``iqa models``."""

    job_name: ClassVar[str] = "models"

    action: Literal["list", "add"] = Field(
        default="list", description="list the cards, or add CARD to the user registry",
        json_schema_extra=cli(positional=True, metavar="{list,add}"),
    )
    card: str | None = Field(default=None, description="add: the card .yaml (path or fsspec URL)",
                             json_schema_extra=cli(positional=True, metavar="CARD"))
    registry: str | None = Field(
        default=None, description="add: the registry folder (default: $IQA_PLUGIN_REGISTRY, else "
        "$XDG_DATA_HOME/iqa_plugin/registry, i.e. ~/.local/share/iqa_plugin/registry)",
    )
    force: bool = Field(default=False, description="add: replace a different card of the same name")
    json_output: bool = Field(default=False, description="print the cards as JSON instead of a table",
                              json_schema_extra=cli(flag="--json"))


CONFIG = ModelsConfig


def _rows() -> list[dict]:
    from iqa_plugin.hub.cards import list_cards
    from iqa_plugin.hub.weights import cache_path_for

    rows = []
    for card in sorted(list_cards(), key=lambda c: c.name):
        model = card.weights["model"]
        cached = cache_path_for(model.urls[0], sha256=model.sha256)
        rows.append(
            {
                "name": card.name,
                "kind": card.kind,
                "arch": card.arch,
                "weights_url": model.urls[0],
                "sha256": model.sha256,
                "bytes": model.bytes,
                "cached": cached.is_file(),
                "cache_path": str(cached),
                "license": card.license,
                "paper": card.paper,
            }
        )
    return rows


def add(config: ModelsConfig) -> int:
    """``iqa models add``: check and copy the card; say how it is served; 0."""
    from iqa_plugin import env
    from iqa_plugin.hub.cards import CardError
    from iqa_plugin.hub.user_registry import add_card
    from iqa_plugin.hub.weights import WeightsError

    if not config.card:
        raise UserError("add needs CARD: iqa models add path/to/card.yaml [--registry DIR] [--force]")
    try:
        added = add_card(config.card, config.registry, force=config.force)
    except (CardError, WeightsError, FileNotFoundError) as error:
        raise UserError(" ".join(line.strip() for line in str(error).splitlines() if line.strip())) from None
    weights = f" with {', '.join(str(p) for p in added.weights)}" if added.weights else ""
    print(f"iqa models: {added.name} {'added as' if added.changed else 'already in the registry:'} {added.card}{weights}")
    served = env.extra_registry_dir()
    if served is None or served.resolve() != added.card.parent.resolve():
        print(f"iqa models: serve it with {env.REGISTRY_ENV}={added.card.parent}")
    print(f"iqa models: use it with pyiqa.create_metric('{added.name}') or iqa score --model {added.name}")
    return 0


def run(config: ModelsConfig) -> int:
    """Print the table (or JSON) of the cards, or add one (``action='add'``); 0."""
    if config.action == "add":
        return add(config)
    if config.card or config.registry or config.force:
        raise UserError("CARD, --registry and --force go with add: iqa models add CARD [--registry DIR] [--force]")
    rows = _rows()
    if config.json_output:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<20} {'kind':<13} {'arch':<22} {'size':>10}  {'sha256':<14} cached  weights")
    for row in rows:
        size = f"{row['bytes'] / 1e6:.1f} MB" if row["bytes"] else "?"
        sha = row["sha256"][:12] if row["sha256"] else "unpublished"
        print(
            f"{row['name']:<20} {row['kind']:<13} {row['arch']:<22} {size:>10}  {sha:<14} "
            f"{'yes' if row['cached'] else 'no':<7} {row['weights_url']}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m ray_jobs.models``: the same options as ``iqa models``."""
    return job_main("models", argv)


if __name__ == "__main__":
    sys.exit(main())
