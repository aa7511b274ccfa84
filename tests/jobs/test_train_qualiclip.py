"""The QualiCLIP training job on a real local Ray and the moto S3 server: shards -> train (a worker killed
mid-run) -> export -> pyiqa.create_metric; the driver killed and rerun; a finished run rerun. Each Ray
Train start costs ~20 s here, so the runs are tiny and few."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow

RECIPE = {"arch": "tiny", "exclude_distortions": ["lens_blur"]}


@pytest.fixture(scope="module")
def shards(tmp_path_factory, photos, ray_local):
    """QualiCLIP shards of two training photos (48 px crops, 8 pairs each: 16 samples)."""
    from tests.jobs.conftest import two_photo_shards

    return two_photo_shards(tmp_path_factory.mktemp("train-shards"), photos, kind="qualiclip", crop=48,
                            samples_per_image=8)


def _config(shards: str, out: str, **values):
    from ray_jobs.train.config import TrainJobConfig

    defaults = {"recipe_name": "qualiclip", "shards": shards, "out": out, "workers": 2, "batch_size": 2,
                "steps": 6, "report_every": 2, "checkpoint_every": 2, "validate_every": 0,
                "validation_crop": 48, "export_name": "qualiclip-test-run", "recipe": RECIPE}  # fmt: skip
    return TrainJobConfig(**{**defaults, **values})


def test_killed_worker_resumes_then_export_is_served_by_pyiqa(s3_server, s3, shards, photos, tmp_path, capsys, monkeypatch):
    from ray_jobs.train.job import run
    from tests.helpers import kill_rank_once

    s3.mkdir("runs")
    registry = tmp_path / "registry"
    marker = tmp_path / "killed"
    config = _config(shards, "s3://runs/qualiclip", max_failures=2, register_to=str(registry))
    assert run(config, before_step=kill_rank_once(5, str(marker))) == 0
    printed = capsys.readouterr().out
    events = [(kind, int(step)) for kind, step in re.findall(r"(started at step|step) (\d+)", printed)]
    starts = [step for kind, step in events if kind == "started at step"]
    # rank 1 died before step 5: the group restarted from the last *recorded* checkpoint (the step-4
    # report can be lost with the dying worker, then it is step 2) and never went further back
    assert len(starts) == 2 and starts[0] == 0 and starts[1] in (2, 4), printed
    after_restart = [step for kind, step in events[events.index(("started at step", starts[1])) + 1 :] if kind == "step"]
    assert after_restart and min(after_restart) > starts[1] and after_restart[-1] == 6, printed
    assert "rank 1" in marker.read_text() and not s3.exists("runs/qualiclip/_injected_failure")
    assert {p.rsplit("/", 1)[-1] for p in s3.ls("runs/qualiclip/run")} >= {"step_00000004", "step_00000006"}
    assert s3.exists("runs/qualiclip/export/qualiclip-test-run.safetensors")

    monkeypatch.setenv("IQA_PLUGIN_REGISTRY", str(registry))
    import pyiqa

    import iqa_plugin

    iqa_plugin.register()
    metric = pyiqa.create_metric("qualiclip-test-run", device="cpu")
    scores = [float(metric(str(photo))) for photo in photos[:2]]
    assert all(0.0 <= s <= 1.0 for s in scores) and scores[0] != scores[1]

    # the same export through `iqa models add` (card read from S3), served in a fresh interpreter that
    # imports only pyiqa: the same scores
    from ray_jobs.cli import main

    added = tmp_path / "added"
    assert main(["models", "add", "s3://runs/qualiclip/export/qualiclip-test-run.yaml", "--registry", str(added)]) == 0
    code = ("import pyiqa\nm = pyiqa.create_metric('qualiclip-test-run', device='cpu')\n"
            f"print([float(m(p)) for p in {[str(p) for p in photos[:2]]!r}])\n")  # fmt: skip
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "IQA_PLUGIN_REGISTRY": str(added)})  # fmt: skip
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert json.loads(fresh.stdout.strip().splitlines()[-1]) == pytest.approx(scores, abs=1e-5)

    assert run(config) == 0  # finished: says so, does nothing
    assert "already finished" in capsys.readouterr().out


def _recorded_step(run_dir) -> int | None:
    """The step of the last checkpoint Ray Train recorded in its checkpoint manager snapshot (None: none)."""
    try:
        latest = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())["latest_checkpoint_result"]
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return int(latest["checkpoint_dir_name"].removeprefix("step_")) if latest else None


@pytest.mark.parametrize("recipe", ["qualiclip", "sfd"])
def test_killed_driver_resumes_with_the_same_command(recipe, request, tmp_path, ray_local):
    from tests.jobs.conftest import SFD_TINY_RECIPE

    shards = request.getfixturevalue("shards" if recipe == "qualiclip" else "sr_shards")
    out = tmp_path / "run"
    extra = []
    if recipe == "sfd":  # the recipe's own fields come from YAML; the SFD warm-up ends at step 2
        (tmp_path / "sfd.yaml").write_text(json.dumps({"recipe": SFD_TINY_RECIPE}))  # JSON is YAML
        extra = ["--config", str(tmp_path / "sfd.yaml")]
    command = [sys.executable, "-m", "ray_jobs.train", recipe, "--shards", shards, "--out", str(out),
               "--workers", "2", "--batch-size", "2", "--steps", "8", "--report-every", "2",
               "--checkpoint-every", "2", "--validate-every", "0", "--validation-crop", "48",
               "--export-name", f"{recipe}-test-driver", *extra]  # fmt: skip
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    driver = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while _recorded_step(out / "run") is None:  # a checkpoint directory can exist before Ray Train records it
        assert driver.poll() is None and time.monotonic() < deadline, "no checkpoint was recorded"
        time.sleep(0.5)
    driver.kill()
    driver.communicate(timeout=60)
    time.sleep(3)  # let Ray reap the dead driver's trainer
    recorded = _recorded_step(out / "run")  # what Ray Train restores from (read after the driver is dead)
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    step = int(re.search(rf"resuming {recipe} run .* from step (\d+)", again.stdout).group(1))
    started = [int(s) for s in re.findall(r"workers started at step (\d+)", again.stdout)]
    # the message names exactly the checkpoint restored, never a newer step folder Ray Train did not record
    assert recorded is not None and recorded >= 2 and step == recorded, again.stdout
    assert started == [recorded], again.stdout  # the workers really resumed from the recorded checkpoint
    reported = [int(s) for s in re.findall(r"iqa train: step (\d+)/8", again.stdout)]
    assert reported and reported[0] == recorded + 2 and reported[-1] == 8, again.stdout
    assert (out / "export" / f"{recipe}-test-driver.safetensors").is_file()
    assert "done: 8 steps" in again.stdout


def test_workers_that_cannot_be_placed_fail_at_once_in_one_line(shards, tmp_path, ray_local, capsys):
    """ray_local has 4 CPUs and no GPU: GPU workers never fit; the job says so instead of waiting forever."""
    from ray_jobs.cli import main

    base = ["train", "qualiclip", "--shards", shards, "--out", str(tmp_path / "o"), "--workers", "2"]
    started = time.monotonic()
    assert main([*base, "--gpus-per-worker", "1"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "--workers 2 needs 2 worker(s) of 0.5 CPU, 1 GPU each" in err and "0 GPUs in all" in err, err
    assert "only 0 such worker(s) fit: lower --workers, --gpus-per-worker" in err, err
    assert time.monotonic() - started < 30 and not (tmp_path / "o" / "run").exists()


def test_user_errors_are_one_line_before_ray_starts(tmp_path, capsys):
    from ray_jobs.cli import main

    bad = tmp_path / "run.yaml"
    bad.write_text("recipe:\n  archh: tiny\n")
    assert main(["train", "qualiclip", "--shards", str(tmp_path), "--out", str(tmp_path / "o"), "--config", str(bad)]) == 2
    assert "recipe.archh: unknown key (known: arch," in capsys.readouterr().err
    assert main(["train", "qualiclip", "--shards", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "No manifest.json" in err and len(err.strip().splitlines()) == 1
