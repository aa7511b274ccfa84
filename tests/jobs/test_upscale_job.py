"""The upscale job: output names, config errors, and whole runs on a real local Ray over real files and a
real (moto) S3, with a tiny RRDBNet card whose weights are fabricated in the published layout."""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from iqa_plugin.hub.weights import sha256_file
from iqa_plugin.testing import fabricate_rrdbnet_checkpoint
from ray_jobs.io import iter_part_columns, list_parts
from ray_jobs.upscale.config import UpscaleJobConfig
from ray_jobs.upscale.stages import INDEX_SCHEMA, output_name
from tests.helpers import encode, good_images, write_images

ROOT = Path(__file__).resolve().parents[2]
TINY = {"scale": 4, "features": 8, "blocks": 1, "growth": 4}
SECRET = "Sup3rSecretValue-do-not-print"


@pytest.fixture
def sr_card(tmp_path, monkeypatch):
    """A card ``tiny-sr-x4`` (kind sr) in a registry folder, with fabricated ESRGAN-layout weights beside it."""
    registry = tmp_path / "cards"
    weights = fabricate_rrdbnet_checkpoint(registry / "tiny-sr-x4.pth", "official", seed=3, **TINY)
    card = {"name": "tiny-sr-x4", "kind": "sr", "arch": "IqaPluginRRDBNet", "arch_options": TINY,
            "weights": {"model": {"urls": ["tiny-sr-x4.pth"], "sha256": sha256_file(weights), "format": "pth"}},
            "license": "test weights", "paper": "arXiv:2503.19295", "input": {"min_side": 1}}
    (registry / "tiny-sr-x4.yaml").write_text(yaml.safe_dump(card))
    monkeypatch.setenv("IQA_PLUGIN_REGISTRY", str(registry))
    return {"name": "tiny-sr-x4", "weights": weights}


def _config(src, out, **values) -> UpscaleJobConfig:
    defaults = {"model": "tiny-sr-x4", "block_size": 4, "tile": 32, "tile_overlap": 8, "progress_bars": False,
                "progress_interval_s": 2.0}
    return UpscaleJobConfig(src=str(src), out=str(out), **{**defaults, **values})


def read_index(out: str) -> pa.Table:
    tables = list(iter_part_columns(out.rstrip("/") + "/index", INDEX_SCHEMA.names))
    return pa.concat_tables(tables) if tables else INDEX_SCHEMA.empty_table()


# ----------------------------------------------------------------------------------------- fast unit tests


def test_output_names_are_stable_unique_and_safe():
    assert output_name("sub/cat.jpg", "png") == "sub/cat.jpg.png"
    assert output_name("cat.png", "png") == "cat.png.png"  # never the same file as cat.jpg's
    ids = ["a/x.jpg", "a/x.png", "s3://b/a/x.jpg", "/abs/a/x.jpg", "../a/x.jpg", "a//x.jpg", "a/./x.jpg",
           ".hidden/x.jpg", "we:ird?.jpg"]
    names = [output_name(i, "png") for i in ids]
    assert len(set(names)) == len(ids)  # injective, also where the id had to be cleaned
    for name in names:
        parts = name.split("/")
        assert all(p not in ("", ".", "..") and not p.startswith(".") for p in parts), name
        assert not re.search(r'[\\:*?"<>|]', name), name
    assert re.fullmatch(r"s3/b/a/x\.jpg-[0-9a-f]{8}\.png", names[2])
    assert names == [output_name(i, "png") for i in ids]  # stable


def test_no_secret_in_the_pickled_task_and_actor_arguments(monkeypatch, sr_card):
    import cloudpickle

    from iqa_plugin.hub.cards import get_card
    from ray_jobs.runtime import StorageSettings
    from ray_jobs.upscale.job import stage_arguments

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    config = _config("s3://b/lowres/", "s3://b/x4/", weights="s3://b/w.pth")
    arguments = stage_arguments(config, get_card("tiny-sr-x4"), "cuda", StorageSettings.from_env())
    assert set(arguments) == {"decode", "upscaler", "write"}
    assert arguments["upscaler"]["sr_options"] == {"tile": 32, "tile_overlap": 8, "device": "cuda",
                                                   "precision": "auto"}
    for stage in arguments.values():
        payload = cloudpickle.dumps(stage) + pickle.dumps(stage)
        assert SECRET.encode() not in payload and b"testing" not in payload


