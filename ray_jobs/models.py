"""``iqa models``: list the model cards this installation serves, with their weights and cache state."""

from __future__ import annotations

import json
import sys
from typing import ClassVar

from pydantic import Field

from ray_jobs.cli import job_main
from ray_jobs.config import JobConfig, cli


class ModelsConfig(JobConfig):
    """Options of ``iqa models``."""

    job_name: ClassVar[str] = "models"

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


def run(config: ModelsConfig) -> int:
    """Print the table (or JSON) of the cards; 0."""
    rows = _rows()
    if config.json_output:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<20} {'kind':<7} {'arch':<22} {'size':>10}  {'sha256':<14} cached  weights")
    for row in rows:
        size = f"{row['bytes'] / 1e6:.1f} MB" if row["bytes"] else "?"
        sha = row["sha256"][:12] if row["sha256"] else "unpublished"
        print(
            f"{row['name']:<20} {row['kind']:<7} {row['arch']:<22} {size:>10}  {sha:<14} "
            f"{'yes' if row['cached'] else 'no':<7} {row['weights_url']}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m ray_jobs.models``: the same options as ``iqa models``."""
    return job_main("models", argv)


if __name__ == "__main__":
    sys.exit(main())
