"""The score job under reruns, changing sources and concurrent runs: run identity, exactly-once output,
retried transient errors, every reader of the output, the run record. Real local Ray, real files and S3."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from iqa_plugin.data.reasons import REASONS, TRANSIENT
from ray_jobs.io import list_parts, write_parquet_part
from ray_jobs.score.job import run_job
from ray_jobs.score.output import migrate_legacy_layout, reconcile, scan_output
from ray_jobs.score.stages import block_output_table
from tests.helpers import fast_config, good_images, read_output, write_images

ROOT = Path(__file__).resolve().parents[2]


def _ids(out: str) -> list[str]:
    return sorted(read_output(out).column("id").to_pylist())


def _part(out: str, key: str, ids: list[str], errors: list[str | None], sha: str = "a" * 64) -> None:
    n = len(ids)
    write_parquet_part(block_output_table({
        "ids": ids, "uris": [f"/x/{i}" for i in ids], "bytes": [1] * n, "width": [40] * n, "height": [40] * n,
        "model": "qualiclip", "weights_sha256": sha, "score": [0.5 if e is None else None for e in errors],
        "error": errors}), out, key)


def test_reconcile_retries_exactly_the_transient_codes_and_drops_deleted_inputs(tmp_path):
    out = str(tmp_path / "out")
    codes = list(REASONS)
    _part(out, "a", [f"err-{c}" for c in codes], codes)
    _part(out, "b", ["ok-1", "ok-2", "gone"], [None, None, None])
    _part(out, "c", ["ok-1"], [None])  # a duplicate row of ok-1 (an older version's concurrent run)
    listed = {f"err-{c}" for c in codes} | {"ok-1", "ok-2"}
    kept, dropped = reconcile(out, scan_output(out), listed)
    assert kept == {f"err-{c}" for c in codes if c not in TRANSIENT} | {"ok-1", "ok-2"}
    assert TRANSIENT == {"missing", "access_denied", "fetch_error", "score_error"}
    assert dropped == {"transient": len(TRANSIENT), "left_source": 1, "duplicate": 1}
    assert sorted(_ids(out)) == sorted(kept)  # the part files were rewritten, nothing else is left
    assert len(list_parts(out)) == 2


def test_an_older_versions_output_is_moved_out_of_the_readers_way(tmp_path):
    out = tmp_path / "out"
    _part(str(out), "a", ["x.jpg"], [None])
    (out / "_job.json").write_text('{"n_inputs": 1, "started": "the real run"}')
    (out / "report.html").write_text("<html></html>")
    (out / "curated").mkdir()
    logs: list[str] = []
    done = migrate_legacy_layout(str(out), logs.append)
    assert len(done) == 2 and not (out / "_job.json").exists() and not (out / "report.html").exists()
    assert json.loads((out / "_iqa" / "job.json").read_text())["started"] == "the real run"
    assert any("curated" in line and "move it out" in line for line in logs)
    import pandas as pd

    assert len(pd.read_parquet(out)) == 1 and migrate_legacy_layout(str(out), logs.append) == []  # the folder reads


@pytest.mark.slow
def test_source_changes_identity_and_noop_reruns(tmp_path, ray_local, fabricated, photos):
    from iqa_plugin.testing import fabricate_qualiclip_checkpoint

    images = good_images(photos, 10)
    names = write_images(tmp_path / "src", {**images, "_DSC0001.JPG": images["good/0000.jpg"],
                                            "_raw/a.jpg": images["good/0001.jpg"], ".thumbs/x.jpg": b"x"})
    names.remove(".thumbs/x.jpg")
    out = str(tmp_path / "out")
    config = fast_config(src=str(tmp_path / "src"), out=out, weights=str(fabricated["qualiclip"]), block_size=4,
                         report=True)
    logs: list[str] = []
    first = run_job(config, log=logs.append)
    assert _ids(out) == names and first["n_scored"] == 12  # underscore names are inputs
    assert first["excluded"] == {"hidden": 1, "output": 0, "special": 0}
    assert any("excluded: 1 hidden files" in line for line in logs), logs
    record = Path(out, "_iqa", "job.json").read_bytes()
    report = Path(out, "_iqa", "report.html").stat().st_mtime_ns

    again: list[str] = []  # a no-op rerun keeps the real run's record and report
    run_job(config, log=again.append)
    assert Path(out, "_iqa", "job.json").read_bytes() == record
    assert Path(out, "_iqa", "report.html").stat().st_mtime_ns == report
    assert any("nothing to do" in line for line in again), again

    other = fabricate_qualiclip_checkpoint(tmp_path / "other.pth", seed=5)
    (tmp_path / "src" / "good" / "0000.jpg").unlink()  # the source loses one input and gains two
    write_images(tmp_path / "src", {"new/1.jpg": images["good/0002.jpg"], "new/2.jpg": images["good/0003.jpg"]})
    with pytest.raises(ValueError, match=r"another run identity \(weights_sha256 \w{12} -> \w{12}\): give a new "
                                         r"--out, or add --rescore"):
        run_job(config.model_copy(update={"weights": str(other)}), log=lambda line: None)
    assert _ids(out) == names  # the refusal changed nothing

    grown: list[str] = []
    second = run_job(config, log=grown.append)
    expected = sorted(set(names) - {"good/0000.jpg"} | {"new/1.jpg", "new/2.jpg"})
    assert _ids(out) == expected and second["n_processed"] == 2
    assert second["dropped"] == {"left_source": 1}
    assert json.loads(Path(out, "_iqa", "job.json").read_text())["n_processed"] == 2

    rescored = run_job(config.model_copy(update={"weights": str(other), "rescore": True}), log=lambda line: None)
    table = read_output(out)
    assert sorted(table.column("id").to_pylist()) == expected and rescored["n_processed"] == len(expected)
    assert set(table.column("weights_sha256").to_pylist()) == {rescored["weights_sha256"]} != {first["weights_sha256"]}
    identity = json.loads(Path(out, "_iqa", "identity.json").read_text())
    assert identity["weights_sha256"] == rescored["weights_sha256"]


@pytest.mark.slow
def test_transient_rows_are_retried_on_rerun_final_ones_are_not(tmp_path, ray_local, fabricated, photos):
    images = good_images(photos, 4)
    write_images(tmp_path / "files", images)
    jpeg = images["good/0000.jpg"]
    (tmp_path / "files" / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    rows = [{"id": name, "uri": f"files/{name}"} for name in images]
    rows += [{"id": "later", "uri": "files/later.jpg"}, {"id": "cut", "uri": "files/cut.jpg"}]
    manifest = tmp_path / "list.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = str(tmp_path / "out")
    config = fast_config(src=str(manifest), out=out, weights=str(fabricated["qualiclip"]))
    run_job(config, log=lambda line: None)
    errors = dict(zip(*read_output(out).select(["id", "error"]).to_pydict().values(), strict=True))
    assert (errors["later"], errors["cut"]) == ("missing", "truncated")

    (tmp_path / "files" / "later.jpg").write_bytes(jpeg)  # the missing object appears
    record = run_job(config, log=lambda line: None)
    errors = dict(zip(*read_output(out).select(["id", "error"]).to_pydict().values(), strict=True))
    assert (errors["later"], errors["cut"]) == (None, "truncated")
    assert record["n_processed"] == 1 and record["dropped"] == {"transient": 1} and len(errors) == 6


@pytest.mark.slow
def test_two_runs_started_together_with_different_block_sizes_never_duplicate(tmp_path, ray_local, fabricated,
                                                                               photos):
    ids = write_images(tmp_path / "src", good_images(photos, 40))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    base = [sys.executable, "-m", "ray_jobs.score", str(tmp_path / "src"), "--out", str(out), "--weights",
            str(fabricated["qualiclip"]), "--resolution", "short:64", "--no-report", "--no-progress-bars"]
    runs = [subprocess.Popen([*base, "--block-size", size], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for size in ("4", "16")]
    results = [(run.wait(timeout=600), *run.communicate()) for run in runs]
    codes = sorted(code for code, _, _ in results)
    assert codes in ([0, 0], [0, 2]), results
    for code, _, err in results:
        if code == 2:  # the run that lost the race is refused in one line, naming the other run
            assert len(err.strip().splitlines()) == 1 and "is being written by another run" in err, err
            assert "Traceback" not in err
    assert _ids(str(out)) == ids  # 40 rows for 40 inputs, never more
    rerun = subprocess.run([*base, "--block-size", "7"], env=env, cwd=tmp_path, capture_output=True, text=True,
                           timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert "nothing to do" in rerun.stdout and _ids(str(out)) == ids


@pytest.mark.slow
def test_every_parquet_reader_sees_one_row_per_input(tmp_path, ray_local, fabricated, photos):
    import duckdb
    import pandas as pd
    import pyarrow.dataset as pads

    from ray_jobs.curate import curate

    ids = write_images(tmp_path / "src", good_images(photos, 12))
    out = str(tmp_path / "scores")
    run_job(fast_config(src=str(tmp_path / "src"), out=out, weights=str(fabricated["qualiclip"]), block_size=5,
                        report=True), log=lambda line: None)
    kept = curate(out, top_k=3)
    assert not kept.out.startswith(out + "/")  # the kept list is beside the scores, not inside
    (Path(out) / "_iqa" / "tmp").mkdir(exist_ok=True)
    (Path(out) / "_iqa" / "tmp" / "left-by-a-killed-writer.tmp").write_bytes(b"half a part")
    n = len(ids)
    assert len(pd.read_parquet(out)) == n
    assert pads.dataset(out).count_rows() == n
    assert ray_local.data.read_parquet(out).count() == n
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{out}/*.parquet')").fetchall()[0][0] == n
    # Spark / Hadoop: every file under the folder except those whose path has a '_' or '.' component
    hadoop = [path for path in glob.glob(f"{out}/**", recursive=True) if os.path.isfile(path)
              and not any(part.startswith(("_", ".")) for part in Path(path).relative_to(out).parts)]
    assert sum(pq.read_metadata(path).num_rows for path in hadoop) == n
    assert sorted(pa.concat_tables([pq.read_table(p) for p in hadoop]).column("id").to_pylist()) == ids
