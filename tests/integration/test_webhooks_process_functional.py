"""Deliveries outlive the process: SIGKILL the real service with a delivery pending, and it is
delivered after a restart; on PostgreSQL, a replica that dies mid-attempt leaves its
delivery to another once the lease runs out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from service.config import Settings
from tests.support.jobs import Http, post_job, visit
from tests.support.polling import eventually
from tests.support.processes import ServiceProcess, free_port
from tests.support.receivers import Receiver

pytestmark = pytest.mark.slow

SECRET = "whsec-process-test"
Start = Callable[..., Any]


@pytest.fixture
async def start_service(stores_csv: Path) -> AsyncIterator[Start]:
    started: list[ServiceProcess] = []

    async def start(database_url: str, **settings: str) -> ServiceProcess:
        env = {
            "RP_STORES": str(stores_csv),
            "RP_DATABASE_URL": database_url,
            "RP_WORKERS": "1",
            "RP_WEBHOOK_SECRET": SECRET,
            # Nobody reads the pipes until exit: keep the logs short.
            "RP_LOG_LEVEL": "warning",
            **{f"RP_{name.upper()}": value for name, value in settings.items()},
        }
        service = ServiceProcess(env)
        started.append(service)
        await asyncio.to_thread(service.wait_healthy)
        return service

    yield start
    for service in started:
        await asyncio.to_thread(service.kill)


async def delivery_of(http: Http, job_id: int) -> dict[str, Any] | None:
    async with http.get(f"/api/jobs/{job_id}") as response:
        assert response.status == 200, await response.text()
        delivery: dict[str, Any] | None = (await response.json())["delivery"]
        return delivery


async def submit_with_callback(http: Http, url: str) -> int:
    # Its only store is unknown: the job ends as it is created, with nothing to download.
    body = {"count": 1, "visits": [visit("GHOST", "http://127.0.0.1:9/x.png")], "callback_url": url}
    job_id: int = (await (await post_job(http, body)).json())["job_id"]
    return job_id


async def test_a_delivery_pending_across_a_sigkill_is_delivered_after_the_restart(
    start_service: Start, tmp_path: Path
) -> None:
    database = f"sqlite:///{tmp_path / 'jobs.db'}"
    port = free_port()  # nothing listens there during the first run: every attempt fails
    settings = {
        "webhook_retry_base": "0.1",
        "webhook_retry_max_delay": "0.2",
        "webhook_max_attempts": "1000",
    }
    service = await start_service(database, **settings)
    async with aiohttp.ClientSession(service.base_url) as session:
        job_id = await submit_with_callback(session, f"http://127.0.0.1:{port}/hook")

        async def failed_twice() -> dict[str, Any] | None:
            delivery = await delivery_of(session, job_id)
            return delivery if delivery and delivery["attempts"] >= 2 else None

        before = await eventually(failed_twice, within=15)
    assert before["state"] == "pending"
    assert before["last_error"].startswith("connection error")
    await asyncio.to_thread(service.kill)  # SIGKILL, the whole process group

    receiver = Receiver()
    runner = web.AppRunner(receiver.app())
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        again = await start_service(database, **settings)
        async with aiohttp.ClientSession(again.base_url) as session:

            async def delivered() -> dict[str, Any] | None:
                delivery = await delivery_of(session, job_id)
                return delivery if delivery and delivery["state"] == "delivered" else None

            after = await eventually(delivered, within=15)
    finally:
        await runner.cleanup()
    assert after["id"] == before["id"]
    assert after["attempts"] > before["attempts"]
    assert [call.delivery for call in receiver.calls] == [before["id"]]
    assert receiver.calls[0].json()["job_id"] == job_id


@pytest.mark.postgres
async def test_a_delivery_leased_by_a_replica_that_dies_is_taken_over(
    start_service: Start,
    postgres_url: str,
    aiohttp_server: Any,
    make_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
) -> None:
    # The first request is held, so the first replica dies mid-attempt, holding the lease.
    receiver = Receiver(hold=1)
    server = await aiohttp_server(receiver.app())
    # A short lease: total_timeout + claim_timeout.
    dying = await start_service(postgres_url, total_timeout="2", claim_timeout="0.5")
    async with aiohttp.ClientSession(dying.base_url) as session:
        job_id = await submit_with_callback(session, str(server.make_url("/hook")))

    async def first_attempt_arrived() -> bool | None:
        return True if receiver.calls else None

    await eventually(first_attempt_arrived, within=15)
    await asyncio.to_thread(dying.kill)

    survivor = await make_client(
        make_settings(database_url=postgres_url, webhook_secret=SECRET, claim_timeout=0.5)
    )

    async def delivered() -> dict[str, Any] | None:
        delivery = await delivery_of(survivor, job_id)
        return delivery if delivery and delivery["state"] == "delivered" else None

    delivery = await eventually(delivered, within=15)
    receiver.release()
    assert len(receiver.calls) == 2
    assert {call.delivery for call in receiver.calls} == {delivery["id"]}
    # The dead replica never recorded its attempt: the survivor's is the one counted.
    assert delivery["attempts"] == 1
