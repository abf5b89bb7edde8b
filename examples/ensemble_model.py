"""The Python side of examples/ensemble.toml: analyse one member, aggregate the ensemble.

Both run in the run directory (the current directory of a `rhapsody run`), where the
simulations wrote their `sim.<rate>.<seed>.txt` files.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path


def analyse(path: str, rate: float, seed: int) -> dict[str, float | int | None]:
    """The final value and the time the population first reached half its capacity."""
    series = [tuple(map(float, line.split())) for line in Path(path).read_text().splitlines()]
    half = next((int(t) for t, x in series if x >= 0.5), None)
    summary = {"rate": rate, "seed": seed, "final": series[-1][1], "t_half": half}
    Path(f"analysis.{rate}.{seed}.json").write_text(json.dumps(summary))
    return summary


def aggregate() -> str:
    """One line per growth rate: members, mean final value, mean time to half capacity."""
    members = [json.loads(p.read_text()) for p in sorted(Path().glob("analysis.*.json"))]
    lines = []
    for rate in sorted({m["rate"] for m in members}):
        group = [m for m in members if m["rate"] == rate]
        halves = [m["t_half"] for m in group if m["t_half"] is not None]
        mean_half = f"{statistics.mean(halves):.1f}" if halves else "never"
        final = statistics.mean(m["final"] for m in group)
        lines.append(
            f"rate {rate}: {len(group)} members, final {final:.3f}, "
            f"half capacity at t = {mean_half}"
        )
    return "\n".join(lines)
