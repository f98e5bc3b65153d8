"""Two real services on one PostgreSQL database form one service."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.support.image_host import ImageHost
from tests.support.jobs import submit, visit
from tests.support.processes import ServiceProcess

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

CLAIM_TIMEOUT = 1.5
Start = Callable[..., Any]


@pytest.fixture
async def start_replica(stores_csv: Path, postgres_url: str) -> AsyncIterator[Start]:
    started: list[ServiceProcess] = []

    async def start(**settings: str) -> ServiceProcess:
        env = {
            "RP_STORES": str(stores_csv),
            "RP_DATABASE_URL": postgres_url,
            "RP_WORKERS": "1",
            "RP_MAX_IN_FLIGHT": "4",
            "RP_GPU_DELAY_MIN": "0.02",
            "RP_GPU_DELAY_MAX": "0.05",
            "RP_CLAIM_TIMEOUT": str(CLAIM_TIMEOUT),
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


async def status(session: aiohttp.ClientSession, job_id: int) -> str:
    async with session.get("/api/status", params={"jobid": str(job_id)}) as response:
        assert response.status == 200, await response.text()
        value: str = (await response.json())["status"]
        return value


async def wait_finished(session: aiohttp.ClientSession, job_id: int, within: float = 60) -> str:
    deadline = time.monotonic() + within
    while (found := await status(session, job_id)) == "ongoing":
        assert time.monotonic() < deadline, f"job {job_id} still ongoing"
        await asyncio.sleep(0.05)
    return found


async def measured_here(session: aiohttp.ClientSession) -> int:
    async with session.get("/metrics") as response:
        text = await response.text()
    counter = r'^retail_pulse_images_processed_total\{outcome="measured"\} (\S+)$'
    match = re.search(counter, text, re.M)
    assert match, "no measured-images counter"
    return int(float(match[1]))


async def queued_here(session: aiohttp.ClientSession) -> int:
    async with session.get("/metrics") as response:
        text = await response.text()
    match = re.search(r"^retail_pulse_images_queued (\S+)$", text, re.M)
    assert match, "no queued-images gauge"
    return int(float(match[1]))


def urls(image_host: ImageHost, count: int, tag: str) -> list[str]:
    return [image_host.url(f"/img/{8 + n % 50}x8.png?{tag}={n}") for n in range(count)]


async def test_any_replica_answers_any_job_and_both_share_its_images(
    start_replica: Start, image_host: ImageHost
) -> None:
    first, second = await start_replica(), await start_replica()
    async with (
        aiohttp.ClientSession(first.base_url) as one,
        aiohttp.ClientSession(second.base_url) as two,
    ):
        job_id = await submit(one, visit("RP00001", *urls(image_host, 400, "shared")))
        assert await wait_finished(two, job_id) == "completed"
        async with two.get(f"/api/jobs/{job_id}/results", params={"format": "csv"}) as response:
            assert response.status == 200
            assert (await response.text()).count("\n") == 401
        async with one.get("/api/jobs") as response:
            assert [job["job_id"] for job in (await response.json())["jobs"]] == [job_id]
        shares = [await measured_here(one), await measured_here(two)]
    assert sum(shares) == 400  # every image measured once, across both
    assert min(shares) > 0, shares


async def test_ids_stay_unique_when_both_take_submits_at_once(
    start_replica: Start, image_host: ImageHost
) -> None:
    first, second = await start_replica(), await start_replica()
    url = image_host.url("/img/4x4.png")
    async with (
        aiohttp.ClientSession(first.base_url) as one,
        aiohttp.ClientSession(second.base_url) as two,
    ):
        ids = await asyncio.gather(
            *(submit(session, visit("RP00001", url)) for session in [one, two] * 15)
        )
    assert len(set(ids)) == 30


async def test_a_killed_replica_s_images_are_taken_over(
    start_replica: Start, image_host: ImageHost, postgres_url: str
) -> None:
    doomed, survivor = await start_replica(), await start_replica()
    async with aiohttp.ClientSession(doomed.base_url) as session:
        job_id = await submit(session, visit("RP00001", *urls(image_host, 200, "takeover")))
        # Wait until the doomed replica holds claims, then kill it (SIGKILL, its group).
        connection = await asyncpg.connect(postgres_url)
        try:
            for _ in range(200):
                held = await connection.fetchval(
                    "SELECT count(*) FROM images i JOIN replicas r ON r.id = i.claimed_by "
                    "WHERE i.state = 1 AND r.pid = $1",
                    doomed.process.pid,
                )
                if held:
                    break
                await asyncio.sleep(0.02)
            assert held, "the doomed replica never claimed anything"
        finally:
            await connection.close()
    killed_at = time.monotonic()
    await asyncio.to_thread(doomed.kill)
    async with aiohttp.ClientSession(survivor.base_url) as session:
        assert await wait_finished(session, job_id) == "completed"
        async with session.get(f"/api/jobs/{job_id}") as response:
            progress = (await response.json())["progress"]
    assert progress == {"total": 200, "done": 200, "failed": 0}
    # Within claim_timeout plus a heartbeat and the work left: generous on a busy box.
    assert time.monotonic() - killed_at < CLAIM_TIMEOUT + 30


async def test_a_small_job_is_not_stuck_behind_a_big_one(
    start_replica: Start, image_host: ImageHost
) -> None:
    first, second = await start_replica(), await start_replica()
    async with (
        aiohttp.ClientSession(first.base_url) as one,
        aiohttp.ClientSession(second.base_url) as two,
    ):
        big = await submit(one, visit("RP00001", *urls(image_host, 1500, "big")))
        small = await submit(two, visit("RP00001", *urls(image_host, 3, "small")))
        assert await wait_finished(two, small, within=30) == "completed"
        # The big job is far from done when the small one is.
        assert await status(one, big) == "ongoing"


async def test_replicas_are_listed_with_their_heartbeats(start_replica: Start) -> None:
    first = await start_replica(replica_name="blue")
    await start_replica(replica_name="green")
    async with (
        aiohttp.ClientSession(first.base_url) as session,
        session.get("/api/replicas") as response,
    ):
        assert response.status == 200
        listed = (await response.json())["replicas"]
    assert sorted(replica["name"] for replica in listed) == ["blue", "green"]
    for replica in listed:
        assert replica["silent_for"] < CLAIM_TIMEOUT
        assert replica["id"] and replica["pid"] > 0


async def test_a_cancel_on_one_replica_stops_the_images_another_has_claimed(
    start_replica: Start, image_host: ImageHost, postgres_url: str
) -> None:
    holder = await start_replica()
    job_urls = [image_host.url(f"/hold/{8 + n}x8.png") for n in range(40)]
    async with aiohttp.ClientSession(holder.base_url) as session:
        job_id = await submit(session, visit("RP00001", *job_urls))
        # The holder claims the job's images (4 in flight, the rest waiting locally).
        connection = await asyncpg.connect(postgres_url)
        try:
            for _ in range(200):
                claimed = await connection.fetchval(
                    "SELECT count(*) FROM images WHERE job_id = $1 AND state = 1", job_id
                )
                if claimed > 4:
                    break
                await asyncio.sleep(0.02)
            assert claimed > 4, "the holder never claimed the job's images"
        finally:
            await connection.close()
    other = await start_replica()
    async with (
        aiohttp.ClientSession(other.base_url) as session,
        session.post(f"/api/jobs/{job_id}/cancel") as response,
    ):
        assert response.status == 202
        assert (await response.json())["status"] == "cancelled"
    # Both replicas hear of it (NOTIFY) and drop what they claimed but had not started.
    for replica in (holder, other):
        async with aiohttp.ClientSession(replica.base_url) as session:
            deadline = time.monotonic() + 5
            while await queued_here(session):
                assert time.monotonic() < deadline, "a replica kept the cancelled job's claims"
                await asyncio.sleep(0.05)
    started = [path for path in image_host.requests if path.startswith("/hold/")]
    image_host.release()  # the images in flight at the cancel finish...
    async with aiohttp.ClientSession(holder.base_url) as session:
        deadline = time.monotonic() + 10
        while True:
            async with session.get(f"/api/jobs/{job_id}", params={"limit": "100"}) as response:
                body = await response.json()
            if body["progress"]["done"] >= len(started):
                break
            assert time.monotonic() < deadline, body["progress"]
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # room for a download that should not start
    # ...and no other image of the job starts, on either replica.
    assert [path for path in image_host.requests if path.startswith("/hold/")] == started
    states = [row["state"] for row in body["results"]]
    assert states.count("measured") == len(started)
    assert states.count("cancelled") == 40 - len(started)
    assert body["status"] == "cancelled"


async def test_one_idempotency_key_on_two_replicas_creates_one_job(
    start_replica: Start, image_host: ImageHost
) -> None:
    first, second = await start_replica(), await start_replica()
    body = {"count": 1, "visits": [visit("RP00001", image_host.url("/img/4x4.png"))]}

    async def post(base_url: str) -> tuple[int, int, str | None]:
        async with (
            aiohttp.ClientSession(base_url) as session,
            session.post("/api/submit", json=body, headers={"Idempotency-Key": "two"}) as response,
        ):
            answer = await response.json()
            return response.status, answer["job_id"], response.headers.get("Idempotent-Replayed")

    answers = await asyncio.gather(*(post(s.base_url) for s in [first, second] * 4))
    assert {status for status, _, _ in answers} == {201}
    assert len({job_id for _, job_id, _ in answers}) == 1
    assert sum(replayed == "true" for _, _, replayed in answers) == 7
