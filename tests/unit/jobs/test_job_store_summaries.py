"""``summaries``: many jobs' summaries in one read, on every store (what live events poll)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service.config import Settings
from service.jobs.backends import create_store
from service.jobs.model import JobStatus, Visit
from service.jobs.postgres_store import PostgresJobStore
from service.jobs.store import JobStore
from service.outcomes import FailureKind, ImageOutcome
from service.pipeline.fair_queue import ImageTask
from service.pipeline.flow import SettledImage
from service.replica import Replica
from service.store_master import Store
from tests.support.postgres import fresh_database

SHOP = Store("S1", "Shop", "7")
VISIT = Visit("S1", "t", ("http://x/0", "http://x/1"))


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobStore]:
    if request.param == "postgres":
        request.applymarker(pytest.mark.postgres)
        async for url in fresh_database():
            async for opened in _opened(url):
                yield opened
        return
    url = "memory" if request.param == "memory" else f"sqlite:///{tmp_path / 'jobs.db'}"
    async for opened in _opened(url):
        yield opened


async def _opened(url: str) -> AsyncIterator[JobStore]:
    store = create_store(Settings(database_url=url).store, Replica())
    await store.open()
    yield store
    await store.close()


async def test_summaries_reads_the_jobs_that_exist(store: JobStore) -> None:
    ongoing = (await store.create([VISIT], [SHOP], max_pending=100)).job_id
    finished = (await store.create([VISIT], [SHOP], max_pending=100)).job_id
    if isinstance(store, PostgresJobStore):  # its images are claimed, with a token
        tasks = [task for task in await store.claim(10) if task.job_id == finished]
    else:
        urls = VISIT.image_urls
        tasks = [ImageTask(finished, index, url, "S1") for index, url in enumerate(urls)]
    await store.record(
        [
            SettledImage(tasks[0], ImageOutcome.measured(2, 3)),
            SettledImage(tasks[1], ImageOutcome.failed("HTTP 404", FailureKind.HTTP_STATUS)),
        ]
    )
    found = {summary.job_id: summary for summary in await store.summaries([finished, 999, ongoing])}
    assert sorted(found) == [ongoing, finished]
    assert (found[ongoing].status, found[ongoing].done, found[ongoing].total) == (
        JobStatus.ONGOING,
        0,
        2,
    )
    assert (found[finished].status, found[finished].done, found[finished].failed) == (
        JobStatus.FAILED,
        2,
        1,
    )
    # The done event carries the error list: the summary has it.
    assert [error.store_id for error in found[finished].errors] == ["S1"]
    assert await store.summaries([]) == []
