"""``retail-pulse serve`` as a real process: its log lines on stderr, JSON or text."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.image_host import ImageHost
from tests.support.jobs import payload, visit
from tests.support.polling import eventually
from tests.support.processes import kill_quietly

CLI = Path(sys.executable).with_name("retail-pulse")

pytestmark = pytest.mark.slow


async def serve_one_job(
    port: int,
    stores_csv: Path,
    image_host: ImageHost,
    log_file: Path,
    env: dict[str, str],
    unknown_store: str = "GHOST",
) -> int:
    """Start the service, run one job with a good, a missing and an unknown-store image,
    stop it with SIGTERM; returns the exit code. Its stderr goes to ``log_file``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RP_")}
    environ.update(
        {
            "RP_GPU_DELAY_MIN": "0",
            "RP_GPU_DELAY_MAX": "0",
            "RP_WORKERS": "1",
            # The image host is on loopback, which the address policy refuses by default.
            "RP_ALLOW_PRIVATE_NETWORKS": "true",
            # One attempt: the 404 is final anyway, this keeps the run short.
            "RP_RETRY_ATTEMPTS": "1",
            "RP_DATABASE_URL": f"sqlite:///{log_file.with_suffix('.db')}",
        },
        **env,
    )
    with log_file.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            str(CLI),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--stores",
            str(stores_csv),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,  # so a failed test can kill its workers too
            env=environ,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:

            async def ready() -> bool | None:
                try:
                    async with session.get(f"{base}/readyz") as response:
                        return True if response.status == 200 else None
                except aiohttp.ClientConnectionError:
                    assert process.returncode is None, "service exited early"
                    return None

            await eventually(ready)
            body = payload(
                visit("S00339218", image_host.url("/img/8x8.jpg"), image_host.url("/status/404")),
                visit(unknown_store, "http://g.test/1", "http://g.test/2"),
            )
            # Posted here, not through submit(): the access lines below name this path.
            async with session.post(f"{base}/api/submit", json=body) as response:
                assert response.status == 201
                job_id = (await response.json())["job_id"]

            async def finished() -> str | None:
                async with session.get(f"{base}/api/status?jobid={job_id}") as response:
                    status: str = (await response.json())["status"]
                    return None if status == "ongoing" else status

            assert await eventually(finished) == "failed"
        process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(process.wait(), 30)
    finally:
        if process.returncode is None:
            kill_quietly(-process.pid, signal.SIGKILL)  # the whole process group
            await process.wait()


async def test_json_log_lines(
    unused_tcp_port: int, stores_csv: Path, image_host: ImageHost, tmp_path: Path
) -> None:
    log_file = tmp_path / "stderr.log"
    code = await serve_one_job(unused_tcp_port, stores_csv, image_host, log_file, {})
    assert code == 0
    lines = log_file.read_text(encoding="utf-8").splitlines()
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    for entry in entries:
        assert {"timestamp", "level", "logger", "message"} <= set(entry)

    def find(message: str, **fields: Any) -> list[dict[str, Any]]:
        return [
            e
            for e in entries
            if e["message"] == message and all(e.get(k) == v for k, v in fields.items())
        ]

    assert find("job created", job_id=1, images=4)
    assert find("job finished", job_id=1, status="failed", failed_images=3)
    (failed,) = find("image failed", job_id=1)
    assert failed["store_id"] == "S00339218"
    assert failed["url"] == image_host.url("/status/404")
    assert failed["reason"] == "HTTP 404"
    assert failed["level"] == "info"
    assert find("images of an unknown store failed", job_id=1, store_id="GHOST", images=2)
    (access,) = [e for e in entries if e["logger"] == "aiohttp.access" and e["method"] == "POST"]
    assert access["path"] == "/api/submit"
    assert access["status"] == 201
    assert access["message"] == "POST /api/submit 201"
    # The process runs with allow_private_networks on: one warning says so at start.
    (warning,) = [e for e in entries if "allow_private_networks" in e["message"]]
    assert warning["level"] == "warning"


async def test_text_log_lines(
    unused_tcp_port: int, stores_csv: Path, image_host: ImageHost, tmp_path: Path
) -> None:
    log_file = tmp_path / "stderr.log"
    code = await serve_one_job(
        unused_tcp_port, stores_csv, image_host, log_file, {"RP_LOG_FORMAT": "text"}
    )
    assert code == 0
    text = log_file.read_text(encoding="utf-8")
    assert "INFO service.jobs.manager: job finished job_id=1 status=failed" in text
    assert "INFO aiohttp.access: POST /api/submit 201 method=POST" in text
    assert not any(line.startswith("{") for line in text.splitlines())


async def test_text_log_lines_cannot_be_forged_through_a_store_id(
    unused_tcp_port: int, stores_csv: Path, image_host: ImageHost, tmp_path: Path
) -> None:
    log_file = tmp_path / "stderr.log"
    forged = "GHOST\nFAKE level=error job_id=99\r\x1b[2K\u2028x"
    code = await serve_one_job(
        unused_tcp_port,
        stores_csv,
        image_host,
        log_file,
        {"RP_LOG_FORMAT": "text"},
        unknown_store=forged,
    )
    assert code == 0
    lines = log_file.read_text(encoding="utf-8").splitlines()
    (line,) = [line for line in lines if "images of an unknown store failed" in line]
    assert r'store_id="GHOST\nFAKE level=error job_id=99\r\x1b[2K\u2028x"' in line
    assert not [line for line in lines if "FAKE" in line and "unknown store" not in line]
    # Every line is a record (timestamp first) or part of a traceback; there is none here.
    assert all(line[:4].isdigit() for line in lines)


async def test_log_level_comes_from_config(
    unused_tcp_port: int, stores_csv: Path, image_host: ImageHost, tmp_path: Path
) -> None:
    log_file = tmp_path / "stderr.log"
    code = await serve_one_job(
        unused_tcp_port, stores_csv, image_host, log_file, {"RP_LOG_LEVEL": "warning"}
    )
    assert code == 0
    # Nothing at warning or above happens in a normal run, but for the start-up
    # reminder that this run allows private networks (for its loopback image host).
    entries = [json.loads(line) for line in log_file.read_text(encoding="utf-8").splitlines()]
    assert [entry["level"] for entry in entries] == ["warning"]
    assert "allow_private_networks is on" in entries[0]["message"]
