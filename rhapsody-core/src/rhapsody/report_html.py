"""A self-contained HTML page for a trace: figures, a Gantt timeline of task attempts per lane
(SVG drawn by an inline script), the critical path and the slowest tasks. No network access."""

from __future__ import annotations

import html
import json
from typing import Any

from rhapsody.trace_report import TraceSummary

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin-top: 1.5em; }
table { border-collapse: collapse; } td, th { padding: 2px 10px; text-align: left; }
th { border-bottom: 1px solid #999; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
#gantt { overflow-x: auto; border: 1px solid #ddd; }
.task-bar { stroke: #fff; stroke-width: 0.5; }
.task-bar.state-DONE { fill: #4c8bf5; } .task-bar.state-FAILED { fill: #d93025; }
.task-bar.state-CANCELED { fill: #9aa0a6; } .task-bar.state-RETRIED { fill: #f29900; }
.task-bar.state-RUNNING { fill: #a142f4; } .task-bar.critical { stroke: #111; stroke-width: 2; }
.lane-label, .tick-label { font-size: 11px; fill: #444; } .tick { stroke: #eee; }
"""

# Reads the JSON data block and draws one <rect class="task-bar ..."> per attempt.
_SCRIPT = """
(function () {
  const data = JSON.parse(document.getElementById("trace-data").textContent);
  const NS = "http://www.w3.org/2000/svg";
  const rowHeight = 18, labelWidth = 150, top = 24;
  const holder = document.getElementById("gantt");
  const width = Math.max(800, holder.clientWidth - 2);
  const plot = width - labelWidth - 10;
  const scale = data.makespan > 0 ? plot / data.makespan : 0;
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("width", width);
  svg.setAttribute("height", top + rowHeight * data.lanes.length + 4);
  function add(parent, tag, attributes, text) {
    const node = document.createElementNS(NS, tag);
    for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    parent.appendChild(node);
    return node;
  }
  const ticks = 10;
  for (let i = 0; i <= ticks; i++) {
    const x = labelWidth + (plot * i) / ticks;
    const bottom = top + rowHeight * data.lanes.length;
    add(svg, "line", {class: "tick", x1: x, x2: x, y1: top - 4, y2: bottom});
    add(svg, "text", {class: "tick-label", x: x, y: 12, "text-anchor": "middle"},
        ((data.makespan * i) / ticks).toFixed(2) + " s");
  }
  data.lanes.forEach(function (lane, row) {
    add(svg, "text", {class: "lane-label", x: 4, y: top + row * rowHeight + 13},
        lane[0] + " / lane " + lane[1]);
  });
  const critical = new Set(data.critical);
  for (const [uid, row, start, end, state, attempt] of data.spans) {
    const bar = add(svg, "rect", {
      class: "task-bar state-" + state + (critical.has(uid) ? " critical" : ""),
      x: labelWidth + start * scale, y: top + row * rowHeight + 2,
      width: Math.max(1, (end - start) * scale), height: rowHeight - 4,
      "data-uid": uid,
    });
    add(bar, "title", {}, uid + " (attempt " + attempt + ", " + state + "): " +
        start.toFixed(3) + " s + " + (end - start).toFixed(3) + " s");
  }
  holder.appendChild(svg);
})();
"""


def render(summary: TraceSummary, title: str, top: int = 10) -> str:
    """The HTML page for `summary`, titled `title` (e.g. the trace file's name)."""
    rows = {lane: index for index, lane in enumerate(summary.lanes)}
    data: dict[str, Any] = {
        "makespan": summary.makespan,
        "lanes": [list(lane) for lane in summary.lanes],
        "critical": list(summary.critical_path),
        "spans": [
            [
                s.uid,
                rows[(s.backend, s.lane)],
                round(s.start - summary.start, 6),
                round(s.end - summary.start, 6),
                s.state,
                s.attempt,
            ]
            for s in summary.spans
        ],
    }
    # "<" escaped: a uid holding "</script>" must not end the data block.
    payload = json.dumps(data).replace("<", "\\u003c")
    esc = html.escape
    critical = [(uid, f"{summary.task_times[uid]:.3f}") for uid in summary.critical_path]
    slowest = [(uid, f"{seconds:.3f}") for uid, seconds in summary.slowest(top)]
    figures = [
        ("tasks", str(len(summary.task_times))),
        ("attempts", str(len(summary.spans))),
        ("lanes", str(len(summary.lanes))),
        ("makespan", f"{summary.makespan:.3f} s"),
        ("utilization", f"{summary.utilization:.1%}"),
        ("critical path", f"{summary.critical_length:.3f} s, {len(summary.critical_path)} tasks"),
    ]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>RHAPSODY trace report: {esc(title)}</title>
<style>{_STYLE}</style></head>
<body>
<h1>RHAPSODY trace report: {esc(title)}</h1>
{_table(("figure", "value"), figures)}
<h2>Timeline</h2>
<p>Bars are task attempts, one row per lane (hover for details); critical-path tasks are
outlined. Blue: DONE, red: FAILED, grey: CANCELED, orange: failed and retried, purple: still
running when the trace was written.</p>
<div id="gantt"></div>
<h2>Critical path</h2>
{_table(("task", "run time (s)"), critical)}
<h2>Slowest tasks</h2>
{_table(("task", "run time (s)"), slowest)}
<script type="application/json" id="trace-data">{payload}</script>
<script>{_SCRIPT}</script>
</body></html>
"""


def _table(header: tuple[str, str], rows: list[tuple[str, str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        f'<tr><td>{html.escape(a)}</td><td class="num">{html.escape(b)}</td></tr>' for a, b in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"
