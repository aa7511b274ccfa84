"""The score job: sources, config, stages, and whole runs on a real local Ray over a real (moto) S3."""

from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from ray_jobs.io import list_parts
from ray_jobs.runtime import StorageSettings, filesystem_for
from ray_jobs.score import job as score
from ray_jobs.score.config import ScoreJobConfig
from ray_jobs.score.job import plan_blocks, run_job, stage_arguments
from ray_jobs.score.sources import SourceError, list_inputs, list_source
from ray_jobs.score.stages import OUTPUT_SCHEMA, FetchError, fetch_and_decode_blocks, fetch_bytes
from tests.helpers import authenticating_s3, encode, fast_config, good_images, read_output

ROOT = Path(__file__).resolve().parents[2]
SECRET = "Sup3rSecretValue-do-not-print"


def special_objects(photo: Path) -> dict[str, tuple[bytes, str | None]]:
    """Broken and unusual objects -> (bytes, expected reason code or None when it must be scored)."""
    rgb = Image.open(photo).convert("RGB").resize((96, 64))
    jpeg = encode(rgb, "JPEG", quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display: 96x64 stored -> 64x96 shown
    gray16 = (np.asarray(rgb.convert("L")).astype(np.uint16) * 257)
    return {
        "odd/zero-byte.jpg": (b"", "empty"),
        "odd/truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated"),
        "odd/notes.jpg": (b"this is a text file, not a photo\n" * 20, "not_an_image"),
        "odd/bomb.png": (encode(Image.new("L", (2000, 2000)), "PNG"), "too_many_pixels"),
        "odd/pixel.png": (encode(Image.new("RGB", (1, 1), (255, 0, 0)), "PNG"), "too_small"),
        "odd/cmyk.jpg": (encode(rgb.convert("CMYK"), "JPEG"), None),
        "odd/gray16.png": (encode(Image.fromarray(gray16), "PNG"), None),
        "odd/gray.png": (encode(rgb.convert("L"), "PNG"), None),
        "odd/alpha.png": (encode(rgb.convert("RGBA"), "PNG"), None),
        "odd/exif-rotated.jpg": (encode(rgb, "JPEG", exif=exif), None),
        "odd/animated.gif": (encode(rgb.convert("P"), "GIF", save_all=True, loop=0, duration=100,
                                    append_images=[rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT).convert("P")]),
                             None),
    }


# ----------------------------------------------------------------------------------------- fast unit tests


def test_plan_blocks_cut_the_same_blocks_on_resume():
    ids = [f"img-{i:03d}" for i in range(10)]
    inputs = pa.table({"id": ids, "uri": [f"/data/{i}.jpg" for i in ids]})
    first = plan_blocks(inputs, set(), block_size=4)
    keys = [t.column("block")[0].as_py() for t in first]
    assert [len(t.column("ids")[0]) for t in first] == [4, 4, 2]
    assert len(set(keys)) == 3 and all(len(k) == 20 for k in keys)
    assert keys == [t.column("block")[0].as_py() for t in plan_blocks(inputs, set(), 4)]
    done = set(ids[0:4]) | set(ids[8:10])  # blocks 0 and 2 were written before the driver died
    resumed = plan_blocks(inputs, done, block_size=4)
    assert [t.column("block")[0].as_py() for t in resumed] == [keys[1]]
    assert resumed[0].column("ids")[0].as_py() == ids[4:8]


