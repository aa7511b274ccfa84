"""The HTML report of a score job: counts, thumbnails, error table, self-contained, renders in Chromium."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from ray_jobs.report import write_report

SCHEMA = pa.schema([
    ("id", pa.string()), ("uri", pa.string()), ("bytes", pa.int64()), ("width", pa.int32()),
    ("height", pa.int32()), ("model", pa.string()), ("weights_sha256", pa.string()), ("score", pa.float64()),
    ("error", pa.string()),
])
SHA = "3f1c2a9be0d4477e8a65f0c1d2e3b4a5968778695a4b3c2d1e0f0a1b2c3d4e5f"
ERRORS = {"truncated": 3, "not_an_image": 2, "missing": 1, "empty": 1, "too_many_pixels": 1}
VARIANTS = {  # degradation -> score penalty, so the fake scores look like a real quality ranking
    "original": 0.0, "blur": 0.25, "dark": 0.35, "noisy": 0.45,
}


def _variant(image: Image.Image, kind: str, seed: int) -> Image.Image:
    if kind == "blur":
        return image.filter(ImageFilter.GaussianBlur(4))
    if kind == "dark":
        return ImageEnhance.Brightness(image).enhance(0.35)
    if kind == "noisy":
        noise = Image.effect_noise(image.size, 90).convert("RGB")
        return Image.blend(image, noise, 0.45)
    return image


def make_collection(photos: list[Path], root: Path) -> list[dict]:
    """Write 8 photos x 4 variants as JPEGs under ``root`` plus broken files; return the score rows."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for p, photo in enumerate(photos[:8]):
        with Image.open(photo) as image:
            base = image.convert("RGB")
            base.thumbnail((480, 480))
        for v, (kind, penalty) in enumerate(VARIANTS.items()):
            path = root / kind / f"{photo.stem}.jpg"
            path.parent.mkdir(exist_ok=True)
            _variant(base, kind, seed=p).save(path, quality=88)
            score = round(0.86 - penalty - 0.031 * p + 0.004 * v, 6)
            rows.append(dict(id=f"{kind}/{photo.stem}", uri=str(path), bytes=path.stat().st_size,
                             width=base.width, height=base.height, score=score, error=None))
    for reason, count in ERRORS.items():
        for i in range(count):
            path = root / "broken" / f"{reason}-{i}.jpg"
            path.parent.mkdir(exist_ok=True)
            if reason != "missing":
                path.write_bytes(b"" if reason == "empty" else b"\xff\xd8\xff\xe0 not really a jpeg")
            rows.append(dict(id=f"broken/{reason}-{i}", uri=str(path), bytes=None, width=None, height=None,
                             score=None, error=reason))
    for row in rows:
        row.update(model="qualiclip", weights_sha256=SHA)
    return rows


def write_output(fs, dst: str, rows: list[dict], *, n_parts: int = 3, n_inputs: int | None = None) -> None:
    """Write ``rows`` as ``dst/part-*.parquet`` and a ``dst/_iqa/job.json`` like the score job's."""
    fs.makedirs(dst, exist_ok=True)
    for i in range(n_parts):
        part = pa.Table.from_pylist(rows[i::n_parts], schema=SCHEMA)
        pq.write_table(part, f"{dst}/part-{i:05d}.parquet", filesystem=fs)
    errors: dict[str, int] = {}
    for row in rows:
        if row["error"]:
            errors[row["error"]] = errors.get(row["error"], 0) + 1
    job = dict(model="qualiclip", weights_sha256=SHA, n_inputs=n_inputs or len(rows),
               n_scored=sum(r["error"] is None for r in rows), errors_by_reason=errors, images_per_s=123.4,
               elapsed_s=75.5, started="2026-11-26T10:00:00Z", finished="2026-11-26T10:01:15Z",
               config=dict(src="/data/photos", resolution="native", batch_size=32, aws_secret_access_key="x"))
    fs.makedirs(f"{dst}/_iqa", exist_ok=True)
    with fs.open(f"{dst}/_iqa/job.json", "wb") as handle:
        handle.write(json.dumps(job).encode())


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.elements: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))


def _parse(page: str) -> list[tuple[str, dict]]:
    parser = _Collect()
    parser.feed(page)
    return parser.elements


@pytest.fixture
def local_output(photos, tmp_path):
    from fsspec.implementations.local import LocalFileSystem

    rows = make_collection(photos, tmp_path / "photos")
    dst = str(tmp_path / "scores")
    write_output(LocalFileSystem(), dst, rows)
    return dst, rows


