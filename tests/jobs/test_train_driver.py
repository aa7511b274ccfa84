"""The training driver's own decisions, before and without Ray: which step a rerun of a killed training
resumes from (the checkpoint Ray Train recorded in its run snapshot, not the newest ``step_<n>`` folder;
on local disk and the moto S3 server), and initial weights that cannot be had failing in one line."""

from __future__ import annotations

import pytest

from ray_jobs.train.job import SNAPSHOT_FILE, latest_checkpoint_step


def _snapshot(recorded: list[int], latest: int | None) -> str:
    """A run snapshot in Ray Train's own schema (its pydantic model writes it, as the controller does)."""
    from ray.train.v2._internal.execution.checkpoint.checkpoint_manager import (
        _CheckpointManagerState,
        _TrainingResultState,
    )

    def result(step: int) -> _TrainingResultState:
        return _TrainingResultState(checkpoint_dir_name=f"step_{step:08d}", metrics={"step": step})

    return _CheckpointManagerState(
        checkpoint_results=[result(s) for s in recorded], checkpoint_report_indices=list(range(len(recorded))),
        latest_checkpoint_result=None if latest is None else result(latest), pending_training_results=[],
        pending_validation_specs=[], current_report_index=len(recorded), validated_checkpoint_dir_names=[],
        timed_out_validation_checkpoint_dir_names=[], failed_validation_checkpoint_dir_names=[],
    ).model_dump_json()  # fmt: skip


def _write_run(fs, root: str, folders: list[int], snapshot: str | None) -> None:
    for step in folders:
        fs.pipe_file(f"{root}/run/step_{step:08d}/state.pt", b"x")
    if snapshot is not None:
        fs.pipe_file(f"{root}/run/{SNAPSHOT_FILE}", snapshot.encode())


@pytest.mark.parametrize("where", ["local", "s3"])
def test_resume_step_is_the_recorded_checkpoint_not_the_newest_folder(where, tmp_path, request):
    if where == "s3":
        request.getfixturevalue("s3_server")
        fs = request.getfixturevalue("s3")
        fs.mkdir("runs")
        root, out = "runs/train", "s3://runs/train"
    else:
        import fsspec

        fs = fsspec.filesystem("file", auto_mkdir=True)
        root = out = str(tmp_path / "train")
    assert latest_checkpoint_step(out, "run") is None  # nothing yet
    # step 6 was being written when the driver died: its folder exists, Ray Train never recorded it
    _write_run(fs, root, [2, 4, 6], _snapshot([2, 4], latest=4))
    assert latest_checkpoint_step(out, "run") == 4


def test_folders_without_a_recorded_checkpoint_resume_from_nothing(tmp_path):
    import fsspec

    fs = fsspec.filesystem("file", auto_mkdir=True)
    _write_run(fs, str(tmp_path / "a"), [2], None)  # a folder, no snapshot: Ray Train starts from scratch
    assert latest_checkpoint_step(str(tmp_path / "a"), "run") is None
    _write_run(fs, str(tmp_path / "b"), [2], _snapshot([], latest=None))
    assert latest_checkpoint_step(str(tmp_path / "b"), "run") is None
    _write_run(fs, str(tmp_path / "c"), [], "{not json")
    assert latest_checkpoint_step(str(tmp_path / "c"), "run") is None


def test_initial_weights_offline_fail_in_one_line_before_ray(tmp_path, monkeypatch, capsys):
    from ray_jobs.cli import main

    monkeypatch.setenv("IQA_PLUGIN_OFFLINE", "1")
    run = tmp_path / "run.yaml"
    run.write_text("recipe:\n  arch: rn50\n  init: clip_rn50_openai\n")
    code = main(["train", "qualiclip", "--shards", str(tmp_path), "--out", str(tmp_path / "o"), "--config", str(run)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "recipe.init clip_rn50_openai: Offline" in err
    assert "https://openaipublic.azureedge.net/clip/models/afeb0e10" in err and "/RN50.pt" in err, err
    assert str(tmp_path / "weights-cache" / "afeb0e10") in err and "IQA_PLUGIN_CACHE" in err, err
    assert not (tmp_path / "o").exists()
