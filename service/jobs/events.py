"""Live job events: one hub turns changes to jobs into progress and done events for every open
stream.

The hub learns that a job moved in two ways:
- pushed: as a ``JobObserver`` it is told of the images this process recorded and the jobs it
  finished or cancelled (every job, for a store only this process works on);
- read: with a shared store (PostgreSQL replicas) another replica may be doing the work, so
  the jobs streams watch are read from the store once a second, all in one query, and the
  newest page of ongoing jobs is read for streams of every job.

One ticker task, every ``PROGRESS_INTERVAL``, reads what changed, keeps only what is newer
than the last event per job, and hands each stream its batch. A stream is a bounded queue
read by its connection's own handler: no stream costs a task of its own, whatever the number
of jobs. A reader that falls behind gets its backlog merged, intermediate progress dropped and
``done`` events kept; one hopelessly behind is ended, to reconnect afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from service.config import EventSettings
from service.errors import ServiceError, ShuttingDown, StoreUnavailable
from service.jobs.model import JobStatus, JobSummary
from service.jobs.store import CreatedJob, JobStore
from service.pipeline.flow import SettledImage

__all__ = [
    "PROGRESS_INTERVAL",
    "EventHub",
    "EventKind",
    "EventStream",
    "JobEvent",
    "StreamEnd",
    "StreamsFull",
    "event_id",
]

log = logging.getLogger(__name__)

# The most often a job's progress is sent, in seconds: one event per job per tick.
PROGRESS_INTERVAL = 0.25
# How often jobs another replica may be working on are read from a shared store.
STORE_POLL_INTERVAL = 1.0
# Batches a stream may hold before they are merged into one (intermediate progress dropped).
MERGE_AFTER_BATCHES = 8
# Events a stream may hold once merged. Past it the reader is so far behind that its stream
# ends; it reconnects and starts again from the current state.
STREAM_BACKLOG = 10_000
# Jobs whose done event went out, so a late result of a cancelled job sends no second one.
ENDED_JOBS_KEPT = 10_000


class StreamsFull(ServiceError):
    """``max_event_streams`` streams are open: a new one is refused until one closes."""


class EventKind(StrEnum):
    """The SSE event names, as sent."""

    PROGRESS = "progress"
    DONE = "done"


class StreamEnd(StrEnum):
    """Why a stream ended before its job did."""

    SHUTDOWN = "shutdown"  # the process is stopping: the client should reconnect elsewhere
    BEHIND = "behind"  # the reader fell too far behind: it should reconnect
    GONE = "gone"  # the job was deleted, or the client went away


def event_id(summary: JobSummary) -> str:
    """``<job id>-<epoch>-<done + failed>``: grows with every change within a run, and a retry
    starts a new run, so an id names one state of one job on every replica."""
    return f"{summary.job_id}-{summary.epoch}-{summary.done + summary.failed}"


def parse_event_id(text: str | None) -> tuple[int, int, int] | None:
    """(job id, epoch, done + failed) of a ``Last-Event-ID``; None for anything else."""
    parts = (text or "").strip().split("-")
    if len(parts) != 3 or not all(part.isdigit() and len(part) <= 18 for part in parts):
        return None
    job_id, epoch, count = (int(part) for part in parts)
    return job_id, epoch, count


# (epoch, ended, done + failed): a later state of a job always compares greater.
_Order = tuple[int, int, int]


def _order(summary: JobSummary) -> _Order:
    ended = 1 if summary.status.is_terminal else 0
    return summary.epoch, ended, summary.done + summary.failed


@dataclass(slots=True, eq=False)
class JobEvent:
    """One event about one job: its progress, or its end (``done``, with the summary)."""

    kind: EventKind
    summary: JobSummary
    # The wire form, filled in by the first stream that writes it: one encoding for all.
    encoded: bytes | None = None

    @property
    def job_id(self) -> int:
        return self.summary.job_id

    @property
    def id(self) -> str:
        return event_id(self.summary)

    @property
    def order(self) -> _Order:
        return _order(self.summary)


def _event(summary: JobSummary) -> JobEvent:
    kind = EventKind.DONE if summary.status.is_terminal else EventKind.PROGRESS
    return JobEvent(kind, summary)


class EventStream:
    """One client's stream: events of one job (``job_id``) or of every job (None).

    The hub delivers batches; the connection's handler takes them with ``next``.
    """

    def __init__(self, job_id: int | None, alive: Callable[[], bool]) -> None:
        self.job_id = job_id
        self.ended: StreamEnd | None = None
        self._alive = alive
        self._batches: deque[Sequence[JobEvent]] = deque()
        self._held = 0
        self._wake = asyncio.Event()
        # The newest state handed out per job, where an older one could still come in:
        # a per-job stream's job (its first event, a Last-Event-ID), a snapshot's jobs.
        self._sent: dict[int, _Order] = {}

    def deliver(self, batch: Sequence[JobEvent]) -> None:
        if self.ended is not None or not batch:
            return
        self._batches.append(batch)
        self._held += len(batch)
        if len(self._batches) > MERGE_AFTER_BATCHES:
            merged = _merge(self._batches)
            self._batches = deque([merged])
            self._held = len(merged)
            if self._held > STREAM_BACKLOG:
                self.end(StreamEnd.BEHIND)
                return
        self._wake.set()

    def seen(self, job_id: int, order: _Order) -> None:
        """Send only states of the job newer than ``order``: what the client has (its
        ``Last-Event-ID``), or a floor below every state, so no older one follows a newer."""
        self._sent[job_id] = order

    def end(self, reason: StreamEnd) -> None:
        if self.ended is not None:
            return
        self.ended = reason
        if reason is not StreamEnd.SHUTDOWN:
            self._batches.clear()  # a stopping process still sends what is queued
            self._held = 0
        self._wake.set()

    @property
    def alive(self) -> bool:
        return self._alive()

    async def next(self, idle: float) -> list[JobEvent] | None:
        """The events to send, oldest first; ``[]`` after ``idle`` seconds without any (time
        for a heartbeat); None once the stream has ended (``ended`` says why)."""
        if not self._batches and self.ended is None:
            self._wake.clear()
            try:
                async with asyncio.timeout(idle):
                    await self._wake.wait()
            except TimeoutError:
                return []
        if not self._batches:
            return None
        batches, self._batches, self._held = self._batches, deque(), 0
        # Several batches waiting: the reader is behind, so superseded progress goes.
        events = _merge(batches) if len(batches) > 1 else list(batches[0])
        return self._newer(events) if self._sent else events

    def _newer(self, events: list[JobEvent]) -> list[JobEvent]:
        fresh: list[JobEvent] = []
        for event in events:
            sent = self._sent.get(event.job_id)
            if sent is not None:
                if event.order <= sent:
                    continue
                self._sent[event.job_id] = event.order
            fresh.append(event)
        return fresh


def _merge(batches: Iterable[Sequence[JobEvent]]) -> list[JobEvent]:
    """One batch in the same order, without progress a later event of its job supersedes;
    every done event stays."""
    kept: list[JobEvent] = []
    later: set[int] = set()
    for event in reversed([event for batch in batches for event in batch]):
        if event.kind is EventKind.DONE or event.job_id not in later:
            kept.append(event)
            later.add(event.job_id)
    kept.reverse()
    return kept


class EventHub:
    """Every open event stream of this process, and the one task that feeds them."""

    def __init__(
        self,
        store: JobStore,
        settings: EventSettings,
        *,
        interval: float = PROGRESS_INTERVAL,
        poll_interval: float = STORE_POLL_INTERVAL,
    ) -> None:
        self._store = store
        self._max_streams = settings.max_event_streams
        self._snapshot_jobs = settings.max_page_size
        self._interval = interval
        self._poll_interval = poll_interval
        self._streams: set[EventStream] = set()
        self._by_job: dict[int, set[EventStream]] = {}
        self._everything: set[EventStream] = set()
        # What the observer was told since the last tick.
        self._changed: set[int] = set()
        self._finished: dict[int, JobSummary] = {}
        # The state of the last event per ongoing job the hub follows.
        self._state: dict[int, _Order] = {}
        # Job -> the run (epoch) whose done event went out.
        self._ended: OrderedDict[int, int] = OrderedDict()
        self._next_poll = 0.0
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._store_down = False

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._run(), name="event-hub")

    def end_streams(self) -> None:
        """Shutdown: every stream ends now (its client is told to reconnect), new ones are
        refused."""
        self._closed = True
        for stream in list(self._streams):
            stream.end(StreamEnd.SHUTDOWN)

    async def close(self) -> None:
        self.end_streams()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    # -- the job manager's observer --------------------------------------------

    def job_created(self, created: CreatedJob) -> None:
        if self._everything:
            self._changed.add(created.job_id)

    def images_recorded(self, recorded: Sequence[SettledImage]) -> None:
        if self._everything:
            self._changed.update(image.task.job_id for image in recorded)
        elif self._by_job:
            watched = self._by_job
            self._changed.update(
                image.task.job_id for image in recorded if image.task.job_id in watched
            )

    def job_finished(self, summary: JobSummary) -> None:
        if self._everything or summary.job_id in self._by_job:
            self._finished[summary.job_id] = summary

    # -- streams -------------------------------------------------------------

    async def watch_job(
        self, job_id: int, alive: Callable[[], bool], last_event_id: str | None = None
    ) -> EventStream | None:
        """A stream of one job's events, starting with its state now (none if
        ``last_event_id`` names that state already); None when there is no such job."""
        stream = self._open(EventStream(job_id, alive))
        try:
            summary = await self._store.summary(job_id)
        except BaseException:
            self.release(stream)
            raise
        if summary is None:
            self.release(stream)
            return None
        seen = parse_event_id(last_event_id)
        if seen is not None and seen[0] == job_id:
            # A client that has this state gets nothing until the job moves; a done
            # event is never skipped, since an id never marks a job as ended.
            stream.seen(job_id, (seen[1], 0, seen[2]))
        else:
            stream.seen(job_id, (-1, 0, 0))
        stream.deliver([_event(summary)])
        return stream

    async def watch_all(self, alive: Callable[[], bool]) -> EventStream:
        """A stream of every job's events, starting with the progress of the newest page of
        ongoing jobs."""
        stream = self._open(EventStream(None, alive))
        try:
            ongoing = await self._store.recent(self._snapshot_jobs, JobStatus.ONGOING)
        except BaseException:
            self.release(stream)
            raise
        for summary in ongoing:
            # A change the hub sends meanwhile may be older than this read: it is dropped.
            stream.seen(summary.job_id, (-1, 0, 0))
        stream.deliver([_event(summary) for summary in ongoing])
        return stream

    def _open(self, stream: EventStream) -> EventStream:
        if self._closed:
            raise ShuttingDown()
        if len(self._streams) >= self._max_streams:
            raise StreamsFull(
                f"too many event streams open (max_event_streams is {self._max_streams}); "
                "retry later",
                retry_after=1.0,
            )
        self._streams.add(stream)
        if stream.job_id is None:
            self._everything.add(stream)
        else:
            self._by_job.setdefault(stream.job_id, set()).add(stream)
        return stream

    def release(self, stream: EventStream) -> None:
        """The stream's connection is done with it."""
        stream.end(StreamEnd.GONE)
        self._streams.discard(stream)
        if stream.job_id is None:
            self._everything.discard(stream)
            return
        watchers = self._by_job.get(stream.job_id)
        if watchers is not None:
            watchers.discard(stream)
            if not watchers:
                del self._by_job[stream.job_id]

    # -- the ticker ------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self._tick()
            except StoreUnavailable as exc:
                if not self._store_down:
                    log.warning(
                        "live events cannot read the job store", extra={"reason": exc.message}
                    )
                self._store_down = True
            except Exception:
                log.exception("live events failed to read job changes")
            else:
                self._store_down = False

    async def _tick(self) -> None:
        finished, self._finished = self._finished, {}
        changed, self._changed = self._changed, set()
        if not self._streams:
            self._state.clear()
            return
        loop = asyncio.get_running_loop()
        reading = {job for job in changed if job not in finished}
        discover = False
        if loop.time() >= self._next_poll:
            self._next_poll = loop.time() + self._poll_interval
            self._drop_gone_clients()
            if not self._everything:
                self._state = {job: s for job, s in self._state.items() if job in self._by_job}
            if self._store.shared:
                # Another replica may be doing the work: read what the streams watch.
                reading.update(job for job in self._by_job if job not in finished)
                reading.update(job for job in self._state if job not in finished)
                discover = bool(self._everything)
        summaries = list(finished.values())
        if reading:
            read = await self._store.summaries(sorted(reading))
            summaries += read
            found = {summary.job_id for summary in read}
            self._end_watchers(job for job in reading if job not in found)
        if discover:
            summaries += await self._store.recent(self._snapshot_jobs, JobStatus.ONGOING)
        events = [event for summary in summaries if (event := self._if_newer(summary))]
        if events:
            self._publish(events)

    def _if_newer(self, summary: JobSummary) -> JobEvent | None:
        job_id = summary.job_id
        order = _order(summary)
        last = self._state.get(job_id)
        if last is not None and order <= last:
            return None
        ended_epoch = self._ended.get(job_id)
        if ended_epoch is not None and summary.epoch <= ended_epoch:
            # Its done event went out: late results of a cancelled job send no second one.
            return None
        if not summary.status.is_terminal:
            self._state[job_id] = order
            return JobEvent(EventKind.PROGRESS, summary)
        self._state.pop(job_id, None)
        self._ended[job_id] = summary.epoch
        self._ended.move_to_end(job_id)
        while len(self._ended) > ENDED_JOBS_KEPT:
            self._ended.popitem(last=False)
        return JobEvent(EventKind.DONE, summary)

    def _publish(self, events: list[JobEvent]) -> None:
        for stream in self._everything:
            stream.deliver(events)
        if self._by_job:
            for event in events:
                for stream in self._by_job.get(event.job_id, ()):
                    stream.deliver([event])

    def _end_watchers(self, jobs: Iterable[int]) -> None:
        """Jobs that are gone (deleted by retention): their streams end, nothing follows."""
        for job_id in jobs:
            self._state.pop(job_id, None)
            for stream in list(self._by_job.get(job_id, ())):
                stream.end(StreamEnd.GONE)

    def _drop_gone_clients(self) -> None:
        # A handler only notices a closed connection when it writes; this frees the slot
        # of a client that went away between two heartbeats within a second.
        for stream in list(self._streams):
            if not stream.alive:
                stream.end(StreamEnd.GONE)
