"""Shared fixtures: a store master, settings, a loopback image host and the service."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service.app import create_app
from service.config import Settings
from service.logging_setup import stop_logging
from tests.support.browser import version_note
from tests.support.fault_host import FaultHost
from tests.support.image_host import ImageHost, Outage, build_image_host_app
from tests.support.postgres import fresh_database
from tests.support.processes import REPO_ROOT

STORE_MASTER_CSV = """AreaCode,StoreName,StoreID
7100015,B P STORE,RP00001
7000129,"A.A ENTP,",RP00893
7100016,GREEN VALLEY MART,S00339218
7100017,"SUN, MOON & STARS KIRANA",S01408764
7100018,CORNER SHOP,S00000003
"""


def pytest_report_header(config: pytest.Config) -> str:
    # Which Playwright drives which Chromium, said at the start of every run.
    return version_note()


@pytest.fixture
def stores_csv(tmp_path: Path) -> Path:
    path = tmp_path / "stores.csv"
    path.write_text(STORE_MASTER_CSV, encoding="utf-8")
    return path


@pytest.fixture
def make_settings(stores_csv: Path, tmp_path: Path) -> Callable[..., Settings]:
    """Settings for tests: the test store master, two workers, no simulated GPU delay.

    Each call gets a SQLite job store of its own in the test's temporary directory
    (a test that restarts on one store passes its ``database_url``). Image hosts in
    tests are on loopback, so private networks are allowed; the address-policy
    tests turn that off. Retries back off for milliseconds.
    """
    databases = itertools.count(1)

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "stores": str(stores_csv),
            "database_url": f"sqlite:///{tmp_path / f'jobs-{next(databases)}.db'}",
            "workers": 2,
            "gpu_delay_min": 0.0,
            "gpu_delay_max": 0.0,
            "connect_timeout": 2.0,
            "read_timeout": 2.0,
            "total_timeout": 5.0,
            "max_in_flight": 16,
            "allow_private_networks": True,
            "retry_base_delay": 0.01,
            "retry_max_delay": 0.05,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture(scope="session", autouse=True)
def no_test_touches_the_default_job_store() -> Iterator[None]:
    """``make run`` keeps its jobs in ./retail-pulse.db: no test may create or change it."""
    default = REPO_ROOT / "retail-pulse.db"
    before = default.stat().st_mtime_ns if default.exists() else None
    yield
    after = default.stat().st_mtime_ns if default.exists() else None
    assert after == before, f"a test wrote to {default}"


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A fresh PostgreSQL database for this test (skipped, or failed under CI, without one)."""
    async for url in fresh_database():
        yield url


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def any_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The job store's URL, once per kind of store; a PostgreSQL one is a fresh database."""
    if request.param == "postgres":
        request.applymarker(pytest.mark.postgres)
        async for url in fresh_database():
            yield url
        return
    yield "memory" if request.param == "memory" else f"sqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
async def image_host(aiohttp_server: Any) -> AsyncIterator[ImageHost]:
    requests: list[str] = []
    gate = asyncio.Event()
    outage = Outage()
    server = await aiohttp_server(build_image_host_app(requests, gate, outage))
    host = ImageHost(server, requests, gate, outage)
    yield host
    # Held requests must answer, or the server's shutdown would wait for them.
    host.release()


@pytest.fixture
async def fault_host() -> AsyncIterator[FaultHost]:
    host = await FaultHost().start()
    yield host
    await host.close()


@pytest.fixture
def aiohttp_client(aiohttp_server: Any, aiohttp_client: Any) -> Any:
    """pytest-aiohttp's client factory, set up after its server factory, so torn down first.

    The service under test then stops before the loopback hosts it downloads from. The
    other way round, it could connect to a host whose server was already shutting down:
    aiohttp never closes a connection accepted after its shutdown began, and the loop
    ends with that transport open (an "unclosed transport" warning, in whichever test
    the garbage collector happens to run).
    """
    return aiohttp_client


@pytest.fixture
async def make_client(aiohttp_client: Any) -> Callable[..., Any]:
    """Start the service with given settings on a real loopback socket."""

    async def make(settings: Settings) -> TestClient[Any, Any]:
        client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
        return client

    return make


@pytest.fixture
async def client(make_client: Callable[..., Any], settings: Settings) -> TestClient[Any, Any]:
    result: TestClient[Any, Any] = await make_client(settings)
    return result


@pytest.fixture
def restore_root_logging() -> Iterator[None]:
    """For tests that call configure_logging: put the root logger back as it was."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    stop_logging()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
