"""The score job's device decoding on CPU: selection, routing, and the same rows as the CPU decoder.

The GPU path's code runs here with libjpeg-turbo (``decode_jpeg(device="cpu")``) standing in for nvjpeg:
the routing, the batched decode in the actor, the per-image fallback and the resize are the ones a CUDA
actor runs. ``test_nvjpeg_*`` runs only where CUDA is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from ray_jobs.runtime import StorageSettings
from ray_jobs.score.config import ScoreJobConfig
from ray_jobs.score.job import run_job, stage_arguments
from ray_jobs.score.sources import SourceError
from ray_jobs.score.stages import ENCODED_JPEG, BlockScorer, fetch_and_decode_blocks
from tests.helpers import fast_config, good_images, read_output, write_images
from tests.plugin.test_device_decode import mixed_inputs

ROW_COLUMNS = ("id", "uri", "bytes", "width", "height", "error")


def mixed_folder(folder: Path, photos: list[Path]) -> dict[str, bytes]:
    images = {f"odd/{name}": data for name, (data, _) in mixed_inputs(photos).items()}
    images.update(good_images(photos, 12))
    write_images(folder, images)
    return images


def _block(folder: Path, names: list[str]) -> pa.Table:
    return pa.table({"block": ["k"], "ids": [names], "uris": [[str(folder / n) for n in names]]})


class RefusingScorer(BlockScorer):
    """An actor whose device decoder refuses every JPEG of quality 10 (as nvjpeg refuses some files)."""

    refused = 0

    def make_jpeg_decoder(self, device):
        real = super().make_jpeg_decoder(device)

        def decode(encoded: list[torch.Tensor]) -> list[torch.Tensor]:
            small = [t for t in encoded if int(t.numel()) < 1500]  # the quality-10 JPEGs of good_images
            if small:
                self.refused += len(small) if len(encoded) == 1 else 0
                raise RuntimeError("refused")
            return real(encoded)

        return decode


def test_decode_selection_follows_the_actors_device():
    config = ScoreJobConfig(src="/d", out="/o")
    assert (config.decode, config.decode_on_device("cpu"), config.decode_on_device("cuda")) == ("auto", False, True)
    assert not config.model_copy(update={"decode": "cpu"}).decode_on_device("cuda")
    with pytest.raises(ValueError, match="--decode gpu: the scoring actors have no CUDA device here; use --decode "
                                         "auto or cpu"):
        config.model_copy(update={"decode": "gpu"}).decode_on_device("cpu")
    assert (config.compiles_on("cpu"), config.compiles_on("cuda")) == (False, True)
    assert config.model_copy(update={"compile": False}).compiles_on("cuda") is False
    with pytest.raises(ValueError, match="compile_warmup size '768 by 1024': expected HEIGHTxWIDTH"):
        ScoreJobConfig(src="/d", out="/o", compile_warmup=["768 by 1024"])
    warm = ScoreJobConfig(src="/d", out="/o", compile_warmup=["768x1024"], actors=3)
    arguments = stage_arguments(warm, "cuda", StorageSettings(), n_pending=1000)
    assert arguments["decode"]["device_decode"] is True
    assert arguments["scorer"]["decode"] == {"max_pixels": warm.max_pixels, "min_side": 32, "short_side": None}
    assert arguments["scorer"]["warmup_sizes"] == [(768, 1024)]
    policy = arguments["scorer"]["scorer_kwargs"]["compile_policy"]
    assert (policy.expected_images, policy.break_even, policy.max_shapes) == (334, 25_000, 4)
    assert "decode" not in stage_arguments(warm, "cpu", StorageSettings())["scorer"]


def test_fetch_stage_leaves_only_device_decodable_jpegs_encoded(tmp_path, photos):
    images = mixed_folder(tmp_path, photos)
    names = sorted(images)
    kwargs = {"max_pixels": 1_000_000, "min_side": 32, "short_side": 64, "threads": 4}
    routed = fetch_and_decode_blocks(_block(tmp_path, names), device_decode=True, **kwargs).to_pylist()[0]
    cpu = fetch_and_decode_blocks(_block(tmp_path, names), **kwargs).to_pylist()[0]
    encoded = {name for name, dtype in zip(names, routed["dtype"], strict=True) if dtype == ENCODED_JPEG}
    expected = {f"odd/{n}" for n, (_, fallback) in mixed_inputs(photos).items() if fallback is None}
    assert encoded == expected | {n for n in names if n.startswith("good/")}
    for column in ("bytes", "width", "height", "error"):
        assert routed[column] == cpu[column], column  # sizes from the header: the CPU decoder's
    for i, name in enumerate(names):
        if name in encoded:
            assert routed["pixels"][i] == images[name] and routed["shape"][i] == [routed["height"][i],
                                                                                   routed["width"][i], 3]
        else:
            assert routed["pixels"][i] == cpu["pixels"][i] and routed["dtype"][i] == cpu["dtype"][i]


@pytest.mark.parametrize("short_side", [None, 64])
def test_actor_decoding_gives_the_cpu_paths_rows(tmp_path, photos, fabricated, short_side):
    images = mixed_folder(tmp_path, photos)
    names = sorted(images)
    limits = {"max_pixels": 1_000_000, "min_side": 32, "short_side": short_side}
    scorer_kwargs = {"model": "qualiclip", "device": "cpu", "batch_size": 8,
                     "pretrained_model_path": str(fabricated["qualiclip"])}
    block = _block(tmp_path, names)
    actor = BlockScorer(scorer_kwargs, decode=limits)  # blocks without encoded JPEGs take the CPU path
    cpu_rows = actor(fetch_and_decode_blocks(block, threads=4, **limits)).to_pylist()[0]
    routed = fetch_and_decode_blocks(block, threads=4, device_decode=True, **limits)
    refusing = RefusingScorer(scorer_kwargs, decode=limits)
    for scorer in (actor, refusing):
        rows = scorer(routed).to_pylist()[0]
        cls = type(scorer)
        for column in ("ids", "uris", "bytes", "width", "height", "error"):
            assert rows[column] == cpu_rows[column], (cls.__name__, column)
        scored = [s is not None for s in cpu_rows["score"]]
        assert [s is not None for s in rows["score"]] == scored and sum(scored) >= 20
        got = np.array([s for s in rows["score"] if s is not None])
        want = np.array([s for s in cpu_rows["score"] if s is not None])
        if short_side is None:
            np.testing.assert_array_equal(got, want)  # the same pixels: the same scores
        else:
            np.testing.assert_allclose(got, want, atol=2e-3)  # resized on the device: within one level
    assert refusing.refused == 3  # three JPEGs went the fallback way, one by one
    reasons = dict(zip(cpu_rows["ids"], cpu_rows["error"], strict=True))
    assert reasons["odd/truncated.jpg"] == "truncated" and reasons["odd/bomb.jpg"] == "too_many_pixels"
    assert reasons["odd/exif-rotated.jpg"] is None and reasons["odd/cmyk.jpg"] is None


def _rows(dst: str) -> dict[str, tuple]:
    table = read_output(dst).to_pylist()
    return {row["id"]: row for row in table}


def test_a_job_decoding_in_its_actors_writes_the_cpu_jobs_rows(tmp_path, photos, fabricated, ray_local):
    mixed_folder(tmp_path / "src", photos)
    common = {"src": str(tmp_path / "src"), "weights": str(fabricated["qualiclip"]), "max_pixels": 1_000_000}
    logs: list[str] = []
    run_job(fast_config(out=str(tmp_path / "cpu"), decode="cpu", **common), log=logs.append)
    run_job(fast_config(out=str(tmp_path / "dev"), **common), log=logs.append, device_decode=True)
    assert any("route (baseline JPEGs decoded in the actors)" in line for line in logs)
    cpu, dev = _rows(str(tmp_path / "cpu")), _rows(str(tmp_path / "dev"))
    assert sorted(cpu) == sorted(dev) and len(cpu) == 30
    for name, row in cpu.items():
        assert {c: dev[name][c] for c in ("bytes", "width", "height", "error")} == \
               {c: row[c] for c in ("bytes", "width", "height", "error")}, name
        assert (row["score"] is None) == (dev[name]["score"] is None), name
        if row["score"] is not None:
            assert abs(row["score"] - dev[name]["score"]) < 2e-3, name
    with pytest.raises(SourceError, match="--decode gpu: the scoring actors have no CUDA"):
        run_job(fast_config(out=str(tmp_path / "gpu"), decode="gpu", **common), log=logs.append)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (nvjpeg)")
def test_nvjpeg_decodes_routed_jpegs_like_the_cpu(photos):
    from iqa_plugin.data.device_decode import decode_jpegs, torchvision_jpeg_decoder
    from iqa_plugin.data.images import decode_image_array

    blobs = [data for data, fallback in mixed_inputs(photos).values() if fallback is None]
    for blob, image in zip(blobs, decode_jpegs(blobs, torchvision_jpeg_decoder("cuda")), strict=True):
        assert image is not None and image.is_cuda
        diff = np.abs(image.permute(1, 2, 0).cpu().numpy().astype(int) - decode_image_array(blob).astype(int))
        assert diff.max() <= 8 and diff.mean() < 1.0  # nvjpeg's IDCT and upsampling differ slightly


def corrupt_scan(jpeg: bytes, seed: int = 0) -> bytes:
    """``jpeg`` with the middle half of its entropy-coded scan replaced by noise: the header (up to and
    including SOS) and the end marker stay valid, so the fetch stage routes it to the device decoder."""
    start = jpeg.index(b"\xff\xda") + 2 + int.from_bytes(jpeg[jpeg.index(b"\xff\xda") + 2:][:2], "big")
    end = len(jpeg) - 2
    assert jpeg[end:] == b"\xff\xd9"
    lo, hi = start + (end - start) // 4, start + 3 * (end - start) // 4
    noise = np.random.default_rng(seed).integers(0, 255, hi - lo, dtype=np.uint8).tobytes()  # no 0xFF: no markers
    return jpeg[:lo] + noise + jpeg[hi:]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA (nvjpeg)"))])
def test_a_jpeg_with_corrupted_scan_data_gets_the_cpu_jobs_row(tmp_path, photos, fabricated, device):
    """nvjpeg (cuda) or libjpeg-turbo standing in for it (cpu) meets scan data it cannot trust: the row and
    the reason are the CPU decoder's, whether the device decoder refuses it (fallback) or decodes it."""
    images = good_images(photos, 8)
    images.update({f"corrupt/{i}.jpg": corrupt_scan(images[f"good/{i:04d}.jpg"], seed=i) for i in range(3)})
    write_images(tmp_path, images)
    names = sorted(images)
    limits = {"max_pixels": 1_000_000, "min_side": 32, "short_side": None}
    block = _block(tmp_path, names)
    routed = fetch_and_decode_blocks(block, threads=2, device_decode=True, **limits)
    dtypes = dict(zip(names, routed.to_pylist()[0]["dtype"], strict=True))
    assert all(dtypes[f"corrupt/{i}.jpg"] == ENCODED_JPEG for i in range(3))  # valid header: routed to the device
    scorer_kwargs = {"model": "qualiclip", "device": "cpu", "batch_size": 4,
                     "pretrained_model_path": str(fabricated["qualiclip"])}
    cpu_rows = BlockScorer(scorer_kwargs)(fetch_and_decode_blocks(block, threads=2, **limits)).to_pylist()[0]
    rows = BlockScorer({**scorer_kwargs, "device": device}, decode=limits)(routed).to_pylist()[0]
    for column in ("ids", "uris", "bytes", "width", "height", "error"):
        assert rows[column] == cpu_rows[column], column
    assert [s is None for s in rows["score"]] == [s is None for s in cpu_rows["score"]]
