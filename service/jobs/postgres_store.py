"""The PostgreSQL job store: one database shared by any number of replicas.

Every replica can answer for every job: status, pages and lists read the
database (a primary-key read through asyncpg's pool). Work is shared through
claims: a replica takes a batch of queued images (``FOR UPDATE SKIP LOCKED``),
marks them with its id and a fresh claim token, and reports their outcomes
under that token. A replica heartbeats every ``claim_timeout / 3``; the images
of one whose heartbeat is older than ``claim_timeout`` go back to the queue,
and a late result under the old token is then ignored, so each image settles
once. ``NOTIFY rp_work`` wakes idle replicas as soon as there is work.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeAlias, TypeVar

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from service.config import StoreSettings
from service.database_url import mask_password
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
    unknown_store_error,
)
from service.jobs.queries import (
    CANCELLED,
    CLAIMED,
    FAILED_ROWS,
    JOB_ERRORS,
    LATEST_DELIVERY,
    LIST_COLUMNS,
    QUEUED,
    RESULT_ROWS,
    SETTLED,
    SUMMARY_COLUMNS,
    UPSERT_STORE_FAILURE,
    errors_json,
    image_row,
    numbered,
    summary,
)
from service.jobs.schema import migrations, newer_schema
from service.jobs.stats import ReplicaStats
from service.jobs.store import (
    CreatedJob,
    IdempotencyKey,
    Recorded,
    Reopened,
    ReplicaRecord,
    StoreOpenError,
    UnfinishedJob,
)
from service.outcomes import RETRYABLE_FAILURES, UNKNOWN_STORE_REASON, FailureKind
from service.pipeline.fair_queue import ImageTask
from service.pipeline.flow import SettledImage
from service.replica import Replica
from service.store_master import Store

__all__ = ["WORK_CHANNEL", "PostgresJobStore"]

log = logging.getLogger(__name__)

T = TypeVar("T")
# Every query runs on a connection lent by the pool.
Connection: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"

# Advisory lock keys: one migration at a time; admission checked and the job
# inserted as one step across replicas; one sweep at a time.
MIGRATION_LOCK = 0x52500001
ADMISSION_LOCK = 0x52500002
SWEEP_LOCK = 0x52500003
# The channels replicas LISTEN on: new jobs and claims given back; cancelled jobs.
WORK_CHANNEL = "rp_work"
CANCEL_CHANNEL = "rp_cancel"
# Seconds to connect, and between tries while the database is unreachable at start.
CONNECT_TIMEOUT = 5.0
RETRY_EVERY = 1.0
# A transaction that lost a deadlock or a serialisation race is tried again.
TRANSACTION_TRIES = 3
SWEEP_JOBS_PER_TRANSACTION = 20
NOW = "extract(epoch from clock_timestamp())"

# Failures that mean "the database cannot be reached now", not "this query is wrong".
_UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.TooManyConnectionsError,
)
_ANY_FAILURE: tuple[type[BaseException], ...] = (*_UNREACHABLE, asyncpg.PostgresError)
# Failures at start that waiting will not cure: refuse at once.
_PERMANENT: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,
    asyncpg.exceptions.InvalidPasswordError,
    asyncpg.exceptions.InvalidCatalogNameError,
)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class PostgresJobStore:
    durable = True
    shared = True
    # Counting would cost every replica a query per finished job: the periodic sweep
    # (every minute at most) holds the count.
    needs_sweep = False

    def __init__(self, dsn: str, settings: StoreSettings, replica: Replica) -> None:
        self._dsn = dsn
        self._settings = settings
        self.replica = replica
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None
        self._listener: asyncpg.Connection[asyncpg.Record] | None = None
        self._listen_retry: asyncio.TimerHandle | None = None
        self._closing = False
        # Told when NOTIFY says there is work (the claiming queue sets it).
        self.on_work: Callable[[], None] | None = None
        # Told the id of a job cancelled anywhere (the claiming queue drops its images).
        self.on_cancel: Callable[[int], None] | None = None
        # Store-wide pending images as last read (heartbeat, create): an estimate for
        # the early admission check and the metric; create checks exactly.
        self._pending_estimate = 0
        self._last_failure: str | None = None

    @property
    def description(self) -> str:
        return mask_password(self._dsn)

    # -- lifecycle ---------------------------------------------------------

    async def open(self) -> None:
        await self._connect()
        await self._migrate()
        await self._register()
        await self._listen()

    async def migrate(self) -> int:
        """Bring the schema up to date and close again; returns its version."""
        await self._connect()
        try:
            return await self._migrate()
        finally:
            assert self._pool is not None
            await self._pool.close()
            self._pool = None

    async def _connect(self) -> None:
        deadline = time.monotonic() + self._settings.database_connect_timeout
        while True:
            try:
                self._pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=1,
                    max_size=self._settings.database_pool_size,
                    timeout=CONNECT_TIMEOUT,
                )
                break
            except _PERMANENT as exc:
                raise StoreOpenError(
                    f"cannot use the job store {self.description}: {_describe(exc)}"
                ) from None
            except _UNREACHABLE as exc:
                if time.monotonic() >= deadline:
                    raise StoreOpenError(
                        f"cannot reach the job store {self.description} within "
                        f"{self._settings.database_connect_timeout:g}s: {_describe(exc)}"
                    ) from None
                log.warning(
                    "job store not reachable yet; trying again",
                    extra={"store": self.description, "reason": _describe(exc)},
                )
                await asyncio.sleep(min(RETRY_EVERY, max(0.0, deadline - time.monotonic())))

    async def _migrate(self) -> int:
        known = migrations("postgres")
        async with self._connection() as connection:
            # Two replicas starting at once: the second waits, then finds nothing to do.
            await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
            try:
                await connection.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
                )
                current = await connection.fetchval("SELECT max(version) FROM schema_version")
                current = current or 0
                if current > len(known):
                    raise newer_schema(current, len(known))
                for migration in known[current:]:
                    async with connection.transaction():
                        await connection.execute(migration.sql)
                        await connection.execute(
                            "INSERT INTO schema_version (version) VALUES ($1)", migration.version
                        )
                    log.info("job store schema migrated", extra={"version": migration.version})
            finally:
                await connection.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
        return len(known)

    async def _register(self) -> None:
        replica = self.replica
        await self._execute(
            f"INSERT INTO replicas (id, name, host, pid, started_at, heartbeat_at) "
            f"VALUES ($1, $2, $3, $4, $5, {NOW}) "
            f"ON CONFLICT (id) DO UPDATE SET heartbeat_at = {NOW}",
            replica.id,
            replica.name,
            replica.host,
            replica.pid,
            replica.started_at,
        )

    async def _listen(self) -> None:
        """A connection of its own that LISTENs; lost, it is opened again a little later."""
        self._listen_retry = None
        if self._closing:
            return
        try:
            connection = await asyncpg.connect(self._dsn, timeout=CONNECT_TIMEOUT)
            await connection.add_listener(WORK_CHANNEL, self._notified)
            await connection.add_listener(CANCEL_CHANNEL, self._cancelled)
        except _ANY_FAILURE as exc:
            log.warning("cannot LISTEN for work; will poll", extra={"reason": _describe(exc)})
            self._retry_listen()
            return
        connection.add_termination_listener(lambda _: self._retry_listen())
        self._listener = connection

    def _retry_listen(self) -> None:
        self._listener = None
        if self._closing or self._listen_retry is not None:
            return
        loop = asyncio.get_running_loop()
        self._listen_retry = loop.call_later(
            RETRY_EVERY * 5, lambda: loop.create_task(self._listen())
        )

    def _notified(self, *_: object) -> None:
        if self.on_work is not None:
            self.on_work()

    def _cancelled(self, _connection: object, _pid: int, _channel: str, payload: object, /) -> None:
        if self.on_cancel is not None and isinstance(payload, str) and payload.isdigit():
            self.on_cancel(int(payload))

    async def close(self) -> None:
        self._closing = True
        if self._listen_retry is not None:
            self._listen_retry.cancel()
        if self._listener is not None:
            with contextlib.suppress(*_ANY_FAILURE):
                await self._listener.close(timeout=CONNECT_TIMEOUT)
        if self._pool is not None:
            # Out of the list at once; if the database is away, the heartbeat age says it.
            with contextlib.suppress(StoreUnavailable, *_ANY_FAILURE):
                await self._execute("DELETE FROM replicas WHERE id = $1", self.replica.id)
            await self._pool.close()
            self._pool = None

    async def problem(self) -> str | None:
        try:
            await self._fetchval("SELECT 1")
        except StoreUnavailable as exc:
            return exc.message
        return None

    def pending_images(self) -> int:
        return self._pending_estimate

    # -- connections and errors ----------------------------------------------

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Connection]:
        if self._pool is None:
            raise StoreUnavailable("job store is not open")
        try:
            async with self._pool.acquire(timeout=CONNECT_TIMEOUT) as connection:
                yield connection
        except _UNREACHABLE as exc:
            self._last_failure = _describe(exc)
            raise StoreUnavailable(f"job store unavailable: {_describe(exc)}") from None

    async def _transaction(self, body: Callable[[Connection], Awaitable[T]]) -> T:
        for attempt in range(1, TRANSACTION_TRIES + 1):
            try:
                async with self._connection() as connection, connection.transaction():
                    return await body(connection)
            except (
                asyncpg.exceptions.DeadlockDetectedError,
                asyncpg.exceptions.SerializationError,
            ):
                if attempt == TRANSACTION_TRIES:
                    raise
                log.info("job store transaction lost a race; trying again")
        raise AssertionError("unreachable")

    async def _execute(self, sql: str, *args: Any) -> str:
        async with self._connection() as connection:
            result: str = await connection.execute(sql, *args)
            return result

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async with self._connection() as connection:
            return await connection.fetch(sql, *args)

    async def _fetchval(self, sql: str, *args: Any) -> Any:
        async with self._connection() as connection:
            return await connection.fetchval(sql, *args)

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
        total = sum(len(visit.image_urls) for visit in visits)
        unknown: dict[str, int] = {}
        for visit, store in zip(visits, stores, strict=True):
            if store is None:
                unknown[visit.store_id] = unknown.get(visit.store_id, 0) + len(visit.image_urls)
        failed = sum(unknown.values())
        size = estimated_bytes(visits)
        max_bytes = self._settings.max_database_bytes

        async def insert(connection: Connection) -> CreatedJob:
            # Replicas admit one job at a time, so two cannot both slip under the cap,
            # nor both create a job for one idempotency key.
            await connection.execute("SELECT pg_advisory_xact_lock($1)", ADMISSION_LOCK)
            if idempotency is not None:
                replay = await self._replay(connection, idempotency)
                if replay is not None:
                    return replay
            row = await connection.fetchrow(
                "SELECT COALESCE(SUM(total - done) FILTER (WHERE status = 'ongoing'), 0), "
                "COALESCE(SUM(bytes) FILTER (WHERE status = 'ongoing'), 0), "
                "COALESCE(SUM(bytes), 0) FROM jobs"
            )
            assert row is not None
            pending, ongoing_bytes, all_bytes = row
            self._pending_estimate = pending
            if pending + total - failed > max_pending:
                raise overloaded(pending, total, max_pending)
            if max_bytes and ongoing_bytes + size > max_bytes:
                raise StoreFull(
                    f"job store is full: unfinished jobs hold about {ongoing_bytes} bytes, "
                    f"this job needs {size}, max_database_bytes is {max_bytes}; retry later"
                )
            if max_bytes and all_bytes + size > max_bytes:
                await _delete_jobs(
                    connection, await _oldest_finished(connection, all_bytes + size - max_bytes)
                )
            job_id = await connection.fetchval(
                "INSERT INTO jobs (status, created_at, total, done, failed, bytes, callback_url) "
                f"VALUES ('ongoing', {NOW}, $1, $2, $2, $3, $4) RETURNING id",
                total,
                failed,
                size,
                callback_url,
            )
            await _copy_job(connection, job_id, visits, stores, unknown)
            if idempotency is not None:
                await connection.execute(
                    "INSERT INTO idempotency_keys (key, body_hash, job_id, created_at) "
                    f"VALUES ($1, $2, $3, {NOW})",
                    idempotency.key,
                    idempotency.body_hash,
                    job_id,
                )
            if failed == total:
                return CreatedJob(job_id, total, unknown, await _finish(connection, job_id))
            await connection.execute(f"NOTIFY {WORK_CHANNEL}")
            return CreatedJob(job_id, total, unknown)

        created = await self._transaction(insert)
        if created.finished is None and not created.replayed:
            self._pending_estimate += total - failed
        return created

    async def _replay(
        self, connection: Connection, idempotency: IdempotencyKey
    ) -> CreatedJob | None:
        row = await connection.fetchrow(
            "SELECT k.body_hash, k.job_id, j.total FROM idempotency_keys k "
            "LEFT JOIN jobs j ON j.id = k.job_id "
            f"WHERE k.key = $1 AND k.created_at > {NOW} - $2",
            idempotency.key,
            self._settings.key_ttl,
        )
        if row is None:
            return None
        if row[0] != idempotency.body_hash:
            raise idempotency_mismatch(idempotency.key)
        return CreatedJob(row[1], row[2] or 0, {}, replayed=True)

    async def cancel(self, job_id: int) -> JobSummary:
        async def stop(connection: Connection) -> JobSummary:
            row = await connection.fetchrow(
                f"UPDATE jobs SET status = 'cancelled', finished_at = {NOW} "
                "WHERE id = $1 AND status = 'ongoing' RETURNING id",
                job_id,
            )
            if row is None:
                status = await connection.fetchval("SELECT status FROM jobs WHERE id = $1", job_id)
                if status is None:
                    raise JobNotFound(f"job {job_id} not found")
                raise JobConflict(f"job already {status}")
            # Queued and claimed alike: none starts now. A claimed one keeps its claim, so
            # a replica that had started it still records its result.
            await connection.execute(
                f"UPDATE images SET state = {CANCELLED} "
                f"WHERE job_id = $1 AND state IN ({QUEUED}, {CLAIMED})",
                job_id,
            )
            await _write_errors(connection, job_id)
            # Replicas holding its claims drop them now rather than at their heartbeat.
            await connection.execute("SELECT pg_notify($1, $2)", CANCEL_CHANNEL, str(job_id))
            self._pending_estimate = await connection.fetchval(
                "SELECT COALESCE(SUM(total - done), 0) FROM jobs WHERE status = 'ongoing'"
            )
            found = await connection.fetchrow(
                f"SELECT {SUMMARY_COLUMNS}, callback_url FROM jobs WHERE id = $1", job_id
            )
            assert found is not None
            cancelled = summary(tuple(found)[:-1])
            await _add_delivery(connection, cancelled, found[-1])
            return cancelled

        return await self._transaction(stop)

    async def retry(self, job_id: int, *, max_pending: int) -> Reopened:
        kinds = sorted(kind.value for kind in RETRYABLE_FAILURES)

        async def reopen(connection: Connection) -> Reopened:
            await connection.execute("SELECT pg_advisory_xact_lock($1)", ADMISSION_LOCK)
            found = await connection.fetchrow(
                "SELECT status, epoch FROM jobs WHERE id = $1 FOR UPDATE", job_id
            )
            if found is None:
                raise JobNotFound(f"job {job_id} not found")
            check_retryable(JobStatus(found[0]))
            count = await connection.fetchval(
                f"SELECT count(*) FROM images WHERE job_id = $1 AND state = {SETTLED} "
                "AND kind = ANY($2::text[])",
                job_id,
                kinds,
            )
            if not count:
                raise JobConflict("nothing to retry")
            pending = await connection.fetchval(
                "SELECT COALESCE(SUM(total - done), 0) FROM jobs WHERE status = 'ongoing'"
            )
            if pending + count > max_pending:
                raise overloaded(pending, count, max_pending)
            epoch = found[1] + 1
            await connection.execute(
                f"UPDATE images SET state = {QUEUED}, width = NULL, height = NULL, error = NULL, "
                "kind = NULL, claimed_by = NULL, claim = NULL, epoch = $3 "
                f"WHERE job_id = $1 AND state = {SETTLED} AND kind = ANY($2::text[])",
                job_id,
                kinds,
                epoch,
            )
            # The error list is rebuilt from the failures that stay.
            await connection.execute(
                "DELETE FROM store_failures WHERE job_id = $1 AND NOT unknown_store", job_id
            )
            for index, visit, url, error in await connection.fetch(
                "SELECT idx, visit, url, error FROM images "
                f"WHERE job_id = $1 AND state = {SETTLED} "
                "AND error IS NOT NULL AND kind <> $2 ORDER BY idx",
                job_id,
                FailureKind.UNKNOWN_STORE.value,
            ):
                await _note_failure(connection, job_id, index, visit, image_error(url, error))
            await connection.execute(
                "UPDATE jobs SET status = 'ongoing', finished_at = NULL, errors = NULL, "
                "done = done - $2, failed = failed - $2, epoch = $3 WHERE id = $1",
                job_id,
                count,
                epoch,
            )
            await connection.execute(f"NOTIFY {WORK_CHANNEL}")
            self._pending_estimate = pending + count
            return Reopened(job_id, count, [])  # replicas take the images by claiming

        return await self._transaction(reopen)

    async def ended_jobs(self, job_ids: Sequence[int]) -> list[int]:
        """Which of ``job_ids`` are no longer ongoing (cancelled on another replica)."""
        rows = await self._fetch(
            "SELECT id FROM jobs WHERE id = ANY($1::bigint[]) AND status <> 'ongoing'",
            list(job_ids),
        )
        return [row[0] for row in rows]

    async def claim(self, limit: int) -> list[ImageTask]:
        """Take up to ``limit`` queued images for this replica, every job's first ones first."""

        async def take(connection: Connection) -> list[asyncpg.Record]:
            token = await connection.fetchval("SELECT nextval('claims')")
            # The update touches the picked rows by primary key only; the visit (for the
            # store id) is joined to what it returns. Joined inside the update, the
            # planner of a database without statistics yet scans a job's images once per
            # picked row.
            return await connection.fetch(
                "WITH picked AS ("
                f"  SELECT job_id, idx FROM images WHERE state = {QUEUED} "
                "   ORDER BY idx, job_id LIMIT $2 FOR UPDATE SKIP LOCKED), "
                "claimed AS ("
                f"  UPDATE images i SET state = {CLAIMED}, claimed_by = $1, claim = $3 "
                "   FROM picked WHERE i.job_id = picked.job_id AND i.idx = picked.idx "
                "   RETURNING i.job_id, i.idx, i.visit, COALESCE(i.fetch_url, i.url) AS url, "
                "   i.claim, i.epoch) "
                "SELECT c.job_id, c.idx, c.url, v.store_id, c.claim, c.epoch FROM claimed c "
                "JOIN visits v ON v.job_id = c.job_id AND v.position = c.visit",
                self.replica.id,
                limit,
                token,
            )

        rows = await self._transaction(take)
        rows = sorted(rows, key=lambda row: (row[1], row[0]))
        return [
            ImageTask(job, index, url, store, claim, epoch)
            for job, index, url, store, claim, epoch in rows
        ]

    async def record(self, settled: Sequence[SettledImage]) -> Recorded:
        # One entry per image: a repeat within a batch would otherwise match twice.
        batch: dict[tuple[int, int], SettledImage] = {}
        for image in settled:
            batch.setdefault((image.task.job_id, image.task.index), image)
        if not batch:
            return Recorded()
        images = list(batch.values())

        async def write(connection: Connection) -> Recorded:
            return await _record(connection, images)

        return await self._transaction(write)

    async def heartbeat(self) -> int:
        """Say this replica lives; give back the claims of those that stopped saying so.

        Returns how many images were taken over from silent replicas.
        """
        timeout = self._settings.claim_timeout

        async def beat(connection: Connection) -> int:
            alive = await connection.execute(
                f"UPDATE replicas SET heartbeat_at = {NOW} WHERE id = $1", self.replica.id
            )
            if alive == "UPDATE 0":
                log.warning(
                    "this replica was presumed dead (no heartbeat within claim_timeout); "
                    "its claims went to others"
                )
            taken = await connection.execute(
                f"WITH dead AS (DELETE FROM replicas WHERE heartbeat_at < {NOW} - $1 "
                "RETURNING id) "
                f"UPDATE images SET state = {QUEUED}, claimed_by = NULL, claim = NULL "
                f"WHERE state = {CLAIMED} AND (claimed_by IN (SELECT id FROM dead) "
                "OR claimed_by NOT IN (SELECT id FROM replicas))",
                timeout,
            )
            count = int(taken.split()[-1])
            if count:
                await connection.execute(f"NOTIFY {WORK_CHANNEL}")
            self._pending_estimate = await connection.fetchval(
                "SELECT COALESCE(SUM(total - done), 0) FROM jobs WHERE status = 'ongoing'"
            )
            return count

        taken = await self._transaction(beat)
        if taken:
            log.warning("took over the claims of a silent replica", extra={"images": taken})
        await self._register()  # back in the list if it was presumed dead
        return taken

    async def release_claims(self) -> int:
        """Give back this replica's unsettled claims (a graceful stop), for others to take."""

        async def release(connection: Connection) -> int:
            released = await connection.execute(
                f"UPDATE images SET state = {QUEUED}, claimed_by = NULL, claim = NULL "
                f"WHERE claimed_by = $1 AND state = {CLAIMED}",
                self.replica.id,
            )
            await connection.execute(f"NOTIFY {WORK_CHANNEL}")
            return int(released.split()[-1])

        return await self._transaction(release)

    async def unfinished(self) -> list[UnfinishedJob]:
        # Replicas take work through claims; nothing is queued by hand at start.
        return []

    async def sweep(self) -> int:
        ttl, keep = self._settings.job_ttl, self._settings.max_finished_jobs
        max_bytes = self._settings.max_database_bytes

        async def doomed(connection: Connection) -> list[int]:
            if not await connection.fetchval("SELECT pg_try_advisory_xact_lock($1)", SWEEP_LOCK):
                return []  # another replica is sweeping
            await connection.execute(
                f"DELETE FROM idempotency_keys WHERE created_at <= {NOW} - $1",
                self._settings.key_ttl,
            )
            rows = await connection.fetch(
                "SELECT id FROM jobs WHERE finished_at IS NOT NULL AND "
                f"(finished_at <= {NOW} - $1 OR id IN (SELECT id FROM jobs "
                "WHERE finished_at IS NOT NULL ORDER BY finished_at DESC, id DESC OFFSET $2))",
                ttl,
                keep,
            )
            jobs = {row[0] for row in rows}
            if max_bytes:
                total = await connection.fetchval(
                    "SELECT COALESCE(SUM(bytes), 0) FROM jobs WHERE NOT (id = ANY($1::bigint[]))",
                    list(jobs),
                )
                if total > max_bytes:
                    jobs |= set(await _oldest_finished(connection, total - max_bytes, jobs))
            return sorted(jobs)

        jobs = await self._transaction(doomed)
        for start in range(0, len(jobs), SWEEP_JOBS_PER_TRANSACTION):
            chunk = jobs[start : start + SWEEP_JOBS_PER_TRANSACTION]

            async def delete(connection: Connection, chunk: list[int] = chunk) -> None:
                await _delete_jobs(connection, chunk)

            await self._transaction(delete)
        return len(jobs)

    # -- reads ---------------------------------------------------------------

    async def summary(self, job_id: int) -> JobSummary | None:
        rows = await self._fetch(
            f"SELECT {SUMMARY_COLUMNS}, finished_at <= {NOW} - $2 FROM jobs WHERE id = $1",
            job_id,
            self._settings.job_ttl,
        )
        if not rows or rows[0][-1]:
            return None  # never issued, deleted, or past its time-to-live
        return summary(tuple(rows[0])[:-1])

    async def summaries(self, job_ids: Sequence[int]) -> list[JobSummary]:
        if not job_ids:
            return []
        rows = await self._fetch(
            f"SELECT {SUMMARY_COLUMNS} FROM jobs WHERE id = ANY($1::bigint[]) "
            f"AND (finished_at IS NULL OR finished_at > {NOW} - $2)",
            list(job_ids),
            self._settings.job_ttl,
        )
        return [summary(tuple(row)) for row in rows]

    async def rows(
        self, job_id: int, offset: int, limit: int
    ) -> tuple[JobSummary, list[ImageRow]] | None:
        found = await self.summary(job_id)
        if found is None:
            return None
        rows = await self._fetch(numbered(RESULT_ROWS), job_id, offset, limit)
        return found, [image_row(tuple(row), found.status) for row in rows]

    async def failed_rows(
        self, job_id: int, offset: int, limit: int
    ) -> tuple[JobSummary, list[ImageRow]] | None:
        found = await self.summary(job_id)
        if found is None:
            return None
        rows = await self._fetch(numbered(FAILED_ROWS), job_id, offset, limit)
        return found, [image_row(tuple(row), found.status) for row in rows]

    async def recent(
        self, limit: int, status: JobStatus | None = None, before: int | None = None
    ) -> list[JobSummary]:
        rows = await self._fetch(
            f"SELECT {LIST_COLUMNS} FROM jobs "
            f"WHERE (finished_at IS NULL OR finished_at > {NOW} - $1) "
            "AND ($2::text IS NULL OR status = $2) AND ($3::bigint IS NULL OR id < $3) "
            "ORDER BY id DESC LIMIT $4",
            self._settings.job_ttl,
            status.value if status else None,
            before,
            limit,
        )
        return [summary(tuple(row)) for row in rows]

    # -- webhook deliveries ----------------------------------------------------

    async def take_deliveries(self, limit: int, lease: float) -> list[Delivery]:
        # Any replica may take any due delivery; SKIP LOCKED keeps two from taking one,
        # and the lease hands it to another once its taker has gone silent that long.
        rows = await self._fetch(
            f"UPDATE deliveries SET claimed_until = {NOW} + $2 WHERE id IN ("
            "  SELECT id FROM deliveries WHERE state = 'pending' "
            f"  AND next_attempt_at <= {NOW} AND (claimed_until IS NULL OR claimed_until <= {NOW}) "
            "  ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) "
            "RETURNING id, job_id, url, body, attempts, next_attempt_at",
            limit,
            lease,
        )
        rows = sorted(rows, key=lambda row: row[5])
        return [Delivery(row[0], row[1], row[2], row[3], row[4]) for row in rows]

    async def settle_delivery(self, outcome: DeliveryOutcome) -> bool:
        result = await self._execute(
            "UPDATE deliveries SET state = $2, attempts = attempts + 1, last_error = $3, "
            f"next_attempt_at = CASE WHEN $4::float8 IS NULL THEN next_attempt_at "
            f"ELSE {NOW} + $4::float8 END, claimed_until = NULL, "
            f"delivered_at = CASE WHEN $2 = 'delivered' THEN {NOW} END "
            "WHERE id = $1 AND state = 'pending' AND attempts = $5",
            outcome.id,
            outcome.state.value,
            outcome.error,
            outcome.retry_in if outcome.state is DeliveryState.PENDING else None,
            outcome.previous_attempts,
        )
        return result != "UPDATE 0"

    async def latest_delivery(self, job_id: int) -> DeliveryView | None:
        rows = await self._fetch(numbered(LATEST_DELIVERY), job_id)
        if not rows:
            return None
        delivery_id, state, attempts, last_error = rows[0]
        return DeliveryView(delivery_id, DeliveryState(state), attempts, last_error)

    # -- the replicas' figures for GET /api/stats ---------------------------------

    async def write_stats(self, stats: ReplicaStats) -> None:
        """Replace this replica's row: one small upsert every 5 seconds."""
        try:
            await self._execute(
                "INSERT INTO replica_stats (replica_id, series_end, series, in_flight, queued, "
                f"failures, written_at) VALUES ($1, $2, $3, $4, $5, $6, {NOW}) "
                "ON CONFLICT (replica_id) DO UPDATE SET series_end = excluded.series_end, "
                "series = excluded.series, in_flight = excluded.in_flight, "
                "queued = excluded.queued, failures = excluded.failures, "
                "written_at = excluded.written_at",
                self.replica.id,
                stats.end,
                list(stats.series),
                stats.in_flight,
                stats.queued,
                json.dumps(stats.failures),
            )
        except asyncpg.exceptions.ForeignKeyViolationError:
            # Presumed dead by another's heartbeat: listed again at its own next heartbeat,
            # and its figures with the write after that.
            log.info("this replica is not listed; its stats wait for its next heartbeat")

    async def read_stats(self) -> tuple[list[ReplicaStats], int, int]:
        """Live replicas' figures, how many replicas live, and the store's pending images."""
        timeout = self._settings.claim_timeout
        async with self._connection() as connection:
            rows = await connection.fetch(
                "SELECT s.series_end, s.series, s.in_flight, s.queued, s.failures, "
                f"{NOW} - s.written_at FROM replica_stats s "
                f"JOIN replicas r ON r.id = s.replica_id WHERE r.heartbeat_at > {NOW} - $1",
                timeout,
            )
            counts = await connection.fetchrow(
                f"SELECT (SELECT count(*) FROM replicas WHERE heartbeat_at > {NOW} - $1), "
                "(SELECT COALESCE(SUM(total - done), 0) FROM jobs WHERE status = 'ongoing')",
                timeout,
            )
        assert counts is not None
        figures = [
            ReplicaStats(end, tuple(series), in_flight, queued, json.loads(failures), age)
            for end, series, in_flight, queued, failures, age in rows
        ]
        return figures, counts[0], counts[1]

    async def replicas(self) -> list[ReplicaRecord]:
        rows = await self._fetch(
            f"SELECT id, name, host, pid, started_at, heartbeat_at, {NOW} - heartbeat_at "
            "FROM replicas ORDER BY started_at"
        )
        return [
            ReplicaRecord(row[0].hex, row[1], row[2], row[3], row[4], row[5], max(0.0, row[6]))
            for row in rows
        ]


