"""Orchestrates a benchmark run and prints its one JSON report (see README "Performance")."""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.deployments import (
    DEFAULT_PG_SERVER,
    JOB_STORES,
    Deployment,
    JobStoreSpec,
    postgres_version,
)
from bench.host import ImageHost, start_image_host
from bench.procs import REPO, Profiler, RssSampler, loop_thread_cpu, tree_cpu
from bench.reference import run_reference
from bench.workloads import build_payload, percentile, run_jobs

__all__ = ["CONFIGS", "main"]

PER_VISIT = 20
IMAGE_FILES = 8
MB = 1024 * 1024

# name -> (reference verify mode it is compared with, service environment)
CONFIGS: dict[str, tuple[str, dict[str, str]]] = {
    "full_delay0": (
        "full",
        {"RP_VERIFY": "full", "RP_GPU_DELAY_MIN": "0", "RP_GPU_DELAY_MAX": "0"},
    ),
    "header_delay0": (
        "header",
        {"RP_VERIFY": "header", "RP_GPU_DELAY_MIN": "0", "RP_GPU_DELAY_MAX": "0"},
    ),
    "defaults": ("full", {}),
}
# The configurations each job store runs unless --configs names them: every
# target on the default store (SQLite); the two no-delay ones elsewhere, which
# are where a store's cost shows (the GPU wait only hides it).
DEFAULT_CONFIGS: dict[str, tuple[str, ...]] = {
    "sqlite": tuple(CONFIGS),
    "memory": ("full_delay0", "header_delay0"),
    "postgres": ("full_delay0", "header_delay0"),
    "postgres-x2": ("full_delay0", "header_delay0"),
}
DEFAULT_JOB_STORES = ("sqlite", "memory")
POSTGRES_JOB_STORES = ("postgres", "postgres-x2")
COMMON_ENV = {
    # The image host is on 127.0.0.1, which the SSRF guard refuses by default.
    "RP_ALLOW_PRIVATE_NETWORKS": "true",
}

TARGETS = {
    "w1_full_ratio_min": 0.8,
    "w1_header_ratio_min": 0.8,
    "w1_default_extra_wall_s_max": 0.6,
    "w2_status_p99_ms_max": 20.0,
    "w2_peak_rss_mb_max": 300.0,
    "large_peak_rss_mb_max": 400.0,
    "large_submit_s_max": 2.0,
}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _machine(tree: Path) -> dict[str, Any]:
    with open("/proc/meminfo") as handle:
        total_kb = int(handle.readline().split()[1])
    try:
        commit = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=tree,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {
        "cores": len(os.sched_getaffinity(0)),
        "memory_gb": round(total_kb / MB, 1),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "commit": commit,
        "load_avg_at_start": _load(),
    }


