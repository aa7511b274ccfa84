"""Compile seconds per input shape, measured, and the break-even they imply (bench/gpu_all.py ``compile_shapes``).

For each shape the scoring job meets most (4:3 landscape and portrait at 1024x768, 800x800 square, and
the 224x224 of ``--resolution short:224``), one compiled :class:`BatchScorer` meets the shape for the
first time (Inductor compiles it: ``compile_s`` is that first call less one steady call), then eager and
compiled run the same batches interleaved. A compiled shape repays its compilation after

    break_even_images = compile_s / (1 / eager_img_s - 1 / compiled_img_s)

images of it (``pays: false`` when compiled is not faster). Set ``iqa score --compile-break-even`` to the
largest ``break_even_images`` of the shapes your jobs see (rounded up); the policy then compiles a shape
only when the job is projected to score at least that many images of it.
"""

from __future__ import annotations

import time
from typing import Any

#: (width, height) per shape
SHAPES = ((1024, 768), (768, 1024), (800, 800), (224, 224))


def break_even(compile_s: float, eager_img_s: float, compiled_img_s: float) -> float | None:
    """Images of one shape after which compiling it paid for itself; None when compiled is not faster.

    >>> break_even(30.0, 500.0, 1000.0)
    30000.0
    >>> break_even(30.0, 500.0, 400.0) is None
    True
    """
    saved_per_image = 1.0 / eager_img_s - 1.0 / compiled_img_s
    return None if saved_per_image <= 0 else round(compile_s / saved_per_image, 1)


def measure(ctx: Any, batch: int = 32, repeats: int = 3) -> dict[str, Any]:
    """``{"WxH": {compile_s, eager_img_s, compiled_img_s, break_even_images, pays}}`` plus a suggestion."""
    from bench.bench_qualiclip import interleaved, photo_batch
    from iqa_plugin.inference.scorer import BatchScorer

    if not ctx.cuda:  # Inductor on RN50 takes minutes a shape on a few CPU cores: bench_compile.py covers CPU
        return ctx.stop("compile seconds per shape (RN50, Inductor on the GPU)")
    dtype = "bf16"
    eager = BatchScorer("qualiclip", device=ctx.device, dtype=dtype, batch_size=batch,
                        pretrained_model_path=str(ctx.weights))
    compiled = BatchScorer("qualiclip", device=ctx.device, dtype=dtype, batch_size=batch, compile=True,
                           pretrained_model_path=str(ctx.weights))
    result: dict[str, Any] = {"batch": batch, "dtype": dtype, "shapes": {}}
    for width, height in SHAPES:
        images = [image.to(ctx.device) for image in photo_batch(batch, width, height)]
        ctx.sync()
        started = time.perf_counter()
        compiled.score_tensors(images)  # first meeting of this shape: compilation + one batch
        ctx.sync()
        first = time.perf_counter() - started
        fns = {"eager": lambda i=images: eager.score_tensors(i), "compiled": lambda i=images: compiled.score_tensors(i)}
        seconds = interleaved(fns, repeats, ctx.sync)
        rates = {name: len(images) / seconds[name] for name in fns}
        compile_s = max(0.0, first - seconds["compiled"])
        even = break_even(compile_s, rates["eager"], rates["compiled"])
        result["shapes"][f"{width}x{height}"] = {
            "compile_s": round(compile_s, 2), "eager_img_s": round(rates["eager"], 1),
            "compiled_img_s": round(rates["compiled"], 1), "break_even_images": even, "pays": even is not None}
        print(f"  {width}x{height}: compile {compile_s:.1f} s, eager {rates['eager']:.1f} img/s, compiled "
              f"{rates['compiled']:.1f} img/s, break-even {even if even is not None else 'never'} images", flush=True)
    evens = [row["break_even_images"] for row in result["shapes"].values() if row["pays"]]
    result["suggested_compile_break_even"] = int(max(evens)) + 1 if evens else None
    return result
