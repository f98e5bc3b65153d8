"""Interleaved A/B of service source trees: ``python -m bench.compare CONFIG WORKLOAD TREE...``.

Each repeat runs the reference once, then every tree in turn on fresh URLs, so
the trees see the same machine load and their medians can be compared on a
noisy host. A tree is a checkout of this repository (``git worktree add``);
its ``service`` package and ``stores.csv`` are used, the harness is this one.
Every run gets a fresh job store of ``--job-store`` (default: SQLite, the
service's default).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.deployments import DEFAULT_PG_SERVER, JOB_STORES, Deployment, JobStoreSpec
from bench.host import start_image_host
from bench.procs import cpu_seconds
from bench.reference import run_reference
from bench.run import COMMON_ENV, CONFIGS, PER_VISIT
from bench.workloads import build_payload, percentile, run_jobs

__all__ = ["main"]

# workload -> (jobs, images per job), as in ``make bench``
WORKLOADS = {"w1": (1, 2000), "w2": (10, 1000)}


@dataclass
class TreeRuns:
    ratios: list[float] = field(default_factory=list)
    main_cpu_ms: list[float] = field(default_factory=list)
    status_p99_ms: list[float] = field(default_factory=list)
    walls: list[float] = field(default_factory=list)

    def summary(self) -> str:
        def median(values: list[float]) -> float:
            return statistics.median(values)

        return (
            f"ratio {median(self.ratios):.3f}, main cpu/img {median(self.main_cpu_ms):.3f} ms,"
            f" status p99 {median(self.status_p99_ms):.1f} ms"
            f" (max {max(self.status_p99_ms):.1f}), wall {median(self.walls):.3f} s"
        )


def _run_tree(
    tree: Path,
    job_store: JobStoreSpec,
    env: dict[str, str],
    payloads: list[bytes],
    images: int,
    *,
    workdir: Path,
    pg_server: str,
) -> tuple[float, float, float]:
    """(wall s, main-process CPU ms per image, status p99 ms) of one run of ``tree``."""
    stores = tree / "stores.csv"
    with Deployment(job_store, env, stores, workdir, repo=tree, pg_server=pg_server) as deployment:
        before = [cpu_seconds(pid) for pid in deployment.pids]
        wall, runs = asyncio.run(run_jobs(deployment.base_urls, payloads))
        after = [cpu_seconds(pid) for pid in deployment.pids]
    main_cpu = sum(after) - sum(before)
    latencies = [value for run in runs for value in run.status_latencies]
    return wall, 1000 * main_cpu / images, 1000 * percentile(latencies, 0.99)


def compare(
    config: str,
    workload: str,
    trees: Sequence[Path],
    repeats: int,
    *,
    scale: float = 1.0,
    job_store: str = "sqlite",
    pg_server: str = DEFAULT_PG_SERVER,
) -> dict[Path, TreeRuns]:
    verify, config_env = CONFIGS[config]
    env = {**COMMON_ENV, **config_env}
    jobs, per_job = WORKLOADS[workload]
    per_job = max(PER_VISIT, int(per_job * scale))
    results = {tree: TreeRuns() for tree in trees}
    with tempfile.TemporaryDirectory(prefix="rp-compare-") as tmp:
        workdir = Path(tmp)
        host = start_image_host(workdir, 8)
        try:
            for repeat in range(repeats):
                urls = [
                    [host.url(number, f"c{repeat}j{job}") for number in range(per_job)]
                    for job in range(jobs)
                ]
                reference = run_reference([url for job in urls for url in job], verify)
                payloads = [build_payload(job, PER_VISIT) for job in urls]
                for tree in trees:
                    wall, cpu, p99 = _run_tree(
                        tree,
                        JOB_STORES[job_store],
                        env,
                        payloads,
                        jobs * per_job,
                        workdir=workdir,
                        pg_server=pg_server,
                    )
                    runs = results[tree]
                    runs.ratios.append(jobs * per_job / wall / reference["images_per_s"])
                    runs.main_cpu_ms.append(cpu)
                    runs.status_p99_ms.append(p99)
                    runs.walls.append(wall)
                    print(
                        f"r{repeat} {tree}: ratio {runs.ratios[-1]:.3f}, cpu/img {cpu:.3f} ms,"
                        f" p99 {p99:.1f} ms, wall {wall:.3f} s",
                        file=sys.stderr,
                        flush=True,
                    )
        finally:
            host.stop()
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    parser.add_argument("config", choices=CONFIGS)
    parser.add_argument("workload", choices=WORKLOADS)
    parser.add_argument("trees", nargs="+", type=Path, help="repository checkouts to compare")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply image counts")
    parser.add_argument("--job-store", choices=JOB_STORES, default="sqlite")
    parser.add_argument("--postgres-server", default=DEFAULT_PG_SERVER)
    args = parser.parse_args(argv)
    results = compare(
        args.config,
        args.workload,
        args.trees,
        args.repeats,
        scale=args.scale,
        job_store=args.job_store,
        pg_server=args.postgres_server.rstrip("/"),
    )
    for tree, runs in results.items():
        print(f"{tree}: {runs.summary()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
