"""Every user error of the ``iqa`` commands is one line that says the fix, with the documented exit code,
before any work starts. Real files, real local Ray, the moto S3 server (one that checks credentials)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ray_jobs.cli import EXIT_USAGE, job_main
from ray_jobs.score.sources import describe_access_error, list_source
from tests.helpers import authenticating_s3, good_images, register_test_filesystems, write_images

ROOT = Path(__file__).resolve().parents[2]
SECRET = "Sup3rSecretValue-never-printed"


def _one_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"iqa {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def src(tmp_path, photos) -> Path:
    write_images(tmp_path / "src", good_images(photos, 3))
    return tmp_path / "src"


@pytest.fixture(scope="module", autouse=True)
def _test_filesystems():
    register_test_filesystems()


def _score(argv: list[str]) -> int:
    return job_main("score", [*argv, "--no-report", "--no-progress-bars", "--resolution", "short:64"])


def test_weights_file_that_is_not_a_checkpoint_fails_in_the_driver_and_leaves_nothing(src, tmp_path, capsys):
    bad = tmp_path / "weights.pth"
    bad.write_text("this is a README, not a checkpoint\n" * 50)
    out = tmp_path / "out"
    assert _score([str(src), "--out", str(out), "--weights", str(bad)]) == EXIT_USAGE
    line = _one_line(capsys, "score")
    assert f"--weights {bad}" in line and "is not a qualiclip checkpoint" in line and "give the .pth" in line
    assert not out.exists()  # no empty output left behind


def test_read_only_output_is_refused_naming_it(src, tmp_path, fabricated, capsys):
    out = f"readonly://{tmp_path / 'ro'}"
    assert _score([str(src), "--out", out, "--weights", str(fabricated["qualiclip"])]) == EXIT_USAGE
    line = _one_line(capsys, "score")
    assert "is not writable" in line and "Read-only file system" in line and "give a writable --out" in line
    assert "AWS" not in line  # a local folder gets file advice, never S3 credential advice


def test_out_equal_to_the_source_is_refused(src, fabricated, capsys):
    assert _score([str(src), "--out", str(src), "--weights", str(fabricated["qualiclip"])]) == EXIT_USAGE
    assert "is the source folder itself" in _one_line(capsys, "score")


def test_local_paths_get_file_advice_not_s3_credential_advice(tmp_path):
    local = str(describe_access_error(str(tmp_path), PermissionError(13, "Permission denied")))
    assert "check the file permissions" in local and "AWS" not in local
    remote = str(describe_access_error("s3://b/p/", PermissionError(13, "AccessDenied")))
    assert "AWS_ACCESS_KEY_ID" in remote


def test_unlistable_subfolder_fails_instead_of_disappearing(src, tmp_path, capsys):
    (src / "locked").mkdir()
    (src / "locked" / "x.jpg").write_bytes((src / "good" / "0000.jpg").read_bytes())
    assert list_source(str(src)).inputs.num_rows == 4  # readable, it is listed
    with pytest.raises(ValueError, match=r"1 folder\(s\) cannot be listed, e.g. .*locked \(PermissionError"):
        list_source(f"unlistable://{src}")
    assert _score([f"unlistable://{src}", "--out", str(tmp_path / "o")]) == EXIT_USAGE
    assert "nothing is skipped silently" in _one_line(capsys, "score")


@pytest.mark.parametrize(("name", "content", "message"), [
    ("list.csv", "", "is empty"), ("list.csv", "uri\n", "no input found"),
    ("list.csv", 'uri,id\n"a.jpg,1\nb.jpg,2,3\n', "is not a readable CSV file"),
    ("list.parquet", "not parquet at all", "is not a readable Parquet file"),
    ("list.jsonl", '{"uri": "a.jpg"\n', "is not a readable JSON Lines file"),
])
def test_empty_or_malformed_manifest_is_one_line(tmp_path, capsys, name, content, message):
    manifest = tmp_path / name
    manifest.write_text(content)
    assert _score([str(manifest), "--out", str(tmp_path / "o")]) == EXIT_USAGE
    line = _one_line(capsys, "score")
    assert message in line and "ArrowInvalid" not in line


def test_foreign_part_file_in_the_output_is_refused(src, tmp_path, fabricated, capsys):
    out = tmp_path / "out"
    out.mkdir()
    pq.write_table(pa.table({"a": [1, 2]}), out / "part-0001.parquet")
    assert _score([str(src), "--out", str(out), "--weights", str(fabricated["qualiclip"])]) == EXIT_USAGE
    line = _one_line(capsys, "score")
    assert "part-0001.parquet, which is not a score part" in line and "move it out of --out" in line


@pytest.mark.parametrize(("command", "argv", "message"), [
    ("score", ["SRC", "--out", "O", "--actors", "0"], "actors: Input should be greater than or equal to 1"),
    ("score", ["SRC", "--out", "O", "--dtype", "fp8"], "argument --dtype: invalid choice: 'fp8'"),
    ("shards", ["--source", "SRC", "--out", "O", "--kind", "qualiclip", "--realsr", "x"], "unrecognized arguments"),
    ("curate", ["--scores", "O", "--top-k", "0"], "top_k: Input should be greater than or equal to 1"),
    ("shards", ["--source", "SRC", "--out", "O", "--kind", "sr", "--hr-size", "66"], "not divisible by scale"),
])
def test_invalid_values_are_one_line_not_a_validation_dump(tmp_path, capsys, command, argv, message):
    argv = [str(tmp_path / a) if a in ("SRC", "O") else a for a in argv]
    assert job_main(command, argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err and "errors.pydantic.dev" not in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if "error:" in line]) == 1


@pytest.mark.slow
def test_actors_the_cluster_cannot_hold_fail_at_once_saying_what_it_has(src, tmp_path, fabricated, ray_local,
                                                                         capsys):
    argv = [str(src), "--out", str(tmp_path / "o"), "--weights", str(fabricated["qualiclip"])]
    assert _score([*argv, "--actors", "4"]) == EXIT_USAGE
    line = _one_line(capsys, "score")
    assert "needs 5.25 CPUs at once but the Ray cluster has 4 CPUs on 1 node(s)" in line
    assert "ask for fewer actors or CPUs per actor" in line
    job = tmp_path / "job.yaml"
    job.write_text("actor_resources: {gpu-node: 1}\n")
    assert _score([*argv, "--config", str(job)]) == EXIT_USAGE
    line = _one_line(capsys, "score")
    assert "needs 1 actor(s) of 1 CPU, 1 gpu-node each" in line and "only 0 such actor(s) fit" in line


@pytest.mark.slow
def test_command_started_local_ray_refuses_more_cpus_than_it_has(src, tmp_path, fabricated):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    result = subprocess.run([sys.executable, "-m", "ray_jobs.score", str(src), "--out", str(tmp_path / "o"),
                             "--weights", str(fabricated["qualiclip"]), "--cpus-per-actor", "8"],
                            capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert result.returncode == EXIT_USAGE, result.stdout + result.stderr
    cpus = max(4, os.cpu_count() or 1)
    assert f"needs 9.25 CPUs at once but a local Ray on this machine has {cpus} logical CPUs" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "ray: starting" not in result.stdout


# ----------------------------------------------------------------------------------------------- iqa shards


def _shards(argv: list[str]) -> int:
    return job_main("shards", ["--kind", "qualiclip", "--images-per-shard", "2", "--samples-per-image", "1", *argv])


def test_shards_output_that_is_a_file_is_one_line(src, tmp_path, capsys):
    (tmp_path / "taken").write_text("a file")
    assert _shards(["--source", str(src), "--out", str(tmp_path / "taken")]) == EXIT_USAGE
    assert "is a file; give a folder or prefix" in _one_line(capsys, "shards")


@pytest.mark.slow
def test_shards_crop_larger_than_every_image_is_refused(src, tmp_path, ray_local):
    out = tmp_path / "shards"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    result = subprocess.run([sys.executable, "-m", "ray_jobs.shards", "--source", str(src), "--out", str(out),
                             "--kind", "qualiclip", "--crop", "512"], capture_output=True, text=True, env=env,
                            timeout=300, cwd=tmp_path)
    assert result.returncode == EXIT_USAGE, result.stdout + result.stderr
    last = result.stderr.strip().splitlines()[-1]  # (Ray Data's own progress lines may come before it)
    assert last.startswith("iqa shards: error: no sample from the 3 images") and "too_small: 3" in last
    assert "lower --crop" in last and "Traceback" not in result.stderr
    assert not (out / "manifest.json").exists()  # never a finished job with 0 samples


@pytest.mark.slow
def test_shards_wrong_secret_is_one_line_without_the_secret(tmp_path):
    with authenticating_s3() as endpoint:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "AKIAWRONG",
               "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": "us-east-1"}
        env.pop("RAY_ADDRESS", None)
        result = subprocess.run([sys.executable, "-m", "ray_jobs.shards", "--source", "s3://pristine/",
                                 "--out", "s3://pristine/shards/", "--kind", "qualiclip"],
                                capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert result.returncode == EXIT_USAGE, result.stdout + result.stderr
    assert "access denied: check the credentials" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert SECRET not in result.stdout + result.stderr
