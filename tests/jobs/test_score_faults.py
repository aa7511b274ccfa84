"""Faults during a score job: a scoring actor dies, the driver is killed (resume), a node leaves the
cluster. Each ends with every input exactly once. Real Ray throughout; nothing of it is mocked."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ray_jobs.io import list_parts
from ray_jobs.score.job import run_job
from tests.helpers import (
    fast_config,
    faulty_scorer,
    good_images,
    kill_slow_job_when,
    read_output,
    settle_parts,
)

ROOT = Path(__file__).resolve().parents[2]


def write_folder(folder: Path, photos: list[Path], count: int) -> list[str]:
    for name, data in good_images(photos, count, seed=7).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return sorted(f"good/{p.name}" for p in (folder / "good").iterdir())


def assert_every_input_once(out: str, ids: list[str]) -> None:
    table = read_output(out)
    seen = table.column("id").to_pylist()
    assert len(seen) == len(set(seen)), "duplicate rows"
    assert sorted(seen) == sorted(ids)
    assert table.column("error").null_count == len(ids)  # all of them scored


@pytest.mark.slow
def test_scoring_actor_killed_mid_job_still_every_input_once(tmp_path, ray_local, fabricated, photos):
    ids = write_folder(tmp_path / "src", photos, 40)
    marker = tmp_path / "actor-exited"
    out = str(tmp_path / "out")
    config = fast_config(src=str(tmp_path / "src"), out=out, weights=str(fabricated["qualiclip"]), block_size=8)
    record = run_job(config, log=lambda message: None,
                     scorer_cls=faulty_scorer(exit_after_blocks=2, marker=str(marker)))
    assert marker.exists(), "the fault was not injected"
    assert "exited after 2 blocks" in marker.read_text()
    assert_every_input_once(out, ids)
    assert record["n_scored"] == 40 and len(list_parts(out)) == 5


@pytest.mark.slow
def test_driver_killed_mid_job_then_same_command_resumes(tmp_path, ray_local, fabricated, photos):
    ids = write_folder(tmp_path / "src", photos, 40)
    out = tmp_path / "out"
    job = tmp_path / "job.yaml"
    job.write_text(
        f"src: {tmp_path / 'src'}\nout: {out}\nweights: {fabricated['qualiclip']}\nresolution: short:64\n"
        "block_size: 4\nreport: false\nprogress_bars: false\n")
    env = kill_slow_job_when("score_cli_with_faults", job, ray_local.get_runtime_context().gcs_address,
                             lambda: len(list_parts(str(out))) >= 2)
    command = [sys.executable, "-m", "ray_jobs.score", "--config", str(job)]
    settle_parts(str(out))  # let any write already in flight land, then count what the rerun must skip
    already = read_output(str(out)).num_rows
    assert 0 < already < 40, already

    second = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    expected = f"resume: {already} of 40 inputs already in {out}; processing the {40 - already} missing"
    assert expected in second.stdout, second.stdout
    assert re.search(rf"scoring {40 - already} inputs .* in {(40 - already + 3) // 4} blocks", second.stdout)
    assert_every_input_once(str(out), ids)
    assert len(list_parts(str(out))) == 10
    record = json.loads((out / "_iqa" / "job.json").read_text())
    assert (record["n_inputs"], record["n_scored"], record["n_resumed"]) == (40, 40, already)


_CLUSTER_SCRIPT = r"""
import json, sys, threading, time
import ray
from ray.cluster_utils import Cluster
from ray_jobs.io import list_parts
from ray_jobs.score.job import run_job
from ray_jobs.score.config import ScoreJobConfig
from tests.helpers import faulty_scorer

src, out, weights = sys.argv[1:4]
cluster = Cluster(initialize_head=True, head_node_args={
    "num_cpus": 2, "object_store_memory": 150 * 1024**2, "include_dashboard": False,
    "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 4}})
scorer_node = cluster.add_node(num_cpus=1, resources={"scorer": 1}, object_store_memory=100 * 1024**2)
ray.init(address=cluster.address, log_to_driver=False)
cluster.wait_for_nodes()
config = ScoreJobConfig(src=src, out=out, weights=weights, resolution="short:64", block_size=4, report=False,
                        progress_bars=False, actor_resources={"scorer": 1})
result = {}

def run():
    try:
        result["record"] = run_job(config, log=lambda line: print(line, flush=True),
                                   scorer_cls=faulty_scorer(sleep_per_block_s=0.5))
    except BaseException as error:
        result["error"] = repr(error)

thread = threading.Thread(target=run, daemon=True)
thread.start()
deadline = time.time() + 300
while len(list_parts(out)) < 2 and time.time() < deadline and thread.is_alive():
    time.sleep(0.2)
parts_before = len(list_parts(out))
cluster.remove_node(scorer_node, allow_graceful=False)
print(f"removed the scoring node after {parts_before} parts", flush=True)
time.sleep(2)
cluster.add_node(num_cpus=1, resources={"scorer": 1}, object_store_memory=100 * 1024**2)
thread.join(timeout=400)
record = result.get("record") or {}
print("RESULT " + json.dumps({"parts_before": parts_before, "alive": thread.is_alive(),
                              "error": result.get("error"), "n_scored": record.get("n_scored")}), flush=True)
ray.shutdown()
cluster.shutdown()
"""


@pytest.mark.slow
def test_node_removed_mid_job_still_every_input_once(tmp_path, fabricated, photos):
    ids = write_folder(tmp_path / "src", photos, 32)
    script = tmp_path / "cluster_job.py"
    script.write_text(_CLUSTER_SCRIPT)
    out = str(tmp_path / "out")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    result = subprocess.run([sys.executable, str(script), str(tmp_path / "src"), out, str(fabricated["qualiclip"])],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(lines[-1][len("RESULT "):])
    assert summary["error"] is None and not summary["alive"], summary
    assert 2 <= summary["parts_before"] < 8, summary  # the node left mid-job
    assert summary["n_scored"] == 32
    assert_every_input_once(out, ids)
