"""The page a person looks at after ``pmmc-ray chaos``: one self-contained HTML file.

:func:`render_html` turns the summary of a run (:meth:`ChaosResult.to_dict`) into HTML
with inline CSS and inline SVG charts (no script, no external file, no dependency):
the verdicts first, then throughput and latency percentiles per second with every fault
drawn as a shaded band (instant kills as thin bars) labelled above the charts, then
the tables (faults by kind, kills by role, operations by outcome, recovery times, every
fault with its timing). Hovering a band shows the fault's details (SVG ``<title>``).
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

__all__ = ["render_html", "render_timeline_svg", "write_report"]

_SVG_STYLE = (
    "<style>.grid{stroke:#e6e6e6;stroke-width:1}.frame{fill:none;stroke:#999}"
    ".tick{font-size:10px;fill:#555;font-family:sans-serif}"
    ".ctitle{font-size:11.5px;fill:#333;font-family:sans-serif}"
    "text{font-family:sans-serif}</style>"
)

COLORS = {
    "kill": "#d62728",
    "network": "#1f77b4",
    "pause": "#ff7f0e",
    "node": "#9467bd",
    "combined": "#8c564b",
}
_GROUP = {
    "drop": "network",
    "delay": "network",
    "duplicate": "network",
    "partition-leader": "network",
    "partition-acceptors": "network",
    "pause": "pause",
    "node-kill": "node",
    "disk-loss": "node",
    "failover-lagging-replica": "combined",
}

W, LEFT, RIGHT = 1100, 60, 20
PLOT_W = W - LEFT - RIGHT
CHART_H = 190
LABEL_ROW_H = 13


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _group(kind: str) -> str:
    return _GROUP.get(kind, "kill")


def _fmt(x: Any, unit: str = "") -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.3g}{unit}" if abs(x) < 10 else f"{x:.1f}{unit}"
    return f"{x}{unit}"


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    mag = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * mag:
            return m * mag
    return 10 * mag


class _Chart:
    """x in seconds -> pixels; shared by the label lane and both charts."""

    def __init__(self, t_max: float) -> None:
        self.t_max = max(t_max, 1.0)

    def x(self, t: float) -> float:
        return LEFT + PLOT_W * min(max(t, 0.0), self.t_max) / self.t_max

    def x_ticks(self) -> list[float]:
        step = _nice_max(self.t_max / 10)
        return [i * step for i in range(int(self.t_max / step) + 1)]


def _bands(faults: list[dict[str, Any]], ch: _Chart, top: float, height: float) -> list[str]:
    out = []
    for f in faults:
        if f.get("start_s") is None:
            continue
        x0 = ch.x(f["start_s"])
        x1 = ch.x(f.get("end_s") or f["start_s"])
        instant = x1 - x0 < 3
        width = 3.0 if instant else x1 - x0
        color = COLORS[_group(f["kind"])]
        tip = _tooltip(f)
        out.append(
            f'<rect x="{x0:.1f}" y="{top:.1f}" width="{width:.1f}" height="{height:.1f}" '
            f'fill="{color}" fill-opacity="{0.55 if instant else 0.16}">'
            f"<title>{_e(tip)}</title></rect>"
        )
    return out


def _tooltip(f: dict[str, Any]) -> str:
    parts = [f"#{f['index']} {f['kind']}", ", ".join(f.get("targets") or [])]
    if f.get("method"):
        parts.append(f"via {f['method']}")
    if f.get("params"):
        parts.append(", ".join(f"{k}={v}" for k, v in f["params"].items()))
    parts.append(f"t={_fmt(f.get('start_s'))}-{_fmt(f.get('end_s'))}s")
    parts.append(f"next write {_fmt(f.get('next_write_s'), 's')}")
    parts.append(f"unavailable {_fmt(f.get('unavailable_s'), 's')}")
    return " | ".join(p for p in parts if p)


def _label_lane(faults: list[dict[str, Any]], ch: _Chart) -> tuple[list[str], float]:
    """Fault labels above the charts, in as many rows as needed to avoid overlaps."""
    rows_end: list[float] = []
    items = []
    for f in faults:
        if f.get("start_s") is None:
            continue
        text = f"#{f['index']} {f['kind']}"
        x = ch.x(f["start_s"])
        width = 6.2 * len(text) + 6
        row = next((i for i, end in enumerate(rows_end) if end < x), None)
        if row is None:
            rows_end.append(0.0)
            row = len(rows_end) - 1
        rows_end[row] = x + width
        items.append((row, x, text, f))
    height = LABEL_ROW_H * max(1, len(rows_end)) + 4
    out = []
    for row, x, text, f in items:
        y = 11 + row * LABEL_ROW_H
        color = COLORS[_group(f["kind"])]
        out.append(
            f'<text x="{x + 2:.1f}" y="{y}" font-size="10.5" fill="{color}">'
            f"<title>{_e(_tooltip(f))}</title>{_e(text)}</text>"
        )
    return out, height


def _axis_x(ch: _Chart, top: float, height: float) -> list[str]:
    out = []
    for t in ch.x_ticks():
        x = ch.x(t)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + height}" class="grid"/>')
        out.append(
            f'<text x="{x:.1f}" y="{top + height + 13}" text-anchor="middle" '
            f'class="tick">{t:g}s</text>'
        )
    return out


def _polyline(ch: _Chart, ts: list[int], ys: list[float | None], y_of: Any, color: str) -> str:
    segs: list[list[str]] = [[]]
    for t, y in zip(ts, ys, strict=False):
        if y is None:
            if segs[-1]:
                segs.append([])
            continue
        segs[-1].append(f"{ch.x(t + 0.5):.1f},{y_of(y):.1f}")
    return "".join(
        f'<polyline points="{" ".join(s)}" fill="none" stroke="{color}" stroke-width="1.4"/>'
        for s in segs
        if s
    )


def _charts(summary: dict[str, Any]) -> str:
    tl = summary.get("timeline") or {}
    ts: list[int] = tl.get("t") or [0]
    faults = summary.get("faults") or []
    t_max = max([len(ts), *[(f.get("end_s") or 0) + 1 for f in faults]])
    ch = _Chart(t_max)
    labels, lane_h = _label_lane(faults, ch)
    top1 = lane_h + 8
    top2 = top1 + CHART_H + 40
    total_h = top2 + CHART_H + 30
    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{total_h:.0f}" '
        f'viewBox="0 0 {W} {total_h:.0f}" role="img" aria-label="throughput and latency">',
        _SVG_STYLE,
        f'<rect x="0" y="0" width="{W}" height="{total_h:.0f}" fill="#fff"/>',
        *labels,
    ]
    # Throughput.
    ops = tl.get("ops") or [0]
    unknown = tl.get("unknown") or [0] * len(ops)
    y_max = _nice_max(max([*ops, *unknown, 1]))

    def y1(v: float) -> float:
        return top1 + CHART_H - CHART_H * min(v, y_max) / y_max

    svg += _bands(faults, ch, top1, CHART_H)
    svg += _axis_x(ch, top1, CHART_H)
    for i in range(5):
        v = y_max * i / 4
        svg.append(
            f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y1(v):.1f}" y2="{y1(v):.1f}" class="grid"/>'
            f'<text x="{LEFT - 5}" y="{y1(v) + 4:.1f}" text-anchor="end" class="tick">{v:g}</text>'
        )
    bw = max(1.0, PLOT_W / ch.t_max - 0.5)
    for t, u in zip(ts, unknown, strict=False):
        if u:
            svg.append(
                f'<rect x="{ch.x(t):.1f}" y="{y1(u):.1f}" width="{bw:.1f}" '
                f'height="{top1 + CHART_H - y1(u):.1f}" fill="#000" fill-opacity="0.5">'
                f"<title>t={t}s: {u} operations with unknown outcome</title></rect>"
            )
    svg.append(_polyline(ch, ts, [float(v) for v in ops], y1, "#2ca02c"))
    svg.append(
        f'<text x="{LEFT}" y="{top1 - 2}" class="ctitle">acknowledged operations per second '
        "(green); operations with unknown outcome, by invocation second (black bars)</text>"
    )
    svg.append(f'<rect x="{LEFT}" y="{top1}" width="{PLOT_W}" height="{CHART_H}" class="frame"/>')
    # Latency, log scale.
    series = [("p50_ms", "#2ca02c"), ("p90_ms", "#ff7f0e"), ("p99_ms", "#d62728")]
    vals = [v for k, _ in series for v in (tl.get(k) or []) if v]
    hi = _nice_max(max([*vals, 10.0]))
    lo = 1.0
    span = math.log10(hi) - math.log10(lo)

    def y2(v: float) -> float:
        v = min(max(v, lo), hi)
        return top2 + CHART_H - CHART_H * (math.log10(v) - math.log10(lo)) / span

    svg += _bands(faults, ch, top2, CHART_H)
    svg += _axis_x(ch, top2, CHART_H)
    d = 1.0
    while d <= hi:
        svg.append(
            f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y2(d):.1f}" y2="{y2(d):.1f}" class="grid"/>'
            f'<text x="{LEFT - 5}" y="{y2(d) + 4:.1f}" text-anchor="end" class="tick">'
            f"{d:g} ms</text>"
        )
        d *= 10
    for key, color in series:
        svg.append(_polyline(ch, ts, tl.get(key) or [], y2, color))
    svg.append(
        f'<text x="{LEFT}" y="{top2 - 4}" class="ctitle">latency of the operations acknowledged '
        "in each second, log scale: p50 (green), p90 (orange), p99 (red)</text>"
    )
    svg.append(f'<rect x="{LEFT}" y="{top2}" width="{PLOT_W}" height="{CHART_H}" class="frame"/>')
    svg.append("</svg>")
    return "\n".join(svg)


def render_timeline_svg(summary: dict[str, Any]) -> str:
    """Only the timeline (throughput and latency with the faults), as a standalone SVG."""
    return _charts(summary)


def _table(head: list[str], rows: list[list[Any]], cls: str = "") -> str:
    h = "".join(f"<th>{_e(x)}</th>" for x in head)
    body = "".join("<tr>" + "".join(f"<td>{_e(x)}</td>" for x in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>'


def _verdict(summary: dict[str, Any]) -> tuple[str, str]:
    v = summary.get("verdicts") or {}
    if v.get("violations"):
        return "FAILED", "bad"
    if v.get("undecided"):
        return "UNDECIDED", "warn"
    return "PASSED", "good"


def render_html(summary: dict[str, Any]) -> str:
    """The report page for ``summary`` (a :meth:`ChaosResult.to_dict`), as a string."""
    v = summary.get("verdicts") or {}
    word, cls = _verdict(summary)
    seed = summary.get("seed")
    rec = summary.get("recovery") or {}
    lk = rec.get("leader_kill_to_next_write_s") or {}
    lat = summary.get("latency_ms") or {}

    def yes(b: Any) -> str:
        return {True: "yes", False: "NO", None: "-"}[b if isinstance(b, bool) else None]

    verdict_rows = [
        ["history linearizable", f"{v.get('linearizable')} ({v.get('checked_operations')} ops)"],
        ["acknowledged writes lost", v.get("lost_acknowledged_writes")],
        ["writes applied twice", v.get("duplicated_writes")],
        ["replicas converged", yes(v.get("replicas_converged"))],
        ["every role alive, none refusing", yes(v.get("roles_alive"))],
    ]
    kinds = summary.get("faults_by_kind") or {}
    kind_rows = [
        [k, c.get("planned"), c.get("applied"), c.get("skipped")] for k, c in kinds.items()
    ]
    by_kind = rec.get("by_kind") or {}
    rec_rows = []
    for k, r in by_kind.items():
        nw, un = r.get("next_write_s") or {}, r.get("unavailable_s") or {}
        rec_rows.append(
            [
                k,
                nw.get("n"),
                _fmt(nw.get("median"), " s"),
                _fmt(nw.get("max"), " s"),
                _fmt(un.get("median"), " s"),
                _fmt(un.get("max"), " s"),
            ]
        )
    fault_rows = []
    for f in summary.get("faults") or []:
        fault_rows.append(
            [
                f["index"],
                f["kind"],
                ", ".join(f.get("targets") or []),
                f.get("method") or "",
                ", ".join(f"{k}={x}" for k, x in (f.get("params") or {}).items()),
                _fmt(f.get("planned_at_s")),
                "skipped: " + f["skipped"] if f.get("skipped") else _fmt(f.get("start_s")),
                _fmt(f.get("end_s")),
                _fmt(f.get("next_write_s")),
                _fmt(f.get("unavailable_s")),
                "; ".join(f.get("notes") or []),
            ]
        )
    kinds_arg = ",".join(summary.get("fault_kinds") or [])
    replay = (
        f"pmmc-ray chaos --seed {seed} --duration {summary.get('duration_s'):g} "
        f"--clients {summary.get('clients')} --faults {kinds_arg}"
    )
    bug = summary.get("injected_bug")
    legend = " ".join(
        f'<span class="chip" style="background:{c}"></span>{_e(g)}' for g, c in COLORS.items()
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>pmmc-ray chaos, seed {_e(seed)}: {word}</title>",
        "<style>",
        "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#222}",
        "h1{font-size:22px;margin:0 0 6px} h2{font-size:16px;margin:22px 0 6px}",
        ".badge{display:inline-block;padding:3px 10px;border-radius:4px;color:#fff;"
        "font-weight:600}",
        ".good{background:#2a8f2a}.bad{background:#c62828}.warn{background:#b26a00}",
        ".bug{background:#fde2e1;border:2px solid #c62828;padding:8px;margin:8px 0}",
        "table{border-collapse:collapse;font-size:12.5px;margin:4px 0}",
        "td,th{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}",
        "th{background:#f2f2f2} .grid{stroke:#e6e6e6;stroke-width:1}",
        ".frame{fill:none;stroke:#999} .tick{font-size:10px;fill:#555}",
        ".ctitle{font-size:11.5px;fill:#333} .chip{display:inline-block;width:12px;"
        "height:12px;margin:0 4px 0 12px;vertical-align:middle;opacity:.6}",
        ".cols{display:flex;gap:28px;flex-wrap:wrap} code{background:#f4f4f4;padding:1px 4px}",
        "</style></head><body>",
        f'<h1>pmmc-ray chaos, seed {_e(seed)} <span class="badge {cls}">{word}</span></h1>',
        f"<div>{_e(summary.get('elapsed_s'))} s, {_e(summary.get('clients'))} clients, "
        f"{_e(sum(summary.get('operations_by_outcome', {}).values()))} operations, "
        f"{_e(summary.get('throughput_ops_per_s'))} acknowledged/s, latency p50 "
        f"{_fmt(lat.get('p50'), ' ms')}, p99 {_fmt(lat.get('p99'), ' ms')}; "
        f"cluster: {_e(json.dumps(summary.get('cluster') or {}))}</div>",
    ]
    if bug:
        parts.append(
            f'<div class="bug">This run used a deliberately broken build: injected bug '
            f"<b>{_e(bug)}</b> (test only).</div>"
        )
    for problem in v.get("violations") or []:
        parts.append(f'<div class="bug">{_e(problem)}</div>')
    if v.get("undecided"):
        parts.append(
            '<div class="bug">The linearizability checker could not decide: '
            f"{_e(v.get('linearizability_detail'))}</div>"
        )
    parts += [
        "<h2>Verdicts</h2>",
        _table(["check", "result"], verdict_rows),
        f"<h2>Timeline</h2><div>fault kinds: {legend}; thin bars are kills, bands are faults "
        "that last (hover for details)</div>",
        _charts(summary),
        '<div class="cols"><div><h2>Faults by kind</h2>',
        _table(["kind", "planned", "applied", "skipped"], kind_rows),
        "</div><div><h2>Kills by role</h2>",
        _table(["role", "actors killed"], list((summary.get("kills_by_role") or {}).items())),
        "<h2>Kills by method</h2>",
        _table(["method", "actors killed"], list((summary.get("kills_by_method") or {}).items())),
        "</div><div><h2>Operations by outcome</h2>",
        _table(
            ["outcome", "operations"], list((summary.get("operations_by_outcome") or {}).items())
        ),
        f"<p>acknowledged appends: {_e(summary.get('acknowledged_appends'))}; with unknown "
        f"outcome: {_e(summary.get('unacknowledged_appends'))}</p>",
        "</div></div>",
        "<h2>Recovery</h2>",
        f"<p>From a kill of the active leader to the next acknowledged write: median "
        f"{_fmt(lk.get('median'), ' s')}, max {_fmt(lk.get('max'), ' s')} "
        f"({_e(lk.get('n'))} kills).</p>",
        _table(
            [
                "kind",
                "n",
                "next write median",
                "next write max",
                "unavailable median",
                "unavailable max",
            ],
            rec_rows,
        ),
        "<p>next write: from the fault to the acknowledgement of a write sent right after "
        "it. unavailable: the longest stretch without an acknowledged write from the fault "
        "until the next fault.</p>",
        "<h2>Every fault</h2>",
        _table(
            [
                "#",
                "kind",
                "targets",
                "method",
                "params",
                "planned (s)",
                "start (s)",
                "end (s)",
                "next write (s)",
                "unavailable (s)",
                "notes",
            ],
            fault_rows,
        ),
        f"<h2>Replay</h2><p><code>{_e(replay)}</code> applies the same schedule and the "
        "same client choices; real Ray's timing differs from run to run.</p>",
        "</body></html>",
    ]
    return "\n".join(parts)


def write_report(summary: dict[str, Any], path: str | Path) -> Path:
    """Write :func:`render_html` of ``summary`` to ``path``, and the timeline alone next
    to it as ``timeline.svg``; return the page's path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(render_html(summary), encoding="utf-8")
    (p.parent / "timeline.svg").write_text(render_timeline_svg(summary), encoding="utf-8")
    return p
