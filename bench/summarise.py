"""Targets across several ``make bench`` reports: ``python -m bench.summarise REPORT.json...``.

Prints a Markdown table: one row per target figure and job store, one column
per report (its commit and repeats), then the median over the reports and
whether that median meets the target. Then the figures with no target (a
store's CPU per image, what a second replica adds), where a report has them.
One run on a shared machine is one draw; several runs say where a figure sits
and how far it swings.

Reports from before the job-store dimension have no ``job_store`` in their
targets: they ran the only store there was, in memory, and are shown as
``memory``.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "summarise"]


def _column(report: dict[str, Any]) -> str:
    machine = report.get("machine", {})
    label = f" {report['label']}" if "label" in report else ""
    return f"`{machine.get('commit', '?')}`{label} ({report.get('repeats', '?')} runs)"


def _row(check: dict[str, Any]) -> str:
    return f"{check['figure']} [{check.get('job_store', 'memory')}]"


def summarise(reports: Sequence[dict[str, Any]]) -> str:
    figures: dict[str, tuple[float | None, list[float | None]]] = {}
    for position, report in enumerate(reports):
        checks = [*report.get("targets", []), *report.get("figures", [])]
        for check in checks:
            target, values = figures.setdefault(_row(check), (check.get("target"), []))
            values.extend([None] * (position - len(values)))
            values.append(check["value"])
    header = ["Figure", *(_column(report) for report in reports), "Median", "Target", "Met"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for figure, (target, values) in figures.items():
        values.extend([None] * (len(reports) - len(values)))
        present = [value for value in values if value is not None]
        median = statistics.median(present)
        cells = [f"{value:g}" if value is not None else "—" for value in values]
        if target is None:
            row = [figure, *cells, f"{median:g}", "—", "—"]
        else:
            # Ratios are floors; every other figure (ms, MB, s) is a ceiling.
            met = median >= target if "ratio" in figure else median <= target
            row = [figure, *cells, f"{median:g}", f"{target:g}", "yes" if met else "**no**"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    paths = [Path(arg) for arg in (sys.argv[1:] if argv is None else argv)]
    if not paths:
        print(__doc__, file=sys.stderr)
        return 2
    print(summarise([json.loads(path.read_text()) for path in paths]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
