"""A card's input contract applied in one place: the network of a card as every front door sees it.

:class:`CardNetwork` wraps an arch (which takes already prepared input) with the preprocessing its
model card declares (:class:`iqa_plugin.hub.cards.InputContract`): check the batch, resize, scale to the
value range, normalise with mean/std. pyiqa's ``create_metric``, :class:`iqa_plugin.BatchScorer` and the
jobs all get this wrapper from :func:`iqa_plugin.build.build_network`, so a card cannot drift from its
weights in one place and not another.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from iqa_plugin.data.images import resize_short_side, validate_batch

if TYPE_CHECKING:
    from iqa_plugin.hub.cards import InputContract, ModelCard

__all__ = ["CardNetwork", "InputTransform"]


class InputTransform(nn.Module):
    """RGB ``[B, C, H, W]`` floats (nominally in [0, 1]) -> the tensor the arch expects.

    Steps, each from the contract: validation (rank, channels, ``min_side``, finite values; grayscale
    replicated, alpha dropped), ``resize`` (``'native'``: none; an int: shorter side, antialiased
    bilinear; ``[h, w]``: exactly that size), scaling from [0, 1] to ``value_range``, then
    ``(x - mean) / std``. Values outside [0, 1] pass (pyiqa's loss path feeds them); NaN and inf do not.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, contract: InputContract) -> None:
        super().__init__()
        self.contract = contract
        self.min_side = int(contract.min_side)
        low, high = contract.value_range
        self.low, self.span = float(low), float(high - low)
        self.register_buffer("mean", torch.tensor(contract.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(contract.std).view(1, 3, 1, 1), persistent=False)

    def resize(self, x: torch.Tensor) -> torch.Tensor:
        size = self.contract.resize
        if size == "native":
            return x
        if isinstance(size, int):
            return resize_short_side(x, size)
        if tuple(x.shape[-2:]) == tuple(size):
            return x
        return nn.functional.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = validate_batch(x, min_side=self.min_side, unit_range=False)
        x = self.resize(x)
        if self.low != 0.0 or self.span != 1.0:
            x = x * self.span + self.low
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


class CardNetwork(nn.Module):
    """The ready network of a model card: :class:`InputTransform` then the arch (``self.network``).

    ``forward`` takes RGB ``[B, 3, H, W]`` in [0, 1] (as pyiqa and the scorer pass it). Attributes:
    ``card`` (the :class:`~iqa_plugin.hub.cards.ModelCard`), ``weights_sha256`` (of the ``'model'``
    weights file; None without weights). Capabilities of the arch (``prepare_for_inference``) are
    forwarded.
    """

    def __init__(self, network: nn.Module, card: ModelCard, weights_sha256: str | None = None) -> None:
        super().__init__()
        self.transform = InputTransform(card.input)
        self.network = network
        self.card = card
        self.weights_sha256 = weights_sha256

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.network(self.transform(x), *args, **kwargs)

    def prepare_for_inference(self, compile: bool = False) -> None:
        """Let the arch fold/compile itself for frozen inference (no-op for archs without the capability)."""
        prepare = getattr(self.network, "prepare_for_inference", None)
        if callable(prepare):
            prepare(compile=compile)
        elif compile:
            self.network = torch.compile(self.network, dynamic=False)  # type: ignore[assignment]
