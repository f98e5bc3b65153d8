"""The benchmark harness end to end at toy scale: it runs, processes every image, reports JSON.

Only the shape and the work are checked, never the speed: timings belong to ``make bench``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support.processes import REPO_ROOT


def run_module(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m module args`` from the repository, without the caller's RP_* settings."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("RP_")}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
def test_bench_runs_end_to_end_at_toy_scale() -> None:
    toy = ["--repeats", "1", "--scale", "0.01", "--configs", "header_delay0", "--workloads", "w1"]
    result = run_module("bench", *toy, "--host", "aiohttp")
    # The harness fails unless the service settled every image without a failure.
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["image_host"] == "aiohttp"
    run = report["service"]["header_delay0"]["w1"]["runs"][0]
    assert run["images"] == 20
    assert run["images_per_s"] > 0
    # Wall ends at the job's finished_at, which the poll that saw it can only follow.
    assert 0 < run["wall_s"] <= run["observed_wall_s"] + 0.01
    assert run["status_requests"] >= 1
    assert run["peak_rss_mb"] > 0
    assert run["peak_processes"] >= 3  # the service, its forkserver and a pool worker
    assert run["ratio_to_reference"] > 0
    assert report["reference"]["w1"]["header"]["runs"][0]["images"] == 20
    figures = {check["figure"] for check in report["targets"]}
    assert "W1 header delay0, ratio to reference" in figures


@pytest.mark.slow
def test_compare_runs_each_tree_at_toy_scale() -> None:
    tree = str(REPO_ROOT)
    toy = ["--repeats", "1", "--scale", "0.01"]
    result = run_module("bench.compare", "header_delay0", "w1", tree, tree, *toy)
    assert result.returncode == 0, result.stderr
    # One run per tree per repeat, then one summary line per tree.
    assert result.stderr.count(f"r0 {tree}: ratio ") == 2
    assert result.stdout.startswith(f"{tree}: ratio ")
    assert "status p99" in result.stdout