def test_config_from_yaml_with_cli_overrides_and_clear_errors(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("src: s3://b/photos/\nout: s3://b/scores/\nactors: 3\nresolution: short:224\n")
    config = ScoreJobConfig.load(job, actors=5, dtype=None, weights="w.pth")
    assert (config.src, config.actors, config.short_side, config.dtype) == ("s3://b/photos/", 5, 224, "fp32")
    assert config.weights == os.path.abspath("w.pth")  # workers run elsewhere: local paths made absolute
    job.write_text("src: a\nout: b\nactorz: 3\n")
    with pytest.raises(ValueError, match=r"job.yaml.*actorz: Extra inputs are not permitted.*'actors'"):
        ScoreJobConfig.load(job)
    with pytest.raises(ValueError, match=r"resolution=.short:16.: N must be >= 32"):
        ScoreJobConfig.load(src="a", out="b", resolution="short:16")
    with pytest.raises(ValueError, match=r"src: Field required"):
        ScoreJobConfig.load(out="b")
    job.write_text("src: a\nout: b\nfaults: {sleep_per_block_s: 0.5}\n")  # test hooks are not config
    with pytest.raises(ValueError, match=r"faults: Extra inputs are not permitted"):
        ScoreJobConfig.load(job)


def test_default_pixel_limit_matches_the_decoder():
    from iqa_plugin.data.images import DEFAULT_MAX_PIXELS

    assert ScoreJobConfig(src="a", out="b").max_pixels == DEFAULT_MAX_PIXELS


def test_folder_listing_takes_underscore_names_and_counts_what_it_excludes(tmp_path):
    for name in ("b.jpg", "a/x.png", ".hidden.jpg", "_DSC0001.JPG", "_raw/y.jpg", "a/.cache/y.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    table = list_inputs(str(tmp_path))
    assert table.column("id").to_pylist() == ["_DSC0001.JPG", "_raw/y.jpg", "a/x.png", "b.jpg"]
    assert table.column("uri").to_pylist()[2:] == [str(tmp_path / "a/x.png"), str(tmp_path / "b.jpg")]
    assert list_inputs(str(tmp_path), limit=1).num_rows == 1
    (tmp_path / "a" / "scores").mkdir()
    (tmp_path / "a" / "scores" / "part-0.parquet").write_bytes(b"x")  # the job's own output inside SRC
    listing = list_source(str(tmp_path), exclude=str(tmp_path / "a" / "scores"))
    os.mkfifo(tmp_path / "a" / "pipe.jpg")  # reading a FIFO would block the job forever
    listing = list_source(str(tmp_path), exclude=str(tmp_path / "a" / "scores"))
    assert listing.inputs.num_rows == 4 and listing.excluded == {"hidden": 2, "output": 1, "special": 1}
    assert listing.excluded_text() == ("excluded: 2 hidden files (names starting with '.'), "
                                       "1 files of the job's own --out, 1 special files (FIFOs, sockets, devices)")
    with pytest.raises(SourceError, match="not found"):
        list_inputs(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no input found"):
        list_inputs(str(tmp_path / "empty"))


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_manifests_with_and_without_ids(tmp_path, fmt):
    (tmp_path / "imgs").mkdir()
    rows = [{"id": "k2", "uri": "imgs/2.jpg"}, {"id": "k1", "uri": str(tmp_path / "imgs/1.jpg")},
            {"id": "k3", "uri": "s3://bucket/3.jpg"}]
    path = tmp_path / f"manifest.{fmt}"

    def write(records):
        if fmt == "parquet":
            pq.write_table(pa.Table.from_pylist(records), path)
        elif fmt == "csv":
            keys = list(records[0])
            path.write_text(",".join(keys) + "\n" + "".join(",".join(r[k] for k in keys) + "\n" for r in records))
        else:
            path.write_text("".join(json.dumps(r) + "\n" for r in records))

    write(rows)
    table = list_inputs(str(path))
    assert table.column("id").to_pylist() == ["k1", "k2", "k3"]
    assert table.column("uri").to_pylist() == [str(tmp_path / "imgs/1.jpg"), str(tmp_path / "imgs/2.jpg"),
                                               "s3://bucket/3.jpg"]
    write([{"uri": r["uri"]} for r in rows])  # no ids: the URI as written is the id
    assert sorted(list_inputs(str(path)).column("id").to_pylist()) == sorted(r["uri"] for r in rows)
    write(rows + [{"id": "k1", "uri": "imgs/9.jpg"}])
    with pytest.raises(ValueError, match=r"1 ids occur more than once.*k1"):
        list_inputs(str(path))
    write([{"id": "k1", "file": "a.jpg"}])
    with pytest.raises(ValueError, match=r"expected a URI column named one of \['uri', 'path', 'url'\]"):
        list_inputs(str(path))


def test_s3_prefix_listing_and_missing_bucket(s3):
    s3.mkdir("listing")
    for name in ("p/1.jpg", "p/sub/2.png", "other/3.jpg"):
        s3.pipe(f"listing/{name}", b"data")
    table = list_inputs("s3://listing/p/")
    assert table.column("id").to_pylist() == ["1.jpg", "sub/2.png"]
    assert table.column("uri").to_pylist() == ["s3://listing/p/1.jpg", "s3://listing/p/sub/2.png"]
    with pytest.raises(SourceError, match="not found"):
        list_inputs("s3://no-such-bucket/p/")



def test_fetch_maps_store_errors_to_reason_codes_after_one_attempt(tmp_path):
    """Transient errors are retried by the storage client (botocore, s3fs), not by the job: what still
    fails after them is one ``fetch_error`` row, tried once here."""
    import fsspec
    from fsspec.implementations.local import LocalFileSystem

    calls: dict[str, int] = {}

    class Broken(LocalFileSystem):
        protocol = ("broken",)

        def cat_file(self, path, start=None, end=None, **kwargs):
            calls[path] = calls.get(path, 0) + 1
            if path.endswith("denied.bin"):
                raise PermissionError(path)
            raise ConnectionResetError("connection reset by peer (after the client's retries)")

    fsspec.register_implementation("broken", Broken, clobber=True)
    with pytest.raises(FetchError) as failed:
        fetch_bytes(f"broken://{tmp_path}/a.bin")
    assert failed.value.reason == "fetch_error" and list(calls.values()) == [1]
    with pytest.raises(FetchError) as denied:
        fetch_bytes(f"broken://{tmp_path}/denied.bin")
    assert denied.value.reason == "access_denied"
    with pytest.raises(FetchError) as missing:
        fetch_bytes(str(tmp_path / "gone.jpg"))
    assert missing.value.reason == "missing"
    (tmp_path / "a.bin").write_bytes(b"payload")
    assert fetch_bytes(str(tmp_path / "a.bin")) == b"payload"


def test_no_secret_in_the_pickled_task_and_actor_arguments(monkeypatch):
    """Credentials never travel in task arguments: only the endpoint does; workers use their own env."""
    import cloudpickle

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SECRET + "-token")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    config = fast_config(src="s3://b/photos/", out="s3://b/scores/", weights="s3://b/w.pth")
    settings = StorageSettings.from_env()
    assert settings.s3_endpoint_url == "http://127.0.0.1:9"
    for device in ("cpu", "cuda"):
        arguments = stage_arguments(config, device, settings)
        assert set(arguments) == {"decode", "scorer", "write"}
        for stage in arguments.values():
            payload = cloudpickle.dumps(stage) + pickle.dumps(stage)
            assert SECRET.encode() not in payload and b"testing" not in payload
    fs, _ = filesystem_for("s3://b/photos/", settings)  # what a worker builds from them
    assert SECRET.encode() not in cloudpickle.dumps(fs)


def test_decode_stage_gives_one_reason_per_broken_input(tmp_path, photos):
    specials = special_objects(photos[0])
    uris = []
    for name, (data, _) in specials.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
        uris.append(str(tmp_path / name))
    uris.append(str(tmp_path / "odd/never-written.jpg"))
    block = pa.table({"block": ["k"], "ids": [list(specials) + ["gone"]], "uris": [uris]})
    out = fetch_and_decode_blocks(block, max_pixels=1_000_000, min_side=32, short_side=64, threads=4)
    row = out.to_pylist()[0]
    assert row["error"] == [reason for _, reason in specials.values()] + ["missing"]
    by_name = dict(zip(row["ids"], zip(row["width"], row["height"], row["shape"], row["dtype"], strict=True),
                       strict=True))
    assert by_name["odd/exif-rotated.jpg"][:3] == (64, 96, [96, 64, 3])  # rotated, then short side 64
    assert by_name["odd/gray16.png"][3] == "uint16"
    assert row["bytes"][-1] is None and row["bytes"][0] == 0


def test_resume_into_an_output_of_another_model_is_refused(tmp_path):
    from ray_jobs.io import write_parquet_part
    from ray_jobs.score.stages import block_output_table

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.jpg").write_bytes(b"x")
    write_parquet_part(block_output_table({
        "ids": ["a.jpg"], "uris": ["/a.jpg"], "bytes": [1], "width": [40], "height": [40], "model": "other",
        "weights_sha256": None, "score": [0.5], "error": [None]}), str(tmp_path / "out"), "k")
    config = ScoreJobConfig(src=str(tmp_path / "src"), out=str(tmp_path / "out"))
    with pytest.raises(ValueError, match=r"holds 1 rows of another run identity \(model other -> qualiclip.*"
                                          r"give a new --out, or add --rescore"):
        score.check_identity(config.out, score.identity_of(config, "f" * 64), score.scan_output(config.out),
                             rescore=False)


def test_failure_line_names_the_root_cause_in_one_line(monkeypatch):
    from ray_jobs.errors import failure_line

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)

    class ActorDiedError(RuntimeError):
        pass

    error = ActorDiedError("The actor died in its creation task, \x1b[36mray::MapWorker\x1b[39m (pid=1)\n"
                           "Traceback (most recent call last):\n  File 'x.py', line 1\n"
                           f"ValueError: model='nope' is not a metric of iqa_plugin (key {SECRET})")
    line = failure_line(error)
    assert line == "ActorDiedError: ValueError: model='nope' is not a metric of iqa_plugin (key ***)"


# ------------------------------------------------------------------------------------- fail fast (CLI)


def _cli(args: list[str], env_extra: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **env_extra}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "ray_jobs.score", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=ROOT)