def test_model_problems_are_one_line_before_ray_starts(tmp_path, sr_card, capsys):
    from ray_jobs.cli import main

    write_images(tmp_path / "src", {"a.png": encode(Image.new("RGB", (8, 8)), "PNG")})
    base = ["upscale", str(tmp_path / "src"), "--out", str(tmp_path / "out")]
    assert main([*base, "--model", "qualiclip"]) == 2
    assert "--model qualiclip is a metric card, not an SR model" in capsys.readouterr().err
    x2 = fabricate_rrdbnet_checkpoint(tmp_path / "x2.pth", "official", **{**TINY, "scale": 2})
    assert main([*base, "--model", "tiny-sr-x4", "--weights", str(x2)]) == 2
    err = capsys.readouterr().err
    assert "--weights" in err and "scale" in err and "Traceback" not in err
    assert main([*base, "--model", "tiny-sr-x4", "--weights", str(x2), "--scale", "2", "--formatt", "png"]) == 2
    assert "unrecognized arguments: --formatt" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing written before the checks pass


# ----------------------------------------------------------------------------------------- whole runs


@pytest.mark.slow
def test_folder_in_images_out_at_scale_with_error_rows(tmp_path, ray_local, sr_card, photos):
    from iqa_plugin.build import build_network
    from iqa_plugin.inference.sr import SRModel
    from ray_jobs.upscale.job import run_job

    photo = Image.open(photos[0]).convert("RGB")
    good = good_images(photos, 5)
    jpeg = good["good/0000.jpg"]
    files = {**good, "odd/small.png": encode(photo.resize((37, 21)), "PNG"),
             "odd/grey.png": encode(photo.resize((40, 30)).convert("L"), "PNG"),
             "odd/truncated.jpg": jpeg[: len(jpeg) // 2], "odd/notes.jpg": b"not an image\n" * 10,
             "odd/empty.jpg": b"", "odd/huge.png": encode(Image.new("RGB", (300, 300)), "PNG")}
    ids = write_images(tmp_path / "src", files)
    out = tmp_path / "out"
    logs: list[str] = []
    record = run_job(_config(tmp_path / "src", out, max_pixels=200 * 200), log=logs.append)

    rows = {row["id"]: row for row in read_index(str(out)).to_pylist()}
    assert sorted(rows) == ids and len(read_index(str(out))) == len(ids)  # every input exactly once
    errors = {i: r["error"] for i, r in rows.items() if r["error"]}
    assert errors == {"odd/truncated.jpg": "truncated", "odd/notes.jpg": "not_an_image", "odd/empty.jpg": "empty",
                      "odd/huge.png": "too_many_pixels"}
    reference = SRModel(build_network("tiny-sr-x4"), tile=32, tile_overlap=8, device="cpu")
    for id_, row in rows.items():
        if row["error"]:
            assert row["output"] is None and row["out_width"] is None and not (out / "images" / f"{id_}.png").exists()
            continue
        assert row["output"] == str(out / "images" / f"{id_}.png")
        written = Image.open(row["output"])
        assert written.mode == "RGB" and written.size == (row["out_width"], row["out_height"])
        assert (row["out_width"], row["out_height"]) == (4 * row["width"], 4 * row["height"])
        assert row["out_bytes"] == os.path.getsize(row["output"]) and row["model"] == "tiny-sr-x4"
        expected = reference.upscale(Image.open(tmp_path / "src" / id_).convert("RGB"))
        assert np.abs(np.asarray(written, np.int16) - np.asarray(expected, np.int16)).max() <= 1, id_
    assert (rows["odd/small.png"]["out_width"], rows["odd/small.png"]["out_height"]) == (148, 84)
    assert record["n_upscaled"] == 7 and record["errors_by_reason"] == {
        "empty": 1, "not_an_image": 1, "too_many_pixels": 1, "truncated": 1}
    assert record["weights_sha256"] == sha256_file(sr_card["weights"]) and record["scale"] == 4
    assert any(line.startswith(f"done: {len(ids)} inputs -> {len(ids)} index rows") for line in logs), logs
    assert any(re.match(rf"progress: \d+/{len(ids)} done \(\d+ upscaled, \d+ errors\)", line) for line in logs), logs
    assert json.loads((out / "_iqa" / "job.json").read_text())["n_upscaled"] == 7

    with pytest.raises(ValueError, match=r"another run identity \(tile 32 -> 64\): give a new --out, or add --redo"):
        run_job(_config(tmp_path / "src", out, max_pixels=200 * 200, tile=64), log=lambda line: None)
    again: list[str] = []
    run_job(_config(tmp_path / "src", out, max_pixels=200 * 200), log=again.append)
    assert any("nothing to do" in line for line in again), again
    (tmp_path / "src" / "good" / "0001.jpg").unlink()  # an input leaves the source: its row and image go
    record = run_job(_config(tmp_path / "src", out, max_pixels=200 * 200), log=lambda line: None)
    assert record["dropped"] == {"left_source": 1} and record["n_upscaled"] == 6
    assert "good/0001.jpg" not in read_index(str(out)).column("id").to_pylist()
    assert not (out / "images" / "good" / "0001.jpg.png").exists() and (out / "images" / "good" / "0002.jpg.png").exists()


@pytest.mark.slow
def test_driver_killed_then_rerun_upscales_each_missing_input_once(tmp_path, ray_local, sr_card, photos):
    ids = write_images(tmp_path / "src", good_images(photos, 24, seed=4))
    out = tmp_path / "out"
    job = tmp_path / "job.yaml"
    job.write_text(f"src: {tmp_path / 'src'}\nout: {out}\nmodel: tiny-sr-x4\nblock_size: 3\ntile: 32\n"
                   "tile_overlap: 8\nprogress_bars: false\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    slow = [sys.executable, "-c", "import sys; from tests.helpers import upscale_cli_with_faults; "
            "sys.exit(upscale_cli_with_faults(sys.argv[1:], sleep_per_block_s=0.5))", "--config", str(job)]
    first = subprocess.Popen(slow, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while len(list_parts(str(out / "index"))) < 2:
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.2)
    finally:
        first.kill()
        first.wait()
    previous = -1  # let a write already in flight land
    while previous != (current := len(list_parts(str(out / "index")))):
        previous = current
        time.sleep(2.0)
    # the driver died between a block's images and its index part: images without rows
    unindexed = list_parts(str(out / "index"))[0]
    orphans = pq.read_table(unindexed).column("id").to_pylist()
    os.remove(unindexed)
    stamps = {i: (out / "images" / f"{i}.png").stat().st_mtime_ns for i in orphans}
    already = read_index(str(out)).num_rows
    assert 0 < already < 24 and all((out / "images" / f"{i}.png").exists() for i in orphans)

    second = subprocess.run([sys.executable, "-m", "ray_jobs.upscale", "--config", str(job)], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"resume: {already} of 24 inputs already in {out}; processing the {24 - already} missing" in second.stdout
    assert f"upscaling {24 - already} inputs" in second.stdout and "done: 24 inputs -> 24 index rows" in second.stdout
    table = read_index(str(out))
    assert sorted(table.column("id").to_pylist()) == ids and table.column("error").null_count == 24
    assert all((out / "images" / f"{i}.png").stat().st_mtime_ns > stamps[i] for i in orphans)  # rewritten
    written = sorted(str(p.relative_to(out / "images")) for p in (out / "images").rglob("*")
                     if p.is_file() and not p.name.startswith("."))  # a killed writer's temporary dot-file
    assert written == [f"{i}.png" for i in ids]  # one image per input
    record = json.loads((out / "_iqa" / "job.json").read_text())
    assert (record["n_inputs"], record["n_upscaled"], record["n_resumed"]) == (24, 24, already)


@pytest.mark.slow
def test_s3_manifest_source_and_s3_destination(s3, ray_local, sr_card, photos):
    from ray_jobs.upscale.job import run_job

    s3.mkdir("lowres")
    s3.mkdir("results")
    images = good_images(photos, 6)
    for name, data in images.items():
        s3.pipe(f"lowres/in/{name}", data)
    jpeg = images["good/0000.jpg"]
    s3.pipe("lowres/in/broken.jpg", jpeg[: len(jpeg) // 2])
    # ids are the URIs as written: relative ones resolve against the manifest's folder, absolute ones are
    # URIs, whose output names are cleaned and made unique with a hash
    uris = [f"in/{name}" if i % 2 else f"s3://lowres/in/{name}" for i, name in enumerate(sorted(images))]
    uris += ["in/broken.jpg", "s3://lowres/in/gone.jpg"]
    s3.pipe("lowres/list.jsonl", "".join(json.dumps({"uri": uri}) + "\n" for uri in uris).encode())
    record = run_job(_config("s3://lowres/list.jsonl", "s3://results/x4/", format="webp", quality=90),
                     log=lambda line: None)
    rows = {row["id"]: row for row in read_index("s3://results/x4/").to_pylist()}
    assert sorted(rows) == sorted(uris)  # every input once
    assert (rows["in/broken.jpg"]["error"], rows["s3://lowres/in/gone.jpg"]["error"]) == ("truncated", "missing")
    for uri in uris[:6]:
        assert rows[uri]["error"] is None
        assert rows[uri]["output"] == f"s3://results/x4/images/{output_name(uri, 'webp')}"
        with s3.open(rows[uri]["output"], "rb") as handle:
            assert Image.open(handle).size == (384, 256)
    assert rows[uris[1]]["output"].endswith(".jpg.webp") and re.search(r"-[0-9a-f]{8}\.webp$", rows[uris[0]]["output"])
    assert record["n_upscaled"] == 6 and s3.exists("results/x4/_iqa/job.json")
    assert not s3.exists("results/x4/_iqa/lock.json")  # released