def _load() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def _run_service_workload(
    workdir: Path,
    job_store: JobStoreSpec,
    env: dict[str, str],
    payloads: Sequence[bytes],
    images: int,
    *,
    profile: Path | None = None,
    pg_server: str = DEFAULT_PG_SERVER,
    tree: Path = REPO,
) -> dict[str, Any]:
    env = {**COMMON_ENV, **env}
    with (
        Deployment(
            job_store, env, tree / "stores.csv", workdir, repo=tree, pg_server=pg_server
        ) as deployment,
        RssSampler(deployment.pids) as sampler,
        Profiler(deployment.pids[0], profile),
    ):
        pids = deployment.pids
        cpu_before = [tree_cpu(pid) for pid in pids]
        loop_before = [loop_thread_cpu(pid) for pid in pids]
        database_before = deployment.database_cpu()
        elapsed = time.perf_counter()
        wall, runs = asyncio.run(run_jobs(deployment.base_urls, payloads))
        elapsed = time.perf_counter() - elapsed
        cpu_after = [tree_cpu(pid) for pid in pids]
        loop_after = [loop_thread_cpu(pid) for pid in pids]
        database_after = deployment.database_cpu()
        settled_by_replica = deployment.settled_by_replica()
        store = deployment.store_description()
    main_cpu = [
        after.get(pid, 0.0) - before.get(pid, 0.0)
        for pid, before, after in zip(pids, cpu_before, cpu_after, strict=True)
    ]
    all_cpu = sum(
        sum(after.values()) - sum(before.get(pid, 0.0) for pid in after)
        for before, after in zip(cpu_before, cpu_after, strict=True)
    )
    loop_cpu = sum(after - before for before, after in zip(loop_before, loop_after, strict=True))
    done = sum(run.done for run in runs)
    failed = sum(run.failed for run in runs)
    if done != images or failed:
        raise RuntimeError(f"service settled {done}/{images} images, {failed} failed")
    latencies = [value for run in runs for value in run.status_latencies]
    result: dict[str, Any] = {
        "job_store": job_store.name,
        "store": store,
        "replicas": job_store.replicas,
        "images": images,
        "jobs": len(runs),
        "wall_s": round(wall, 3),
        "images_per_s": round(images / wall, 1),
        "submit_s_max": round(max(run.submit_s for run in runs), 4),
        "observed_wall_s": round(max(run.observed_wall_s for run in runs), 3),
        "job_wall_s": [round(run.wall_s, 3) for run in runs],
        "status_requests": len(latencies),
        "status_p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
        "status_p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "status_max_ms": round(max(latencies) * 1000, 2),
        # CPU per image is far steadier than wall time on a shared machine.
        # Main process = its event loop plus its threads (SQLite writer, pool feeder, logs).
        "main_cpu_ms_per_image": round(1000 * sum(main_cpu) / images, 3),
        "loop_cpu_ms_per_image": round(1000 * loop_cpu / images, 3),
        "total_cpu_ms_per_image": round(1000 * all_cpu / images, 3),
        "peak_rss_mb": round(sampler.peak / MB, 1),
        "peak_processes": sampler.peak_processes,
        "rss_samples": sampler.samples,
        "settled_by_replica": settled_by_replica,
    }
    database_cpu = 0.0
    if database_before is not None and database_after is not None:
        database_cpu = sum(
            cpu - database_before.get(pid, 0.0) for pid, cpu in database_after.items()
        )
        result["postgres_cpu_ms_per_image"] = round(1000 * database_cpu / images, 3)
    # How many of the machine's cores the service (and its database) kept busy.
    result["cores_busy"] = round((all_cpu + database_cpu) / elapsed, 2)
    if job_store.replicas > 1:
        result["main_cpu_s_by_replica"] = [round(value, 3) for value in main_cpu]
        # The 300 MB target is per service process tree.
        result["peak_rss_mb_per_replica"] = round(max(sampler.peak_per_root) / MB, 1)
    return result


def _median(values: Sequence[float]) -> float:
    return round(statistics.median(values), 3)


