"""The SQLite job store: one file, one process, everything committed before it is reported.

Writes run on one dedicated thread with its own connection, each in a
``BEGIN IMMEDIATE`` transaction, so the event loop never waits on a commit or an
fsync. Reads are short indexed queries on a second connection, on the loop:
WAL mode lets them run beside the writer, and a read costs tens of
microseconds, less than handing it to a thread would.

This process owns every job in the file (a lock file keeps a second process
out), so the progress of ongoing jobs is kept in memory, updated only after
each commit: a status poll reads no database, and never shows progress a
crash would lose. ``synchronous=FULL`` makes each commit survive a power cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import queue
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from service.errors import JobConflict, JobNotFound, StoreFull, StoreUnavailable
from service.jobs.deliveries import (
    Delivery,
    DeliveryOutcome,
    DeliveryState,
    DeliveryView,
    delivery_body,
    new_delivery_id,
)
from service.jobs.memory_store import check_retryable, idempotency_mismatch, overloaded
from service.jobs.model import (
    ImageRow,
    JobStatus,
    JobSummary,
    Visit,
    estimated_bytes,
    image_error,
    store_error,
    summary_bytes,
    unknown_store_error,
)
from service.jobs.queries import (
    CANCELLED,
    FAILED_ROWS,
    JOB_ERRORS,
    JOB_SUMMARY,
    LATEST_DELIVERY,
    LIST_COLUMNS,
    QUEUED,
    RESULT_ROWS,
    SETTLED,
    SUMMARY_COLUMNS,
    UPSERT_STORE_FAILURE,
    errors_json,
    image_row,
    moment,
)
from service.jobs.queries import summary as summary_of
from service.jobs.schema import SchemaError, migrations, newer_schema
from service.jobs.store import (
    CreatedJob,
    IdempotencyKey,
    Recorded,
    Reopened,
    ReplicaRecord,
    StoreOpenError,
    UnfinishedJob,
    this_replica,
)
from service.outcomes import RETRYABLE_FAILURES, UNKNOWN_STORE_REASON, FailureKind
from service.pipeline.fair_queue import ImageTask
from service.pipeline.flow import SettledImage
from service.replica import Replica
from service.store_master import Store

__all__ = ["SqliteJobStore", "StoreLocked"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Jobs deleted per transaction by the sweep, so a flush of results never waits long.
SWEEP_JOBS_PER_TRANSACTION = 20
# Pages handed back to the file system per sweep (``auto_vacuum=INCREMENTAL``).
VACUUM_PAGES = 2000
# Ids per ``summaries`` query, well under SQLite's limit on bound parameters.
SUMMARIES_PER_QUERY = 500


class StoreLocked(StoreOpenError):
    """Another process holds the database file; the message is one line."""


@dataclass(slots=True)
class _Live:
    """An ongoing job's progress as committed, and its estimated size."""

    created_at: datetime
    total: int
    done: int
    failed: int
    size: int
    epoch: int = 0

    def summary(self, job_id: int) -> JobSummary:
        return JobSummary(
            job_id,
            JobStatus.ONGOING,
            self.created_at,
            None,
            self.total,
            self.done,
            self.failed,
            (),
            self.epoch,
        )


@dataclass(frozen=True, slots=True)
class _Committed:
    """What a record transaction did, for the loop to apply to its memory."""

    accepted: list[int]  # positions in the batch
    counts: dict[int, tuple[int, int]]  # job id -> (newly done, newly failed)
    finished: list[JobSummary]


def _connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
    connection.execute("PRAGMA busy_timeout = 5000")
    connection.execute("PRAGMA synchronous = FULL")
    connection.execute("PRAGMA foreign_keys = ON")
    return connection


def _unavailable(exc: sqlite3.Error) -> StoreUnavailable:
    return StoreUnavailable(f"job store unavailable: {exc}")


