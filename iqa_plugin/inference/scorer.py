"""Fast scoring of many images of mixed sizes with a plugin metric (used by the Ray jobs).

Images of equal size are stacked into batches (resizing, if any, is the card's input contract, applied
inside the network), run under ``torch.inference_mode`` in channels_last, optionally under bf16/fp16
autocast, with the network's own fast path (``prepare_for_inference``: QualiCLIP folds BatchNorm). With
``compile=True`` the shapes that repeat run through ``torch.compile`` (Inductor, ``freezing`` on CUDA),
chosen by :class:`iqa_plugin.inference.compile_policy.CompilePolicy`; compiled batches are padded to
``batch_size`` so one graph serves a shape. Scores come back in input order and equal
one-image-at-a-time scores (fp32).
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from iqa_plugin.data.images import DEFAULT_MAX_PIXELS, array_to_tensor, load_image
from iqa_plugin.inference.compile_policy import CompilePolicy

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def build_metric_network(model: str, **kwargs: Any) -> nn.Module:
    """The ready network of the plugin metric ``model`` (:func:`iqa_plugin.build.build_network`).

    Raises:
        ValueError: ``model`` is not a metric card of this plugin (lists the ones that are).
    """
    from iqa_plugin.build import build_network
    from iqa_plugin.hub.cards import list_cards

    metrics = {card.name: card for card in list_cards() if card.kind == "metric"}
    if model not in metrics:
        raise ValueError(f"model={model!r} is not a metric of iqa_plugin: expected one of {sorted(metrics)}.")
    return build_network(metrics[model], **kwargs)


class QualityNetwork(Protocol):
    """What :class:`BatchScorer` needs of a network: RGB ``[B, 3, H, W]`` in [0, 1] -> ``[B, 1]``
    (higher is better unless the card says ``lower_better``). Any ``nn.Module`` with that forward fits."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class PreparesForInference(Protocol):
    """Optional capability of a quality network: make a frozen network faster for inference only.

    QualiCLIP folds BatchNorm into its convolutions and, with ``compile=True``, compiles its image
    tower. The scorer calls it on networks it built from a card (never on a network the caller passed,
    which may still be trained).
    """

    def prepare_for_inference(self, compile: bool = False) -> None: ...


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r}: CUDA is not available here. Use device='cpu' or leave it unset.")
    return device