def test_cli_missing_bucket_fails_fast_without_secrets(s3, tmp_path):
    result = _cli(["s3://no-such-bucket/photos/", "--out", str(tmp_path / "out")],
                  {"AWS_SECRET_ACCESS_KEY": SECRET})
    assert result.returncode == 2
    assert "s3://no-such-bucket/photos/: not found" in result.stderr
    assert "Traceback" not in result.stderr and "ray:" not in result.stdout  # failed before Ray started
    assert SECRET not in result.stdout + result.stderr


def test_cli_offline_without_weights_fails_before_ray(tmp_path, photos):
    """The README's first command on a machine without the weights: one clear error, exit 2, no Ray."""
    src = tmp_path / "photos"
    src.mkdir()
    (src / "a.jpg").write_bytes(photos[2].read_bytes())
    result = _cli([str(src), "--out", str(tmp_path / "out")],
                  {"IQA_PLUGIN_OFFLINE": "1", "IQA_PLUGIN_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 2, result.stderr[-2000:]
    assert "QualiCLIP.pth" in result.stderr and "IQA_PLUGIN_OFFLINE" in result.stderr
    assert str(tmp_path / "cache") in result.stderr  # the path it expected the file at
    assert "Traceback" not in result.stderr and "ray:" not in result.stdout
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("part-*.parquet"))


@pytest.mark.slow
def test_cli_wrong_credentials_fail_fast_without_secrets(tmp_path):
    with authenticating_s3() as endpoint:
        result = _cli(["s3://photos/in/", "--out", "s3://photos/out/"],
                      {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "AKIAWRONGKEY",
                       "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": "us-east-1"})
    assert result.returncode == 2
    assert "access denied: check the credentials" in result.stderr
    assert "Traceback" not in result.stderr and "ray:" not in result.stdout
    assert SECRET not in result.stdout + result.stderr


# ------------------------------------------------------------------------------- whole jobs on local Ray


@pytest.mark.slow
def test_s3_collection_with_broken_objects_every_input_exactly_once(s3, ray_local, fabricated, photos):
    s3.mkdir("photos")
    s3.mkdir("scores")
    expected: dict[str, str | None] = {}
    for name, data in good_images(photos, 192).items():
        s3.pipe(f"photos/in/{name}", data)
        expected[name] = None
    for name, (data, reason) in special_objects(photos[1]).items():
        s3.pipe(f"photos/in/{name}", data)
        expected[name] = reason
    manifest = [{"id": name, "uri": f"in/{name}"} for name in expected]
    manifest.append({"id": "odd/deleted.jpg", "uri": "s3://photos/in/odd/deleted.jpg"})
    expected["odd/deleted.jpg"] = "missing"
    s3.pipe("photos/manifest.jsonl", "".join(json.dumps(r) + "\n" for r in manifest).encode())
    assert len(expected) >= 200

    logs: list[str] = []
    config = fast_config(src="s3://photos/manifest.jsonl", out="s3://scores/run/", weights=str(fabricated["qualiclip"]),
                         max_pixels=1_000_000, block_size=32, report=True)
    record = run_job(config, log=logs.append)

    table = read_output("s3://scores/run/")
    assert table.schema.equals(OUTPUT_SCHEMA, check_metadata=False)
    ids = table.column("id").to_pylist()
    assert len(ids) == len(expected) and set(ids) == set(expected)  # every input once, no duplicates
    rows = {row["id"]: row for row in table.to_pylist()}
    assert {i: rows[i]["error"] for i in expected} == expected
    for i, row in rows.items():
        if row["error"] is None:
            assert 0.0 <= row["score"] <= 1.0 and row["bytes"] > 0, i
        else:
            assert row["score"] is None and row["width"] is None, i
    assert (rows["odd/exif-rotated.jpg"]["width"], rows["odd/exif-rotated.jpg"]["height"]) == (64, 96)
    assert rows["odd/deleted.jpg"]["bytes"] is None and rows["odd/zero-byte.jpg"]["bytes"] == 0
    assert {row["model"] for row in rows.values()} == {"qualiclip"}
    sha = record["weights_sha256"]
    assert len(sha) == 64 and {row["weights_sha256"] for row in rows.values()} == {sha}
    parts = list_parts("s3://scores/run/")
    assert len(parts) == math.ceil(len(expected) / 32)

    fs, path = filesystem_for("s3://scores/run/_iqa/job.json")
    job = json.loads(fs.cat_file(path))
    assert job["n_inputs"] == len(expected) == record["n_inputs"]
    assert job["n_scored"] == sum(1 for r in expected.values() if r is None)
    assert job["errors_by_reason"] == {"empty": 1, "missing": 1, "not_an_image": 1, "too_many_pixels": 1,
                                       "too_small": 1, "truncated": 1}
    assert job["images_per_s"] > 0 and job["config"]["block_size"] == 32
    assert any(line.startswith("done: 204 inputs -> 204 rows") for line in logs), logs
    assert SECRET not in json.dumps(job)
    assert record["report"] == "s3://scores/run/_iqa/report.html" and s3.exists("scores/run/_iqa/report.html")

    again: list[str] = []  # the transient 'missing' row is retried (still missing), nothing else is redone
    run_job(config.model_copy(update={"report": False}), log=again.append)
    assert "scoring 1 inputs" in " ".join(again) and len(list_parts("s3://scores/run/")) == len(parts) + 1
    assert sorted(read_output("s3://scores/run/").column("id").to_pylist()) == sorted(expected)


@pytest.mark.slow
def test_demo_without_weights_uses_the_shipped_demo_model_and_ranks_photos_above_their_copies(
        tmp_path, ray_local, monkeypatch, capsys):
    monkeypatch.setenv("IQA_PLUGIN_OFFLINE", "1")  # a fresh machine without network
    monkeypatch.chdir(tmp_path)
    code = score.main(["--demo", "--no-progress-bars"])
    output, errors_text = capsys.readouterr()
    assert code == 0, output + errors_text
    assert "demo: scoring with qualiclip-demo-tiny" in output and "NOT the paper's weights" in output
    table = read_output(str(tmp_path / "iqa-demo" / "scores"))
    assert set(table.column("model").to_pylist()) == {"qualiclip-demo-tiny"}
    line = next(line for line in output.splitlines() if line.startswith("demo: each photo scored above"))
    wins, pairs = (int(word) for word in line.split(" in ", 1)[1].split(" pairs")[0].split(" of "))
    assert pairs == 40 and wins / pairs >= 0.8, line
    report = (tmp_path / "iqa-demo" / "scores" / "_iqa" / "report.html").read_text()
    assert f'data-demo-wins="{wins}" data-demo-pairs="{pairs}"' in report  # the same figure in the report
    assert line.removeprefix("demo: ") in report


@pytest.mark.slow
def test_demo_command_scores_sample_photos_in_a_local_folder(tmp_path, ray_local, fabricated, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = score.main(["--demo", "--weights", str(fabricated["qualiclip"]), "--resolution", "short:64",
                       "--no-progress-bars", "--no-report", "--block-size", "20"])
    output, errors_text = capsys.readouterr()
    assert code == 0, output + errors_text
    photos_dir, out = tmp_path / "iqa-demo" / "photos", str(tmp_path / "iqa-demo" / "scores")
    n_files = len([item for item in photos_dir.iterdir() if not item.name.startswith(".")])
    assert f"done: {n_files} inputs -> {n_files} rows in {out} (scored {n_files - 3}; errors 3" in output
    assert "excluded: 1 hidden files" in output  # the demo folder's marker
    assert f"parquet: {out}/part-*.parquet" in output
    table = read_output(out)
    errors = dict(zip(table.column("id").to_pylist(), table.column("error").to_pylist(), strict=True))
    assert len(errors) == n_files
    assert (errors["broken-empty.jpg"], errors["broken-truncated.jpg"], errors["broken-notes.txt"]) == (
        "empty", "truncated", "not_an_image")
    assert sum(e is None for e in errors.values()) == n_files - 3