def test_report_shows_counts_thumbnails_and_errors(local_output):
    dst, rows = local_output
    written = write_report(dst)
    assert written == str(Path(dst) / "_iqa" / "report.html")
    page = Path(written).read_text()
    elements = _parse(page)
    counts = {a["data-count"]: a["data-value"] for _, a in elements if "data-value" in a}
    assert counts["inputs"] == "40" and counts["scored"] == "32" and counts["errors"] == "8"
    assert float(counts["images_per_s"]) == pytest.approx(123.4)
    images = [a["src"] for tag, a in elements if tag == "img"]
    assert len(images) == 24 and all(src.startswith("data:image/jpeg;base64,") for src in images)
    with Image.open(io.BytesIO(base64.b64decode(images[0].split(",", 1)[1]))) as thumb:
        assert max(thumb.size) == 160
    top = [a for tag, a in elements if tag == "figure" and a.get("data-group") == "top"]
    bottom = [a for tag, a in elements if tag == "figure" and a.get("data-group") == "bottom"]
    scored = sorted((r for r in rows if r["error"] is None), key=lambda r: (-r["score"], r["id"]))
    assert [a["data-id"] for a in top] == [r["id"] for r in scored[:12]]
    assert [a["data-id"] for a in bottom] == [r["id"] for r in scored[::-1][:12]]
    error_rows = {a["data-reason"]: int(a["data-count"]) for tag, a in elements if tag == "tr" and "data-reason" in a}
    assert error_rows == ERRORS
    bins = [int(a["data-count"]) for tag, a in elements if tag == "rect" and a.get("class") == "bin"]
    assert sum(bins) == 32
    assert SHA in page and "qualiclip" in page
    stats = {a["data-stat"] for _, a in elements if "data-stat" in a}
    assert {"min", "median", "mean", "max"} <= stats
    assert not re.search(r"https?://|<script|<link|@import|url\(", page, re.IGNORECASE)
    assert ">&quot;x&quot;<" not in page and "***" in page  # secrets in the config are masked


def test_report_caps_groups_and_survives_unreadable_images(photos, tmp_path):
    from fsspec.implementations.local import LocalFileSystem

    rows = make_collection(photos, tmp_path / "photos")[:5]
    Path(rows[0]["uri"]).unlink()  # the best image vanished after scoring: a placeholder, not a crash
    dst = str(tmp_path / "scores")
    write_output(LocalFileSystem(), dst, rows, n_parts=2, n_inputs=9)
    page = Path(write_report(dst, thumbnails=3)).read_text()
    elements = _parse(page)
    groups = [a["data-group"] for tag, a in elements if tag == "figure"]
    assert groups == ["top"] * 3 + ["bottom"] * 2  # 5 images: nothing is shown twice
    assert len([1 for tag, _ in elements if tag == "img"]) == 4
    assert "not readable" in page and "the job may be unfinished" in page


def test_report_without_part_files_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no score files"):
        write_report(str(tmp_path))


def test_report_on_s3(photos, tmp_path, s3):
    rows = make_collection(photos, tmp_path / "photos")
    s3.mkdir("bucket")
    for row in rows:
        if Path(row["uri"]).exists():
            key = "bucket/photos/" + Path(row["uri"]).relative_to(tmp_path / "photos").as_posix()
            s3.put_file(row["uri"], key)
            row["uri"] = f"s3://{key}"
    write_output(s3, "bucket/scores", rows)
    written = write_report("s3://bucket/scores/", thumbnails=4)
    assert written == "s3://bucket/scores/_iqa/report.html"
    s3.invalidate_cache()
    page = s3.cat_file("bucket/scores/_iqa/report.html").decode()
    assert len([1 for tag, _ in _parse(page) if tag == "img"]) == 8


@pytest.mark.slow
def test_report_renders_in_headless_chromium(local_output, tmp_path):
    chromium = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if chromium is None:
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    report = Path(write_report(local_output[0]))
    png = tmp_path / "report.png"
    command = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}",
        "--window-size=1280,1800", report.as_uri(),
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    assert png.exists() and png.stat().st_size > 10_000
    with Image.open(png) as shot:
        assert shot.size == (1280, 1800)
        rgb = shot.convert("RGB")
        colours = rgb.getcolors(maxcolors=1_000_000)
        assert colours is not None and len(colours) > 1000  # text, SVG bars and photos, not a blank page
        header = rgb.crop((0, 0, 1280, 200)).convert("L").getextrema()
        assert header[0] < 80  # dark heading text is drawn at the top


def test_report_of_a_demo_run_shows_the_pair_ranking_the_command_prints(tmp_path, local_output):
    from fsspec.implementations.local import LocalFileSystem

    from ray_jobs.score.demo import DEGRADATIONS, MARKER, ranking_sentence

    photos = tmp_path / "iqa-demo" / "photos"
    photos.mkdir(parents=True)
    (photos / MARKER).write_text("built by iqa score --demo\n")
    rows = []
    for stem in ("astronaut", "coffee", "rocket"):
        rows.append(dict(id=f"{stem}.jpg", score=0.6))
        for k, kind in enumerate(DEGRADATIONS):  # rocket's blur and noise copies beat it: 13 of 15 pairs won
            rows.append(dict(id=f"{stem}-{kind}.jpg", score=0.7 if stem == "rocket" and k < 2 else 0.5 - 0.01 * k))
    rows.append(dict(id="broken-empty.jpg", score=None, error="empty"))
    for row in rows:
        row.update(uri=str(photos / row["id"]), bytes=None, width=None, height=None, model="qualiclip-demo-tiny",
                   weights_sha256=SHA, error=row.get("error"))
    dst = str(tmp_path / "iqa-demo" / "scores")
    write_output(LocalFileSystem(), dst, rows, n_parts=2)
    job_path = Path(dst) / "_iqa" / "job.json"
    job = json.loads(job_path.read_text())
    job["config"]["src"] = str(photos)
    job_path.write_text(json.dumps(job))
    page = Path(write_report(dst)).read_text()
    demo = [a for tag, a in _parse(page) if tag == "div" and a.get("class") == "demo"]
    assert [(a["data-demo-wins"], a["data-demo-pairs"]) for a in demo] == [("13", "15")]
    assert ranking_sentence(13, 15) in page  # the very sentence `iqa score --demo` prints

    other = Path(write_report(local_output[0])).read_text()  # not a demo folder: no ranking
    assert 'class="demo"' not in other