class BatchScorer:
    """Scores many images with one plugin metric, batching equal sizes.

    Args:
        model: a plugin metric name (``'qualiclip'``, ``'qualiclip+'``, ...) or an already built network
            (any :class:`QualityNetwork`: ``[B, 3, H, W]`` in [0, 1] -> ``[B, 1]``).
        device: ``'cuda'``, ``'cpu'``, ... (default: CUDA when available).
        dtype: ``'fp32'`` (exact), ``'bf16'`` or ``'fp16'`` (autocast; the score head stays fp32).
        batch_size: most images per forward pass; ``None`` picks 32 on CUDA and 1 on CPU (measured on a
            2-core AVX2 CPU at 512x384: batch 1 scored 2.7 img/s, batch 8 1.7 img/s: larger batches
            only thrash the caches there).
        channels_last: run convolutions in channels_last memory format (faster on CPU and GPU).
        compile: ``torch.compile`` the network for the input shapes ``compile_policy`` picks (by default
            every shape on first use, up to 4); pays off only where input shapes repeat.
        compile_policy: which shapes are compiled (:class:`CompilePolicy`; the jobs pass one that knows
            how many images are coming, so a job too small to repay a compilation stays eager).
        compile_backend: ``torch.compile`` backend (``'inductor'``; tests use ``'eager'``, which runs
            the same dynamo capture without code generation).
        freezing: Inductor's ``freezing`` (weights become constants; inference only). ``None``: on CUDA.
        max_pixels: decompression-bomb guard for paths and bytes.
        **model_kwargs: passed to the network (``pretrained_model_path``, ``temperature``, ...).

    Example:
        >>> scorer = BatchScorer("qualiclip", pretrained_model_path="QualiCLIP.pth")  # doctest: +SKIP
        >>> scorer.score(["a.jpg", "b.png"])  # doctest: +SKIP
        [0.61, 0.47]
    """

    def __init__(
        self,
        model: str | nn.Module = "qualiclip",
        *,
        device: str | torch.device | None = None,
        dtype: str = "fp32",
        batch_size: int | None = None,
        channels_last: bool = True,
        compile: bool = False,
        compile_policy: CompilePolicy | None = None,
        compile_backend: str = "inductor",
        freezing: bool | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        **model_kwargs: Any,
    ) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype={dtype!r}: expected one of {sorted(DTYPES)}.")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r}: expected a positive integer (or None for automatic).")
        self.device = _resolve_device(device)
        if batch_size is None:
            batch_size = 32 if self.device.type == "cuda" else 1
        self.dtype = dtype
        self.batch_size = int(batch_size)
        self.channels_last = channels_last
        self.max_pixels = max_pixels
        network: Any = build_metric_network(model, **model_kwargs) if isinstance(model, str) else model
        self.model_name = model if isinstance(model, str) else type(model).__name__
        self.weights_sha256: str | None = getattr(network, "weights_sha256", None)
        network = network.to(self.device).eval()
        if isinstance(model, str) and isinstance(network, PreparesForInference):
            network.prepare_for_inference(compile=False)  # built here, frozen: the network's own fast path
        if channels_last:
            network = network.to(memory_format=torch.channels_last)
        self.network = network
        self.compile_policy = (compile_policy or CompilePolicy()) if compile else None
        freeze = self.device.type == "cuda" if freezing is None else freezing
        self._compile_args: dict[str, Any] = {"dynamic": False, "backend": compile_backend, "options": (
            {"freezing": True} if freeze and compile_backend == "inductor" else None)}
        self._compiled: Any = None  # built on the first compiled batch: a job that never compiles pays nothing

    def _autocast(self):
        if self.dtype == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=DTYPES[self.dtype])

    def _batches(self, shapes: Sequence[tuple[int, ...]]) -> Iterator[list[int]]:
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for index, shape in enumerate(shapes):
            groups[shape].append(index)
        for indices in groups.values():
            for start in range(0, len(indices), self.batch_size):
                yield indices[start : start + self.batch_size]

    def _unit_float(self, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.to(self.device, non_blocking=True)
        return tensor.float().div_(255.0) if tensor.dtype == torch.uint8 else tensor

    @torch.inference_mode()
    def _score_batch(self, tensors: list[torch.Tensor]) -> np.ndarray:
        x = torch.stack([self._unit_float(t) for t in tensors])
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        network = self.network
        n = x.shape[0]
        if self.compile_policy is not None and self.compile_policy.observe(tuple(x.shape[1:]), n):
            if self._compiled is None:
                self._compiled = torch.compile(self.network, **self._compile_args)
            network = self._compiled
            if n < self.batch_size:  # one graph per shape: pad the last batch of a shape to full size
                x = torch.cat([x, x[-1:].expand(self.batch_size - n, *x.shape[1:])]).contiguous(
                    memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        with self._autocast():
            out = network(x)
        return out.float().reshape(-1)[:n].cpu().numpy()

    def warm_up(self, sizes: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
        """Compile the ``(height, width)`` input sizes now (a batch of grey images each), instead of on
        the first batch of that size; returns the sizes compiled (none without ``compile``, at most the
        policy's ``max_shapes``). The jobs call it in each actor before its first block."""
        done: list[tuple[int, int]] = []
        if self.compile_policy is None:
            return done
        for height, width in sizes:
            shape = (3, int(height), int(width))
            if self.compile_policy.reserve(shape):
                self._score_batch([torch.full(shape, 0.5)] * self.batch_size)
                self.compile_policy.seen[shape] -= self.batch_size  # grey warm-up images are not the job's
                done.append(shape[1:])
        return done

    def score_tensors(self, tensors: Sequence[torch.Tensor]) -> list[float]:
        """Scores of ``[3, H, W]`` tensors (any mix of sizes and devices), in input order: floats in
        [0, 1], or uint8 (divided by 255 on the scoring device, as :func:`array_to_tensor` does)."""
        scores = np.empty(len(tensors), dtype=np.float64)
        for indices in self._batches([tuple(t.shape) for t in tensors]):
            scores[indices] = self._score_batch([tensors[i] for i in indices])
        return scores.tolist()

    def score_arrays(self, arrays: Sequence[np.ndarray]) -> list[float]:
        """Scores of ``H x W x 3`` uint8/uint16 RGB arrays (as decoded by the jobs), in input order.

        Arrays are converted to float per batch, so memory stays at one batch of float tensors.
        """
        scores = np.empty(len(arrays), dtype=np.float64)
        for indices in self._batches([tuple(a.shape) for a in arrays]):
            scores[indices] = self._score_batch([array_to_tensor(arrays[i]) for i in indices])
        return scores.tolist()

    def score(self, images: Iterable[Any]) -> list[float]:
        """Scores of images given as paths, bytes, PIL images, arrays or tensors, in input order.

        Raises:
            iqa_plugin.data.images.ImageInputError: an input cannot be read (names it, the reason and the fix).
        """
        return self.score_tensors([load_image(image, max_pixels=self.max_pixels) for image in images])
