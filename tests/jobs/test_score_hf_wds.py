"""Hugging Face datasets and WebDataset shards as sources of ``iqa score`` and ``iqa curate --write-to``:
real photos packed into a save_to_disk dataset, an imagefolder and standard-layout tars on the S3 server."""

from __future__ import annotations

import io
import json
import logging
import pickle
import re
import shutil
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor

import pyarrow.parquet as pq
import pytest
from PIL import Image

from ray_jobs.curate import curate
from ray_jobs.errors import UserError
from ray_jobs.io import list_parts
from ray_jobs.runtime import StorageSettings
from ray_jobs.score import sources_hf
from ray_jobs.score.job import plan_blocks, run_job
from ray_jobs.score.job_wds import shard_stage
from ray_jobs.score.source_kinds import list_config_source
from ray_jobs.score.sources import SourceError
from ray_jobs.score.sources_wds import iter_samples
from ray_jobs.score.stages import FetchError, fetch_and_decode_blocks
from tests.helpers import (
    encode,
    fast_config,
    good_images,
    kill_slow_job_when,
    read_output,
    settle_parts,
    wds_tar,
)

SECRET = "Sup3rSecretValue-do-not-print"


def _samples(images: list[bytes], prefix: str, start: int = 0) -> list[tuple[str, bytes]]:
    members = []
    for index, data in enumerate(images, start):
        key = f"{prefix}{index:04d}"
        members += [(f"{key}.jpg", data), (f"{key}.json", json.dumps({"caption": f"photo {key}"}).encode())]
    return members


def _cut_inside(data: bytes, member: str, into: int = 10) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return data[: tar.getmember(member).offset_data + into]


def test_tar_reader_gives_every_sample_one_row_and_names_what_is_broken(tmp_path, photos):
    jpgs = list(good_images(photos, 4).values())
    members = _samples(jpgs[:3], "a") + [("b0000.txt", b"no image here")] + [("a0000.cls", b"7")]
    whole = wds_tar(members)
    corrupt = bytearray(whole)
    header = whole.index(b"a0001.jpg")
    corrupt[header + 148: header + 156] = b"garbage!"  # the checksum field of a header after the first
    cases = {
        "whole": whole,
        "cut-in-data": _cut_inside(whole, "a0001.jpg"),
        "cut-at-member": whole[: header],
        "bad-header": bytes(corrupt),
        "not-a-tar": b"just text\n" * 200,
        "empty": b"",
    }
    rows = {}
    for name, data in cases.items():
        (tmp_path / f"{name}.tar").write_bytes(data)
        rows[name] = [(s.id.split("/", 1)[-1] if "/" in s.id else s.id, s.image(None)[1])
                      for s in iter_samples(f"{name}.tar", str(tmp_path / f"{name}.tar"))]
    assert rows["whole"][:4] == [("a0000", None), ("a0001", None), ("a0002", None), ("b0000", "no_image")]
    assert rows["whole"][4][0].startswith("a0000@") and rows["whole"][4][1] == "no_image"  # a repeated key: own id
    assert rows["cut-in-data"] == [("a0000", None), ("a0001", "truncated_archive")]
    assert rows["cut-at-member"][0] == ("a0000", None) and rows["cut-at-member"][1][1] == "truncated_archive"
    assert rows["bad-header"][0] == ("a0000", None) and rows["bad-header"][1][1] == "corrupt_archive"
    assert rows["not-a-tar"] == [("not-a-tar.tar@0", "corrupt_archive")]
    assert rows["empty"] == [("empty.tar@0", "empty")]
    missing = list(iter_samples("gone.tar", str(tmp_path / "gone.tar")))
    assert [(s.id, s.reason) for s in missing] == [("gone.tar@0", "missing")]


