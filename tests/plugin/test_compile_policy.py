"""Compilation per input shape: which shapes the policy compiles, and that compiled scoring equals eager."""

from __future__ import annotations

import pytest
import torch

from iqa_plugin.inference.compile_policy import MAX_COMPILED_SHAPES, CompilePolicy
from iqa_plugin.inference.scorer import BatchScorer
from iqa_plugin.testing import TinyQualityNet

A, B, C = (3, 64, 96), (3, 96, 64), (3, 64, 64)


def test_a_job_too_small_to_repay_compilation_stays_eager():
    policy = CompilePolicy(max_shapes=4, break_even=25_000, expected_images=20_000)
    assert not any(policy.observe(A, 32) for _ in range(600))
    assert policy.compiled == []


def test_dominant_shapes_compile_rare_ones_do_not():
    policy = CompilePolicy(max_shapes=2, break_even=5_000, expected_images=100_000, min_sample=100)
    assert not policy.observe(A, 64)  # too few images seen to trust a share yet
    assert policy.observe(A, 64)  # 100% of 128 seen, ~99.9k to come
    assert not policy.observe(B, 2)  # 2 of 130: ~1.5k projected, below the break-even
    assert policy.projected(B) == pytest.approx(2 / 130 * (100_000 - 130))
    assert policy.observe(C, 500)  # most of the images so far: compiled
    assert not policy.observe(B, 5_000)  # no slot left: max_shapes reached
    assert policy.compiled == [A, C] and policy.observe(A, 1)


def test_unknown_job_size_compiles_on_first_use_up_to_the_limit():
    policy = CompilePolicy(max_shapes=1)
    assert policy.observe(A, 1) and not policy.observe(B, 10_000)
    assert policy.reserve(A) and not policy.reserve(B)
    with pytest.raises(ValueError, match=f"max_shapes=9: expected 1..{MAX_COMPILED_SHAPES}"):
        CompilePolicy(max_shapes=MAX_COMPILED_SHAPES + 1)


def _scorers(policy: CompilePolicy, backend: str) -> tuple[BatchScorer, BatchScorer]:
    torch.manual_seed(0)
    net = TinyQualityNet().eval().requires_grad_(False)
    eager = BatchScorer(net, device="cpu", batch_size=4)
    compiled = BatchScorer(net, device="cpu", batch_size=4, compile=True, compile_policy=policy,
                           compile_backend=backend)
    return eager, compiled


def test_compiled_shapes_score_like_eager_with_padded_last_batches():
    images = [torch.rand(*A) for _ in range(6)] + [torch.rand(*B) for _ in range(3)] + [torch.rand(*C)]
    policy = CompilePolicy(max_shapes=1)
    eager, compiled = _scorers(policy, "eager")  # dynamo capture, no code generation: fast on CPU
    calls: list[tuple[int, ...]] = []
    compiled._compiled = _recording(torch.compile(compiled.network, backend="eager", dynamic=False), calls)
    assert compiled.score_tensors(images) == eager.score_tensors(images)
    assert policy.compiled == [A]
    assert calls == [(4, *A), (4, *A)]  # 6 images of A: a full batch and a padded one; B and C eager
    uint8 = [(image * 255).round().to(torch.uint8) for image in images]
    assert compiled.score_tensors(uint8) == eager.score_tensors([image.float() / 255 for image in uint8])


def test_warm_up_compiles_the_given_sizes_before_any_image():
    policy = CompilePolicy(max_shapes=2, break_even=10**9, expected_images=10)
    _, compiled = _scorers(policy, "eager")
    assert compiled._compiled is None  # nothing compiled until a shape is chosen
    assert compiled.warm_up([(64, 96), (96, 64), (64, 64)]) == [(64, 96), (96, 64)]
    assert compiled._compiled is not None
    assert policy.compiled == [A, B] and sum(policy.seen.values()) == 0
    assert BatchScorer(TinyQualityNet(), device="cpu").warm_up([(64, 64)]) == []  # compile off: nothing


def _recording(fn, calls):
    def run(x):
        calls.append(tuple(x.shape))
        return fn(x)

    return run


@pytest.mark.slow
def test_inductor_compiled_scores_equal_eager():
    images = [torch.rand(*A) for _ in range(5)]
    eager, compiled = _scorers(CompilePolicy(max_shapes=1), "inductor")
    torch.testing.assert_close(torch.tensor(compiled.score_tensors(images)), torch.tensor(eager.score_tensors(images)),
                               rtol=1e-5, atol=1e-6)
