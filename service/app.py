"""The application factory, its resources as cleanup contexts, and ``main()``."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence

from aiohttp import web
from aiohttp.typedefs import Middleware

from service.api import keys
from service.api.auth import api_key_middleware
from service.api.auth import routes as auth_routes
from service.api.connections import ConnectionGuard, ServiceRunner, raise_open_file_limit
from service.api.events import routes as event_routes
from service.api.jobs import routes
from service.api.middlewares import error_middleware
from service.api.openapi import build_openapi
from service.api.openapi import routes as openapi_routes
from service.api.ops import routes as ops_routes
from service.api.results import routes as results_routes
from service.api.schemas import SubmitSchema
from service.api.ui import routes as ui_routes
from service.config import ConfigError, Settings, load_config
from service.jobs.backends import create_stats, create_store, create_work_queue
from service.jobs.claims import ClaimingQueue
from service.jobs.events import EventHub
from service.jobs.manager import JobManager, JobObserver
from service.jobs.observers import JobObservers
from service.jobs.stats import ThroughputMeter
from service.jobs.store import StoreOpenError
from service.jobs.telemetry import JobTelemetry
from service.jobs.webhooks import WebhookWorker
from service.logging_setup import AccessLogger, configure_logging, stop_logging
from service.metrics import Metrics
from service.net.downloader import Downloader, create_client_session
from service.net.webhook_client import WebhookClient, create_webhook_session
from service.pipeline import imaging
from service.pipeline.flow import Pipeline
from service.pipeline.measure_pool import MeasurePool
from service.replica import Replica
from service.store_master import StoreMaster, StoreMasterError, load_store_master

__all__ = [
    "ListenError",
    "create_app",
    "create_runner",
    "drain",
    "event_loop_factory",
    "main",
    "serve",
]

log = logging.getLogger(__name__)


class ListenError(Exception):
    """The HTTP port cannot be opened (in use, no permission); a one-line message."""


# How long open HTTP connections get to finish once shutdown begins.
HTTP_SHUTDOWN_TIMEOUT = 5.0


def create_app(
    settings: Settings, store_master: StoreMaster | None = None, replica: Replica | None = None
) -> web.Application:
    """Build the app. Loads the store master now, so a bad file fails before serving."""
    middlewares: list[Middleware] = [error_middleware]
    if settings.api_key:
        middlewares.append(api_key_middleware(settings.api_key))
    app = web.Application(
        middlewares=middlewares,
        client_max_size=settings.max_body_bytes,
        # Request bodies are decoded by service.api.content_coding, which answers a bad
        # or unsupported Content-Encoding with a JSON 400 or 415.
        handler_args={"auto_decompress": False},
    )
    app[keys.SETTINGS] = settings
    replica = replica or Replica(label=settings.replica_name)
    app[keys.REPLICA] = replica
    # "is None", not "or": an empty StoreMaster is falsy but was still given.
    app[keys.STORE_MASTER] = (
        store_master if store_master is not None else load_store_master(settings.stores)
    )
    app[keys.SUBMIT_SCHEMA] = SubmitSchema(
        limits=settings.limits, webhooks=settings.webhooks.enabled
    )
    app[keys.METRICS] = Metrics()
    app[keys.METRICS].name_replica(replica.id.hex, replica.name, replica.host, replica.pid)
    app[keys.THROUGHPUT] = ThroughputMeter()
    app[keys.OPENAPI] = build_openapi(settings)
    app.cleanup_ctx.append(client_session_ctx)
    # Opened before the pool starts: a store that cannot open fails the start at once.
    app.cleanup_ctx.append(job_store_ctx)
    app.cleanup_ctx.append(measure_pool_ctx)
    # Before the manager, which reports to them; streams end before connections are awaited.
    app.cleanup_ctx.append(event_hub_ctx)
    app.on_shutdown.append(end_event_streams)
    app.cleanup_ctx.append(webhooks_ctx)
    app.cleanup_ctx.append(job_manager_ctx)
    app.cleanup_ctx.append(stats_ctx)
    app.add_routes(routes)
    app.add_routes(event_routes)
    app.add_routes(results_routes)
    app.add_routes(ops_routes)
    app.add_routes(openapi_routes)
    app.add_routes(auth_routes)
    app.add_routes(ui_routes)
    return app


async def client_session_ctx(app: web.Application) -> AsyncIterator[None]:
    session = create_client_session(app[keys.SETTINGS].download)
    app[keys.CLIENT_SESSION] = session
    yield
    await session.close()


async def job_store_ctx(app: web.Application) -> AsyncIterator[None]:
    store = create_store(app[keys.SETTINGS].store, app[keys.REPLICA])
    await store.open()
    app[keys.JOB_STORE] = store
    try:
        yield
    finally:
        await store.close()


async def measure_pool_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    pool = MeasurePool(
        settings.pool,
        batch_function=app.get(keys.BATCH_FUNCTION, imaging.measure_batch),
        on_batch=app[keys.METRICS].pool_batch_size.observe,
    )
    try:
        # Start the workers now rather than on the first image.
        await pool.ping()
        app[keys.MEASURE_POOL] = pool
        yield
    finally:
        await pool.close()


async def event_hub_ctx(app: web.Application) -> AsyncIterator[None]:
    hub = EventHub(app[keys.JOB_STORE], app[keys.SETTINGS].events)
    app[keys.EVENT_HUB] = hub
    app[keys.METRICS].watch_event_hub(hub)
    hub.start()
    try:
        yield
    finally:
        await hub.close()


async def end_event_streams(app: web.Application) -> None:
    """Open streams would hold the HTTP shutdown for its whole timeout: end them first."""
    if keys.EVENT_HUB in app:
        app[keys.EVENT_HUB].end_streams()


async def webhooks_ctx(app: web.Application) -> AsyncIterator[None]:
    """The webhook worker, with a client session of its own; none without a webhook_secret
    (pending deliveries then wait for a process that has one)."""
    settings = app[keys.SETTINGS]
    if not settings.webhooks.enabled:
        yield
        return
    session = create_webhook_session(
        settings.download,
        limit=settings.webhook_max_in_flight,
        resolver=app.get(keys.WEBHOOK_RESOLVER),
    )
    worker = WebhookWorker(
        app[keys.JOB_STORE], WebhookClient(session), settings.webhooks, metrics=app[keys.METRICS]
    )
    app[keys.WEBHOOKS] = worker
    worker.start()
    try:
        yield
    finally:
        await worker.close()
        await session.close()


async def job_manager_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    metrics = app[keys.METRICS]
    downloader = Downloader(
        app[keys.CLIENT_SESSION],
        settings.download,
        observe_seconds=metrics.download_seconds.observe,
    )
    store = app[keys.JOB_STORE]
    queue = create_work_queue(store, settings.store, settings.max_in_flight)
    observers: list[JobObserver] = [
        JobTelemetry(metrics, app[keys.THROUGHPUT]),
        app[keys.EVENT_HUB],
    ]
    if keys.WEBHOOKS in app:
        # A job that ended wakes the worker: its delivery is committed by then.
        observers.append(app[keys.WEBHOOKS])
    manager = JobManager(
        store,
        app[keys.STORE_MASTER],
        queue,
        settings.jobs,
        observer=JobObservers(*observers),
    )
    pipeline = Pipeline(settings.pipeline, downloader, app[keys.MEASURE_POOL], queue, manager)
    metrics.watch_pipeline(pipeline)
    metrics.watch_job_manager(manager)
    app[keys.PIPELINE] = pipeline
    app[keys.JOB_MANAGER] = manager
    await manager.start()
    if isinstance(queue, ClaimingQueue):
        queue.start()
    pipeline.start()
    try:
        yield
    finally:
        # Normally serve() has drained already; this covers every other way out.
        await manager.drain(0, pipeline.wait_idle)
        await manager.close()
        await pipeline.close()
        await queue.close()


async def stats_ctx(app: web.Application) -> AsyncIterator[None]:
    stats = create_stats(app[keys.JOB_STORE], app[keys.THROUGHPUT], app[keys.PIPELINE])
    app[keys.STATS] = stats
    stats.start()
    try:
        yield
    finally:
        await stats.close()


async def drain(app: web.Application, cut_short: asyncio.Event | None = None) -> None:
    """Refuse new jobs (503) and give running work ``shutdown_grace`` seconds.

    A durable store keeps what is left queued for the next start; the memory
    store fails it, since nothing would ever resume it.
    """
    grace = app[keys.SETTINGS].shutdown_grace
    log.info("shutting down: new jobs refused, waiting up to %ss for running work", grace)
    # Event streams end at once, telling clients to reconnect (to another replica).
    await end_event_streams(app)
    await app[keys.JOB_MANAGER].drain(grace, app[keys.PIPELINE].wait_idle, cut_short)


async def serve(app: web.Application) -> None:
    """Serve until SIGTERM or SIGINT, then drain while still listening, then stop.

    ``web.run_app`` closes the listener before ``on_shutdown`` runs, so clients
    would see refused connections instead of a 503 during the grace period;
    hence this loop. A second signal cuts the grace period short.
    """
    settings = app[keys.SETTINGS]
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    hurry = asyncio.Event()

    def on_signal() -> None:
        (hurry if stop.is_set() else stop).set()

    # Installed before startup, so a signal while the pool warms up still ends in
    # an orderly stop rather than the default action (killed mid-startup).
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal)
    raise_open_file_limit(settings.max_connections)
    runner = create_runner(app)
    try:
        await runner.setup()
        try:
            await _listen(runner, settings)
            await stop.wait()
            await drain(app, hurry)
        finally:
            await runner.cleanup()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def create_runner(app: web.Application) -> ServiceRunner:
    """The runner ``serve`` uses. Like aiohttp's default and unlike its test server, it
    does not cancel a handler whose client has gone: the handler runs on and sees the
    disconnect (tests of that behaviour need this runner). Its connections get the
    header timeout, the keep-alive timeout and the connection cap."""
    settings = app[keys.SETTINGS]
    return ServiceRunner(
        app,
        ConnectionGuard(settings.connections, app[keys.METRICS]),
        handle_signals=False,
        shutdown_timeout=HTTP_SHUTDOWN_TIMEOUT,
        access_log_class=AccessLogger,
        keepalive_timeout=settings.keepalive_timeout,
    )


async def _listen(runner: web.AppRunner, settings: Settings) -> None:
    site = web.TCPSite(runner, settings.host, settings.port)
    try:
        await site.start()
    except OSError as exc:
        # asyncio rewraps the error with a long message; the errno says it all.
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ListenError(f"cannot listen on {settings.host}:{settings.port}: {reason}") from None
    log.info(
        "serving on http://%s:%d with %d stores from %s (%s event loop)",
        settings.host,
        settings.port,
        len(runner.app[keys.STORE_MASTER]),
        settings.stores,
        type(asyncio.get_running_loop()).__module__.partition(".")[0],
    )
    store = runner.app[keys.JOB_STORE]
    if store.durable:
        log.info("job store: %s", store.description)
    else:
        log.warning("job store: %s; for tests and benchmarks only", store.description)
    _log_address_policy(settings)


def _log_address_policy(settings: Settings) -> None:
    # The one setting a newcomer trying local images needs: say where it stands.
    if settings.allow_private_networks:
        log.warning(
            "allow_private_networks is on: image URLs may reach loopback, private and "
            "link-local addresses (no SSRF protection); keep it off in production"
        )
    else:
        log.info(
            "image URLs on loopback and private networks are refused "
            "(set RP_ALLOW_PRIVATE_NETWORKS=true to try the service with local images)"
        )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m service", description="Serve the Retail Pulse job API."
    )
    parser.add_argument("--host", help="interface to bind (default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="TCP port (default 8080)")
    parser.add_argument("--stores", help="store master CSV (default stores.csv)")
    parser.add_argument("--config", help="TOML settings file, e.g. config/default.toml")
    parser.add_argument(
        "--database-url",
        help="job store: sqlite:///PATH (default sqlite:///retail-pulse.db), "
        "postgresql://user[:password]@host[:port]/dbname, or memory",
    )
    return parser.parse_args(argv)


def event_loop_factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """What makes the service's loop: uvloop when asked for or (``auto``) when installed."""
    if kind != "asyncio":
        try:
            uvloop = importlib.import_module("uvloop")
        except ImportError:
            if kind == "uvloop":
                raise ConfigError(
                    "invalid setting event_loop: uvloop is not installed "
                    "(pip install 'retail-pulse[speed]')"
                ) from None
        else:
            factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
            return factory
    return asyncio.new_event_loop