async def _oldest_finished(
    connection: Connection, excess: int, already: set[int] | None = None
) -> list[int]:
    """The oldest finished jobs (beyond ``already``) whose sizes add up to ``excess``."""
    rows = await connection.fetch(
        "SELECT id, bytes FROM jobs WHERE finished_at IS NOT NULL ORDER BY finished_at, id"
    )
    chosen: list[int] = []
    freed = 0
    for job_id, size in rows:
        if freed >= excess:
            break
        if already is None or job_id not in already:
            chosen.append(job_id)
            freed += size
    return chosen


async def _delete_jobs(connection: Connection, jobs: list[int]) -> None:
    for table, column in (
        ("images", "job_id"),
        ("visits", "job_id"),
        ("store_failures", "job_id"),
        ("deliveries", "job_id"),
        ("jobs", "id"),
    ):
        await connection.execute(f"DELETE FROM {table} WHERE {column} = ANY($1::bigint[])", jobs)


async def _copy_job(
    connection: Connection,
    job_id: int,
    visits: Sequence[Visit],
    stores: Sequence[Store | None],
    unknown: dict[str, int],
) -> None:
    ranks: dict[str, int] = {}
    for position, visit in enumerate(visits):
        ranks.setdefault(visit.store_id, position)
    await connection.copy_records_to_table(
        "visits",
        columns=[
            "job_id",
            "position",
            "store_id",
            "store_name",
            "area_code",
            "visit_time",
            "store_rank",
        ],
        records=[
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
        ],
    )
    records: list[tuple[Any, ...]] = []
    first_image: dict[str, int] = {}
    unknown_kind = FailureKind.UNKNOWN_STORE.value
    index = 0
    for position, (visit, store) in enumerate(zip(visits, stores, strict=True)):
        fetch_urls = visit.fetch_urls or (None,) * len(visit.image_urls)
        if store is None:
            first_image.setdefault(visit.store_id, index)
        for url, fetch_url in zip(visit.image_urls, fetch_urls, strict=True):
            if store is None:
                records.append(
                    (
                        job_id,
                        index,
                        position,
                        url,
                        fetch_url,
                        SETTLED,
                        UNKNOWN_STORE_REASON,
                        unknown_kind,
                    )
                )
            else:
                records.append((job_id, index, position, url, fetch_url, QUEUED, None, None))
            index += 1
    await connection.copy_records_to_table(
        "images",
        columns=["job_id", "idx", "visit", "url", "fetch_url", "state", "error", "kind"],
        records=records,
    )
    if unknown:
        await connection.executemany(
            "INSERT INTO store_failures (job_id, store_id, store_rank, first_index, reason, "
            "images, unknown_store) VALUES ($1, $2, $3, $4, $5, $6, true)",
            [
                (job_id, store, ranks[store], first_image[store], unknown_store_error(store), n)
                for store, n in unknown.items()
            ],
        )