def test_source_options_and_errors_fail_fast_in_one_line(tmp_path, photos, monkeypatch):
    import datasets.config
    import huggingface_hub.constants

    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "a.jpg").write_bytes(photos[0].read_bytes())
    with pytest.raises(UserError, match=r"--split does not apply to .*files: it is read as single files"):
        list_config_source(fast_config(src=str(tmp_path / "files"), out=str(tmp_path / "o"), split="train"))
    with pytest.raises(UserError, match=r"--id-column does not apply .* <tar name>/<key>"):
        list_config_source(fast_config(src=str(tmp_path / "s-{0..1}.tar"), out=str(tmp_path / "o"), id_column="k"))
    with pytest.raises(SourceError, match=r"none of its 2 shards exists"):
        list_config_source(fast_config(src=str(tmp_path / "s-{0..1}.tar"), out=str(tmp_path / "o")))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(SourceError) as offline:
        list_config_source(fast_config(src="hf:someone/photos", out=str(tmp_path / "o")))
    assert "'someone/photos'" in str(offline.value) and "HF_HUB_OFFLINE" in str(offline.value)
    assert "\n" not in str(offline.value)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    stage = shard_stage(fast_config(src="s3://b/s-{0..1}.tar", out="s3://b/o/"), StorageSettings.from_env())
    assert SECRET.encode() not in pickle.dumps(stage)


def test_shard_prefix_with_img2dataset_sidecars_is_webdataset_and_tars_mixed_with_images_are_refused(tmp_path, photos):
    shards = tmp_path / "shards"
    shards.mkdir()
    for index in range(2):  # the img2dataset / DataComp layout: a tar, its parquet and its stats side by side
        (shards / f"{index:05d}.tar").write_bytes(wds_tar(_samples([photos[0].read_bytes()], "a")))
        (shards / f"{index:05d}.parquet").write_bytes(b"PAR1")
        (shards / f"{index:05d}_stats.json").write_text("{}")
    (shards / "readme.txt").write_text("shards")
    kind, listing = list_config_source(fast_config(src=str(shards), out=str(tmp_path / "o")))
    assert kind == "webdataset" and listing.inputs.column("id").to_pylist() == ["00000.tar", "00001.tar"]
    assert listing.excluded["not_tar"] == 5
    (shards / "loose.jpg").write_bytes(photos[0].read_bytes())
    with pytest.raises(UserError, match=r"mixes 2 .tar files with 1 other files \(e.g. loose.jpg\); pass "
                                        r"--source-format webdataset .* --source-format files") as mixed:
        list_config_source(fast_config(src=str(shards), out=str(tmp_path / "o")))
    assert "\n" not in str(mixed.value)
    kind, listing = list_config_source(fast_config(src=str(shards), out=str(tmp_path / "o"), source_format="files"))
    assert kind == "files" and listing.inputs.num_rows == 8


def test_imagefolder_rows_are_listed_fetched_and_decoded(tmp_path, photos):
    for index, photo in enumerate(photos[:4]):
        (tmp_path / "folder" / ("cats" if index % 2 else "dogs")).mkdir(parents=True, exist_ok=True)
        (tmp_path / "folder" / ("cats" if index % 2 else "dogs") / f"{index}{photo.suffix}").write_bytes(
            photo.read_bytes())
    config = fast_config(src=str(tmp_path / "folder"), out=str(tmp_path / "out"), source_format="hf")
    kind, listing = list_config_source(config)
    assert kind == "hf" and listing.inputs.num_rows == 4
    again = list_config_source(config)[1].inputs.column("id").to_pylist()
    assert listing.inputs.column("id").to_pylist() == again  # stable ids: fingerprint + row index
    block = plan_blocks(listing.inputs, set(), 4)[0]
    decoded = fetch_and_decode_blocks(block, max_pixels=10**8, min_side=32, short_side=64, threads=2).to_pylist()[0]
    assert decoded["error"] == [None] * 4 and all(w > 0 for w in decoded["width"])


