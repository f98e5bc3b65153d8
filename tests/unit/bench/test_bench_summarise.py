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


def on_store(old: dict[str, Any], job_store: str) -> dict[str, Any]:
    """The same report in the shape with a job-store dimension."""
    targets = [{**check, "job_store": job_store} for check in old["targets"]]
    return {**old, "targets": targets}


def test_each_figure_gets_every_run_and_a_median_judged_by_its_direction() -> None:
    table = summarise([report("a", 0.79, 21.0), report("b", 0.85, 14.0), report("c", 0.83, 25.0)])
    lines = table.splitlines()
    assert lines[0] == (
        "| Figure | `a` (5 runs) | `b` (5 runs) | `c` (5 runs) | Median | Target | Met |"
    )
    # A ratio is a floor: median 0.83 >= 0.8. A report without job stores ran in memory.
    assert lines[2] == (
        "| W1 header delay0, ratio to reference [memory] | 0.79 | 0.85 | 0.83 | 0.83 | 0.8 | yes |"
    )
    # Latency is a ceiling: median 21 > 20.
    assert lines[3] == (
        "| W2 header_delay0 status p99 (ms) [memory] | 21 | 14 | 25 | 21 | 20 | **no** |"
    )


def test_a_figure_missing_from_a_run_shows_a_dash() -> None:
    partial = report("b", 0.9, 10.0)
    partial["targets"] = partial["targets"][:1]
    lines = summarise([report("a", 0.8, 12.0), partial]).splitlines()
    assert lines[3] == "| W2 header_delay0 status p99 (ms) [memory] | 12 | — | 12 | 20 | yes |"


def test_each_job_store_is_a_row_and_old_reports_line_up_with_memory() -> None:
    new = on_store(report("b", 0.81, 15.0), "sqlite")
    new["targets"] += on_store(report("b", 0.9, 11.0), "memory")["targets"]
    new["label"] = "fix"
    lines = summarise([report("a", 0.85, 13.0), new]).splitlines()
    assert lines[0] == "| Figure | `a` (5 runs) | `b` fix (5 runs) | Median | Target | Met |"
    assert lines[2] == (
        "| W1 header delay0, ratio to reference [memory] | 0.85 | 0.9 | 0.875 | 0.8 | yes |"
    )
    assert lines[4] == (
        "| W1 header delay0, ratio to reference [sqlite] | — | 0.81 | 0.81 | 0.8 | yes |"
    )


def test_figures_without_a_target_are_listed_unjudged() -> None:
    new = on_store(report("b", 0.81, 15.0), "sqlite")
    new["figures"] = [
        {
            "figure": "W1 header delay0, main-process CPU per image (ms)",
            "job_store": "sqlite",
            "value": 0.3,
        },
    ]
    lines = summarise([new]).splitlines()
    assert lines[-1] == (
        "| W1 header delay0, main-process CPU per image (ms) [sqlite] | 0.3 | 0.3 | — | — |"
    )
