"""The live-event hub and its streams: what a slow reader is sent, ids, and done events."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from service.config import Settings
from service.jobs import events
from service.jobs.events import EventHub, EventKind, EventStream, JobEvent, StreamEnd
from service.jobs.memory_store import MemoryJobStore
from service.jobs.model import JobStatus, JobSummary, Visit
from service.outcomes import ImageOutcome
from service.pipeline.fair_queue import ImageTask
from service.pipeline.flow import SettledImage
from service.store_master import Store
from tests.support.polling import eventually

SHOP = Store("S1", "Shop", "7")


def summary(job_id: int, done: int, status: JobStatus = JobStatus.ONGOING) -> JobSummary:
    now = datetime.now(UTC)
    return JobSummary(job_id, status, now, None, 10, done, 0, ())


def progress(job_id: int, done: int) -> JobEvent:
    return JobEvent(EventKind.PROGRESS, summary(job_id, done))


def done(job_id: int, count: int) -> JobEvent:
    return JobEvent(EventKind.DONE, summary(job_id, count, JobStatus.COMPLETED))


def always() -> bool:
    return True


async def test_a_slow_reader_loses_intermediate_progress_never_a_done_event() -> None:
    stream = EventStream(None, always)
    # More batches than a stream holds unmerged, while its reader is busy elsewhere.
    for count in range(1, 10):
        stream.deliver([progress(1, count), progress(2, count)])
    stream.deliver([done(1, 10)])
    stream.deliver([progress(2, 10)])
    for count in range(11, 15):
        stream.deliver([progress(2, count)])
    sent = await stream.next(1.0)
    assert sent is not None
    assert [(event.kind, event.job_id, event.id) for event in sent] == [
        (EventKind.DONE, 1, "1-0-10"),
        (EventKind.PROGRESS, 2, "2-0-14"),
    ]


async def test_a_reader_too_far_behind_is_ended_to_start_afresh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(events, "STREAM_BACKLOG", 20)
    stream = EventStream(None, always)
    for job_id in range(1, 30):
        stream.deliver([done(job_id, 10)])
    assert stream.ended is StreamEnd.BEHIND
    assert await stream.next(1.0) is None


async def test_an_idle_stream_returns_nothing_for_a_heartbeat() -> None:
    stream = EventStream(1, always)
    assert await stream.next(0.01) == []


def test_event_ids_and_last_event_ids() -> None:
    failed = dataclasses.replace(summary(7, 5), failed=2, epoch=3)
    assert events.event_id(failed) == "7-3-7"
    assert events.parse_event_id("7-3-7") == (7, 3, 7)
    for bad in (None, "", "7-3", "7-3-x", "-1-2-3", "7-3-7-1", "1-1-" + "9" * 30):
        assert events.parse_event_id(bad) is None


@pytest.fixture
async def hub() -> AsyncIterator[tuple[EventHub, MemoryJobStore]]:
    store = MemoryJobStore()
    hub = EventHub(store, Settings().events, interval=0.01)
    hub.start()
    yield hub, store
    await hub.close()


async def test_late_results_of_a_cancelled_job_send_no_second_done(
    hub: tuple[EventHub, MemoryJobStore],
) -> None:
    events_hub, store = hub
    job_id = (
        await store.create([Visit("S1", "t", ("http://x/0", "http://x/1"))], [SHOP], max_pending=9)
    ).job_id
    stream = await events_hub.watch_all(always)
    assert [event.id for event in await stream.next(1.0) or []] == [f"{job_id}-0-0"]
    events_hub.job_finished(await store.cancel(job_id))

    async def next_events() -> list[JobEvent] | None:
        return await stream.next(0.05) or None

    (cancelled,) = await eventually(next_events)
    assert (cancelled.kind, cancelled.summary.status) == (EventKind.DONE, JobStatus.CANCELLED)
    # An image that was in flight settles after the cancel: recorded, but no news.
    late = [SettledImage(ImageTask(job_id, 0, "http://x/0", "S1"), ImageOutcome.measured(1, 1))]
    assert (await store.record(late)).accepted
    events_hub.images_recorded(late)
    assert await stream.next(0.2) == []
    assert events_hub.open_streams == 1
    events_hub.release(stream)
    assert events_hub.open_streams == 0