def test_save_to_disk_dataset_scored_then_written_back_with_a_score_column(tmp_path, s3, ray_local, fabricated,
                                                                           photos):
    import datasets

    images = list(good_images(photos, 10).values())  # package photos, clean and degraded copies
    cells = [{"bytes": data, "path": None} for data in images] + [None, {"bytes": b"not an image" * 9, "path": None}]
    features = datasets.Features({"image": datasets.Image(), "name": datasets.Value("string")})
    train = datasets.Dataset.from_dict({"image": cells, "name": [f"n{i:02d}" for i in range(12)]}, features=features)
    test = train.select(range(2))
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "ds"))
    out = str(tmp_path / "scores")
    record = run_job(fast_config(src=str(tmp_path / "ds"), out=out, weights=str(fabricated["qualiclip"]),
                                 id_column="name", block_size=8), log=lambda line: None)
    table = read_output(out)
    assert sorted(table.column("id").to_pylist()) == [f"n{i:02d}" for i in range(12)]  # every row once
    assert record["errors_by_reason"] == {"no_image": 1, "not_an_image": 1} and record["n_scored"] == 10

    for _ in range(2):  # a rerun writes the same dataset again
        result = curate(out, top_k=4, write_to=str(tmp_path / "kept"))
        assert (result.written, result.n_kept) == (4, 4)
        kept = datasets.load_from_disk(str(tmp_path / "kept"))
        assert list(kept) == ["train"] and kept["train"].num_rows == 4
    listed = pq.read_table(result.out).to_pylist()
    expected = {row["id"]: row["score"] for row in listed}
    got = kept["train"]
    assert dict(zip(got["name"], got["score"], strict=True)) == expected
    assert got["name"] == sorted(expected)  # the dataset's own order
    assert all(image.size == (96, 64) for image in got["image"])  # images embedded, decodable

    s3.mkdir("hf-remote")  # the same dataset on object storage (each worker process copies it once)
    s3.put(str(tmp_path / "ds"), "hf-remote/ds", recursive=True)
    remote = run_job(fast_config(src="s3://hf-remote/ds", out="s3://hf-remote/scores/",
                                 weights=str(fabricated["qualiclip"]), id_column="name", block_size=8),
                     log=lambda line: None)
    assert sorted(read_output("s3://hf-remote/scores/").column("id").to_pylist()) == [f"n{i:02d}" for i in range(12)]
    assert (remote["n_inputs"], remote["n_scored"]) == (12, 10)

    for index, data in enumerate(images[:6]):  # an imagefolder: class folders become a label column
        (tmp_path / "folder" / ("cats" if index % 2 else "dogs")).mkdir(parents=True, exist_ok=True)
        (tmp_path / "folder" / ("cats" if index % 2 else "dogs") / f"{index}.jpg").write_bytes(data)
    folder_out = str(tmp_path / "folder-scores")
    record = run_job(fast_config(src=str(tmp_path / "folder"), out=folder_out, weights=str(fabricated["qualiclip"]),
                                 source_format="hf", block_size=4), log=lambda line: None)
    scored = read_output(folder_out)
    assert scored.num_rows == len(set(scored.column("id").to_pylist())) == 6 and record["n_scored"] == 6
    result = curate(folder_out, top_k=3, write_to=str(tmp_path / "folder-kept"))
    kept = datasets.load_from_disk(str(tmp_path / "folder-kept"))["train"]
    assert kept.num_rows == 3 and {"image", "label", "score"} <= set(kept.column_names)
    assert sorted(kept["score"]) == sorted(row["score"] for row in pq.read_table(result.out).to_pylist())
    names = kept.features["label"].names
    assert sorted(names) == ["cats", "dogs"] and all(0 <= label < 2 for label in kept["label"])


