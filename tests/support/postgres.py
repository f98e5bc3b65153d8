"""A real PostgreSQL for tests: the server from RP_TEST_PG, a fresh database per test.

Where no server answers, PostgreSQL tests are skipped with the reason (``make test``
names each one); under CI (``CI`` set) they fail instead, so CI never skips them.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

__all__ = ["PG_SERVER", "fresh_database", "require_postgres"]

PG_SERVER = os.environ.get("RP_TEST_PG", "postgresql://postgres@127.0.0.1:5432").rstrip("/")

_reachable: str | bool | None = None  # True, or why not


async def _probe() -> str | None:
    try:
        connection = await asyncpg.connect(f"{PG_SERVER}/postgres", timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"
    await connection.close()
    return None


async def require_postgres() -> None:
    """Skip (or, under CI, fail) the calling test when the server does not answer."""
    global _reachable  # noqa: PLW0603 - one probe per test session
    if _reachable is None:
        problem = await _probe()
        _reachable = True if problem is None else problem
    if _reachable is not True:
        message = f"PostgreSQL not reachable at {PG_SERVER} ({_reachable}); set RP_TEST_PG"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


async def fresh_database() -> AsyncIterator[str]:
    """A database of the test's own on the test server; dropped afterwards."""
    await require_postgres()
    name = f"rp_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(f"{PG_SERVER}/postgres", timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        admin = await asyncpg.connect(f"{PG_SERVER}/postgres", timeout=5)
        try:
            # FORCE: a killed test service may leave connections behind.
            await asyncio.wait_for(admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)'), 30)
        finally:
            await admin.close()