def migrate_main(argv: Sequence[str]) -> int:
    """``python -m service migrate [--store URL]``: only bring the job store's schema up to date."""
    parser = argparse.ArgumentParser(
        prog="python -m service migrate",
        description="Create or migrate the job store's schema, then exit.",
    )
    parser.add_argument("--store", help="database URL (default: RP_DATABASE_URL or the config)")
    parser.add_argument("--config", help="TOML settings file, e.g. config/default.toml")
    args = parser.parse_args(argv)
    try:
        settings = load_config(
            args.config or os.environ.get("RP_CONFIG"),
            os.environ,
            {"database_url": args.store},
        )
        configure_logging(settings.log_level, settings.log_format)
        store = create_store(settings.store, Replica(label=settings.replica_name))
        version = asyncio.run(store.migrate())
    except (ConfigError, StoreOpenError) as exc:
        print(f"retail-pulse: {exc}", file=sys.stderr)
        return 2
    finally:
        stop_logging()
    print(f"job store {settings.store.database} is at schema version {version}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["migrate"]:
        return migrate_main(arguments[1:])
    args = parse_args(arguments)
    try:
        settings = load_config(
            args.config or os.environ.get("RP_CONFIG"),
            os.environ,
            {
                "host": args.host,
                "port": args.port,
                "stores": args.stores,
                "database_url": args.database_url,
            },
        )
        replica = Replica(label=settings.replica_name)
        configure_logging(
            settings.log_level,
            settings.log_format,
            queue_limit=settings.log_queue_limit,
            fields={"replica": replica.short_id},
        )
        app = create_app(settings, replica=replica)
        loop_factory = event_loop_factory(settings.event_loop)
    except (ConfigError, StoreMasterError) as exc:
        print(f"retail-pulse: {exc}", file=sys.stderr)
        return 2
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(serve(app))
    except (ListenError, StoreOpenError) as exc:
        print(f"retail-pulse: {exc}", file=sys.stderr)
        return 2
    else:
        log.info("stopped")
    finally:
        # Write out what the writer thread still holds before the process ends.
        stop_logging()
    return 0