def test_rows_fetched_by_many_threads_open_the_dataset_once_and_a_failed_open_is_logged_once(
        tmp_path, photos, monkeypatch, caplog):
    import datasets
    import tqdm.auto
    from datasets.utils import tqdm as hf_tqdm

    images = list(good_images(photos, 6).values())
    folder = tmp_path / SECRET / "ds"
    folder.mkdir(parents=True)
    (folder / "state.json").write_text("{ not json")  # a save_to_disk folder that cannot be opened
    (folder / "dataset_info.json").write_text("{}")
    uris = [sources_hf.row_uri(str(folder), None, "image", i) for i in range(6)]
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    sources_hf._open_arrow_rows.cache_clear()
    with caplog.at_level(logging.WARNING, logger=sources_hf.__name__):
        for uri in uris:
            with pytest.raises(FetchError) as failed:
                sources_hf.fetch_row_bytes(uri)
            assert failed.value.reason == "fetch_error"
    logged = [record.getMessage() for record in caplog.records if record.name == sources_hf.__name__]
    assert len(logged) == 1 and "SourceError: " in logged[0] and "JSONDecodeError" in logged[0]  # type + cause
    assert SECRET not in logged[0] and "***" in logged[0] and "\n" not in logged[0]

    shutil.rmtree(folder)  # fetch_error is transient: once the dataset is readable the same rows are fetched
    features = datasets.Features({"image": datasets.Image()})
    datasets.Dataset.from_dict({"image": [{"bytes": data, "path": None} for data in images]},
                               features=features).save_to_disk(str(folder))
    for cls in (tqdm.tqdm, tqdm.auto.tqdm, hf_tqdm):  # as in a fresh worker: tqdm has made no lock yet
        monkeypatch.delattr(cls, "_lock", raising=False)
    opened, load = [], datasets.load_from_disk

    def slow_load(*args, **kwargs):  # every fetch thread asks while the first open is under way
        opened.append(args[0])
        time.sleep(0.3)
        return load(*args, **kwargs)

    monkeypatch.setattr(datasets, "load_from_disk", slow_load)
    with ThreadPoolExecutor(len(uris)) as pool:
        assert list(pool.map(sources_hf.fetch_row_bytes, uris)) == images
    assert len(opened) == 1  # one open per worker process, not one per thread (datasets' loader is not thread-safe)
    assert getattr(tqdm.tqdm, "_lock", None) is not None  # kept, so a concurrent load cannot delete it under another


