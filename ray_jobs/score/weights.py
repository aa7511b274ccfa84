"""The score driver's weights check: resolve, verify and open the model's checkpoint before Ray starts.

Missing or unreachable weights and a file that is not a checkpoint fail here at once with one line
(exit 2) instead of inside an actor after the cluster started, and nothing is written to ``--out``
before it passes. The sha256 it returns is the run identity's (``ray_jobs.score.output``).

Opening is cheap on purpose: a ``torch.save`` zip file is loaded with ``mmap=True`` (tensors stay on
disk; only the pickle is read) and a safetensors file only has its header read, so the driver's memory
is torch plus a little, not torch plus the checkpoint (see ``bench/bench_score_job.py``). Files in
torch's legacy format go through the plugin's own loader (``iqa_plugin.hub.weights.load_state_dict``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from ray_jobs.runtime import redact
from ray_jobs.score.config import ScoreJobConfig
from ray_jobs.score.sources import SourceError


def open_checkpoint(path: Path, key: str | None) -> int:
    """Check that ``path`` holds a dict of tensors (under ``key`` if given) without reading the tensors;
    return how many tensors it names.

    Raises:
        ValueError: the file is not a checkpoint of that layout (the message says what was found).
    """
    import torch

    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            names = [name for name in handle.keys() if key is None or name.startswith(key + ".")]
        if not names:
            raise ValueError(f"no tensors{f' under {key!r}' if key else ''}")
        return len(names)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as error:
        if "mmap" not in str(error):
            raise
        from iqa_plugin.hub.weights import load_state_dict  # legacy format: no mmap, the plugin's loader

        return len(load_state_dict(path, key=key))
    if key is not None:
        if not isinstance(state, Mapping) or key not in state:
            raise ValueError(f"no top-level key {key!r}")
        state = state[key]
    if not isinstance(state, Mapping) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"holds a {type(state).__name__} without tensors, expected a state dict")
    return len(state)


def check_weights(config: ScoreJobConfig, log: Callable[[str], None]) -> str:
    """Resolve (download, verify) and open every weights file of ``config.model`` in the driver; return
    the sha256 of the ``model`` weights (what every output row records).

    Raises:
        SourceError: unknown model, missing or unreachable weights, or a file that is not a checkpoint.
    """
    from iqa_plugin.hub.cards import get_card
    from iqa_plugin.hub.weights import WeightsError, resolve_card_weights, sha256_file

    if config.weights and "://" not in config.weights and not os.path.isfile(config.weights):
        raise SourceError(f"--weights {config.weights}: file not found; give a checkpoint path or URL")
    try:
        card = get_card(config.model)
    except (ValueError, KeyError) as error:
        raise SourceError(f"--model {config.model}: {str(error).splitlines()[0]}") from None
    sha = None
    for role, entry in card.weights.items():
        override = config.weights if role == "model" else None
        what = f"--weights {override}" if override else f"--model {config.model} ({role} weights)"
        try:
            path = resolve_card_weights(card, role=role, override=override)
        except (WeightsError, ValueError, FileNotFoundError) as error:
            raise SourceError(f"{what}: {error}") from None
        try:
            open_checkpoint(Path(path), entry.key)
        except Exception as error:  # noqa: BLE001 - whatever the unpickler says, it is not a checkpoint
            detail = redact(f"{type(error).__name__}: {error}".splitlines()[0])[:160]
            raise SourceError(f"{what}: {path} is not a {config.model} checkpoint ({detail}); give the .pth or "
                              ".safetensors file of this model, or leave --weights out for the card's") from None
        log(f"weights ({role}): {path}")
        if role == "model":
            sha = entry.sha256 if override is None and entry.sha256 else sha256_file(path)
    return str(sha)