class _SummaryCache:
    """Finished jobs' answers, so a poll of a finished job reads no database; bounded by the
    bytes they hold (their error lists), least recently used out first."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._entries: OrderedDict[int, tuple[JobSummary, int]] = OrderedDict()
        self.bytes = 0

    def get(self, job_id: int) -> JobSummary | None:
        entry = self._entries.get(job_id)
        if entry is None:
            return None
        self._entries.move_to_end(job_id)
        return entry[0]

    def put(self, summary: JobSummary) -> None:
        self.drop(summary.job_id)
        size = summary_bytes(summary)
        if size > self._limit:
            return  # it alone would fill the cache: read it from the file each time
        self._entries[summary.job_id] = (summary, size)
        self.bytes += size
        while self.bytes > self._limit:
            _, (_, evicted) = self._entries.popitem(last=False)
            self.bytes -= evicted

    def drop(self, job_id: int) -> None:
        entry = self._entries.pop(job_id, None)
        if entry is not None:
            self.bytes -= entry[1]


class _Writer:
    """The one thread that writes: runs functions on its connection, in order."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._calls: queue.SimpleQueue[
            tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]] | None
        ] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="sqlite-writer", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()

    async def call(self, function: Callable[[sqlite3.Connection], T]) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._calls.put((function, future))
        # Shielded: a caller that goes away must not make a commit look undone.
        return await asyncio.shield(future)

    async def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._calls.put(None)
        await asyncio.to_thread(self._thread.join)

    def _run(self) -> None:
        connection: sqlite3.Connection | None = None
        while (item := self._calls.get()) is not None:
            function, future = item
            try:
                if connection is None:
                    connection = _connect(self._path)
                result: Any = function(connection)
            except BaseException as exc:  # handed to the awaiting coroutine
                self._answer(future, None, exc)
                continue
            self._answer(future, result, None)
        if connection is not None:
            connection.close()

    def _answer(
        self, future: asyncio.Future[Any], result: Any, error: BaseException | None
    ) -> None:
        def settle() -> None:
            if future.cancelled():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting
            self._loop.call_soon_threadsafe(settle)


def _transaction(connection: sqlite3.Connection, body: Callable[[], T]) -> T:
    connection.execute("BEGIN IMMEDIATE")
    try:
        result = body()
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
    return result


