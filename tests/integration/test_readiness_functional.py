"""/readyz answers 200 only with a store master and a pool that answers; /healthz is liveness."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service.api import keys
from service.app import create_app, drain
from service.config import Settings
from service.store_master import StoreMaster
from tests.support.image_host import ImageHost
from tests.support.jobs import submit, visit
from tests.support.polling import eventually, wait_for_status


async def without_store(response: Any) -> dict[str, Any]:
    """The readiness body without its ``store`` line (tested on its own below)."""
    body: dict[str, Any] = await response.json()
    body.pop("store")
    return body


@pytest.mark.parametrize(
    ("database_url", "said"),
    [("memory", "memory (nothing survives a restart)"), ("sqlite:///{tmp}/j.db", "sqlite:///")],
)
async def test_readiness_says_where_jobs_live(
    make_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    tmp_path: Any,
    database_url: str,
    said: str,
) -> None:
    client = await make_client(make_settings(database_url=database_url.format(tmp=tmp_path)))
    body = await (await client.get("/readyz")).json()
    assert body["status"] == "ready"
    assert body["store"].startswith(said)


async def test_ready_when_store_master_loaded_and_pool_answers(
    client: TestClient[Any, Any],
) -> None:
    response = await client.get("/readyz")
    assert response.status == 200
    assert await without_store(response) == {"status": "ready"}


async def test_not_ready_without_stores(aiohttp_client: Any, settings: Settings) -> None:
    client = await aiohttp_client(create_app(settings, store_master=StoreMaster({})))
    response = await client.get("/readyz")
    assert response.status == 503
    assert await without_store(response) == {
        "status": "unavailable",
        "reason": "store master not loaded",
    }
    assert (await client.get("/healthz")).status == 200


async def test_a_pool_worker_that_died_idle_is_replaced_by_the_readiness_ping(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], image_host: ImageHost
) -> None:
    # A generous ping timeout: this test is about healing, and the rebuilt worker
    # must start (forkserver spawn, Pillow import) within it on a loaded machine.
    client = await make_client(make_settings(workers=1, ready_timeout=30))
    pool = client.app[keys.MEASURE_POOL]
    # A real crash while idle: kill the only worker. No batch would ever notice,
    # and a not-ready instance gets none, so readiness itself must heal the pool.
    (worker,) = pool._executor._processes.values()
    os.kill(worker.pid, signal.SIGKILL)
    response = await client.get("/readyz")
    assert (response.status, await without_store(response)) == (200, {"status": "ready"})
    assert pool.rebuilds == 1
    (replacement,) = pool._executor._processes.values()
    assert replacement.pid != worker.pid
    job_id = await submit(client, visit("S00339218", image_host.url("/img/7x5.png")))
    assert (await wait_for_status(client, job_id))["status"] == "completed"


async def test_not_ready_when_the_pool_does_not_answer_in_time(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    client = await make_client(make_settings(workers=1, ready_timeout=0.2))
    pool = client.app[keys.MEASURE_POOL]
    # Stop the only worker (SIGSTOP): it lives but answers nothing, like a wedged decode.
    (worker,) = pool._executor._processes.values()
    os.kill(worker.pid, signal.SIGSTOP)
    try:
        response = await client.get("/readyz")
        assert response.status == 503
        assert await without_store(response) == {
            "status": "unavailable",
            "reason": "process pool did not answer a ping within 0.2s",
        }
    finally:
        os.kill(worker.pid, signal.SIGCONT)


async def _busy_with_a_stopped_worker(
    make_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    image_host: ImageHost,
    stall_timeout: float,
) -> tuple[TestClient[Any, Any], int]:
    """A pool whose only worker is stopped while it holds a batch."""
    client = await make_client(
        make_settings(workers=1, ready_timeout=0.2, ready_stall_timeout=stall_timeout)
    )
    pool = client.app[keys.MEASURE_POOL]
    (worker,) = pool._executor._processes.values()
    os.kill(worker.pid, signal.SIGSTOP)
    await submit(client, visit("S00339218", image_host.url("/img/9x9.png")))

    async def busy() -> bool | None:
        return True if pool.busy else None

    await eventually(busy)
    return client, worker.pid


async def test_busy_pool_making_progress_is_ready_without_a_ping(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], image_host: ImageHost
) -> None:
    client, pid = await _busy_with_a_stopped_worker(make_client, make_settings, image_host, 60)
    try:
        # A ping would wait behind the batch past ready_timeout; a busy pool is
        # judged by progress instead, and it began this batch just now.
        response = await client.get("/readyz")
        assert response.status == 200
        assert await without_store(response) == {"status": "ready"}
    finally:
        os.kill(pid, signal.SIGCONT)


async def test_busy_pool_without_progress_is_not_ready(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], image_host: ImageHost
) -> None:
    client, pid = await _busy_with_a_stopped_worker(make_client, make_settings, image_host, 0.2)
    try:

        async def stalled() -> dict[str, Any] | None:
            response = await client.get("/readyz")
            return await response.json() if response.status == 503 else None

        body = await eventually(stalled)
        assert body["reason"].startswith("process pool has finished no batch for ")
    finally:
        os.kill(pid, signal.SIGCONT)
    # Once the worker runs again the batch finishes and the pool is ready again.

    async def ready() -> bool | None:
        return True if (await client.get("/readyz")).status == 200 else None

    assert await eventually(ready)


async def test_not_ready_once_draining_for_shutdown(client: TestClient[Any, Any]) -> None:
    assert (await client.get("/readyz")).status == 200
    await drain(client.app)  # what SIGTERM starts; no jobs, so it returns at once
    response = await client.get("/readyz")
    assert response.status == 503
    assert await without_store(response) == {
        "status": "unavailable",
        "reason": "shutting down: new jobs are refused",
    }
    assert (await client.get("/healthz")).status == 200
