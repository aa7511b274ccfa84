"""The outputs of ``iqa eval``: a Markdown table (terminal and ``results.md``) and one self-contained HTML
page (inline SVG, no script, nothing fetched from the network): per-group SRCC bars for every metric side
by side, and a score-vs-human scatter per metric.
"""

from __future__ import annotations

import html
from typing import Any

#: Bar and point colours, one per metric (colour-blind safe, Okabe-Ito).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#000000")


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _with_ci(block: dict[str, Any], name: str) -> str:
    ci = block.get("ci", {}).get(name)
    text = _fmt(block.get(name))
    if ci and ci[0] is not None and ci[1] is not None:
        text += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    return text


def markdown(results: dict[str, Any]) -> str:
    """The summary table (and the per-group SRCC table when the set has groups) as Markdown."""
    data = results["dataset"]
    lines = [f"### {data['name']}: {data['n_items']} rated images"
             + (f", {data['n_skipped']} rows skipped ({_reasons(data['skipped_by_reason'])})" if data["n_skipped"] else ""),
             "",
             "| metric | n | SRCC [95% CI] | KRCC [95% CI] | PLCC [95% CI] | PLCC fitted [95% CI] | failed |",
             "|---|---:|---|---|---|---|---:|"]
    for name in results["ranking"]:
        m = results["metrics"][name]
        o = m["overall"]
        arrow = " (lower better)" if m["lower_better"] else ""
        lines.append(f"| {name}{arrow} | {o['n']} | {_with_ci(o, 'srcc')} | {_with_ci(o, 'krcc')} | "
                     f"{_with_ci(o, 'plcc')} | {_with_ci(o, 'plcc_fitted')} | {m['n_failed']} |")
    groups = results.get("groups") or []
    if groups:
        names = results["ranking"]
        lines += ["", "SRCC per distortion type (with the level; direction-corrected):", "",
                  "| type | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        for group in groups:
            cells = [_fmt(results["metrics"][n]["per_group"].get(group, {}).get("srcc"), 2) for n in names]
            lines.append(f"| {group} | " + " | ".join(cells) + " |")
    lines += ["", "Coefficients are direction-corrected (positive = agrees with people); intervals: paired "
              f"percentile bootstrap over images ({results['config']['bootstrap']} resamples)."]
    return "\n".join(lines) + "\n"


def _reasons(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items())


def _bars_svg(results: dict[str, Any]) -> str:
    names = results["ranking"]
    groups = (results.get("groups") or []) + ["overall"]
    width_group = max(28, 10 * len(names) + 8)
    left, top, height = 48, 16, 220
    width = left + width_group * len(groups) + 10
    y = lambda v: top + (1 - v) / 2 * height  # noqa: E731 - SRCC -1..1 onto the plot height
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="bars" width="{width}" height="{top + height + 110}" '
             f'role="img" aria-label="SRCC per group and metric">']
    for tick in (-1, -0.5, 0, 0.5, 1):
        parts.append(f'<line x1="{left}" x2="{width - 10}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
                     f'stroke="{"#444" if tick == 0 else "#ddd"}"/>'
                     f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end" font-size="11">{tick:g}</text>')
    for g, group in enumerate(groups):
        x0 = left + g * width_group + 4
        for k, name in enumerate(names):
            block = results["metrics"][name]["overall"] if group == "overall" else \
                results["metrics"][name]["per_group"].get(group, {})
            value = block.get("srcc")
            if value is None:
                continue
            y0, y1 = sorted((y(0), y(value)))
            parts.append(f'<rect class="bar" data-metric="{html.escape(name)}" data-group="{html.escape(group)}" '
                         f'x="{x0 + 10 * k}" y="{y0:.1f}" width="9" height="{max(y1 - y0, 0.5):.1f}" '
                         f'fill="{PALETTE[k % len(PALETTE)]}"><title>{html.escape(name)} / {html.escape(group)}: '
                         f'SRCC {value:.3f}</title></rect>')
        label_x, label_y = x0 + width_group / 2 - 4, top + height + 8
        parts.append(f'<text x="{label_x:.1f}" y="{label_y}" font-size="10" text-anchor="end" '
                     f'transform="rotate(-60 {label_x:.1f} {label_y})">{html.escape(group)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _scatter_svg(name: str, points: list[list[float]], colour: str, srcc: float | None) -> str:
    size, pad = 260, 36
    if not points:
        return f'<p>{html.escape(name)}: no scored image</p>'
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x_lo, x_hi, y_lo, y_hi = min(xs), max(xs), min(ys), max(ys)
    sx = lambda v: pad + (v - x_lo) / ((x_hi - x_lo) or 1) * (size - pad - 8)  # noqa: E731
    sy = lambda v: size - pad - (v - y_lo) / ((y_hi - y_lo) or 1) * (size - pad - 8)  # noqa: E731
    parts = [f'<figure><svg xmlns="http://www.w3.org/2000/svg" class="scatter" data-metric="{html.escape(name)}" '
             f'width="{size}" height="{size}" role="img" aria-label="{html.escape(name)} score against human score">',
             f'<rect x="{pad}" y="8" width="{size - pad - 8}" height="{size - pad - 8}" fill="none" stroke="#999"/>']
    for x, v in points:
        parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(v):.1f}" r="2.2" fill="{colour}" fill-opacity="0.6"/>')
    parts.append(f'<text x="{size / 2}" y="{size - 8}" font-size="11" text-anchor="middle">{html.escape(name)} score '
                 f'({x_lo:.3g} .. {x_hi:.3g})</text><text x="12" y="{size / 2}" font-size="11" text-anchor="middle" '
                 f'transform="rotate(-90 12 {size / 2})">human ({y_lo:.3g} .. {y_hi:.3g})</text></svg>')
    parts.append(f"<figcaption>{html.escape(name)}: SRCC {_fmt(srcc)}</figcaption></figure>")
    return "".join(parts)


def html_page(results: dict[str, Any]) -> str:
    """The self-contained report page."""
    names = results["ranking"]
    legend = "".join(f'<span class="key"><i style="background:{PALETTE[k % len(PALETTE)]}"></i>{html.escape(n)}</span>'
                     for k, n in enumerate(names))
    scatters = "".join(
        _scatter_svg(n, results["scatter"].get(n, []), PALETTE[k % len(PALETTE)],
                     results["metrics"][n]["overall"].get("srcc")) for k, n in enumerate(names))
    table = _markdown_table_html(results)
    skipped = "".join(f"<li>{html.escape(s['row'])}: {html.escape(s['reason'])} {html.escape(s['detail'])}</li>"
                      for s in results["dataset"]["skipped"][:50])
    title = f"iqa eval: {html.escape(results['dataset']['name'])}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;margin:24px;color:#222}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px}} td.n{{text-align:right}}
.key{{margin-right:14px;font-size:13px}} .key i{{display:inline-block;width:12px;height:12px;margin-right:4px}}
figure{{display:inline-block;margin:6px}} figcaption{{font-size:12px;text-align:center}}</style></head>
<body><h1>{title}</h1>
<p>{results['dataset']['n_items']} rated images from <code>{html.escape(results['dataset']['source'])}</code>;
coefficients direction-corrected (positive = agrees with people), 95% intervals by bootstrap over images.</p>
{table}
<h2>SRCC per {'distortion type' if results.get('groups') else 'metric'}</h2><p>{legend}</p>
{_bars_svg(results)}
<h2>Score against human score</h2>{scatters}
{f'<h2>Skipped rows</h2><ul>{skipped}</ul>' if skipped else ''}
</body></html>
"""


def _markdown_table_html(results: dict[str, Any]) -> str:
    rows = []
    for name in results["ranking"]:
        m = results["metrics"][name]
        o = m["overall"]
        cells = "".join(f"<td>{html.escape(_with_ci(o, c))}</td>" for c in ("srcc", "krcc", "plcc", "plcc_fitted"))
        rows.append(f"<tr><td>{html.escape(name)}</td><td class=n>{o['n']}</td>{cells}"
                    f"<td class=n>{m['n_failed']}</td></tr>")
    return ("<table><tr><th>metric</th><th>n</th><th>SRCC</th><th>KRCC</th><th>PLCC</th><th>PLCC fitted</th>"
            "<th>failed</th></tr>" + "".join(rows) + "</table>")
