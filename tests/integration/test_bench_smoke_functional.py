"""The benchmark harness end to end at toy scale: it runs, processes every image, reports JSON.

Only the shape and the work are checked, never the speed: timings belong to ``make bench``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.postgres import PG_SERVER, require_postgres
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


TOY = ["--repeats", "1", "--scale", "0.01", "--configs", "header_delay0", "--workloads", "w1"]


@pytest.mark.slow
def test_bench_runs_end_to_end_at_toy_scale() -> None:
    result = run_module("bench", *TOY, "--job-stores", "sqlite", "--host", "aiohttp")
    # The harness fails unless the service settled every image without a failure.
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["image_host"] == "aiohttp"
    assert list(report["job_stores"]) == ["sqlite"]
    run = report["job_stores"]["sqlite"]["header_delay0"]["w1"]["runs"][0]
    assert run["images"] == 20
    assert run["images_per_s"] > 0
    # Wall ends at the job's finished_at, which the poll that saw it can only follow.
    assert 0 < run["wall_s"] <= run["observed_wall_s"] + 0.01
    assert run["status_requests"] >= 1
    assert run["peak_rss_mb"] > 0
    assert run["peak_processes"] >= 3  # the service, its forkserver and a pool worker
    assert run["ratio_to_reference"] > 0
    assert report["reference"]["w1"]["header"]["runs"][0]["images"] == 20
    figures = {(check["figure"], check["job_store"]) for check in report["targets"]}
    assert ("W1 header delay0, ratio to reference", "sqlite") in figures


@pytest.mark.slow
def test_bench_runs_each_job_store_at_toy_scale(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    result = run_module("bench", *TOY, "--job-stores", "sqlite,memory", "--out", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["cells"] == ["sqlite/header_delay0", "memory/header_delay0"]
    runs = {
        job_store: report["job_stores"][job_store]["header_delay0"]["w1"]["runs"][0]
        for job_store in ("sqlite", "memory")
    }
    # What the service itself said (/readyz) it stored its jobs in.
    assert runs["sqlite"]["store"].startswith("sqlite:///")
    assert runs["memory"]["store"].startswith("memory")
    for run in runs.values():
        assert run["settled_by_replica"] == [20]
        # The loop thread is part of the main process.
        assert 0 < run["loop_cpu_ms_per_image"] <= run["main_cpu_ms_per_image"]
    # Each store's figures are a row of their own when summarised.
    table = run_module("bench.summarise", str(out))
    assert table.returncode == 0, table.stderr
    assert "W1 header delay0, ratio to reference [sqlite] |" in table.stdout
    assert "W1 header delay0, main-process CPU per image (ms) [memory] |" in table.stdout
    assert "W1 header delay0, images/s of sqlite / memory [sqlite] |" in table.stdout


@pytest.mark.slow
@pytest.mark.postgres
async def test_bench_runs_postgres_with_two_replicas_at_toy_scale() -> None:
    await require_postgres()
    args = [*TOY, "--job-stores", "postgres,postgres-x2", "--postgres-server", PG_SERVER]
    result = await asyncio.to_thread(run_module, "bench", *args)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    one = report["job_stores"]["postgres"]["header_delay0"]["w1"]["runs"][0]
    two = report["job_stores"]["postgres-x2"]["header_delay0"]["w1"]["runs"][0]
    assert one["replicas"] == 1 and two["replicas"] == 2
    assert one["store"].startswith("postgresql://") and two["store"].startswith("postgresql://")
    # Both replicas answered; what each settled adds up to the job.
    assert len(two["settled_by_replica"]) == 2
    assert sum(two["settled_by_replica"]) == 20
    assert two["peak_processes"] >= 6  # two services, each with a forkserver and a worker
    assert "postgres_cpu_ms_per_image" in one
    figures = {
        check["figure"] for check in report["figures"] if check["job_store"] == "postgres-x2"
    }
    assert "W1 header delay0, images/s of 2 replicas / 1 replica" in figures
    assert "W1 header delay0, main-process CPU per image, 2 replicas - 1 replica" in figures


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