async def _record(connection: Connection, images: list[SettledImage]) -> Recorded:
    rows = await connection.fetch(
        f"UPDATE images i SET state = {SETTLED}, width = r.width, height = r.height, "
        "error = r.error, kind = r.kind, claimed_by = NULL "
        "FROM unnest($1::bigint[], $2::int[], $3::bigint[], $4::int[], $5::int[], "
        "$6::text[], $7::text[], $8::int[]) "
        "AS r(job_id, idx, claim, width, height, error, kind, epoch) "
        "WHERE i.job_id = r.job_id AND i.idx = r.idx "
        # Claimed, or cancelled while it was: a replica that had started it still reports.
        f"AND i.state IN ({CLAIMED}, {CANCELLED}) AND i.claim = r.claim AND i.epoch = r.epoch "
        "RETURNING i.job_id, i.idx, i.visit, i.url",
        [image.task.job_id for image in images],
        [image.task.index for image in images],
        [image.task.claim for image in images],
        [image.outcome.width for image in images],
        [image.outcome.height for image in images],
        [image.outcome.error for image in images],
        [image.outcome.kind.value if image.outcome.kind else None for image in images],
        [image.task.epoch for image in images],
    )
    by_key = {(image.task.job_id, image.task.index): image for image in images}
    accepted: list[SettledImage] = []
    counts: dict[int, list[int]] = {}
    failures: list[tuple[int, int, int, str]] = []
    for job_id, index, visit, url in rows:
        image = by_key[(job_id, index)]
        accepted.append(image)
        count = counts.setdefault(job_id, [0, 0])
        count[0] += 1
        if image.outcome.error is not None:
            count[1] += 1
            failures.append((job_id, index, visit, image_error(url, image.outcome.error)))
    if failures:
        # Grouped per store, so one statement never touches a row twice; the error
        # names the store's first failing image in submission order.
        await connection.execute(
            "INSERT INTO store_failures (job_id, store_id, store_rank, first_index, reason, "
            "images, unknown_store) "
            "SELECT f.job_id, v.store_id, v.store_rank, min(f.idx), "
            "(array_agg(f.reason ORDER BY f.idx))[1], count(*), false "
            "FROM unnest($1::bigint[], $2::int[], $3::int[], $4::text[]) "
            "AS f(job_id, idx, visit, reason) "
            "JOIN visits v ON v.job_id = f.job_id AND v.position = f.visit "
            "GROUP BY f.job_id, v.store_id, v.store_rank ORDER BY f.job_id, v.store_id "
            "ON CONFLICT (job_id, store_id) DO UPDATE SET "
            "images = store_failures.images + excluded.images, "
            "reason = CASE WHEN excluded.first_index < store_failures.first_index "
            "THEN excluded.reason ELSE store_failures.reason END, "
            "first_index = LEAST(store_failures.first_index, excluded.first_index)",
            [failure[0] for failure in failures],
            [failure[1] for failure in failures],
            [failure[2] for failure in failures],
            [failure[3] for failure in failures],
        )
    finished: list[JobSummary] = []
    for job_id in sorted(counts):  # one order everywhere: no deadlock between replicas
        done, failed = counts[job_id]
        row = await connection.fetchrow(
            "UPDATE jobs SET done = done + $2, failed = failed + $3 WHERE id = $1 "
            "RETURNING done, total, status",
            job_id,
            done,
            failed,
        )
        if row is None:
            continue
        if row[2] == JobStatus.ONGOING.value and row[0] == row[1]:
            finished.append(await _finish(connection, job_id))
        elif row[2] == JobStatus.CANCELLED.value and failed:
            await _write_errors(connection, job_id)  # a late failure joins the list
    return Recorded(accepted, finished)


