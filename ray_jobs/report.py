"""One self-contained HTML report of a score job's output: ``write_report(DST)`` -> ``DST/_iqa/report.html``.

Reads ``DST/part-*.parquet`` and the run record ``DST/_iqa/job.json`` (``DST/_job.json`` of older
versions) through pyarrow + fsspec (no Ray) and writes a single
file a person can open anywhere: CSS inline, the score histogram drawn as inline SVG, the top and bottom
images as inline base64 JPEG thumbnails, error counts by reason, throughput, model and weights hash.
No scripts, no external URLs. Counts carry ``data-count`` attributes so tests (and scripts) can read them.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import math
import posixpath
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from ray_jobs.cli import job_main
from ray_jobs.config import JobConfig, cli
from ray_jobs.curate import read_scores
from ray_jobs.errors import UserError
from ray_jobs.io import META_DIR
from ray_jobs.runtime import SECRET_NAME, filesystem_for, join_uri

THUMB_PX = 160
REPORT_NAME = "report.html"

CSS = """
*{box-sizing:border-box}body{margin:0;background:#f5f6f8;color:#1d2330;
font:15px/1.5 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1180px;margin:0 auto;padding:28px 32px 48px}
header h1{margin:0;font-size:26px;font-weight:650;letter-spacing:-.01em}
header .where{color:#5b6475;margin-top:2px;word-break:break-all}
.model{margin-top:14px;display:flex;flex-wrap:wrap;gap:8px 20px;align-items:baseline}
.model b{font-size:17px}.sha{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;
color:#5b6475;word-break:break-all}
.warn{margin-top:16px;padding:10px 14px;border-radius:8px;background:#fff4e5;border:1px solid #f3c98b}
.demo{margin-top:16px;padding:10px 14px;border-radius:8px;background:#ecfdf3;border:1px solid #abefc6}
.cards{display:grid;grid-template-columns:repeat(5,1fr);gap:14px;margin:22px 0}
.card,.panel{background:#fff;border:1px solid #e3e6ec;border-radius:12px;box-shadow:0 1px 2px rgba(16,24,40,.04)}
.card{padding:14px 16px}.card .label{color:#5b6475;font-size:13px;text-transform:uppercase;letter-spacing:.04em}
.card .value{font-size:28px;font-weight:650;margin-top:2px;font-variant-numeric:tabular-nums}
.card .sub{color:#5b6475;font-size:13px}.card.bad .value{color:#b42318}.card.good .value{color:#067647}
.panel{padding:18px 20px;margin-top:18px}.panel h2{margin:0 0 12px;font-size:17px;font-weight:650}
.panel h2 small{font-weight:400;color:#5b6475;font-size:13px;margin-left:8px}
.row{display:grid;grid-template-columns:2fr 1fr;gap:18px}.row .panel{margin-top:0}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{text-align:left;padding:7px 10px;border-bottom:1px solid #eef0f4;vertical-align:top}
th{color:#5b6475;font-weight:600;font-size:13px}td.num,th.num{text-align:right;white-space:nowrap}
code{font:13px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#f1f3f7;padding:1px 5px;
border-radius:4px}.muted{color:#5b6475}.share{display:inline-block;height:8px;border-radius:4px;
background:#f04438;vertical-align:middle;margin-right:8px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(158px,1fr));gap:14px}
figure{margin:0;background:#fafbfc;border:1px solid #eef0f4;border-radius:10px;padding:8px;overflow:hidden}
figure .frame{height:160px;display:flex;align-items:center;justify-content:center;background:#eef0f4;
border-radius:6px;overflow:hidden;gap:4px}figure img{max-width:100%;max-height:160px;display:block}
figure:has(img.heat) img{max-width:50%}
figcaption{margin-top:6px;font-size:13px}figcaption .score{font-weight:650;font-size:15px}
figcaption .rank{float:right;color:#5b6475}figcaption .id{display:block;color:#5b6475;white-space:nowrap;
overflow:hidden;text-overflow:ellipsis}.none{color:#5b6475;font-size:13px;padding:50px 8px;text-align:center}
svg text{font:12px -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,Arial,sans-serif;fill:#5b6475}
details summary{cursor:pointer;color:#5b6475}footer{margin-top:26px;color:#8a93a5;font-size:12px}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt_int(n: int) -> str:
    return f"{n:,}"


def _fmt_score(x: float | None, digits: int = 4) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def score_digits(scores: np.ndarray) -> int:
    """Decimals that tell the scores apart: 4, or more when they all sit in a narrow range."""
    spread = float(scores.max() - scores.min()) if scores.size else 0.0
    return 4 if spread <= 0 else int(min(8, max(4, math.ceil(-math.log10(spread)) + 2)))


def _fmt_time(value: Any) -> str:
    try:
        moment = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    return moment.strftime("%Y-%m-%d %H:%M:%S") + (" UTC" if moment.utcoffset() == dt.timedelta(0) else "")


def _fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    minutes, seconds = divmod(float(s), 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {seconds:04.1f}s" if minutes else f"{seconds:.1f}s"


def read_job_summary(dst: str) -> dict[str, Any]:
    """The run record ``DST/_iqa/job.json`` (or an older version's ``DST/_job.json``) as a dict, or ``{}``
    when the job did not write one (yet)."""
    fs, root = filesystem_for(dst)
    for path in (posixpath.join(root.rstrip("/"), META_DIR, "job.json"), posixpath.join(root.rstrip("/"), "_job.json")):
        if fs.exists(path):
            with fs.open(path, "rb") as handle:
                return json.loads(handle.read().decode("utf-8"))
    return {}


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering [low, high] (1, 2, 2.5, 5 x 10^k steps)."""
    span = (high - low) or 1.0
    raw = span / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step - 1e-9) * step
    ticks, value = [], first
    while value <= high + 1e-9 * span:
        ticks.append(round(value, 10))
        value += step
    return ticks


def histogram_svg(scores: np.ndarray, width: int = 700, height: int = 260, digits: int = 3) -> str:
    """The score histogram as an inline ``<svg>`` with axes, median and mean markers, one ``<rect>`` a bin."""
    if scores.size == 0:
        return '<p class="none">No scored images.</p>'
    low, high = float(scores.min()), float(scores.max())
    if high - low < 1e-12:
        low, high = low - 0.5, high + 0.5
    ticks = nice_ticks(low, high, 10)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else (high - low)
    low, high = math.floor(low / step + 1e-9) * step, math.ceil(high / step - 1e-9) * step  # round axis ends
    bins = int(min(40, max(8, math.ceil(math.sqrt(scores.size)))))
    counts, edges = np.histogram(scores, bins=bins, range=(low, high))
    left, right, top, bottom = 48, 28, 30, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    y_ticks = nice_ticks(0, float(counts.max()), 4)
    y_max = max(float(counts.max()), y_ticks[-1] if y_ticks else 1.0) or 1.0

    def x_of(v: float) -> float:
        return left + (v - low) / (high - low) * plot_w

    def y_of(c: float) -> float:
        return top + plot_h - c / y_max * plot_h

    out = [f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="score histogram">']
    for tick in y_ticks:
        y = y_of(tick)
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eef0f4"/>')
        out.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{tick:g}</text>')
    bar_w = plot_w / bins
    for i, count in enumerate(counts):
        x, y = left + i * bar_w, y_of(float(count))
        out.append(
            f'<rect class="bin" data-count="{int(count)}" x="{x + 0.5:.1f}" y="{y:.1f}" '
            f'width="{max(bar_w - 1.5, 1):.1f}" height="{top + plot_h - y:.1f}" rx="2" fill="#4e79d6">'
            f"<title>{edges[i]:.{digits}f} to {edges[i + 1]:.{digits}f}: {int(count)} images</title></rect>"
        )
    axis_y = top + plot_h
    out.append(f'<line x1="{left}" x2="{width - right}" y1="{axis_y}" y2="{axis_y}" stroke="#98a2b3"/>')
    for tick in nice_ticks(low, high, 6):
        x = x_of(tick)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{axis_y}" y2="{axis_y + 5}" stroke="#98a2b3"/>')
        out.append(f'<text x="{x:.1f}" y="{axis_y + 19}" text-anchor="middle">{tick:g}</text>')
    markers = (("median", float(np.median(scores)), "#d92d20"), ("mean", float(scores.mean()), "#0e9384"))
    for i, (name, value, color) in enumerate(markers):
        x, legend_x = x_of(value), width - right - 250 + 130 * i
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{axis_y}" stroke="{color}" '
            f'stroke-width="1.8" stroke-dasharray="5 4"/>'
            f'<line x1="{legend_x}" x2="{legend_x + 22}" y1="10" y2="10" stroke="{color}" stroke-width="1.8" '
            f'stroke-dasharray="5 4"/><text x="{legend_x + 28}" y="14">{name} {value:.{digits}f}</text>'
        )
    out.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 2}" text-anchor="middle">score</text>')
    out.append("</svg>")
    return "".join(out)


def _thumbnail(uri: str) -> str | None:
    """A ~160 px JPEG of the image at ``uri`` as a data URI, or None when it cannot be read."""
    from PIL import Image, ImageOps

    try:
        if uri.startswith("hf-row:"):  # a Hugging Face dataset row: its image cell
            from ray_jobs.score.stages import fetch_bytes

            data = fetch_bytes(uri)
        else:
            fs, path = filesystem_for(uri)
            with fs.open(path, "rb") as handle:
                data = handle.read()
        with Image.open(io.BytesIO(data)) as opened:
            opened.draft("RGB", (THUMB_PX * 2, THUMB_PX * 2))  # JPEG: decode at reduced scale, much faster
            image: Image.Image = ImageOps.exif_transpose(opened)
            image.thumbnail((THUMB_PX, THUMB_PX))
            if image.mode != "RGB":
                background = Image.new("RGB", image.size, (255, 255, 255))
                rgba = image.convert("RGBA")
                background.paste(rgba, mask=rgba.getchannel("A"))
                image = background
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=82)
    except Exception:  # noqa: BLE001 - a thumbnail is decoration; the report must still be written
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _gallery(rows: list[dict[str, Any]], thumbs: list[str | None], which: str, digits: int,
             heats: list[str | None] | None = None) -> str:
    if not rows:
        return '<p class="none">No images in this group.</p>'
    cells = []
    for row, thumb, heat in zip(rows, thumbs, heats or [None] * len(rows), strict=True):
        size = f" · {row['width']}×{row['height']}" if row.get("width") and row.get("height") else ""
        picture = (
            f'<img src="{thumb}" alt="{_esc(row["id"])}" loading="lazy">'
            if thumb else '<span class="none">not readable</span>'
        )
        if heat:  # SFD-IQA: Feat-D's real-probability map (blue real, red generated)
            picture += f'<img class="heat" src="{heat}" alt="Feat-D map of {_esc(row["id"])}" loading="lazy">'

        cells.append(
            f'<figure class="thumb" data-group="{which}" data-id="{_esc(row["id"])}" '
            f'data-score="{row["score"]!r}" title="{_esc(row["uri"])}">'
            f'<div class="frame">{picture}</div><figcaption><span class="rank">#{row["rank"]}{size}</span>'
            f'<span class="score">{_fmt_score(row["score"], digits)}</span>'
            f'<span class="id">{_esc(row["id"])}</span></figcaption></figure>'
        )
    return f'<div class="grid" id="{which}-grid">{"".join(cells)}</div>'


def _error_table(table, n_rows: int) -> str:
    import pyarrow.compute as pc

    from iqa_plugin.data.reasons import describe

    errors = table.filter(pc.is_valid(table["error"]))
    if errors.num_rows == 0:
        return '<p class="muted">No errors: every input was scored.</p>'
    counts = sorted(
        ((r["values"], r["counts"]) for r in pc.value_counts(errors["error"]).to_pylist()),
        key=lambda rc: (-rc[1], rc[0]),
    )
    by_reason: dict[str, list[str]] = {}
    for rid, reason in zip(errors["id"].to_pylist(), errors["error"].to_pylist(), strict=True):
        if len(by_reason.setdefault(reason, [])) < 3:
            by_reason[reason].append(rid)
    rows, most = [], counts[0][1]
    for reason, count in counts:
        share = count / max(n_rows, 1)
        examples = ", ".join(f"<code>{_esc(i)}</code>" for i in sorted(by_reason.get(reason, [])))
        rows.append(
            f'<tr class="error-row" data-reason="{_esc(reason)}" data-count="{count}">'
            f"<td><code>{_esc(reason)}</code></td><td>{_esc(describe(reason))}</td>"
            f'<td class="num">{_fmt_int(count)}</td><td class="num"><span class="share" '
            f'style="width:{max(3, round(count / most * 64))}px"></span>{share:.1%}</td><td>{examples}</td></tr>'
        )
    head = '<tr><th>reason</th><th>meaning</th><th class="num">count</th><th class="num">share</th><th>examples</th></tr>'
    return f'<table id="errors">{head}{"".join(rows)}</table>'


def _config_table(config: dict[str, Any]) -> str:
    if not config:
        return '<p class="muted">Not recorded.</p>'
    rows = "".join(
        f"<tr><th>{_esc(k)}</th><td><code>{'***' if SECRET_NAME.search(k) else _esc(json.dumps(v))}</code></td></tr>"
        for k, v in sorted(config.items())
    )
    return f"<table>{rows}</table>"


def _card(label: str, key: str, value: str, raw: Any, sub: str = "", tone: str = "") -> str:
    return (
        f'<div class="card {tone}"><div class="label">{_esc(label)}</div>'
        f'<div class="value" data-count="{key}" data-value="{_esc(raw)}">{_esc(value)}</div>'
        f'<div class="sub">{_esc(sub) or "&nbsp;"}</div></div>'
    )


def _demo_ranking(job: dict[str, Any], ids: list[str], scores: np.ndarray) -> str:
    """For an ``iqa score --demo`` run (its SRC is a demo folder): the sentence the command prints, how
    often each photo scored above its own degraded copy, as a block of the page; ``""`` for any other run."""
    from ray_jobs.score.demo import is_demo_folder, pair_ranking, ranking_sentence

    src = (job.get("config") or {}).get("src")
    if not isinstance(src, str) or not is_demo_folder(src):
        return ""
    wins, pairs = pair_ranking(dict(zip(ids, scores.tolist(), strict=True)))
    if not pairs:
        return ""
    sentence = ranking_sentence(wins, pairs)
    return f'<div class="demo" data-demo-wins="{wins}" data-demo-pairs="{pairs}">Demo: {_esc(sentence)}.</div>'


def build_report(dst: str, *, thumbnails: int = 12, heatmaps: bool = True) -> str:
    """The report HTML for the score job output ``dst`` (see ``write_report``)."""
    import pyarrow.compute as pc

    if thumbnails < 0:
        raise UserError(f"thumbnails must be >= 0 (images shown at each end), got {thumbnails}")
    table = read_scores(
        dst, ("id", "uri", "model", "weights_sha256", "score", "error"), optional=("width", "height")
    )
    job = read_job_summary(dst)
    n_rows = table.num_rows
    n_errors = int(pc.sum(pc.is_valid(table["error"])).as_py() or 0)
    scored = table.filter(pc.fill_null(pc.and_(pc.is_null(table["error"]), pc.is_finite(table["score"])), False))
    scored = scored.take(pc.sort_indices(scored, sort_keys=[("score", "descending"), ("id", "ascending")]))
    n_scored = scored.num_rows
    scores = scored["score"].to_numpy(zero_copy_only=False).astype(np.float64)
    n_inputs = int(job.get("n_inputs", n_rows))
    digits = score_digits(scores)
    n_top = min(thumbnails, n_scored)
    n_bottom = min(thumbnails, n_scored - n_top)
    columns = ["id", "uri", "score", "width", "height"]
    top = scored.slice(0, n_top).select(columns).to_pylist()
    bottom = scored.slice(n_scored - n_bottom, n_bottom).select(columns).to_pylist()[::-1]
    for rank, row in enumerate(top, 1):
        row["rank"] = rank
    for offset, row in enumerate(bottom):
        row["rank"] = n_scored - offset
    with ThreadPoolExecutor(max_workers=8) as pool:
        thumbs = list(pool.map(_thumbnail, [r["uri"] for r in top + bottom]))

    models = sorted(set(table["model"].drop_null().to_pylist()) or {job.get("model", "unknown")})
    shas = sorted(set(table["weights_sha256"].drop_null().to_pylist()) or {job.get("weights_sha256", "-")})
    heats = None
    if heatmaps:
        from ray_jobs.report_heatmap import heat_thumbnails

        heats = heat_thumbnails(models, shas, [r["uri"] for r in top + bottom], THUMB_PX)
    heat_html = ""
    if heats:
        from ray_jobs.report_heatmap import heat_caption

        heat_html = f'<p class="heat-note">{_esc(heat_caption(models))}</p>'
    rate, elapsed = job.get("images_per_s"), job.get("elapsed_s")
    warnings = []
    if n_inputs != n_rows:
        warnings.append(
            f"The run record lists {_fmt_int(n_inputs)} inputs but the Parquet holds {_fmt_int(n_rows)} rows: "
            "the job may be unfinished; rerun the same `iqa score` command to complete it."
        )
    if not job:
        warnings.append("No run record (_iqa/job.json) found: throughput and run details are not available.")
    stats = [("min", scores.min() if n_scored else None), ("p10", np.percentile(scores, 10) if n_scored else None),
             ("median", np.median(scores) if n_scored else None), ("mean", scores.mean() if n_scored else None),
             ("p90", np.percentile(scores, 90) if n_scored else None), ("max", scores.max() if n_scored else None),
             ("std", scores.std() if n_scored else None)]
    stats_rows = "".join(
        f'<tr><th>{name}</th><td class="num" data-stat="{name}">{_fmt_score(None if v is None else float(v), digits)}</td></tr>'
        for name, v in stats
    )
    pct = f"{n_errors / n_rows:.1%} of rows" if n_rows else ""
    cards = "".join([
        _card("Inputs", "inputs", _fmt_int(n_inputs), n_inputs, f"{_fmt_int(n_rows)} row{'s' if n_rows != 1 else ''} written"),
        _card("Scored", "scored", _fmt_int(n_scored), n_scored, f"{n_scored / n_rows:.1%} of rows" if n_rows else "",
              "good"),
        _card("Errors", "errors", _fmt_int(n_errors), n_errors, pct, "bad" if n_errors else ""),
        _card("Throughput", "images_per_s", "-" if rate is None else f"{rate:,.1f}", rate, "images / s"),
        _card("Elapsed", "elapsed_s", _fmt_seconds(elapsed), elapsed, "wall clock"),
    ])
    demo_html = _demo_ranking(job, scored["id"].to_pylist(), scores)
    sha_html = "<br>".join(f'<span class="sha" data-sha256="{_esc(s)}">sha256 {_esc(s)}</span>' for s in shas)
    warn_html = "".join(f'<div class="warn">{_esc(w)}</div>' for w in warnings)
    when = " → ".join(_esc(_fmt_time(job[k])) for k in ("started", "finished") if job.get(k))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>IQA report · {_esc(", ".join(models))} · {_fmt_int(n_scored)} images</title><style>{CSS}</style></head>
<body><main>
<header><h1>Image quality report</h1><div class="where">{_esc(dst)}</div>
<div class="model"><span>model <b data-model="{_esc(", ".join(models))}">{_esc(", ".join(models))}</b></span>
<span>{sha_html}</span></div></header>{warn_html}{demo_html}
<section class="cards">{cards}</section>
<div class="row"><section class="panel"><h2>Score distribution<small>{_fmt_int(n_scored)} scored images</small></h2>
{histogram_svg(scores, digits=digits)}</section>
<section class="panel"><h2>Summary</h2><table id="stats">{stats_rows}</table></section></div>
<section class="panel" id="top"><h2>Highest scores<small>top {n_top} of {_fmt_int(n_scored)}</small></h2>{heat_html}
{_gallery(top, thumbs[:n_top], "top", digits, heats and heats[:n_top])}</section>
<section class="panel" id="bottom"><h2>Lowest scores<small>bottom {n_bottom}, lowest first</small></h2>
{_gallery(bottom, thumbs[n_top:], "bottom", digits, heats and heats[n_top:])}</section>
<section class="panel"><h2>Errors by reason<small>{_fmt_int(n_errors)} inputs not scored</small></h2>
{_error_table(table, n_rows)}</section>
<section class="panel"><h2>Run</h2><table>
<tr><th>period</th><td>{when or "-"}</td></tr>
<tr><th>throughput</th><td>{"-" if rate is None else f"{rate:,.1f} images/s"} over {_fmt_seconds(elapsed)}</td></tr>
</table><details><summary>job configuration</summary>{_config_table(job.get("config") or {})}</details></section>
<footer>Written by iqa-plugin from {_esc(dst)} (part-*.parquet, _iqa/job.json). Self-contained: no scripts, no
external resources.</footer>
</main></body></html>
"""


def write_report(dst: str, *, thumbnails: int = 12, heatmaps: bool = True) -> str:
    """Write the self-contained HTML report of the score job output ``dst`` to ``dst/_iqa/report.html``
    (under ``_iqa/`` so that no Parquet reader of ``dst`` trips over it).

    Shows the model and weights sha256, counts, a score histogram, the ``thumbnails`` highest- and
    lowest-scored images (each group capped so no image appears twice), errors by reason, throughput and
    summary statistics; for an SFD-IQA model (``heatmaps``), Feat-D's real-probability map of each shown
    image. Returns the path or URL written. Raises ValueError when ``dst`` has no part files.
    """
    page = build_report(dst, thumbnails=thumbnails, heatmaps=heatmaps)
    target = join_uri(dst, META_DIR, REPORT_NAME)
    fs, path = filesystem_for(target)
    if "file" in ((fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)):
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
    with fs.open(path, "wb") as handle:
        handle.write(page.encode("utf-8"))
    return target


class ReportConfig(JobConfig):
    """Options of ``iqa report``."""

    job_name: ClassVar[str] = "report"

    dst: str = Field(description="a score job's output directory (local or s3://...)",
                     json_schema_extra=cli(positional=True))
    thumbnails: int = Field(default=12, ge=0, description="images shown at each end")
    heatmaps: bool = Field(default=True, description="SFD-IQA models: show Feat-D's real-probability map of "
                           "each shown image")


CONFIG = ReportConfig


def run(config: ReportConfig) -> int:
    """Write the report for ``config.dst`` and print where; 0."""
    print(write_report(config.dst, thumbnails=config.thumbnails, heatmaps=config.heatmaps))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m ray_jobs.report``: the same options as ``iqa report``."""
    return job_main("report", argv)


if __name__ == "__main__":
    sys.exit(main())
