"""scripts/healthcheck.py, the container's HEALTHCHECK, against real servers on loopback."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from service.app import create_app
from service.config import Settings

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "healthcheck.py"


def _run_sync(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {key: value for key, value in os.environ.items() if not key.startswith("RP_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        check=False,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def _run(*args: str, env: dict[str, str] | None = None) -> int:
    # The server under test runs on this loop, so the child must not block it.
    return (await asyncio.to_thread(_run_sync, *args, env=env)).returncode


async def test_healthy_service_passes(aiohttp_server: Any, settings: Settings) -> None:
    server = await aiohttp_server(create_app(settings))
    assert await _run(str(server.make_url("/healthz"))) == 0


async def test_default_url_follows_rp_port(aiohttp_server: Any, settings: Settings) -> None:
    server = await aiohttp_server(create_app(settings), host="127.0.0.1")
    assert await _run(env={"RP_PORT": str(server.port)}) == 0


async def test_unhealthy_answer_fails(aiohttp_server: Any) -> None:
    async def unavailable(request: web.Request) -> web.Response:
        return web.json_response({"status": "starting"}, status=503)

    async def wrong_body(request: web.Request) -> web.Response:
        return web.json_response({"status": "degraded"})

    app = web.Application()
    app.router.add_get("/unavailable", unavailable)
    app.router.add_get("/wrong", wrong_body)
    server = await aiohttp_server(app)
    assert await _run(str(server.make_url("/unavailable"))) == 1
    assert await _run(str(server.make_url("/wrong"))) == 1


async def test_nothing_listening_fails(unused_tcp_port: int) -> None:
    assert await _run(f"http://127.0.0.1:{unused_tcp_port}/healthz", "--timeout", "1") == 1


def test_wait_gives_up_when_the_watched_process_exits(unused_tcp_port: int) -> None:
    exited = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    pid = exited.stdout.strip()
    result = _run_sync(f"http://127.0.0.1:{unused_tcp_port}/healthz", "--wait", "50", "--pid", pid)
    assert result.returncode == 1
    assert f"process {pid} exited" in result.stderr