async def _note_failure(
    connection: Connection, job_id: int, index: int, visit: int, reason: str
) -> None:
    row = await connection.fetchrow(
        "SELECT store_id, store_rank FROM visits WHERE job_id = $1 AND position = $2",
        job_id,
        visit,
    )
    assert row is not None
    await connection.execute(
        numbered(UPSERT_STORE_FAILURE), job_id, row[0], row[1], index, reason, False
    )


async def _write_errors(connection: Connection, job_id: int) -> list[tuple[str, str]]:
    """Build the job's error list from its store failures and keep it on the job row."""
    failures = await connection.fetch(numbered(JOB_ERRORS), job_id)
    errors = [
        (store_id, store_error(reason, images, unknown))
        for store_id, reason, images, unknown in failures
    ]
    await connection.execute(
        "UPDATE jobs SET errors = $2 WHERE id = $1", job_id, errors_json(errors)
    )
    return errors


async def _finish(connection: Connection, job_id: int) -> JobSummary:
    """The one transition out of ongoing, in the transaction that settled the last image."""
    errors = await _write_errors(connection, job_id)
    status = JobStatus.FAILED if errors else JobStatus.COMPLETED
    row = await connection.fetchrow(
        f"UPDATE jobs SET status = $2, finished_at = {NOW} WHERE id = $1 "
        f"RETURNING {SUMMARY_COLUMNS}, callback_url",
        job_id,
        status.value,
    )
    assert row is not None
    finished = summary(tuple(row)[:-1])
    await _add_delivery(connection, finished, row[-1])
    return finished


async def _add_delivery(connection: Connection, ended: JobSummary, url: str | None) -> None:
    """A job that ended gets its webhook delivery in the same transaction, if it has a URL."""
    if url is None:
        return
    await connection.execute(
        "INSERT INTO deliveries (id, job_id, epoch, url, body, state, attempts, "
        f"next_attempt_at, created_at) VALUES ($1, $2, $3, $4, $5, 'pending', 0, {NOW}, {NOW})",
        new_delivery_id(),
        ended.job_id,
        ended.epoch,
        url,
        delivery_body(ended),
    )