def test_webdataset_shards_on_s3_exactly_once_resume_and_written_back(s3, ray_local, fabricated, photos):
    images = list(good_images(photos, 22).values())
    s3.mkdir("wds")
    broken = _samples(images[0:8], "a")
    broken[6] = ("a0003.jpg", b"\xff\xd8 not really a jpeg")  # a corrupt image member
    broken[10] = ("a0005.txt", b"a sample without an image")
    png = encode(Image.open(io.BytesIO(images[8])), "PNG")
    s3.pipe("wds/shard-0000.tar", wds_tar(broken))
    s3.pipe("wds/shard-0001.tar", wds_tar([("b0000.png", png), ("b0000.json", b'{"caption": "a png"}')]
                                          + _samples(images[9:15], "b", start=1)))
    s3.pipe("wds/shard-0002.tar", _cut_inside(wds_tar(_samples(images[16:22], "c")), "c0003.jpg"))
    src, out = "s3://wds/shard-{0000..0003}.tar", "s3://wds-scores/run/"  # shard-0003 does not exist
    s3.mkdir("wds-scores")
    config = fast_config(src=src, out=out, weights=str(fabricated["qualiclip"]), block_size=3)
    record = run_job(config, log=lambda line: None)
    rows = {row["id"]: row for row in read_output(out).to_pylist()}
    expected_ids = {f"shard-0000.tar/a{i:04d}" for i in range(8)} | {f"shard-0001.tar/b{i:04d}" for i in range(7)} \
        | {f"shard-0002.tar/c{i:04d}" for i in range(4)} | {"shard-0003.tar@0"}
    assert set(rows) == expected_ids and len(read_output(out)) == len(expected_ids) == 20
    errors = {i: row["error"] for i, row in rows.items() if row["error"]}
    assert errors == {"shard-0000.tar/a0003": "not_an_image", "shard-0000.tar/a0005": "no_image",
                      "shard-0002.tar/c0003": "truncated_archive", "shard-0003.tar@0": "missing"}
    assert (record["n_inputs"], record["n_shards"], record["n_scored"]) == (20, 4, 16)

    # the driver died mid-run: shard 0 lost its last part, shard 1 its first one
    parts = list_parts(out)
    for path in [p for p in parts if p.endswith("-end.parquet")][:1] + \
            [p for p in parts if p.endswith("-00000.parquet")][-1:]:
        s3.rm(path)
    logs: list[str] = []
    run_job(config, log=logs.append)
    assert any(line.startswith("resume: 1 of 4 WebDataset shards") for line in logs), logs
    again = read_output(out).column("id").to_pylist()
    assert sorted(again) == sorted(expected_ids)  # exactly once after the resume
    assert len(list_parts(out)) == len(parts)

    s3.mkdir("wds-kept")
    for top in (10, 10, 5):  # a rerun gives the same shards; a smaller subset removes the extra shard
        result = curate(out, top_k=top, write_to="s3://wds-kept/shards/", shard_size=4)
        assert (result.written, result.written_files) == (top, -(-top // 4))
    assert sorted(s3.ls("wds-kept/shards")) == ["wds-kept/shards/kept-000000.tar", "wds-kept/shards/kept-000001.tar"]
    kept = {row["id"]: row["score"] for row in pq.read_table(io.BytesIO(s3.cat(result.out))).to_pylist()}
    written = {}
    for name in sorted(s3.ls("wds-kept/shards")):
        with tarfile.open(fileobj=io.BytesIO(s3.cat(name))) as tar:
            for member in tar:
                written.setdefault(member.name.split(".", 1)[0], {})[member.name.split(".", 1)[1]] = \
                    tar.extractfile(member).read()
    assert {key: json.loads(m["json"])["score"] for key, m in written.items()} == \
        {i.split("/", 1)[1]: s for i, s in kept.items()}
    assert all(set(m) >= {"json"} and ("jpg" in m or "png" in m) for m in written.values())


@pytest.mark.slow
def test_webdataset_driver_killed_mid_job_then_same_command_scores_every_sample_once(
        tmp_path, s3, ray_local, fabricated, photos):
    images = list(good_images(photos, 6, seed=3).values())
    s3.mkdir("wds-kill")
    for shard in range(4):
        s3.pipe(f"wds-kill/in/s-{shard}.tar", wds_tar(_samples(images, f"k{shard}")))
    out = "s3://wds-kill/out/"
    job = tmp_path / "job.yaml"
    job.write_text(f"src: s3://wds-kill/in/\nout: {out}\nweights: {fabricated['qualiclip']}\nresolution: short:64\n"
                   "block_size: 3\nreport: false\nprogress_bars: false\n")
    env = kill_slow_job_when("score_cli_with_faults", job, ray_local.get_runtime_context().gcs_address,
                             lambda: any(p.endswith("-end.parquet") for p in list_parts(out)))  # a whole shard
    parts_before = settle_parts(out)
    assert 0 < parts_before < 8, parts_before  # killed mid-job: some shards (or parts of one) are missing

    second = subprocess.run([sys.executable, "-m", "ray_jobs.score", "--config", str(job)], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    assert re.search(r"resume: [1-3] of 4 WebDataset shards already in", second.stdout), second.stdout
    ids = read_output(out).column("id").to_pylist()
    expected = [f"s-{shard}.tar/k{shard}{i:04d}" for shard in range(4) for i in range(6)]
    assert len(ids) == len(expected) == 24 and sorted(ids) == sorted(expected)  # every sample exactly once
    assert read_output(out).column("error").null_count == 24
