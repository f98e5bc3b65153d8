"""Which job store a ``database_url`` names, and where a replica's work comes from with it."""

from __future__ import annotations

from service.config import StoreSettings
from service.database_url import DatabaseKind
from service.jobs.claims import ClaimingQueue
from service.jobs.memory_store import MemoryJobStore
from service.jobs.postgres_store import PostgresJobStore
from service.jobs.sqlite_store import SqliteJobStore
from service.jobs.stats import Gauges, LocalStats, SharedStats, StatsSource, ThroughputMeter
from service.jobs.store import JobStore
from service.pipeline.fair_queue import FairQueue
from service.replica import Replica

__all__ = ["create_stats", "create_store", "create_work_queue"]


def create_store(settings: StoreSettings, replica: Replica) -> JobStore:
    """The store for ``settings.database_url``, not yet opened."""
    database = settings.database
    if database.kind is DatabaseKind.SQLITE:
        assert database.path is not None
        return SqliteJobStore(
            database.path,
            ttl=settings.job_ttl,
            max_finished=settings.max_finished_jobs,
            finished_cache_bytes=settings.finished_cache_bytes,
            max_database_bytes=settings.max_database_bytes,
            idempotency_ttl=settings.key_ttl,
            replica=replica,
        )
    if database.kind is DatabaseKind.POSTGRESQL:
        assert database.dsn is not None
        return PostgresJobStore(database.dsn, settings, replica)
    return MemoryJobStore(
        ttl=settings.job_ttl,
        max_finished=settings.max_finished_jobs,
        finished_bytes=settings.finished_cache_bytes,
        idempotency_ttl=settings.key_ttl,
        replica=replica,
    )


def create_work_queue(
    store: JobStore, settings: StoreSettings, max_in_flight: int
) -> FairQueue | ClaimingQueue:
    """A fair queue the job manager fills, or, on a shared store, one filled by claims."""
    if isinstance(store, PostgresJobStore):
        return ClaimingQueue(
            store,
            # Enough for every worker and the next round, not so much that other
            # replicas wait on images this one holds but has not started.
            batch=2 * max_in_flight,
            low_water=max_in_flight,
            heartbeat_every=settings.claim_timeout / 3,
        )
    return FairQueue()


def create_stats(store: JobStore, meter: ThroughputMeter, gauges: Gauges) -> StatsSource:
    """The service's figures: this process's, or on a shared store every live replica's."""
    if isinstance(store, PostgresJobStore):
        return SharedStats(meter, gauges, store)
    return LocalStats(meter, gauges, store)