class SqliteJobStore:
    durable = True
    shared = False

    def __init__(
        self,
        path: Path,
        *,
        ttl: float,
        max_finished: int,
        finished_cache_bytes: int = 64_000_000,
        max_database_bytes: int = 0,
        idempotency_ttl: float = 86_400.0,
        clock: Callable[[], float] = time.time,
        replica: Replica | None = None,
    ) -> None:
        self._replica = replica or Replica()
        self._path = path
        # Wall-clock time: finishing times are kept across restarts, so retention
        # counts from them, not from when this process started.
        self._clock = clock
        self._ttl = ttl
        self._idempotency_ttl = idempotency_ttl
        self._max_finished = max_finished
        self._writer = _Writer(path)
        self._reader: sqlite3.Connection | None = None
        self._lock_file: int | None = None
        self._live: dict[int, _Live] = {}
        self._pending = 0
        self._finished = _SummaryCache(finished_cache_bytes)
        self._finished_count = 0
        # Estimated bytes of every job in the file, and of the unfinished ones alone.
        self._max_bytes = max_database_bytes
        self._total_bytes = 0
        self._write_failure: str | None = None
        # Webhook deliveries taken by this process: id -> lease end (wall clock). Kept in
        # memory: this process alone serves the file, so a restart frees them all.
        self._leases: dict[str, float] = {}

    @property
    def description(self) -> str:
        return f"sqlite:///{self._path}"

    # -- lifecycle ---------------------------------------------------------

    async def open(self) -> None:
        await self._open_and_migrate()
        self._reader = _connect(self._path)
        for job_id, created_at, total, done, failed, size, epoch in self._reader.execute(
            "SELECT id, created_at, total, done, failed, bytes, epoch FROM jobs "
            "WHERE status = 'ongoing'"
        ):
            self._live[job_id] = _Live(moment(created_at), total, done, failed, size, epoch)
            self._pending += total - done
        self._total_bytes = (
            self._read().execute("SELECT COALESCE(SUM(bytes), 0) FROM jobs").fetchone()[0]
        )
        self._finished_count = (
            self._read()
            .execute("SELECT count(*) FROM jobs WHERE finished_at IS NOT NULL")
            .fetchone()[0]
        )

    async def migrate(self) -> int:
        """Bring the schema up to date and close again; returns its version."""
        version = await self._open_and_migrate()
        await self.close()
        return version

    async def _open_and_migrate(self) -> int:
        if not self._path.parent.is_dir():
            raise StoreOpenError(
                f"cannot open the job store {self._path}: "
                f"the directory {self._path.parent} does not exist"
            )
        self._lock()
        self._writer.start()
        try:
            version: int = await self._writer.call(_migrate)
        except sqlite3.Error as exc:
            raise SchemaError(f"cannot open the job store {self._path}: {exc}") from None
        return version

    def _lock(self) -> None:
        """One process per file: a second one would hand out the same work twice."""
        lock_path = self._path.with_name(self._path.name + ".lock")
        try:
            descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreLocked(f"cannot open {lock_path}: {exc.strerror}") from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(descriptor)
            raise StoreLocked(
                f"the job store {self._path} is in use by another process (pid {holder}); "
                "one SQLite file serves one process: use PostgreSQL for replicas"
            ) from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, str(os.getpid()).encode(), 0)
        self._lock_file = descriptor

    async def close(self) -> None:
        await self._writer.stop()
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._lock_file is not None:
            os.close(self._lock_file)  # closing the descriptor releases the lock
            self._lock_file = None

    async def problem(self) -> str | None:
        if self._write_failure is not None:
            # Nothing else may write while idle: try a write, so recovery shows by itself.
            with contextlib.suppress(StoreUnavailable):
                await self._write(_probe_write)
        if self._write_failure is not None:
            return f"job store {self.description} cannot be written: {self._write_failure}"
        try:
            self._read().execute("SELECT 1 FROM jobs LIMIT 1").fetchall()
        except StoreUnavailable as exc:
            return exc.message
        return None

    def pending_images(self) -> int:
        return self._pending

    @property
    def needs_sweep(self) -> bool:
        over_size = self._max_bytes > 0 and self._total_bytes > self._max_bytes
        return over_size or self._finished_count > self._max_finished

    def _ongoing_bytes(self) -> int:
        return sum(live.size for live in self._live.values())

    def _read(self) -> sqlite3.Connection:
        if self._reader is None:
            raise StoreUnavailable("job store is not open")
        return self._reader

    async def _write(self, function: Callable[[sqlite3.Connection], T]) -> T:
        try:
            result = await self._writer.call(function)
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as exc:
            self._write_failure = str(exc)
            raise _unavailable(exc) from None
        self._write_failure = None
        return result

    # -- writes --------------------------------------------------------------

    async def create(
        self,
        visits: Sequence[Visit],
        stores: Sequence[Store | None],
        *,
        max_pending: int,
        idempotency: IdempotencyKey | None = None,
        callback_url: str | None = None,
    ) -> CreatedJob:
        # Creates come one at a time (the job manager's actor), so a key looked up
        # here cannot be taken by another create before this one commits.
        if idempotency is not None:
            replay = self._replay(idempotency)
            if replay is not None:
                return replay
        images = sum(len(visit.image_urls) for visit in visits)
        if self._pending + images > max_pending:
            raise overloaded(self._pending, images, max_pending)
        size = estimated_bytes(visits)
        if self._max_bytes:
            await self._make_room(size)
        created_at = self._clock()
        job_id, unknown, finished = await self._write(
            lambda connection: _transaction(
                connection,
                lambda: _insert_job(
                    connection,
                    created_at,
                    visits,
                    stores,
                    size=size,
                    idempotency=idempotency,
                    callback_url=callback_url,
                ),
            )
        )
        self._total_bytes += size
        failed = sum(unknown.values())
        if finished is not None:
            self._finished_count += 1
            self._remember_finished(finished)
        else:
            self._live[job_id] = _Live(moment(created_at), images, failed, failed, size)
            self._pending += images - failed
        return CreatedJob(job_id, images, unknown, finished)

    def _replay(self, idempotency: IdempotencyKey) -> CreatedJob | None:
        rows = self._query(
            "SELECT k.body_hash, k.job_id, j.total FROM idempotency_keys k "
            "LEFT JOIN jobs j ON j.id = k.job_id WHERE k.key = ? AND k.created_at > ?",
            (idempotency.key, self._clock() - self._idempotency_ttl),
        )
        if not rows:
            return None
        body_hash, job_id, total = rows[0]
        if body_hash != idempotency.body_hash:
            raise idempotency_mismatch(idempotency.key)
        return CreatedJob(job_id, total or 0, {}, replayed=True)

    async def record(self, settled: Sequence[SettledImage]) -> Recorded:
        if not settled:
            return Recorded()
        batch = list(settled)
        finished_at = self._clock()
        committed = await self._write(
            lambda connection: _transaction(
                connection, lambda: _record(connection, batch, finished_at)
            )
        )
        for job_id, (done, failed) in committed.counts.items():
            live = self._live.get(job_id)
            if live is not None:
                live.done += done
                live.failed += failed
                self._pending -= done
            else:  # a cancelled job's late results: its cached answer is stale
                self._finished.drop(job_id)
        self._finished_count += len(committed.finished)
        for summary in committed.finished:
            self._live.pop(summary.job_id, None)
            self._remember_finished(summary)
        return Recorded([batch[position] for position in committed.accepted], committed.finished)

    async def cancel(self, job_id: int) -> JobSummary:
        at = self._clock()
        summary = await self._write(
            lambda connection: _transaction(connection, lambda: _cancel(connection, job_id, at))
        )
        live = self._live.pop(job_id, None)
        if live is not None:
            self._pending -= live.total - live.done
        self._finished_count += 1
        self._remember_finished(summary)
        return summary

    async def retry(self, job_id: int, *, max_pending: int) -> Reopened:
        room = max_pending - self._pending
        reopened, live = await self._write(
            lambda connection: _transaction(
                connection, lambda: _reopen(connection, job_id, room, self._pending, max_pending)
            )
        )
        self._live[job_id] = live
        self._pending += len(reopened.tasks)
        self._finished_count -= 1
        self._finished.drop(job_id)
        return reopened

    async def _make_room(self, size: int) -> None:
        """Delete old finished jobs for a new one of ``size``; ``StoreFull`` if unfinished
        work alone leaves no room."""
        ongoing = self._ongoing_bytes()
        if ongoing + size > self._max_bytes:
            raise StoreFull(
                f"job store is full: unfinished jobs hold about {ongoing} bytes, this job "
                f"needs {size}, max_database_bytes is {self._max_bytes}; retry later"
            )
        excess = self._total_bytes + size - self._max_bytes
        if excess > 0:
            await self.sweep(excess)

    def _remember_finished(self, summary: JobSummary) -> None:
        self._finished.put(summary)

    async def unfinished(self) -> list[UnfinishedJob]:
        found: list[UnfinishedJob] = []
        for job_id in sorted(self._live):
            rows = self._query(
                "SELECT i.idx, COALESCE(i.fetch_url, i.url), v.store_id FROM images i "
                "JOIN visits v ON v.job_id = i.job_id AND v.position = i.visit "
                "WHERE i.job_id = ? AND i.state = ? ORDER BY i.idx",
                (job_id, QUEUED),
            )
            epoch = self._live[job_id].epoch
            tasks = [
                ImageTask(job_id, index, url, store_id, epoch=epoch)
                for index, url, store_id in rows
            ]
            found.append(UnfinishedJob(job_id, tasks))
        return found

    async def sweep(self, excess_bytes: int = 0) -> int:
        """Delete expired finished jobs, those past the count, and the oldest finished ones
        until ``excess_bytes`` (or whatever is over ``max_database_bytes``) is freed."""
        cutoff = self._clock() - self._ttl
        if self._max_bytes:
            excess_bytes = max(excess_bytes, self._total_bytes - self._max_bytes)
        keys_cutoff = self._clock() - self._idempotency_ttl
        deleted = await self._write(
            lambda connection: _sweep(
                connection, cutoff, self._max_finished, excess_bytes, keys_cutoff
            )
        )
        self._finished_count -= len(deleted)
        for job_id, size in deleted:
            self._total_bytes -= size
            self._finished.drop(job_id)
        return len(deleted)

    # -- reads ---------------------------------------------------------------

    def _query(self, sql: str, parameters: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._read().execute(sql, parameters).fetchall()
        except sqlite3.Error as exc:
            raise _unavailable(exc) from None

    def _expired(self, summary: JobSummary) -> bool:
        finished_at = summary.finished_at
        return finished_at is not None and finished_at.timestamp() <= self._clock() - self._ttl

    async def summary(self, job_id: int) -> JobSummary | None:
        live = self._live.get(job_id)
        if live is not None:
            return live.summary(job_id)
        found = self._finished.get(job_id)
        if found is None:
            rows = self._query(JOB_SUMMARY, (job_id,))
            if not rows:
                return None
            found = summary_of(rows[0])
            if found.status.is_terminal:
                self._remember_finished(found)
        if self._expired(found):
            return None
        return found

    async def summaries(self, job_ids: Sequence[int]) -> list[JobSummary]:
        found: list[JobSummary] = []
        unread: list[int] = []
        for job_id in job_ids:
            live = self._live.get(job_id)
            cached = self._finished.get(job_id) if live is None else live.summary(job_id)
            if cached is None:
                unread.append(job_id)
            else:
                found.append(cached)
        for start in range(0, len(unread), SUMMARIES_PER_QUERY):
            chunk = unread[start : start + SUMMARIES_PER_QUERY]
            marks = ", ".join("?" * len(chunk))
            rows = self._query(f"SELECT {SUMMARY_COLUMNS} FROM jobs WHERE id IN ({marks})", chunk)
            for row in rows:
                summary = summary_of(row)
                if summary.status.is_terminal:
                    self._remember_finished(summary)
                found.append(summary)
        return [summary for summary in found if not self._expired(summary)]

    async def rows(
        self, job_id: int, offset: int, limit: int
    ) -> tuple[JobSummary, list[ImageRow]] | None:
        summary = await self.summary(job_id)
        if summary is None:
            return None
        rows = self._query(RESULT_ROWS, (job_id, offset, limit))
        return summary, [image_row(row, summary.status) for row in rows]

    async def failed_rows(
        self, job_id: int, offset: int, limit: int
    ) -> tuple[JobSummary, list[ImageRow]] | None:
        summary = await self.summary(job_id)
        if summary is None:
            return None
        rows = self._query(FAILED_ROWS, (job_id, offset, limit))
        return summary, [image_row(row, summary.status) for row in rows]

    async def recent(
        self, limit: int, status: JobStatus | None = None, before: int | None = None
    ) -> list[JobSummary]:
        clauses = ["(finished_at IS NULL OR finished_at > ?)"]
        parameters: list[Any] = [self._clock() - self._ttl]
        if status is not None:
            clauses.append("status = ?")
            parameters.append(status.value)
        if before is not None:
            clauses.append("id < ?")
            parameters.append(before)
        parameters.append(limit)
        rows = self._query(
            f"SELECT {LIST_COLUMNS} FROM jobs "
            f"WHERE {' AND '.join(clauses)} ORDER BY id DESC LIMIT ?",
            parameters,
        )
        return [summary_of(row) for row in rows]

    async def replicas(self) -> list[ReplicaRecord]:
        return [this_replica(self._replica)]

    # -- webhook deliveries ----------------------------------------------------

    async def take_deliveries(self, limit: int, lease: float) -> list[Delivery]:
        now = self._clock()
        self._leases = {key: until for key, until in self._leases.items() if until > now}
        rows = self._query(
            "SELECT id, job_id, url, body, attempts FROM deliveries "
            "WHERE state = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?",
            (now, limit + len(self._leases)),
        )
        taken = [Delivery(*row) for row in rows if row[0] not in self._leases][:limit]
        for delivery in taken:
            self._leases[delivery.id] = now + lease
        return taken

    async def settle_delivery(self, outcome: DeliveryOutcome) -> bool:
        now = self._clock()
        try:
            return await self._write(
                lambda connection: _transaction(
                    connection, lambda: _settle_delivery(connection, outcome, now)
                )
            )
        finally:
            self._leases.pop(outcome.id, None)

    async def latest_delivery(self, job_id: int) -> DeliveryView | None:
        rows = self._query(LATEST_DELIVERY, (job_id,))
        if not rows:
            return None
        delivery_id, state, attempts, last_error = rows[0]
        return DeliveryView(delivery_id, DeliveryState(state), attempts, last_error)


# -- what runs on the writer thread ---------------------------------------------


def _migrate(connection: sqlite3.Connection) -> int:
    # Set before the first table exists, so deleted jobs' pages can go back to the
    # file system (the sweep calls incremental_vacuum).
    connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
    mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        raise sqlite3.OperationalError(f"cannot use WAL mode (got {mode})")
    known = migrations("sqlite")
    current = connection.execute("PRAGMA user_version").fetchone()[0]
    if current > len(known):
        raise newer_schema(current, len(known))
    for migration in known[current:]:
        # One script per migration, the version bump inside its transaction.
        script = f"BEGIN IMMEDIATE;\n{migration.sql}\nPRAGMA user_version = {migration.version};"
        try:
            connection.executescript(script)
            connection.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
            raise
        log.info("job store schema migrated", extra={"version": migration.version})
    return len(known)


def _probe_write(connection: sqlite3.Connection) -> None:
    """The smallest real write: the schema version, set to what it is."""
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    _transaction(connection, lambda: connection.execute(f"PRAGMA user_version = {version}"))


def _insert_job(
    connection: sqlite3.Connection,
    created_at: float,
    visits: Sequence[Visit],
    stores: Sequence[Store | None],
    *,
    size: int,
    idempotency: IdempotencyKey | None,
    callback_url: str | None,
) -> tuple[int, dict[str, int], JobSummary | None]:
    total = sum(len(visit.image_urls) for visit in visits)
    cursor = connection.execute(
        "INSERT INTO jobs (status, created_at, total, done, failed, bytes, callback_url) "
        "VALUES ('ongoing', ?, ?, 0, 0, ?, ?)",
        (created_at, total, size, callback_url),
    )
    job_id = cursor.lastrowid
    assert job_id is not None
    if idempotency is not None:
        # A key is recorded only with the job it created, in the same transaction.
        connection.execute(
            "INSERT INTO idempotency_keys (key, body_hash, job_id, created_at) VALUES (?, ?, ?, ?)",
            (idempotency.key, idempotency.body_hash, job_id, created_at),
        )
    ranks: dict[str, int] = {}
    for position, visit in enumerate(visits):
        ranks.setdefault(visit.store_id, position)
    connection.executemany(
        "INSERT INTO visits (job_id, position, store_id, store_name, area_code, visit_time, "
        "store_rank) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            (
                job_id,
                position,
                visit.store_id,
                store.name if store else None,
                store.area_code if store else None,
                visit.visit_time,
                ranks[visit.store_id],
            )
            for position, (visit, store) in enumerate(zip(visits, stores, strict=True))
        ),
    )
    connection.executemany(
        "INSERT INTO images (job_id, idx, visit, url, fetch_url, state, error, kind) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        _image_rows(job_id, visits, stores),
    )
    unknown: dict[str, int] = {}
    first_image: dict[str, int] = {}
    index = 0
    for visit, store in zip(visits, stores, strict=True):
        if store is None:
            unknown[visit.store_id] = unknown.get(visit.store_id, 0) + len(visit.image_urls)
            first_image.setdefault(visit.store_id, index)
        index += len(visit.image_urls)
    connection.executemany(
        "INSERT INTO store_failures (job_id, store_id, store_rank, first_index, reason, images, "
        "unknown_store) VALUES (?, ?, ?, ?, ?, ?, 1)",
        (
            (
                job_id,
                store_id,
                ranks[store_id],
                first_image[store_id],
                unknown_store_error(store_id),
                n,
            )
            for store_id, n in unknown.items()
        ),
    )
    failed = sum(unknown.values())
    finished = None
    if failed:
        connection.execute(
            "UPDATE jobs SET done = ?, failed = ? WHERE id = ?", (failed, failed, job_id)
        )
        if failed == total:
            finished = _finish(connection, job_id, created_at)
    return job_id, unknown, finished


