"""``iqa eval`` end to end on a real local Ray: synthetic benchmark, CSV and S3 datasets, the score cache,
bad rows, user errors, and the HTML page rendered by a real browser."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ray_jobs.cli import job_main
from tests.helpers import good_images

SYNTHETIC = ["--synthetic", "--synthetic-photos", "2", "--synthetic-kinds", "gaussian_blur", "white_noise",
             "--synthetic-size", "64", "--bootstrap", "50", "--device", "cpu", "--no-progress-bars"]


def _results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def test_synthetic_benchmark_fails_the_baselines_caches_scores_and_rescores_new_weights(ray_local, fabricated,
                                                                                         tmp_path):
    from iqa_plugin.testing import fabricate_qualiclip_checkpoint

    out = tmp_path / "out"
    argv = [*SYNTHETIC, "--model", "psnr,qualiclip", "--weights", f"qualiclip={fabricated['qualiclip']}",
            "--out", str(out)]
    assert job_main("eval", argv) == 0
    first = _results(out)
    metrics = first["metrics"]
    assert set(metrics) == {"psnr", "qualiclip", "random", "mean_brightness"}  # baselines added by --synthetic
    assert first["groups"] == ["gaussian_blur", "white_noise"] and first["dataset"]["n_items"] == 20
    assert all(m["n_scored_now"] == 20 and m["n_cached"] == 0 and m["n_scored"] == 20 for m in metrics.values())
    psnr = metrics["psnr"]
    assert psnr["full_reference"] and all(g["srcc"] > 0.9 for g in psnr["per_group"].values())
    for baseline in ("random", "mean_brightness"):  # the harness can fail a metric
        assert metrics[baseline]["overall"]["srcc"] < psnr["overall"]["srcc"] - 0.3
    low, high = metrics["random"]["overall"]["ci"]["srcc"]
    assert low < 0 < high
    scores = pq.read_table(out / "scores.parquet").to_pydict()

    assert job_main("eval", argv) == 0  # second run: every score from the cache, no model work
    second = _results(out)
    assert all(m["n_scored_now"] == 0 and m["n_cached"] == 20 for m in second["metrics"].values())
    assert pq.read_table(out / "scores.parquet").to_pydict() == scores
    assert second["metrics"]["psnr"]["overall"] == psnr["overall"]

    other = fabricate_qualiclip_checkpoint(tmp_path / "other" / "QualiCLIP.pth", seed=1)
    argv[argv.index(f"qualiclip={fabricated['qualiclip']}")] = f"qualiclip={other}"
    assert job_main("eval", argv) == 0  # a changed checkpoint is rescored, the rest still cached
    third = _results(out)["metrics"]
    assert third["qualiclip"]["n_scored_now"] == 20 and third["qualiclip"]["weights_key"] != \
        metrics["qualiclip"]["weights_key"]
    assert third["psnr"]["n_scored_now"] == 0
    assert pq.read_table(out / "scores.parquet").column("score_qualiclip").to_pylist() != scores["score_qualiclip"]


@pytest.fixture(scope="module")
def csv_run(ray_local, photos, tmp_path_factory):
    """One CSV evaluation with bad rows and a truncated image; returns (out folder, exit code, stdout)."""
    root = tmp_path_factory.mktemp("csv-eval")
    data = root / "data"
    data.mkdir()
    lines = ["path,mos"]
    for index, (name, payload) in enumerate(sorted(good_images(photos, 12).items())):
        (data / Path(name).name).write_bytes(payload)
        lines.append(f"{Path(name).name},{1 + (index % 4) + 0.1 * index}")
    whole = (data / "0000.jpg").read_bytes()
    (data / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    lines += ["cut.jpg,2.0", "nowhere.jpg,3.0", "0001.jpg,n/a"]
    (data / "mos.csv").write_text("\n".join(lines) + "\n")
    out = root / "out"
    argv = [str(data), "--model", "piqe,mean_brightness", "--out", str(out), "--bootstrap", "40", "--device", "cpu",
            "--cache", str(root / "cache"), "--no-progress-bars"]
    import contextlib
    import io

    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = job_main("eval", argv)
    return out, code, stdout.getvalue()


def test_csv_dataset_counts_bad_rows_and_unreadable_images(csv_run):
    out, code, stdout = csv_run
    assert code == 0
    results = _results(out)
    assert results["dataset"]["skipped_by_reason"] == {"bad_score": 1, "missing_file": 1}
    piqe = results["metrics"]["piqe"]
    assert piqe["lower_better"] and piqe["n_scored"] == 12 and piqe["failures_by_reason"] == {"truncated": 1}
    assert "| metric | n | SRCC [95% CI] |" in stdout and "| piqe (lower better) | 12 |" in stdout
    assert (out / "results.md").read_text() in stdout
    table = pq.read_table(out / "scores.parquet").to_pydict()
    assert len(table["id"]) == 13 and table["score_piqe"][table["id"].index("cut.jpg")] is None


def test_html_report_renders_in_a_real_browser(csv_run, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no Chromium here (apt-get install -y chromium) to render the page")
    import numpy as np
    from PIL import Image

    page = (csv_run[0] / "report.html").as_uri()
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,1400"]
    dom = subprocess.run([*flags, "--dump-dom", page], capture_output=True, text=True, timeout=120).stdout
    assert dom.count('class="bar"') == 2 and dom.count('class="scatter"') == 2 and dom.count("<circle") == 2 * 12
    shot = tmp_path / "report.png"
    subprocess.run([*flags, f"--screenshot={shot}", page], capture_output=True, timeout=120, check=True)
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3)
    for colour in ((0x00, 0x72, 0xB2), (0xE6, 0x9F, 0x00)):  # the first two metrics' bars and legend
        assert int((pixels == colour).all(axis=1).sum()) > 200


def test_dataset_on_s3_with_cache_and_results_on_s3(ray_local, s3, photos):
    s3.mkdir("rated")
    images = good_images(photos, 6, seed=3)
    lines = ["path,mos"]
    for index, (name, payload) in enumerate(sorted(images.items())):
        s3.pipe(f"rated/set/{Path(name).name}", payload)
        lines.append(f"{Path(name).name},{index}")
    s3.pipe("rated/set/mos.csv", ("\n".join(lines) + "\n").encode())
    argv = ["s3://rated/set/", "--model", "mean_brightness", "--out", "s3://rated/results/", "--cache",
            "s3://rated/cache/", "--bootstrap", "0", "--device", "cpu", "--no-progress-bars"]
    assert job_main("eval", argv) == 0
    results = json.loads(s3.cat_file("rated/results/results.json"))
    assert results["metrics"]["mean_brightness"]["n_scored"] == 6
    assert s3.glob("rated/cache/mean_brightness/baseline-v1/native-min32-px89478485/part-*.parquet")
    assert s3.exists("rated/results/report.html") and s3.exists("rated/results/scores.parquet")


def _small_dataset(root: Path, photos, *, truncated: bool = False) -> Path:
    data = root / "data"
    data.mkdir()
    lines = ["path,mos"]
    for index, (name, payload) in enumerate(sorted(good_images(photos, 4, seed=5).items())):
        (data / Path(name).name).write_bytes(payload)
        lines.append(f"{Path(name).name},{index}")
    if truncated:
        whole = (data / lines[1].split(",")[0]).read_bytes()
        (data / "cut.jpg").write_bytes(whole[: len(whole) // 2])
        lines.append("cut.jpg,2.0")
    (data / "mos.csv").write_text("\n".join(lines) + "\n")
    return data


def test_cache_is_keyed_by_resolution_and_decode_limits_not_by_settings_that_do_not_change_scores(
        ray_local, photos, tmp_path):
    data = _small_dataset(tmp_path, photos)
    out = tmp_path / "out"
    base = [str(data), "--model", "mean_brightness", "--out", str(out), "--cache", str(tmp_path / "cache"),
            "--bootstrap", "0", "--device", "cpu", "--no-progress-bars"]

    def scored(*extra: str) -> tuple[int, int]:
        assert job_main("eval", [*base, *extra]) == 0
        metric = _results(out)["metrics"]["mean_brightness"]
        return metric["n_scored_now"], metric["n_cached"]

    assert scored() == (4, 0)
    assert scored("--resolution", "short:32") == (4, 0)  # another resolution: scored again, not the old scores
    assert scored("--resolution", "short:32") == (0, 4)  # the same settings: all cached
    assert scored() == (0, 4)  # native is still cached beside it
    assert scored("--max-pixels", "100") == (4, 0)  # another decode limit changes which rows fail
    assert _results(out)["metrics"]["mean_brightness"]["failures_by_reason"] == {"too_many_pixels": 4}
    assert scored("--dtype", "bf16", "--block-size", "2") == (0, 4)  # baselines ignore dtype; block size is no key

    from ray_jobs.eval.config import EvalJobConfig
    from ray_jobs.eval.scoring import settings_key

    config = EvalJobConfig(synthetic=True)
    fp32, bf16 = (settings_key(EvalJobConfig(synthetic=True, dtype=d).score_config("qualiclip", "-"), "plugin")
                  for d in ("fp32", "bf16"))
    assert fp32 != bf16 and "bf16" in bf16  # a plugin metric's precision changes its scores: another folder
    assert settings_key(config.score_config("qualiclip", "-"), "plugin") == fp32


def test_cached_transient_errors_are_scored_again_and_final_errors_are_not(ray_local, photos, tmp_path):
    import pyarrow as pa

    data = _small_dataset(tmp_path, photos, truncated=True)
    out = tmp_path / "out"
    argv = [str(data), "--model", "mean_brightness", "--out", str(out), "--cache", str(tmp_path / "cache"),
            "--bootstrap", "0", "--device", "cpu", "--no-progress-bars"]
    assert job_main("eval", argv) == 0
    first = _results(out)["metrics"]["mean_brightness"]
    assert first["n_scored_now"] == 5 and first["failures_by_reason"] == {"truncated": 1}
    scores = pq.read_table(out / "scores.parquet").column("score_mean_brightness").to_pylist()
    parts = sorted(Path(first["cache"]).glob("part-*.parquet"))
    rows = [row for part in parts for row in pq.read_table(part).to_pylist()]
    assert len(rows) == 5
    for part in parts:  # one good row becomes a transient fetch failure, as if the store had failed
        table = pq.read_table(part)
        rows = table.to_pylist()
        for row in rows:
            if row["error"] is None:
                row["score"], row["error"] = None, "fetch_error"
                pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), part)
                break
        else:
            continue
        break
    assert job_main("eval", argv) == 0
    second = _results(out)["metrics"]["mean_brightness"]
    assert (second["n_scored_now"], second["n_cached"]) == (1, 4)  # the truncated row stays final
    assert second["failures_by_reason"] == {"truncated": 1}
    assert pq.read_table(out / "scores.parquet").column("score_mean_brightness").to_pylist() == scores
    assert sum(pq.read_table(p).num_rows for p in Path(first["cache"]).glob("part-*.parquet")) == 5
    assert job_main("eval", argv) == 0
    assert _results(out)["metrics"]["mean_brightness"]["n_scored_now"] == 0


@pytest.mark.parametrize(("argv", "message"), [
    (["--synthetic", "--model", "psnrr"], "no such metric. Did you mean psnr"),
    (["{data}", "--model", "psnr"], "full-reference metric, but the dataset has no reference images"),
    ([], "give exactly one of DATASET or --synthetic"),
    (["{data}", "--weights", "qualiclip"], "expected NAME=PATH"),
    (["{data}", "--model", "piqe", "--weights", "qualiclip=x.pth"], "not among --model piqe"),
])
def test_user_errors_are_one_line_and_start_nothing(argv, message, tmp_path, photos, capsys):
    shutil.copy(photos[0], tmp_path / "a.png")
    (tmp_path / "mos.csv").write_text("path,mos\na.png,1\n")
    argv = [a.replace("{data}", str(tmp_path)) for a in argv] + ["--out", str(tmp_path / "out")]
    assert job_main("eval", argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith("iqa eval: error:")
    assert not (tmp_path / "out").exists()