def _summarise(runs: list[dict[str, Any]], keys: Sequence[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {
        key: _median([run[key] for run in runs]) for key in keys if key in runs[0]
    }
    summary["runs"] = runs
    return summary


def _workload_urls(host: ImageHost, name: str, count: int) -> list[str]:
    return [host.url(number, name) for number in range(count)]


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    w1_images = max(PER_VISIT, int(2000 * args.scale))
    w2_jobs, w2_images = 10, max(PER_VISIT, int(1000 * args.scale))
    report: dict[str, Any] = {"machine": _machine(args.tree), "repeats": args.repeats}
    if args.tree != REPO:
        report["tree"] = str(args.tree)
    if args.label:
        report["label"] = args.label
    job_stores = [JOB_STORES[name] for name in args.job_stores]
    if any(spec.kind == "postgresql" for spec in job_stores) or any(
        JOB_STORES[name].kind == "postgresql" for name in args.large_job_stores
    ):
        report["postgres"] = {"version": postgres_version(args.postgres_server)}
    # (config, job store) in run order: each configuration on every store in
    # turn, so the stores of one configuration see the same machine load.
    cells = [
        (config, spec)
        for config in CONFIGS
        for spec in job_stores
        if config in (args.configs or DEFAULT_CONFIGS[spec.name])
    ]
    report["cells"] = [f"{spec.name}/{config}" for config, spec in cells]
    with tempfile.TemporaryDirectory(prefix="rp-bench-") as tmp:
        workdir = Path(tmp)
        host = start_image_host(workdir, IMAGE_FILES, args.host)
        try:
            log(f"image host: {host.kind} at {host.base_url}")
            report["image_host"] = host.kind
            report["images"] = {
                "files": IMAGE_FILES,
                "size": "640x480 JPEG",
                "mean_bytes": round(
                    statistics.mean(p.stat().st_size for p in (workdir / "www").glob("*.jpg"))
                ),
            }
            w1_urls = _workload_urls(host, "w1", w1_images)
            w2_urls = [_workload_urls(host, f"w2j{job}", w2_images) for job in range(w2_jobs)]
            w2_all = [url for urls in w2_urls for url in urls]
            workloads: dict[str, tuple[list[bytes], list[str]]] = {
                "w1": ([build_payload(w1_urls, PER_VISIT)], w1_urls),
                "w2": ([build_payload(urls, PER_VISIT) for urls in w2_urls], w2_all),
            }
            workloads = {name: spec for name, spec in workloads.items() if name in args.workloads}
            reference: dict[str, dict[str, list[dict[str, Any]]]] = {}
            service: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {}
            for repeat in range(args.repeats):
                for workload, (payloads, urls) in workloads.items():
                    for verify in ("full", "header"):
                        result = run_reference(urls, verify)
                        rate = result["images_per_s"]
                        log(
                            f"r{repeat} reference {workload} {verify}: {rate:.0f}/s,"
                            f" cpu/img main {result['main_cpu_ms_per_image']} ms"
                            f" all {result['total_cpu_ms_per_image']} ms"
                        )
                        reference.setdefault(workload, {}).setdefault(verify, []).append(result)
                    for config, spec in cells:
                        verify, env = CONFIGS[config]
                        profile = (
                            args.profile / f"r{repeat}-{spec.name}-{config}-{workload}.txt"
                            if args.profile
                            else None
                        )
                        result = _run_service_workload(
                            workdir,
                            spec,
                            env,
                            payloads,
                            len(urls),
                            profile=profile,
                            pg_server=args.postgres_server,
                            tree=args.tree,
                        )
                        ref = reference[workload][verify][-1]
                        result["ratio_to_reference"] = round(
                            result["images_per_s"] / ref["images_per_s"], 3
                        )
                        _log_run(f"r{repeat} {spec.name} {config} {workload}", result)
                        by_config = service.setdefault(spec.name, {}).setdefault(config, {})
                        by_config.setdefault(workload, []).append(result)
            if args.large:
                report["large"] = {}
                for name in args.large_job_stores:
                    report["large"][name] = _run_large(host, workdir, JOB_STORES[name], args)
        finally:
            host.stop()
    report["machine"]["load_avg_at_end"] = _load()
    keys = (
        "wall_s",
        "observed_wall_s",
        "images_per_s",
        "ratio_to_reference",
        "submit_s_max",
        "status_p50_ms",
        "status_p99_ms",
        "main_cpu_ms_per_image",
        "loop_cpu_ms_per_image",
        "total_cpu_ms_per_image",
        "postgres_cpu_ms_per_image",
        "cores_busy",
        "peak_rss_mb",
        "peak_rss_mb_per_replica",
    )
    report["reference"] = {
        workload: {
            verify: _summarise(
                runs, ("wall_s", "images_per_s", "main_cpu_ms_per_image", "total_cpu_ms_per_image")
            )
            for verify, runs in modes.items()
        }
        for workload, modes in reference.items()
    }
    report["job_stores"] = {
        name: {
            config: {workload: _summarise(runs, keys) for workload, runs in by_workload.items()}
            for config, by_workload in by_config.items()
        }
        for name, by_config in service.items()
    }
    report["targets"] = _check_targets(report)
    report["figures"] = _figures(report)
    return report


def _log_run(label: str, result: dict[str, Any]) -> None:
    extra = ""
    if "postgres_cpu_ms_per_image" in result:
        extra = f" postgres {result['postgres_cpu_ms_per_image']} ms"
    if result["replicas"] > 1:
        extra += f", settled by replica {result['settled_by_replica']}"
    log(
        f"{label}: {result['images_per_s']:.0f}/s ({result['ratio_to_reference']:.2f}x),"
        f" p99 {result['status_p99_ms']} ms, {result['peak_rss_mb']} MB,"
        f" cpu/img loop {result['loop_cpu_ms_per_image']} ms"
        f" main {result['main_cpu_ms_per_image']} ms"
        f" all {result['total_cpu_ms_per_image']} ms{extra}, {result['cores_busy']} cores busy"
    )


def _run_large(
    host: ImageHost, workdir: Path, job_store: JobStoreSpec, args: argparse.Namespace
) -> dict[str, Any]:
    """One 100,000-image job on the default settings: completes? peak RSS, submit time."""
    images = args.large_images
    urls = _workload_urls(host, f"large-{job_store.name}", images)
    payload = build_payload(urls, PER_VISIT)
    log(f"large job on {job_store.name}: {images} images, {len(payload) / MB:.1f} MB body")
    result = _run_service_workload(
        workdir,
        job_store,
        {},
        [payload],
        images,
        profile=args.profile / f"large-{job_store.name}.txt" if args.profile else None,
        pg_server=args.postgres_server,
        tree=args.tree,
    )
    result["body_mb"] = round(len(payload) / MB, 2)
    result["reference_full_images_per_s"] = run_reference(urls[:10000], "full")["images_per_s"]
    result["ratio_to_reference"] = round(
        result["images_per_s"] / result["reference_full_images_per_s"], 3
    )
    log(f"large job: {json.dumps({k: v for k, v in result.items() if k != 'job_wall_s'})}")
    return result


def _figure(service: dict[str, Any], config: str, workload: str, key: str) -> float | None:
    value = service.get(config, {}).get(workload, {}).get(key)
    return None if value is None else float(value)


def _check_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target figure on each job store; ``job_store`` says which."""
    checks: list[dict[str, Any]] = []

    def check(
        name: str, job_store: str, value: float | None, limit: float, ok: Callable[[float], bool]
    ) -> None:
        if value is not None:
            checks.append(
                {
                    "figure": name,
                    "job_store": job_store,
                    "value": value,
                    "target": limit,
                    "met": ok(value),
                }
            )

    for job_store, service in report["job_stores"].items():
        figure = functools.partial(_figure, service)

        check(
            "W1 full delay0, ratio to reference",
            job_store,
            figure("full_delay0", "w1", "ratio_to_reference"),
            TARGETS["w1_full_ratio_min"],
            lambda v: v >= TARGETS["w1_full_ratio_min"],
        )
        check(
            "W1 header delay0, ratio to reference",
            job_store,
            figure("header_delay0", "w1", "ratio_to_reference"),
            TARGETS["w1_header_ratio_min"],
            lambda v: v >= TARGETS["w1_header_ratio_min"],
        )
        default_runs = service.get("defaults", {}).get("w1", {}).get("runs")
        full_runs = service.get("full_delay0", {}).get("w1", {}).get("runs")
        if default_runs and full_runs:
            extra = _median(
                [d["wall_s"] - f["wall_s"] for d, f in zip(default_runs, full_runs, strict=True)]
            )
            check(
                "W1 defaults wall minus full delay0 wall (s)",
                job_store,
                extra,
                TARGETS["w1_default_extra_wall_s_max"],
                lambda v: v <= TARGETS["w1_default_extra_wall_s_max"],
            )
        for config in service:
            check(
                f"W2 {config} status p99 (ms)",
                job_store,
                figure(config, "w2", "status_p99_ms"),
                TARGETS["w2_status_p99_ms_max"],
                lambda v: v <= TARGETS["w2_status_p99_ms_max"],
            )
            # The RSS target is per service process tree: per replica when there are two.
            rss = figure(config, "w2", "peak_rss_mb_per_replica")
            check(
                f"W2 {config} peak RSS (MB)",
                job_store,
                rss if rss is not None else figure(config, "w2", "peak_rss_mb"),
                TARGETS["w2_peak_rss_mb_max"],
                lambda v: v <= TARGETS["w2_peak_rss_mb_max"],
            )
    for job_store, large in report.get("large", {}).items():
        check(
            "100k job peak RSS (MB)",
            job_store,
            large["peak_rss_mb"],
            TARGETS["large_peak_rss_mb_max"],
            lambda v: v <= TARGETS["large_peak_rss_mb_max"],
        )
        check(
            "100k job submit (s)",
            job_store,
            large["submit_s_max"],
            TARGETS["large_submit_s_max"],
            lambda v: v <= TARGETS["large_submit_s_max"],
        )
    return checks


def _figures(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Figures with no target that say what a store costs and what a replica adds."""
    figures: list[dict[str, Any]] = []
    stores = report["job_stores"]
    for job_store, service in stores.items():
        # Header-only is where the loop is the limit, so where a store's CPU shows.
        summary = service.get("header_delay0", {}).get("w1")
        if summary is None:
            continue
        for key, what in (
            ("main_cpu_ms_per_image", "main-process CPU per image (ms)"),
            ("loop_cpu_ms_per_image", "event-loop thread CPU per image (ms)"),
        ):
            figures.append(
                {
                    "figure": f"W1 header delay0, {what}",
                    "job_store": job_store,
                    "value": summary[key],
                }
            )
    # Paired by repeat: the two stores of a pair ran back to back, under the same load.
    for base, other, what in (
        ("memory", "sqlite", "sqlite / memory"),
        ("postgres", "postgres-x2", "2 replicas / 1 replica"),
    ):
        for config, by_workload in stores.get(other, {}).items():
            for workload, summary in by_workload.items():
                paired = stores.get(base, {}).get(config, {}).get(workload)
                if paired is None:
                    continue
                pairs = list(zip(paired["runs"], summary["runs"], strict=True))
                name = f"{workload.upper()} {config.replace('_', ' ')}"
                figures.append(
                    {
                        "figure": f"{name}, images/s of {what}",
                        "job_store": other,
                        "value": _median([b["images_per_s"] / a["images_per_s"] for a, b in pairs]),
                    }
                )
                key = "main_cpu_ms_per_image"
                figures.append(
                    {
                        "figure": f"{name}, main-process CPU per image, {what.replace('/', '-')}",
                        "job_store": other,
                        "value": _median([b[key] - a[key] for a, b in pairs]),
                    }
                )
    return figures


def _names(text: str, known: Sequence[str], what: str) -> list[str]:
    names = [name for name in text.split(",") if name]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(known)})")
    return names


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--repeats", type=int, default=5, help="runs of each figure (median)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply image counts")
    parser.add_argument("--host", choices=("auto", "aiohttp"), default="auto")
    parser.add_argument(
        "--job-stores",
        default=",".join(DEFAULT_JOB_STORES),
        help=f"comma-separated, of {', '.join(JOB_STORES)} (postgres-x2: two replicas)",
    )
    parser.add_argument(
        "--postgres",
        action="store_true",
        help=f"also run {' and '.join(POSTGRES_JOB_STORES)}",
    )
    parser.add_argument(
        "--postgres-server",
        default=DEFAULT_PG_SERVER,
        help="PostgreSQL server; each run gets a fresh database there, dropped afterwards",
    )
    parser.add_argument(
        "--configs",
        help="comma-separated; default: all on sqlite, full_delay0 and header_delay0 elsewhere",
    )
    parser.add_argument("--workloads", default="w1,w2", help="comma-separated")
    parser.add_argument("--large", action="store_true", help="also run the 100,000-image job")
    parser.add_argument("--large-images", type=int, default=100_000)
    parser.add_argument(
        "--large-job-stores", default="sqlite", help="comma-separated job stores for --large"
    )
    parser.add_argument(
        "--tree",
        type=Path,
        default=REPO,
        help="run the service from this checkout (its service/ and stores.csv); default: this one",
    )
    parser.add_argument("--label", help="a name for this run in the report (and bench.summarise)")
    parser.add_argument("--out", type=Path, help="also write the JSON report here")
    parser.add_argument(
        "--profile",
        type=Path,
        help="record each service run with py-spy (collapsed stacks) into this directory",
    )
    args = parser.parse_args(argv)
    args.job_stores = _names(args.job_stores, tuple(JOB_STORES), "job store")
    if args.postgres:
        args.job_stores += [name for name in POSTGRES_JOB_STORES if name not in args.job_stores]
    args.large_job_stores = _names(args.large_job_stores, tuple(JOB_STORES), "job store")
    args.configs = _names(args.configs, tuple(CONFIGS), "config") if args.configs else None
    args.workloads = _names(args.workloads, ("w1", "w2"), "workload")
    args.postgres_server = args.postgres_server.rstrip("/")
    args.tree = args.tree.resolve()
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = run_benchmark(args)
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    # A measurement, not a gate: whether targets are met is in the report.
    return 0