def _image_rows(
    job_id: int, visits: Sequence[Visit], stores: Sequence[Store | None]
) -> Iterator[tuple[Any, ...]]:
    index = 0
    unknown_kind = FailureKind.UNKNOWN_STORE.value
    for position, (visit, store) in enumerate(zip(visits, stores, strict=True)):
        fetch_urls = visit.fetch_urls or (None,) * len(visit.image_urls)
        for url, fetch_url in zip(visit.image_urls, fetch_urls, strict=True):
            if store is None:
                yield (
                    job_id,
                    index,
                    position,
                    url,
                    fetch_url,
                    SETTLED,
                    UNKNOWN_STORE_REASON,
                    unknown_kind,
                )
            else:
                yield (job_id, index, position, url, fetch_url, QUEUED, None, None)
            index += 1


def _record(
    connection: sqlite3.Connection, batch: Sequence[SettledImage], finished_at: float
) -> _Committed:
    accepted: list[int] = []
    counts: dict[int, list[int]] = {}
    failures: list[tuple[int, int, int, str, str]] = []
    for position, (task, outcome) in enumerate(batch):
        # A cancelled job's images in flight still report; an image of an earlier run
        # of a retried job (another epoch) does not.
        row = connection.execute(
            "UPDATE images SET state = ?, width = ?, height = ?, error = ?, kind = ? "
            "WHERE job_id = ? AND idx = ? AND state IN (?, ?) AND epoch = ? "
            "RETURNING visit, url",
            (
                SETTLED,
                outcome.width,
                outcome.height,
                outcome.error,
                outcome.kind.value if outcome.kind else None,
                task.job_id,
                task.index,
                QUEUED,
                CANCELLED,
                task.epoch,
            ),
        ).fetchone()
        if row is None:
            continue  # settled already (a repeat), its job is gone, or another run's
        accepted.append(position)
        count = counts.setdefault(task.job_id, [0, 0])
        count[0] += 1
        if outcome.error is not None:
            count[1] += 1
            failures.append((task.job_id, task.index, row[0], row[1], outcome.error))
    for job_id, image_index, visit, url, error in failures:
        _note_failure(connection, job_id, image_index, visit, image_error(url, error))
    finished: list[JobSummary] = []
    for job_id in sorted(counts):
        done, failed = counts[job_id]
        row = connection.execute(
            "UPDATE jobs SET done = done + ?, failed = failed + ? WHERE id = ? "
            "RETURNING done, total, status",
            (done, failed, job_id),
        ).fetchone()
        if row is None:
            continue
        if row[2] == JobStatus.ONGOING.value and row[0] == row[1]:
            finished.append(_finish(connection, job_id, finished_at))
        elif row[2] == JobStatus.CANCELLED.value and failed:
            _write_errors(connection, job_id)  # a late failure joins the list
    return _Committed(accepted, {job: (c[0], c[1]) for job, c in counts.items()}, finished)


