"""The degradation-shards job on a real local Ray, reading real photos from moto S3 and a local folder:
determinism, skip list, manifest hashes, rerun without duplicates, and the training datasets."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageOps

from iqa_plugin.data.degradations import KINDS
from ray_jobs.shards.config import ShardsJobConfig
from ray_jobs.shards.job import main, run_shards_job
from ray_jobs.shards.sampling import image_seed, overlapping_boxes


def pristine_files(photos: list[Path], count: int = 12) -> dict[str, bytes]:
    """``count`` real pristine images (the photos, then mirrored copies) plus a truncated and a 20x20 file."""
    files: dict[str, bytes] = {}
    variants = [lambda im: im, ImageOps.mirror, ImageOps.flip]
    for index in range(count):
        photo = photos[index % len(photos)]
        variant = variants[index // len(photos)]
        with Image.open(photo) as image:
            buffer = io.BytesIO()
            variant(image.convert("RGB")).save(buffer, format="PNG", compress_level=1)
        files[f"{index:02d}_{photo.stem}.png"] = buffer.getvalue()
    first = files[next(iter(files))]
    files["broken/truncated.png"] = first[: len(first) // 2]  # a crash mid-upload
    tiny = io.BytesIO()
    Image.new("RGB", (20, 20), (90, 120, 40)).save(tiny, format="PNG")
    files["tiny.png"] = tiny.getvalue()
    files["README.txt"] = b"not an image"
    return files


def rows_of(shards: dict[str, bytes]) -> list[dict]:
    return [row for name in sorted(shards) for row in pq.read_table(io.BytesIO(shards[name])).to_pylist()]


@pytest.fixture
def local_pristine(tmp_path, photos) -> Path:
    root = tmp_path / "pristine"
    for name, data in pristine_files(photos).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def _config(source: str, out: str, **changes) -> ShardsJobConfig:
    fields = dict(source=source, out=out, kind="qualiclip", crop=64, samples_per_image=2, images_per_shard=4)
    fields.update(changes)
    return ShardsJobConfig(**fields)


def _shard_bytes(fs, out: str, manifest: dict) -> dict[str, bytes]:
    return {shard["name"]: fs.cat_file(f"{out.rstrip('/')}/{shard['name']}") for shard in manifest["shards"]}


@pytest.mark.slow
def test_qualiclip_shards_from_s3_are_deterministic_and_skip_bad_images(s3, ray_local, photos):
    s3.mkdir("pristine")
    s3.mkdir("shards")
    for name, data in pristine_files(photos).items():
        s3.pipe(f"pristine/photos/{name}", data)
    config = _config("s3://pristine/photos/", "s3://shards/a/")
    first = run_shards_job(config, progress=lambda line: None)
    second = run_shards_job(config.model_copy(update={"out": "s3://shards/b/"}), progress=lambda line: None)

    counts = first["counts"]
    assert counts == {"images": 14, "images_used": 12, "images_skipped": 2, "files_ignored": 1,
                      "samples": 24, "shards": 4}  # fmt: skip
    assert {(s["image_id"], s["reason"]) for s in first["skipped"]} == {
        ("broken/truncated.png", "truncated"),
        ("tiny.png", "too_small"),
    }
    assert all(s["uri"].startswith("s3://pristine/photos/") for s in first["skipped"])
    s3.invalidate_cache()
    written_a = _shard_bytes(s3, "shards/a", first)
    written_b = _shard_bytes(s3, "shards/b", second)
    assert written_a == written_b  # byte-identical shards from the same config and seed
    assert [s["sha256"] for s in first["shards"]] == [s["sha256"] for s in second["shards"]]
    for shard in first["shards"]:
        assert hashlib.sha256(written_a[shard["name"]]).hexdigest() == shard["sha256"]
        assert len(written_a[shard["name"]]) == shard["bytes"]
    stored = json.loads(s3.cat_file("shards/a/manifest.json"))
    assert stored == {k: v for k, v in first.items() if k != "run"}
    assert "storage_options" not in stored["config"]

    from ray_jobs.shards.data import shards_dataset

    ids = sorted(row["sample_id"] for row in shards_dataset("s3://shards/a/").select_columns(["sample_id"]).take_all())
    assert ids == sorted(f"{image_id}#{k}" for image_id in {r["image_id"] for r in rows_of(written_a)} for k in (0, 1))

    rows = rows_of(written_a)
    assert len(rows) == 24 and len({r["sample_id"] for r in rows}) == 24
    for row in rows:
        assert row["source_uri"] == f"s3://pristine/photos/{row['image_id']}"
        assert row["distortion"] in KINDS
        assert row["levels"] == [1, 2, 3, 4, 5] and len(row["seeds"]) == 5
        (xa, ya, wa, ha), (xb, yb, wb, hb) = row["box_a"], row["box_b"]
        assert (wa, ha, wb, hb) == (64, 64, 64, 64) and abs(xa - xb) < 64 and abs(ya - yb) < 64
        crop_a = np.asarray(Image.open(io.BytesIO(row["crop_a"])))
        assert crop_a.shape == (64, 64, 3) and crop_a.dtype == np.uint8


@pytest.mark.slow
def test_crops_are_lossless_cuts_of_the_pristine_image(local_pristine, tmp_path, ray_local):
    out = tmp_path / "shards"
    run_shards_job(_config(str(local_pristine), str(out), max_images=2), progress=lambda line: None)
    table = pq.read_table(out / "shard-00000.parquet").to_pylist()
    for row in table:
        pristine = np.asarray(Image.open(local_pristine / row["image_id"]).convert("RGB"))
        for crop, (x, y, w, h) in ((row["crop_a"], row["box_a"]), (row["crop_b"], row["box_b"])):
            np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(crop))), pristine[y : y + h, x : x + w])


@pytest.mark.slow
def test_rerun_after_lost_and_partial_shards_completes_without_duplicates(local_pristine, tmp_path, ray_local):
    out = tmp_path / "shards"
    config = _config(str(local_pristine), str(out))
    first = run_shards_job(config, progress=lambda line: None)
    original = {p.name: p.read_bytes() for p in out.glob("shard-*.parquet")}
    assert len(original) == 4 and first["run"]["built"] == 4

    (out / "shard-00001.parquet").unlink()  # lost
    partial = out / "shard-00002.parquet"
    partial.write_bytes(original["shard-00002.parquet"][:1000])  # crashed mid-write, marker still there
    (out / "_done" / "shard-00003.json").unlink()  # written but never marked done
    (out / "manifest.json").unlink()

    lines: list[str] = []
    second = run_shards_job(config, progress=lines.append)
    assert second["run"] == {**second["run"], "built": 3, "reused": 1}
    assert {p.name: p.read_bytes() for p in out.glob("shard-*.parquet")} == original
    assert {k: v for k, v in second.items() if k != "run"} == {k: v for k, v in first.items() if k != "run"}
    assert any("done in" in line for line in lines)

    from ray_jobs.shards.data import shards_dataset

    ids = [row["sample_id"] for row in shards_dataset(str(out), kind="qualiclip").take_all()]
    assert len(ids) == len(set(ids)) == first["counts"]["samples"] == 24


def _image_ids_per_shard_file(out: Path) -> dict[str, list[str]]:
    """image_id -> the shard files holding its samples, over every shard file in the folder."""
    where: dict[str, list[str]] = {}
    for path in sorted(out.glob("shard-*.parquet")):
        for image_id in set(pq.read_table(path, columns=["image_id"]).column("image_id").to_pylist()):
            where.setdefault(image_id, []).append(path.name)
    return where


@pytest.mark.slow
def test_source_that_changes_between_runs_keeps_every_image_in_exactly_one_shard(local_pristine, tmp_path,
                                                                                   ray_local, photos):
    out = tmp_path / "shards"
    config = _config(str(local_pristine), str(out))
    run_shards_job(config, progress=lambda line: None)
    extra = pristine_files(photos, 15)
    for name in sorted(extra)[12:15]:  # new images sort between the old ones (before broken/ and tiny.png)
        (local_pristine / name).write_bytes(extra[name])
    (local_pristine / "_DSC0001.png").write_bytes(extra[sorted(extra)[0]])  # sorts first
    removed = sorted(local_pristine.glob("05_*.png"))[0]
    removed.unlink()
    for step in ("grown", "shrunk"):
        if step == "shrunk":
            for name in sorted(extra)[12:15]:
                (local_pristine / name).unlink()
        manifest = run_shards_job(config, progress=lambda line: None)
        usable = {p.relative_to(local_pristine).as_posix() for p in local_pristine.rglob("*.png")}
        usable -= {"broken/truncated.png", "tiny.png"}
        where = _image_ids_per_shard_file(out)
        assert set(where) == usable, step  # every usable image of the current listing, no removed one
        assert all(len(files) == 1 for files in where.values()), step  # each in exactly one shard
        files = sorted(out.glob("shard-*.parquet"))
        counts = manifest["counts"]
        assert counts["shards"] == len(files) == len(manifest["shards"])
        assert counts["samples"] == sum(pq.read_metadata(f).num_rows for f in files) == 2 * len(usable)
        assert counts["images_used"] == len(usable) and counts["images"] == len(usable) + 2
        assert json.loads((out / "manifest.json").read_text())["counts"] == counts


@pytest.mark.slow
def test_a_second_run_into_the_same_shards_folder_is_refused_while_one_writes(local_pristine, tmp_path, ray_local):
    from ray_jobs.errors import UserError
    from ray_jobs.lock import OutputLock

    out = tmp_path / "shards"
    with OutputLock(str(out / "_iqa" / "lock.json"), what="--out held", settle_s=0.1):
        with pytest.raises(UserError, match="is being written by another run"):
            run_shards_job(_config(str(local_pristine), str(out)), progress=lambda _: None)
    assert not list(out.glob("shard-*.parquet"))  # nothing written by the refused run
    assert run_shards_job(_config(str(local_pristine), str(out)), progress=lambda _: None)["counts"]["shards"] >= 1


@pytest.mark.slow
def test_out_holding_another_config_is_refused(local_pristine, tmp_path, ray_local):
    out = tmp_path / "shards"
    run_shards_job(_config(str(local_pristine), str(out), max_images=4), progress=lambda line: None)
    with pytest.raises(ValueError, match=r"another config \(fields differing: seed\)"):
        run_shards_job(_config(str(local_pristine), str(out), max_images=4, seed=1), progress=lambda line: None)


@pytest.mark.slow
def test_dataset_reads_back_exactly_the_rows_written_and_feeds_torch(local_pristine, tmp_path, ray_local):
    from ray_jobs.shards.data import QualiCLIPCollate, shards_dataset

    out = tmp_path / "shards"
    manifest = run_shards_job(_config(str(local_pristine), str(out)), progress=lambda line: None)
    written = [row for shard in manifest["shards"] for row in pq.read_table(out / shard["name"]).to_pylist()]
    dataset = shards_dataset(str(out))
    read = sorted(dataset.take_all(), key=lambda row: row["sample_id"])
    written.sort(key=lambda row: row["sample_id"])
    assert len(read) == len(written) == 24
    for got, want in zip(read, written, strict=True):
        assert {k: (list(v) if isinstance(v, np.ndarray) else v) for k, v in got.items()} == want

    batches = list(dataset.iter_torch_batches(batch_size=8, collate_fn=QualiCLIPCollate("cpu"), device="cpu"))
    assert sum(batch.shape[0] for batch in batches) == 24
    assert batches[0].shape == (8, 2, 5, 3, 64, 64)
    assert float(batches[0].min()) >= 0.0 and float(batches[0].max()) <= 1.0
    with pytest.raises(ValueError, match="kind 'qualiclip'"):
        shards_dataset(str(out), kind="sr")


@pytest.mark.slow
def test_sr_shards_via_the_cli_and_torch_batches(local_pristine, tmp_path, ray_local):
    from ray_jobs.cli import main as iqa_main
    from ray_jobs.shards.data import SRCollate, shards_dataset

    out = tmp_path / "sr"
    argv = ["shards", "--source", str(local_pristine), "--out", str(out), "--kind", "sr", "--hr-size", "96",
            "--pairs-per-image", "1", "--images-per-shard", "5", "--seed", "3"]  # fmt: skip
    assert iqa_main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "sr" and manifest["counts"]["samples"] == 12 and manifest["counts"]["shards"] == 3
    rows = shards_dataset(str(out), kind="sr").take_all()
    assert {row["degradation"] for row in rows} == {"bicubic", "realworld"}
    assert all(row["scale"] == 4 and row["box"][2:] == [96, 96] for row in rows)
    assert all(json.loads(row["realsr_config"])["scale"] == 4 for row in rows if row["degradation"] == "realworld")
    hr, lr = next(iter(shards_dataset(str(out)).iter_torch_batches(batch_size=4, collate_fn=SRCollate("cpu"))))
    assert hr.shape == (4, 3, 96, 96) and lr.shape == (4, 3, 24, 24)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--kind", "sr", "--hr-size", "66"], "not divisible by scale=4"),
        (["--kind", "qualiclip", "--crop", "16"], "crop"),
        (["--kind", "sr", "--levels", "9"], "levels"),
    ],
)
def test_cli_rejects_bad_options_before_starting_ray(tmp_path, capsys, argv, message):
    assert main(["--source", str(tmp_path), "--out", str(tmp_path / "o"), *argv]) == 2
    assert message in capsys.readouterr().err


def test_sampling_is_a_pure_function_of_seed_and_id():
    assert image_seed(0, "a/b.png") == image_seed(0, "a/b.png") != image_seed(1, "a/b.png")
    assert image_seed(0, "a/b.png") != image_seed(0, "a/c.png") and 0 <= image_seed(7, "x") < 2**63
    rng = np.random.default_rng(0)
    for _ in range(2000):
        height, width = int(rng.integers(64, 200)), int(rng.integers(64, 200))
        box_a, box_b = overlapping_boxes(height, width, 64, 0.5, rng)
        for x, y, w, h in (box_a, box_b):
            assert 0 <= x <= width - w and 0 <= y <= height - h
        assert abs(box_a[0] - box_b[0]) <= 32 and abs(box_a[1] - box_b[1]) <= 32


def test_yaml_config_with_command_line_overrides(tmp_path):
    from ray_jobs.cli import build_parser, config_from_args

    path = tmp_path / "job.yaml"
    path.write_text("source: s3://b/pristine/\nout: s3://b/shards/\nkind: sr\nhr_size: 128\nrealsr:\n  scale: 4\n")
    parser = build_parser("shards")
    args = parser.parse_args(["--config", str(path), "--seed", "9", "--pairs-per-image", "3"])
    config = config_from_args("shards", args)
    assert (config.kind, config.hr_size, config.seed, config.samples_per_image) == ("sr", 128, 9, 3)
    path.write_text("source: a\nout: b\nkind: sr\ncrops: 3\n")
    with pytest.raises(ValueError, match="crops"):
        config_from_args("shards", parser.parse_args(["--config", str(path)]))


def test_credentials_in_storage_options_are_refused_and_never_pickled(tmp_path, monkeypatch):
    """One credential scheme: options that travel to Ray tasks hold no secret; tasks use their own env."""
    import cloudpickle

    from iqa_plugin.data.degradations import KINDS
    from ray_jobs.runtime import StorageSettings
    from ray_jobs.shards.job import shard_task

    with pytest.raises(ValueError, match=r"storage_options holds credentials \(key, secret\)"):
        ShardsJobConfig(source="s3://b/p/", out="s3://b/o/", kind="sr",
                        storage_options={"key": "AKIA", "secret": "Sup3rSecretValue"})
    secret = "Sup3rSecretValue-do-not-print"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    config = ShardsJobConfig(source="s3://b/p/", out="s3://b/o/", kind="qualiclip",
                             storage_options={"config_kwargs": {"read_timeout": 30}})
    task = shard_task(config, tuple(KINDS), StorageSettings.from_env(config.storage_options))
    assert secret.encode() not in cloudpickle.dumps(task)
