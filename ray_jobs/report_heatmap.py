"""Feat-D heat maps for the report of an SFD-IQA score job (``iqa_plugin.inference.heatmap``).

Only for outputs scored by one SFD-IQA card whose weights this machine builds to the same sha256 as the
Parquet records (a job run with ``pretrained_model_path`` another file gets no maps, never wrong ones).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

from ray_jobs.runtime import filesystem_for

HEAT_SHORT_SIDE = 224  # the map is drawn on a thumbnail: scoring at full size would cost the whole job again


def heat_thumbnails(models: Sequence[str], shas: Sequence[str], uris: Sequence[str], px: int) -> list[str | None] | None:
    """Data URIs of Feat-D overlays for ``uris`` (None per unreadable image), or None when the output's
    model is not an SFD-IQA card this machine can rebuild with the recorded weights."""
    from iqa_plugin.hub.cards import get_card

    if len(models) != 1 or not uris:
        return None
    try:
        card = get_card(models[0])
    except (KeyError, ValueError):
        return None
    if card.arch != "IqaPluginSFDIQA":
        return None
    from iqa_plugin.build import build_network

    try:
        network = build_network(card)
    except Exception:  # noqa: BLE001 - weights not on this machine: the report stays without maps
        return None
    if network.weights_sha256 not in shas:
        return None
    return [_heat(uri, network, px) for uri in uris]


def heat_caption(models: Sequence[str]) -> str:
    """One sentence for the report: what the maps show, and Feat-D's weight in the card's score (a card may
    set it to 0, e.g. ``sfd-iqa-demo-tiny``: then the map is for inspection, the score is the prompt pair's)."""
    from iqa_plugin.hub.cards import get_card

    try:
        options = get_card(models[0]).arch_options
    except (KeyError, ValueError, IndexError):
        options = {}
    feat, lpp = float(options.get("feat_weight", 0.5)), float(options.get("lpp_weight", 0.5))
    share = feat / (feat + lpp) if feat + lpp > 0 else 0.0
    text = ("Beside each image: Feat-D's real-probability map (blue real, red generated). "
            f"Feat-D's share of this card's score: {share:.0%}")  # fmt: skip
    if share == 0:
        text += " (the score is the prompt pair's; the map is shown for inspection only)"
    return text + "."


def _heat(uri: str, network, px: int) -> str | None:
    from PIL import Image

    from iqa_plugin.inference.heatmap import sfd_heatmaps

    try:
        fs, path = filesystem_for(uri)
        with fs.open(path, "rb") as handle, Image.open(handle) as image:
            overlay = sfd_heatmaps(network, [image.convert("RGB")], HEAT_SHORT_SIDE)[0]
    except Exception:  # noqa: BLE001 - a heat map is decoration; the report must still be written
        return None
    overlay.thumbnail((px, px))
    buffer = io.BytesIO()
    overlay.save(buffer, format="JPEG", quality=82)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
