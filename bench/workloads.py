"""The workloads, driven over HTTP against a running service: W1, W2 and the large job."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp

__all__ = ["JobRun", "build_payload", "percentile", "run_jobs"]

STORES = ("S00339218", "S01408764", "RP00001", "RP00002")
POLL_INTERVAL = 0.05  # 20 Hz per job
TERMINAL = {"completed", "failed", "cancelled"}


def build_payload(urls: Sequence[str], per_visit: int) -> bytes:
    visits = [
        {
            "store_id": STORES[(start // per_visit) % len(STORES)],
            "image_url": list(urls[start : start + per_visit]),
            "visit_time": "2026-11-29T09:00:00Z",
        }
        for start in range(0, len(urls), per_visit)
    ]
    return json.dumps({"count": len(visits), "visits": visits}).encode()


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile; ``fraction`` in [0, 1]."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class JobRun:
    job_id: int = 0
    submit_s: float = 0.0
    # From the first submit to the job's own finished_at: when it became terminal.
    wall_s: float = 0.0
    # From the first submit to the poll that saw it terminal (up to one poll later).
    observed_wall_s: float = 0.0
    status: str = ""
    done: int = 0
    failed: int = 0
    status_latencies: list[float] = field(default_factory=list)


async def _submit(session: aiohttp.ClientSession, base: str, payload: bytes) -> tuple[int, float]:
    started = time.perf_counter()
    async with session.post(
        f"{base}/api/submit", data=payload, headers={"Content-Type": "application/json"}
    ) as response:
        body = await response.json()
        if response.status != 201:
            raise RuntimeError(f"submit answered {response.status}: {body}")
    return int(body["job_id"]), time.perf_counter() - started


async def _poll_until_terminal(
    session: aiohttp.ClientSession,
    bases: Sequence[str],
    run: JobRun,
    *,
    first: int,
    started: float,
    limit_s: float,
) -> None:
    """Poll at 20 Hz; with several replicas, each poll goes to the next one in turn."""
    path = f"/api/status?jobid={run.job_id}"
    next_at = time.perf_counter()
    turn = first
    while True:
        sent = time.perf_counter()
        async with session.get(bases[turn % len(bases)] + path) as response:
            body: dict[str, Any] = await response.json()
        answered = time.perf_counter()
        turn += 1
        run.status_latencies.append(answered - sent)
        if body.get("status") in TERMINAL:
            run.status = body["status"]
            run.observed_wall_s = answered - started
            return
        if answered - started > limit_s:
            raise RuntimeError(f"job {run.job_id} not finished after {limit_s} s")
        # Fixed-rate polling: a slow answer does not push later polls back.
        next_at += POLL_INTERVAL
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))


async def _progress(
    session: aiohttp.ClientSession, base: str, run: JobRun, started_epoch: float
) -> None:
    async with session.get(f"{base}/api/jobs/{run.job_id}?limit=1") as response:
        body = await response.json()
    run.done, run.failed = body["progress"]["done"], body["progress"]["failed"]
    # Same host, same clock: the service stamps finished_at as the job turns terminal.
    finished = datetime.fromisoformat(body["finished_at"]).timestamp()
    run.wall_s = finished - started_epoch


async def run_jobs(
    bases: Sequence[str],
    payloads: Sequence[bytes],
    limit_s: float = 900.0,
) -> tuple[float, list[JobRun]]:
    """Submit every payload at once, poll each at 20 Hz; returns (wall, runs).

    Every job is submitted to the first of ``bases``; with several replicas
    (sharing one database) the polls go round-robin across all of them, job
    ``n`` starting at replica ``n``.

    Wall runs from the first submit to the last job's ``finished_at``, as the
    reference's runs to its last result. The polls that saw each job terminal
    come up to one poll interval (50 ms) later; that is ``observed_wall_s``.
    """
    connector = aiohttp.TCPConnector(limit=0)
    timeout_cfg = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout_cfg) as session:
        started = time.perf_counter()
        started_epoch = time.time()
        runs = [JobRun() for _ in payloads]

        async def one(position: int, run: JobRun, payload: bytes) -> None:
            run.job_id, run.submit_s = await _submit(session, bases[0], payload)
            await _poll_until_terminal(
                session, bases, run, first=position, started=started, limit_s=limit_s
            )

        pairs = enumerate(zip(runs, payloads, strict=True))
        await asyncio.gather(*(one(position, *pair) for position, pair in pairs))
        await asyncio.gather(*(_progress(session, bases[0], run, started_epoch) for run in runs))
    return max(run.wall_s for run in runs), runs
