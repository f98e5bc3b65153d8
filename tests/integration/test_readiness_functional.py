"""/readyz answers 200 only with a store master and a pool that answers; /healthz is liveness."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient

from service import keys
from service.app import create_app
from service.config import Settings
from service.stores import StoreMaster
from tests.support.polling import eventually


async def test_ready_when_store_master_loaded_and_pool_answers(
    client: TestClient[Any, Any],
) -> None:
    response = await client.get("/readyz")
    assert response.status == 200
    assert await response.json() == {"status": "ready"}


async def test_not_ready_without_stores(aiohttp_client: Any, settings: Settings) -> None:
    client = await aiohttp_client(create_app(settings, store_master=StoreMaster({})))
    response = await client.get("/readyz")
    assert response.status == 503
    assert await response.json() == {"status": "unavailable", "reason": "store master not loaded"}
    assert (await client.get("/healthz")).status == 200


async def test_not_ready_when_a_pool_worker_died(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    client = await make_client(make_settings(workers=1))
    pool = client.app[keys.MEASURE_POOL]
    # A real crash: kill the worker process; the executor is then broken for good.
    (worker,) = pool._executor._processes.values()
    os.kill(worker.pid, signal.SIGKILL)

    async def unready() -> dict[str, Any] | None:
        response = await client.get("/readyz")
        return await response.json() if response.status == 503 else None

    body = await eventually(unready)
    assert body["status"] == "unavailable"
    assert body["reason"].startswith("process pool is not answering: BrokenProcessPool")
    assert (await client.get("/healthz")).status == 200


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
        assert await response.json() == {
            "status": "unavailable",
            "reason": "process pool did not answer a ping within 0.2s",
        }
    finally:
        os.kill(worker.pid, signal.SIGCONT)