def _note_failure(
    connection: sqlite3.Connection, job_id: int, index: int, visit: int, reason: str
) -> None:
    store_id, rank = connection.execute(
        "SELECT store_id, store_rank FROM visits WHERE job_id = ? AND position = ?",
        (job_id, visit),
    ).fetchone()
    connection.execute(UPSERT_STORE_FAILURE, (job_id, store_id, rank, index, reason, 0))


def _write_errors(connection: sqlite3.Connection, job_id: int) -> list[tuple[str, str]]:
    """Build the job's error list from its store failures and keep it on the job row."""
    failures = connection.execute(JOB_ERRORS, (job_id,)).fetchall()
    errors = [
        (store_id, store_error(reason, images, bool(unknown)))
        for store_id, reason, images, unknown in failures
    ]
    connection.execute("UPDATE jobs SET errors = ? WHERE id = ?", (errors_json(errors), job_id))
    return errors


def _cancel(connection: sqlite3.Connection, job_id: int, at: float) -> JobSummary:
    row = connection.execute(
        "UPDATE jobs SET status = 'cancelled', finished_at = ? WHERE id = ? AND status = 'ongoing' "
        "RETURNING id",
        (at, job_id),
    ).fetchone()
    if row is None:
        found = connection.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if found is None:
            raise JobNotFound(f"job {job_id} not found")
        raise JobConflict(f"job already {found[0]}")
    # Never started, never will: they stay without a result.
    connection.execute(
        "UPDATE images SET state = ? WHERE job_id = ? AND state = ?", (CANCELLED, job_id, QUEUED)
    )
    _write_errors(connection, job_id)
    row = connection.execute(
        f"SELECT {SUMMARY_COLUMNS}, callback_url FROM jobs WHERE id = ?", (job_id,)
    ).fetchone()
    summary = summary_of(row[:-1])
    _add_delivery(connection, summary, row[-1], at)
    return summary


