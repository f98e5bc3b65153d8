"""The application factory, its resources as cleanup contexts, and ``main()``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import AsyncIterator, Sequence

from aiohttp import web

from service import keys
from service.config import ConfigError, Settings, load_config
from service.downloader import Downloader, create_client_session
from service.job_manager import JobManager
from service.job_store import InMemoryJobStore
from service.measure_pool import MeasurePool
from service.middlewares import error_middleware
from service.pipeline import Pipeline
from service.schemas import RequestLimits, SubmitSchema
from service.stores import StoreMaster, StoreMasterError, load_store_master
from service.views import routes

__all__ = ["create_app", "main"]

log = logging.getLogger(__name__)

# How long open HTTP connections get to finish once shutdown begins.
HTTP_SHUTDOWN_TIMEOUT = 5.0


def create_app(settings: Settings, store_master: StoreMaster | None = None) -> web.Application:
    """Build the app. Loads the store master now, so a bad file fails before serving."""
    app = web.Application(middlewares=[error_middleware], client_max_size=settings.max_body_bytes)
    app[keys.SETTINGS] = settings
    app[keys.STORE_MASTER] = store_master or load_store_master(settings.stores)
    app[keys.SUBMIT_SCHEMA] = SubmitSchema(
        limits=RequestLimits(
            max_images_per_job=settings.max_images_per_job,
            max_url_length=settings.max_url_length,
            max_store_id_length=settings.max_store_id_length,
        )
    )
    app.cleanup_ctx.append(client_session_ctx)
    app.cleanup_ctx.append(measure_pool_ctx)
    app.cleanup_ctx.append(job_manager_ctx)
    app.add_routes(routes)
    return app


async def client_session_ctx(app: web.Application) -> AsyncIterator[None]:
    session = create_client_session(app[keys.SETTINGS])
    app[keys.CLIENT_SESSION] = session
    yield
    await session.close()


async def measure_pool_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    pool = MeasurePool(
        workers=settings.workers,
        verify=settings.verify,
        max_pixels=settings.max_pixels,
        max_batch=settings.batch_size,
    )
    try:
        # Start the workers now rather than on the first image.
        await pool.ping()
        app[keys.MEASURE_POOL] = pool
        yield
    finally:
        await pool.close()


async def job_manager_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    downloader = Downloader(app[keys.CLIENT_SESSION], settings)
    pipeline = Pipeline(settings, downloader, app[keys.MEASURE_POOL])
    manager = JobManager(InMemoryJobStore(), app[keys.STORE_MASTER], pipeline)
    app[keys.PIPELINE] = pipeline
    app[keys.JOB_MANAGER] = manager
    pipeline.start()
    manager.start()
    try:
        yield
    finally:
        await manager.close()
        await pipeline.close()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m service", description="Serve the Retail Pulse job API."
    )
    parser.add_argument("--host", help="interface to bind (default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="TCP port (default 8080)")
    parser.add_argument("--stores", help="store master CSV (default stores.csv)")
    parser.add_argument("--config", help="TOML settings file, e.g. config/default.toml")
    return parser.parse_args(argv)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_config(
            args.config or os.environ.get("RP_CONFIG"),
            os.environ,
            {"host": args.host, "port": args.port, "stores": args.stores},
        )
        configure_logging(settings.log_level)
        app = create_app(settings)
    except (ConfigError, StoreMasterError) as exc:
        print(f"retail-pulse: {exc}", file=sys.stderr)
        return 2
    log.info(
        "serving on http://%s:%d with %d stores from %s",
        settings.host,
        settings.port,
        len(app[keys.STORE_MASTER]),
        settings.stores,
    )
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        print=None,
        shutdown_timeout=HTTP_SHUTDOWN_TIMEOUT,
        handle_signals=True,
    )
    log.info("stopped")
    return 0
