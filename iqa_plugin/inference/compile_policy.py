"""Which input shapes a scorer compiles: the shapes that repeat often enough to repay their compilation.

``torch.compile`` (Inductor) specialises on the input shape: every new ``[B, 3, H, W]`` costs a fresh
compilation (17 s for the RN50 tower at 1024x768 and 55 s at 224x224 on one H100, measured with
``freezing=True``; REFERENCE.md, "Measured anchors") and then runs faster (627 -> 1,291 img/s and
9,575 -> 19,012 img/s there). A shape therefore pays only after ``break_even`` images of it:
17 s / (1/627 - 1/1,291 s) ~ 21k images at 1024x768, far more at 224 px. Images of mixed sizes keep
their own shape (no padding or cropping: that would change the scores), so this policy
*buckets by shape*: batches hold one shape, the shapes that dominate a job are compiled (at most
``max_shapes``, under dynamo's own recompile limit), the rare ones run eagerly.

With ``expected_images`` (the images this scorer will see, e.g. a job's inputs per actor), a shape is
compiled once its share of the images seen so far, projected over the images still to come, reaches
``break_even`` (shares are trusted after ``min_sample`` images): a job too small to repay a compilation
never compiles, so it is never slower than eager. Without it (a library caller who said ``compile=True``), every shape is compiled on first use up
to ``max_shapes``.

>>> policy = CompilePolicy(max_shapes=2, break_even=1000, expected_images=10_000, min_sample=100)
>>> policy.observe((3, 224, 298), 100)     # 100 of 100 seen, ~9,900 to come: compile
True
>>> policy.observe((3, 224, 224), 10)      # ~9% of what came, ~890 projected: stays eager
False
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

#: dynamo's default recompile limit per function: more shapes than this fall back to eager anyway.
MAX_COMPILED_SHAPES = 8


@dataclass
class CompilePolicy:
    """Decides per batch whether its shape runs compiled. ``observe`` is called once per batch.

    Args:
        max_shapes: most shapes compiled (1..:data:`MAX_COMPILED_SHAPES`).
        break_even: projected images of a shape that repay one compilation (0: compile on first use).
        expected_images: images this scorer will score in all (``None``: unknown, compile on first use).
        min_sample: images seen before shares are trusted (with ``expected_images``): two images of a
            shape among the first thirty say little about a job of a million.
    """

    max_shapes: int = 4
    break_even: int = 0
    expected_images: int | None = None
    min_sample: int = 256
    seen: Counter[tuple[int, ...]] = field(default_factory=Counter)
    compiled: list[tuple[int, ...]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 1 <= self.max_shapes <= MAX_COMPILED_SHAPES:
            raise ValueError(f"max_shapes={self.max_shapes}: expected 1..{MAX_COMPILED_SHAPES} (dynamo recompiles "
                             f"a function at most {MAX_COMPILED_SHAPES} times). Fix: pass a smaller number")
        if self.break_even < 0:
            raise ValueError(f"break_even={self.break_even}: expected >= 0 images")

    def projected(self, shape: tuple[int, ...]) -> float:
        """Images of ``shape`` still to come if it keeps its share of what was seen (inf when unknown)."""
        if self.expected_images is None:
            return float("inf")
        total = sum(self.seen.values())
        if total == 0 or total < min(self.min_sample, self.expected_images):
            return 0.0
        return self.seen[shape] / total * max(0, self.expected_images - total)

    def reserve(self, shape: tuple[int, ...]) -> bool:
        """Compile ``shape`` from now on if a slot is free (warm-up); True when it is compiled."""
        if shape not in self.compiled and len(self.compiled) < self.max_shapes:
            self.compiled.append(shape)
        return shape in self.compiled

    def observe(self, shape: tuple[int, ...], count: int) -> bool:
        """Record ``count`` images of ``shape`` about to be scored; True when they run compiled."""
        self.seen[shape] += count
        if shape in self.compiled:
            return True
        if len(self.compiled) >= self.max_shapes or self.projected(shape) < self.break_even:
            return False
        return self.reserve(shape)