def _reopen(
    connection: sqlite3.Connection, job_id: int, room: int, pending: int, max_pending: int
) -> tuple[Reopened, _Live]:
    found = connection.execute("SELECT status, epoch FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if found is None:
        raise JobNotFound(f"job {job_id} not found")
    check_retryable(JobStatus(found[0]))
    kinds = sorted(kind.value for kind in RETRYABLE_FAILURES)
    marks = ", ".join("?" * len(kinds))
    count = connection.execute(
        f"SELECT count(*) FROM images WHERE job_id = ? AND state = ? AND kind IN ({marks})",
        (job_id, SETTLED, *kinds),
    ).fetchone()[0]
    if not count:
        raise JobConflict("nothing to retry")
    if count > room:
        raise overloaded(pending, count, max_pending)
    epoch = found[1] + 1
    connection.execute(
        "UPDATE images SET state = ?, width = NULL, height = NULL, error = NULL, kind = NULL, "
        f"epoch = ? WHERE job_id = ? AND state = ? AND kind IN ({marks})",
        (QUEUED, epoch, job_id, SETTLED, *kinds),
    )
    # The error list is rebuilt from the failures that stay.
    connection.execute(
        "DELETE FROM store_failures WHERE job_id = ? AND unknown_store = 0", (job_id,)
    )
    for index, visit, url, error in connection.execute(
        "SELECT idx, visit, url, error FROM images WHERE job_id = ? AND state = ? "
        "AND error IS NOT NULL AND kind != ? ORDER BY idx",
        (job_id, SETTLED, FailureKind.UNKNOWN_STORE.value),
    ).fetchall():
        _note_failure(connection, job_id, index, visit, image_error(url, error))
    created_at, total, done, failed, size = connection.execute(
        "UPDATE jobs SET status = 'ongoing', finished_at = NULL, errors = NULL, "
        "done = done - ?, failed = failed - ?, epoch = ? WHERE id = ? "
        "RETURNING created_at, total, done, failed, bytes",
        (count, count, epoch, job_id),
    ).fetchone()
    tasks = [
        ImageTask(job_id, index, url, store_id, epoch=epoch)
        for index, url, store_id in connection.execute(
            "SELECT i.idx, COALESCE(i.fetch_url, i.url), v.store_id FROM images i "
            "JOIN visits v ON v.job_id = i.job_id AND v.position = i.visit "
            "WHERE i.job_id = ? AND i.state = ? ORDER BY i.idx",
            (job_id, QUEUED),
        )
    ]
    live = _Live(moment(created_at), total, done, failed, size, epoch)
    return Reopened(job_id, len(tasks), tasks), live


def _finish(connection: sqlite3.Connection, job_id: int, finished_at: float) -> JobSummary:
    """The one transition out of ongoing, in the transaction that settled the last image."""
    errors = _write_errors(connection, job_id)
    status = JobStatus.FAILED if errors else JobStatus.COMPLETED
    row = connection.execute(
        f"UPDATE jobs SET status = ?, finished_at = ? WHERE id = ? "
        f"RETURNING {SUMMARY_COLUMNS}, callback_url",
        (status.value, finished_at, job_id),
    ).fetchone()
    summary = summary_of(row[:-1])
    _add_delivery(connection, summary, row[-1], finished_at)
    return summary


def _add_delivery(
    connection: sqlite3.Connection, summary: JobSummary, url: str | None, at: float
) -> None:
    """A job that ended gets its webhook delivery in the same transaction, if it has a URL."""
    if url is None:
        return
    connection.execute(
        "INSERT INTO deliveries (id, job_id, epoch, url, body, state, attempts, "
        "next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?)",
        (new_delivery_id(), summary.job_id, summary.epoch, url, delivery_body(summary), at, at),
    )


def _settle_delivery(connection: sqlite3.Connection, outcome: DeliveryOutcome, now: float) -> bool:
    pending = outcome.state is DeliveryState.PENDING
    row = connection.execute(
        "UPDATE deliveries SET state = ?, attempts = attempts + 1, last_error = ?, "
        "next_attempt_at = CASE WHEN ? THEN ? ELSE next_attempt_at END, delivered_at = ? "
        "WHERE id = ? AND state = 'pending' AND attempts = ? RETURNING id",
        (
            outcome.state.value,
            outcome.error,
            pending,
            now + (outcome.retry_in or 0.0),
            now if outcome.state is DeliveryState.DELIVERED else None,
            outcome.id,
            outcome.previous_attempts,
        ),
    ).fetchone()
    return row is not None


def _sweep(
    connection: sqlite3.Connection,
    cutoff: float,
    keep: int,
    excess_bytes: int,
    keys_cutoff: float,
) -> list[tuple[int, int]]:
    """Delete what retention says must go; returns (job id, estimated bytes) of each."""
    _transaction(
        connection,
        lambda: connection.execute(
            "DELETE FROM idempotency_keys WHERE created_at <= ?", (keys_cutoff,)
        ),
    )
    finished = connection.execute(
        "SELECT id, finished_at, bytes FROM jobs WHERE finished_at IS NOT NULL "
        "ORDER BY finished_at DESC, id DESC"
    ).fetchall()
    doomed: dict[int, int] = {}
    for position, (job_id, finished_at, size) in enumerate(finished):
        if finished_at <= cutoff or position >= keep:
            doomed[job_id] = size
    # By size: the oldest finished jobs first, until enough is freed.
    freed = sum(doomed.values())
    for job_id, _, size in reversed(finished):
        if freed >= excess_bytes:
            break
        if job_id not in doomed:
            doomed[job_id] = size
            freed += size
    jobs = sorted(doomed)
    for start in range(0, len(jobs), SWEEP_JOBS_PER_TRANSACTION):
        chunk = jobs[start : start + SWEEP_JOBS_PER_TRANSACTION]

        def delete(chunk: list[int] = chunk) -> None:
            for table, column in (
                ("images", "job_id"),
                ("visits", "job_id"),
                ("store_failures", "job_id"),
                ("deliveries", "job_id"),
                ("jobs", "id"),
            ):
                connection.executemany(
                    f"DELETE FROM {table} WHERE {column} = ?", ((job,) for job in chunk)
                )

        _transaction(connection, delete)
    if jobs:
        connection.execute(f"PRAGMA incremental_vacuum({VACUUM_PAGES})")
    return [(job_id, doomed[job_id]) for job_id in jobs]
