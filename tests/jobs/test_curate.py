"""``iqa curate``: exact kept ids per selection mode, the kept Parquet, idempotent copies local and S3."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.local import LocalFileSystem

from ray_jobs import curate as curate_job
from ray_jobs.curate import curate, destination_names

SCHEMA = pa.schema([
    ("id", pa.string()), ("uri", pa.string()), ("bytes", pa.int64()), ("width", pa.int32()),
    ("height", pa.int32()), ("model", pa.string()), ("weights_sha256", pa.string()), ("score", pa.float64()),
    ("error", pa.string()),
])
# id -> score; ties (img03/img10 at 0.80, img00/img05 at 0.60) must resolve by id ascending.
SCORES = {
    "img07": 0.91, "img10": 0.80, "img03": 0.80, "img01": 0.72, "img05": 0.60, "img00": 0.60,
    "img11": 0.55, "img02": 0.40, "img08": 0.33, "img04": 0.20, "img09": 0.12, "img06": 0.05,
}
RANKED = ["img07", "img03", "img10", "img01", "img00", "img05", "img11", "img02", "img08", "img04", "img09", "img06"]
ERRORS = {"bad0": "truncated", "bad1": "not_an_image", "bad2": "missing"}


def _sources(photos: list[Path], root: Path) -> dict[str, Path]:
    """Twelve real image files under two sub-folders of ``root``: id -> path."""
    paths = {}
    for i, image_id in enumerate(sorted(SCORES)):
        photo = photos[i % len(photos)]
        path = root / f"cat{i % 2}" / f"{image_id}{photo.suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(photo, path)
        paths[image_id] = path
    return paths


def _rows(uris: dict[str, str], sizes: dict[str, int], model: str = "qualiclip") -> list[dict]:
    rows = [
        dict(id=i, uri=uris[i], bytes=sizes[i], width=64, height=48, model=model, weights_sha256="ab" * 32,
             score=SCORES[i], error=None)
        for i in sorted(SCORES)
    ]
    for i, reason in ERRORS.items():
        # bad2 carries a score anyway: a row with an error is never kept, whatever its score says.
        rows.append(dict(id=i, uri=f"{uris['img00'].rsplit('/', 2)[0]}/broken/{i}.jpg", bytes=None, width=None,
                         height=None, model=model, weights_sha256="ab" * 32,
                         score=0.99 if i == "bad2" else None, error=reason))
    return rows


def _write(fs, dst: str, rows: list[dict], n_parts: int = 2) -> None:
    fs.makedirs(dst, exist_ok=True)
    for p in range(n_parts):
        pq.write_table(pa.Table.from_pylist(rows[p::n_parts], schema=SCHEMA), f"{dst}/part-{p:05d}.parquet",
                       filesystem=fs)
    with fs.open(f"{dst}/_job.json", "wb") as handle:
        handle.write(json.dumps({"model": "qualiclip", "n_inputs": len(rows)}).encode())


@pytest.fixture
def local_scores(photos, tmp_path):
    paths = _sources(photos, tmp_path / "photos")
    rows = _rows({i: str(p) for i, p in paths.items()}, {i: p.stat().st_size for i, p in paths.items()})
    dst = str(tmp_path / "scores")
    _write(LocalFileSystem(), dst, rows)
    return dst, paths


def _kept(path: str) -> list[str]:
    return pq.read_table(path)["id"].to_pylist()


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ({"min_score": 0.6}, RANKED[:6]),
        ({"min_score": 0.95}, []),
        ({"top_k": 3}, RANKED[:3]),
        ({"top_k": 100}, RANKED),
        ({"top_percent": 25}, RANKED[:3]),
        ({"top_percent": 30}, RANKED[:4]),  # ceil(3.6)
        ({"top_percent": 100}, RANKED),
    ],
)
def test_selection_keeps_exact_ids_in_rank_order(local_scores, option, expected):
    dst, _ = local_scores
    result = curate(dst, **option)
    assert (result.n_rows, result.n_scored, result.n_errors, result.n_kept) == (15, 12, 3, len(expected))
    assert result.out == str(Path(dst)) + "-curated/kept.parquet"  # beside the scores, never inside
    kept = pq.read_table(result.out)
    assert kept["id"].to_pylist() == expected
    assert kept["rank"].to_pylist() == list(range(1, len(expected) + 1))
    assert kept["score"].to_pylist() == [SCORES[i] for i in expected]
    assert kept.schema.field("rank").type == pa.int64() and kept.schema.field("id").type == pa.string()
    assert result.lowest_kept_score == (SCORES[expected[-1]] if expected else None)


def test_copy_to_local_is_idempotent(local_scores, tmp_path, capsys):
    dst, paths = local_scores
    out = tmp_path / "kept.parquet"
    argv = ["--scores", dst, "--top-k", "5", "--copy-to", str(tmp_path / "clean"), "--out", str(out)]
    assert curate_job.main(argv) == 0
    assert "copied 5" in capsys.readouterr().out
    for image_id in RANKED[:5]:
        relative = paths[image_id].relative_to(tmp_path / "photos")  # cat0/img07.png etc.
        assert (tmp_path / "clean" / relative).read_bytes() == paths[image_id].read_bytes()
    assert sorted(p.name for p in (tmp_path / "clean").rglob("*") if p.is_file()) == sorted(
        paths[i].name for i in RANKED[:5])
    assert pq.read_table(out)["dest"].to_pylist()[0] == str(tmp_path / "clean" / "cat1" / paths["img07"].name)

    assert curate_job.main(argv) == 0
    assert "copied 0 (0 bytes), skipped 5" in capsys.readouterr().out
    (tmp_path / "clean" / paths["img03"].relative_to(tmp_path / "photos")).write_bytes(b"partial")
    again = curate(dst, top_k=5, copy_to=str(tmp_path / "clean"), out=str(out))
    assert (again.copied, again.skipped, again.failed) == (1, 4, 0)  # a wrong size is copied again


def test_copy_failure_is_counted_not_fatal(local_scores, tmp_path, capsys):
    dst, paths = local_scores
    paths["img03"].unlink()
    argv = ["--scores", dst, "--top-k", "3", "--copy-to", str(tmp_path / "clean")]
    assert curate_job.main(argv) == 1
    captured = capsys.readouterr()
    assert "copied 2" in captured.out and "failed 1" in captured.out and "img03" in captured.err


def test_copy_between_s3_and_local(photos, tmp_path, s3):
    paths = _sources(photos, tmp_path / "photos")
    s3.mkdir("src")
    s3.mkdir("clean")
    uris = {}
    for image_id, path in paths.items():
        key = f"src/photos/{path.relative_to(tmp_path / 'photos').as_posix()}"
        s3.put_file(str(path), key)
        uris[image_id] = f"s3://{key}"
    _write(s3, "src/scores", _rows(uris, {i: p.stat().st_size for i, p in paths.items()}))

    to_s3 = curate("s3://src/scores/", top_k=4, copy_to="s3://clean/best/")
    assert (to_s3.copied, to_s3.skipped, to_s3.n_kept) == (4, 0, 4)
    assert to_s3.out == "s3://src/scores-curated/kept.parquet"
    s3.invalidate_cache()
    assert sorted(s3.find("clean/best")) == sorted(
        f"clean/best/{paths[i].relative_to(tmp_path / 'photos').as_posix()}" for i in RANKED[:4])
    assert s3.cat_file(f"clean/best/cat1/{paths['img07'].name}") == paths["img07"].read_bytes()
    with s3.open("src/scores-curated/kept.parquet", "rb") as handle:
        assert pq.read_table(handle)["id"].to_pylist() == RANKED[:4]
    rerun = curate("s3://src/scores/", top_k=4, copy_to="s3://clean/best/")
    assert (rerun.copied, rerun.skipped) == (0, 4)

    to_local = curate("s3://src/scores/", min_score=0.7, copy_to=str(tmp_path / "down"), out=str(tmp_path / "k.pq"))
    assert (to_local.copied, to_local.n_kept) == (4, 4)
    assert (tmp_path / "down" / "cat1" / paths["img07"].name).read_bytes() == paths["img07"].read_bytes()
    assert curate("s3://src/scores/", min_score=0.7, copy_to=str(tmp_path / "down"),
                  out=str(tmp_path / "k.pq")).copied == 0


def test_copy_local_to_s3(local_scores, s3, tmp_path):
    dst, paths = local_scores
    s3.mkdir("uploads")
    result = curate(dst, top_percent=25, copy_to="s3://uploads/kept")
    assert (result.copied, result.skipped) == (3, 0)
    s3.invalidate_cache()
    assert s3.cat_file(f"uploads/kept/cat1/{paths['img03'].name}") == paths["img03"].read_bytes()
    assert curate(dst, top_percent=25, copy_to="s3://uploads/kept").copied == 0


def test_model_filter(photos, tmp_path):
    paths = _sources(photos, tmp_path / "photos")
    uris, sizes = {i: str(p) for i, p in paths.items()}, {i: p.stat().st_size for i, p in paths.items()}
    rows = _rows(uris, sizes, "qualiclip") + [dict(r, score=1 - r["score"]) if r["score"] else r
                                              for r in _rows(uris, sizes, "other")]
    dst = str(tmp_path / "scores")
    _write(LocalFileSystem(), dst, rows)
    with pytest.raises(ValueError, match="several models.*--model"):
        curate(dst, top_k=2)
    assert _kept(curate(dst, top_k=2, model="qualiclip").out) == RANKED[:2]
    assert _kept(curate(dst, top_k=2, model="other").out) == ["img06", "img09"]
    with pytest.raises(ValueError, match="'nope' not in"):
        curate(dst, top_k=2, model="nope")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"top_percent": 0}, r"top_percent must be in \(0, 100\]"),
        ({"top_percent": 150}, r"top_percent must be in \(0, 100\]"),
        ({"top_k": 0}, "greater than or equal to 1"),
        ({}, "exactly one of"),
        ({"top_k": 2, "min_score": 0.5}, "exactly one of"),
        ({"min_score": float("nan")}, "finite"),
    ],
)
def test_invalid_options_are_clear_errors(local_scores, kwargs, message):
    with pytest.raises(ValueError, match=message):
        curate(local_scores[0], **kwargs)


def test_kept_list_or_copies_inside_the_scores_folder_are_refused(local_scores, capsys):
    dst = local_scores[0]
    for flag, value in (("--out", f"{dst}/kept.parquet"), ("--copy-to", f"{dst}/clean/")):
        assert curate_job.main(["--scores", str(dst), "--top-k", "1", flag, value]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "inside the scores folder" in err and "-curated/" in err
    assert not (Path(dst) / "kept.parquet").exists() and not (Path(dst) / "clean").exists()


def test_cli_errors(tmp_path, capsys):
    assert curate_job.main(["--scores", str(tmp_path), "--top-k", "1"]) == 2
    assert "no score files" in capsys.readouterr().err
    for argv, message in ((["--scores", "x"], "one of the arguments --min-score --top-k --top-percent is required"),
                          (["--scores", "x", "--top-k", "1", "--min-score", "0.5"], "not allowed with argument")):
        assert curate_job.main(argv) == 2  # argparse's errors go through the wrapper: one line, exit 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and message in err and "usage:" not in err
    assert curate_job.main(["--scores", str(tmp_path), "--top-percent", "0"]) == 2
    assert "top_percent must be in (0, 100]" in capsys.readouterr().err


def test_iqa_curate_command(local_scores, capsys):
    from ray_jobs.cli import main

    assert main(["curate", "--scores", local_scores[0], "--top-percent", "50"]) == 0
    assert "kept 6 of 12 scored images" in capsys.readouterr().out


def test_destination_names_are_relative_and_collision_free():
    uris = ["s3://b/p/a/x.jpg", "s3://b/p/a//x.jpg", "s3://b/p/../x.jpg", "s3://b/p/c/y.png"]
    names = destination_names(uris, "s3://b/p/")
    assert names[0] == "a/x.jpg" and names[3] == "c/y.png"
    assert len(set(names)) == 4 and all(".." not in n.split("/") for n in names)
    assert destination_names(uris, "s3://b/p/") == names  # deterministic


def test_copy_to_missing_bucket_fails_fast(local_scores, s3):
    with pytest.raises(ValueError, match="bucket 'no-such-bucket' does not exist"):
        curate(local_scores[0], top_k=2, copy_to="s3://no-such-bucket/kept/")


def test_only_error_rows_keeps_nothing(tmp_path):
    rows = [dict(id=f"bad{i}", uri=f"/nowhere/{i}.jpg", bytes=None, width=None, height=None, model="qualiclip",
                 weights_sha256="ab" * 32, score=None, error="missing") for i in range(3)]
    _write(LocalFileSystem(), str(tmp_path / "scores"), rows, n_parts=1)
    result = curate(str(tmp_path / "scores"), top_percent=100, copy_to=str(tmp_path / "clean"))
    assert (result.n_scored, result.n_errors, result.n_kept, result.copied) == (0, 3, 0, 0)
    assert pq.read_table(result.out).num_rows == 0


GLOB_NAMES = ["a[1].jpg", "b*.jpg", "c?.jpg", "[x]/d.jpg"]


def _glob_named_scores(fs, photos: list[Path], src: str, dst: str, tmp_path: Path) -> dict[str, bytes]:
    """Score rows for files whose names hold fsspec glob characters; returns name -> bytes."""
    data = {name: photos[i % len(photos)].read_bytes() for i, name in enumerate(GLOB_NAMES)}
    rows = []
    for i, (name, payload) in enumerate(data.items()):
        fs.pipe_file(f"{src}/{name}", payload)
        uri = f"s3://{src}/{name}" if fs.protocol[0] == "s3" else f"{src}/{name}"
        rows.append(dict(id=name, uri=uri, bytes=len(payload), width=64, height=48, model="qualiclip",
                         weights_sha256="ab" * 32, score=0.9 - i / 10, error=None))
    rows.append(dict(id="plain.jpg", uri=f"{rows[0]['uri'].rsplit('/', 1)[0]}/plain.jpg", bytes=1, width=64,
                     height=48, model="qualiclip", weights_sha256="ab" * 32, score=0.01, error=None))
    _write(fs, dst, rows)
    return data


@pytest.mark.parametrize("store", ["local", "s3"])
def test_copy_names_with_glob_characters_land_once_at_their_key(photos, tmp_path, store, request):
    if store == "s3":
        fs = request.getfixturevalue("s3")
        fs.mkdir("src")
        src, dst, to = "src/photos", "src/scores", "s3://src/clean"
        there = lambda name: fs.cat_file(f"src/clean/{name}")  # noqa: E731
        listing = lambda: sorted(p.removeprefix("src/clean/") for p in fs.find("src/clean"))  # noqa: E731
        scores = "s3://src/scores"
    else:
        fs = LocalFileSystem(auto_mkdir=True)
        src, dst, to = str(tmp_path / "photos"), str(tmp_path / "scores"), str(tmp_path / "clean")
        there = lambda name: (tmp_path / "clean" / name).read_bytes()  # noqa: E731
        listing = lambda: sorted(p.relative_to(tmp_path / "clean").as_posix()  # noqa: E731
                                 for p in (tmp_path / "clean").rglob("*") if p.is_file())
        scores = dst
    data = _glob_named_scores(fs, photos, src, dst, tmp_path)
    first = curate(scores, top_k=len(GLOB_NAMES), copy_to=to)
    assert (first.copied, first.skipped, first.failed) == (len(GLOB_NAMES), 0, 0), first.failures
    if store == "s3":
        fs.invalidate_cache()
    assert listing() == sorted(GLOB_NAMES)  # each at its own key, nothing else written
    assert all(there(name) == payload for name, payload in data.items())
    again = curate(scores, top_k=len(GLOB_NAMES), copy_to=to)
    assert (again.copied, again.skipped, again.failed) == (0, len(GLOB_NAMES), 0)
