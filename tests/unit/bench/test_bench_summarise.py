"""bench.summarise: target figures across runs, with the median judged against the target."""

from __future__ import annotations

from typing import Any

from bench.summarise import summarise


def report(commit: str, ratio: float, p99: float) -> dict[str, Any]:
    return {
        "machine": {"commit": commit},
        "repeats": 5,
        "targets": [
            {"figure": "W1 header delay0, ratio to reference", "value": ratio, "target": 0.8},
            {"figure": "W2 header_delay0 status p99 (ms)", "value": p99, "target": 20.0},
        ],
    }


def test_each_figure_gets_every_run_and_a_median_judged_by_its_direction() -> None:
    table = summarise([report("a", 0.79, 21.0), report("b", 0.85, 14.0), report("c", 0.83, 25.0)])
    lines = table.splitlines()
    assert lines[0] == (
        "| Figure | `a` (5 runs) | `b` (5 runs) | `c` (5 runs) | Median | Target | Met |"
    )
    # A ratio is a floor: median 0.83 >= 0.8.
    assert (
        lines[2]
        == "| W1 header delay0, ratio to reference | 0.79 | 0.85 | 0.83 | 0.83 | 0.8 | yes |"
    )
    # Latency is a ceiling: median 21 > 20.
    assert lines[3] == "| W2 header_delay0 status p99 (ms) | 21 | 14 | 25 | 21 | 20 | **no** |"


def test_a_figure_missing_from_a_run_shows_a_dash() -> None:
    partial = report("b", 0.9, 10.0)
    partial["targets"] = partial["targets"][:1]
    lines = summarise([report("a", 0.8, 12.0), partial]).splitlines()
    assert lines[3] == "| W2 header_delay0 status p99 (ms) | 12 | — | 12 | 20 | yes |"
