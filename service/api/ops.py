"""Operator routes: ``/readyz`` (can this instance do work?), ``/metrics`` (Prometheus),
``/api/replicas`` (who serves the job store) and ``/api/stats`` (the dashboard's figures)."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from service.api import keys
from service.api.schemas import ReadySchema, ReplicaListSchema, StatsSchema
from service.jobs.queries import moment
from service.metrics import CONTENT_TYPE_LATEST

__all__ = ["readiness_problem", "routes"]

routes = web.RouteTableDef()

_ready_schema = ReadySchema()
_replicas_schema = ReplicaListSchema()
_stats_schema = StatsSchema()


async def readiness_problem(app: web.Application) -> str | None:
    """Why this instance cannot do work right now, or None when it can."""
    store_master = app.get(keys.STORE_MASTER)
    if store_master is None or len(store_master) == 0:
        return "store master not loaded"
    pool = app.get(keys.MEASURE_POOL)
    if pool is None:
        return "process pool not started"
    store = app.get(keys.JOB_STORE)
    if store is None:
        return "job store not open"
    store_problem = await store.problem()
    if store_problem is not None:
        return store_problem
    manager = app.get(keys.JOB_MANAGER)
    if manager is not None and not manager.accepting:
        # Draining for shutdown: a balancer should stop sending new jobs here.
        return "shutting down: new jobs are refused"
    settings = app[keys.SETTINGS]
    if pool.busy:
        # A ping would queue behind the running batches and time out on a healthy,
        # loaded pool; progress is the better evidence, and it costs nothing.
        idle_for = time.monotonic() - pool.progress_at
        if idle_for > settings.ready_stall_timeout:
            return f"process pool has finished no batch for {idle_for:.0f}s"
        return None
    timeout = settings.ready_timeout
    try:
        async with asyncio.timeout(timeout):
            await pool.ping()
    except TimeoutError:
        return f"process pool did not answer a ping within {timeout}s"
    except Exception as exc:  # a broken or shut-down pool raises its own kinds
        return f"process pool is not answering: {type(exc).__name__}: {exc}"
    return None


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    problem = await readiness_problem(request.app)
    store = request.app.get(keys.JOB_STORE)
    # Says plainly where jobs live, and for the memory store that a restart loses them.
    described = {"store": store.description} if store is not None else {}
    if problem is not None:
        body = _ready_schema.dump({"status": "unavailable", "reason": problem, **described})
        return web.json_response(body, status=503)
    return web.json_response(_ready_schema.dump({"status": "ready", **described}))


@routes.get("/api/replicas")
async def replicas(request: web.Request) -> web.Response:
    records = await request.app[keys.JOB_STORE].replicas()
    body = {
        "replicas": [
            {
                "id": record.id,
                "name": record.name,
                "host": record.host,
                "pid": record.pid,
                "started_at": moment(record.started_at),
                "heartbeat_at": moment(record.heartbeat_at),
                "silent_for": round(record.silent_for, 3),
            }
            for record in records
        ]
    }
    return web.json_response(_replicas_schema.dump(body))


@routes.get("/api/stats")
async def stats(request: web.Request) -> web.Response:
    figures = await request.app[keys.STATS].read()
    problem = await readiness_problem(request.app)
    body: dict[str, object] = {
        "ready": problem is None,
        "images_per_second": [[end, rate] for end, rate in figures.images_per_second],
        "in_flight": figures.in_flight,
        "queued": figures.queued,
        "pending": figures.pending,
        "failures_by_kind": figures.failures_by_kind,
        "replicas": figures.replicas,
    }
    if problem is not None:
        body["reason"] = problem
    return web.json_response(_stats_schema.dump(body))


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    body = request.app[keys.METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
