"""The ``retail-pulse`` command, run as a real process against a live service."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.support.image_host import ImageHost
from tests.support.jobs import job_ids, payload, submit, visit
from tests.support.polling import eventually, wait_for_status

CLI = Path(sys.executable).with_name("retail-pulse")


async def run_cli(
    *args: str, env: dict[str, str] | None = None, within: float = 60.0
) -> tuple[int, str, str]:
    """Run the installed entry point; the loop stays free to serve the test's servers."""
    assert CLI.exists(), "the retail-pulse entry point is not installed (pip install -e .)"
    environ = {k: v for k, v in os.environ.items() if k not in ("RP_URL", "RP_API_KEY")}
    environ.update(env or {})
    process = await asyncio.create_subprocess_exec(
        str(CLI),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environ,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), within)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


def base_url(client: TestClient[Any, Any]) -> str:
    return str(client.make_url("")).rstrip("/")


def write_payload(tmp_path: Path, *visits: dict[str, Any]) -> Path:
    path = tmp_path / "payload.json"
    path.write_text(json.dumps(payload(*visits)), encoding="utf-8")
    return path


async def test_submit_wait_completed_exits_0_with_progress(
    client: TestClient[Any, Any], image_host: ImageHost, tmp_path: Path
) -> None:
    job_file = write_payload(
        tmp_path,
        visit("S00339218", image_host.url("/img/6x4.jpg"), image_host.url("/img/2x2.png")),
        visit("S01408764", image_host.url("/img/1x1.gif")),
    )
    code, out, err = await run_cli(
        "--url", base_url(client), "submit", str(job_file), "--wait", "--interval", "0.05"
    )
    assert code == 0, err
    assert json.loads(out) == {"status": "completed", "job_id": 1}
    assert "job 1 submitted" in err
    assert err.rstrip().endswith("[" + "#" * 30 + "] 3/3 images")


async def test_submit_wait_failed_exits_1_and_reads_rp_url(
    client: TestClient[Any, Any], image_host: ImageHost, tmp_path: Path
) -> None:
    job_file = write_payload(tmp_path, visit("S00339218", image_host.url("/status/404")))
    code, out, err = await run_cli(
        "submit", str(job_file), "--wait", "--interval", "0.05", env={"RP_URL": base_url(client)}
    )
    assert code == 1, err
    status = json.loads(out)
    assert status["status"] == "failed"
    assert status["error"][0]["store_id"] == "S00339218"
    assert "1/1 images" in err


async def test_submit_without_wait_prints_the_job_id(
    client: TestClient[Any, Any], tmp_path: Path
) -> None:
    job_file = write_payload(tmp_path, visit("NOPE", "http://n.test/1"))
    code, out, _ = await run_cli("--url", base_url(client), "submit", str(job_file))
    assert code == 0
    assert json.loads(out) == {"job_id": 1}


async def test_unreachable_service_exits_2(unused_tcp_port: int, tmp_path: Path) -> None:
    job_file = write_payload(tmp_path, visit("S1", "http://n.test/1"))
    code, out, err = await run_cli(
        "--url", f"http://127.0.0.1:{unused_tcp_port}", "submit", str(job_file), "--wait"
    )
    assert code == 2
    assert out == ""
    assert err.startswith(f"retail-pulse: cannot reach http://127.0.0.1:{unused_tcp_port}")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "the following arguments are required: COMMAND"),
        (("submit",), "the following arguments are required: payload"),
        (("submit", "/no/such/payload.json"), "cannot read /no/such/payload.json"),
        (("status", "1", "--bogus"), "unrecognized arguments: --bogus"),
    ],
)
async def test_usage_errors_exit_2(args: tuple[str, ...], message: str) -> None:
    code, _, err = await run_cli("--url", "http://127.0.0.1:9", *args)
    assert code == 2
    assert message in err


async def test_rejected_or_invalid_payload_exits_2(
    client: TestClient[Any, Any], tmp_path: Path
) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    code, _, err = await run_cli("--url", base_url(client), "submit", str(broken))
    assert code == 2
    assert "is not valid JSON" in err
    rejected = tmp_path / "rejected.json"
    rejected.write_text(json.dumps({"count": 2, "visits": []}), encoding="utf-8")
    code, _, err = await run_cli("--url", base_url(client), "submit", str(rejected))
    assert code == 2
    assert "400 from" in err
    assert "visits" in err


async def test_status_and_csv_results(
    client: TestClient[Any, Any], image_host: ImageHost, tmp_path: Path
) -> None:
    job_id = await submit(
        client, visit("S01408764", image_host.url("/img/3x2.jpg"), image_host.url("/html"))
    )
    await wait_for_status(client, job_id)
    url = base_url(client)

    code, out, _ = await run_cli("--url", url, "status", str(job_id))
    assert code == 0
    assert json.loads(out)["status"] == "failed"
    code, _, err = await run_cli("--url", url, "status", "99")
    assert code == 2
    assert "404" in err
    assert "job 99 not found" in err

    target = tmp_path / "out.csv"
    code, _, err = await run_cli("--url", url, "results", str(job_id), "--csv", str(target))
    assert code == 0, err
    rows = list(csv.reader(io.StringIO(target.read_text(encoding="utf-8"), newline="")))
    assert rows[0][:3] == ["store_id", "store_name", "area_code"]
    assert [row[1] for row in rows[1:]] == ["SUN, MOON & STARS KIRANA"] * 2
    assert [row[7] for row in rows[1:]] == ["10", ""]
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".part")]

    code, out, _ = await run_cli("--url", url, "results", str(job_id), "--limit", "1")
    assert code == 0
    page = json.loads(out)
    assert [row["perimeter"] for row in page["results"]] == [10]

    code, _, _ = await run_cli("--url", url, "results", "99", "--csv", str(tmp_path / "x.csv"))
    assert code == 2
    assert not (tmp_path / "x.csv").exists()
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".part")]


async def test_api_key_from_rp_api_key_is_sent(
    make_client: Any, make_settings: Any, tmp_path: Path
) -> None:
    client = await make_client(make_settings(api_key="sesame"))
    job_file = write_payload(tmp_path, visit("NOPE", "http://n.test/1"))
    code, _, err = await run_cli("--url", base_url(client), "submit", str(job_file))
    assert code == 2
    assert "401" in err
    assert "missing API key" in err
    code, out, err = await run_cli(
        "--url",
        base_url(client),
        "submit",
        str(job_file),
        "--wait",
        "--interval",
        "0.05",
        env={"RP_API_KEY": "sesame"},
    )
    assert code == 1, err
    assert json.loads(out)["status"] == "failed"


async def test_cancel_exits_3_and_a_cancelled_wait_does_too(
    client: TestClient[Any, Any], image_host: ImageHost, tmp_path: Path
) -> None:
    payload_file = write_payload(tmp_path, visit("RP00001", image_host.url("/hold/4x4.png")))
    waiting = asyncio.create_task(
        run_cli("--url", base_url(client), "submit", str(payload_file), "--wait")
    )

    async def listed() -> int | None:
        ids = await job_ids(client)
        return ids[0] if ids else None

    job_id = await eventually(listed)
    code, out, _ = await run_cli("--url", base_url(client), "cancel", str(job_id))
    assert code == 3
    assert json.loads(out) == {"status": "cancelled", "job_id": job_id}
    code, out, _ = await waiting
    assert code == 3
    assert json.loads(out)["status"] == "cancelled"
    image_host.release()
    code, _, err = await run_cli("--url", base_url(client), "cancel", str(job_id))
    assert code == 2
    assert "409" in err and "job already cancelled" in err


async def test_retry_of_a_job_with_nothing_to_retry_exits_2(
    client: TestClient[Any, Any], image_host: ImageHost
) -> None:
    job_id = await submit(client, visit("GHOST", image_host.url("/img/4x4.png")))
    await wait_for_status(client, job_id)
    code, _, err = await run_cli("--url", base_url(client), "retry", str(job_id))
    assert code == 2
    assert "nothing to retry" in err


async def test_submit_wait_follows_the_job_s_live_events(
    client: TestClient[Any, Any], image_host: ImageHost, tmp_path: Path
) -> None:
    job_file = write_payload(
        tmp_path, visit("RP00001", image_host.url("/img/4x4.png"), image_host.url("/hold/5x5.png"))
    )
    # A poll every 1,000 s: only the stream can bring the end in time.
    waiting = asyncio.create_task(
        run_cli("--url", base_url(client), "submit", str(job_file), "--wait", "--interval", "1000")
    )

    async def following() -> bool | None:
        async with client.get("/metrics") as response:
            text = await response.text()
        return True if "\nretail_pulse_event_streams_open 1.0\n" in text else None

    await eventually(following)
    await settled_images(client, 1)
    image_host.release()
    code, out, err = await waiting
    assert code == 0, err
    assert json.loads(out) == {"status": "completed", "job_id": 1}
    assert "polling" not in err
    assert err.rstrip().endswith("[" + "#" * 30 + "] 2/2 images")


async def test_submit_wait_polls_when_the_stream_is_refused(
    make_client: Any, make_settings: Any, image_host: ImageHost, tmp_path: Path
) -> None:
    client = await make_client(make_settings(max_event_streams=1))
    job_file = write_payload(tmp_path, visit("RP00001", image_host.url("/img/4x4.png")))
    async with client.get("/api/events") as taken:
        assert taken.status == 200
        code, out, err = await run_cli(
            "--url", base_url(client), "submit", str(job_file), "--wait", "--interval", "0.05"
        )
    assert code == 0, err
    assert json.loads(out) == {"status": "completed", "job_id": 1}
    assert "live events unavailable (503 from" in err
    assert "too many event streams open" in err
    assert "polling instead" in err
    assert err.rstrip().endswith("1/1 images")


async def settled_images(client: TestClient[Any, Any], count: int) -> None:
    async def reached() -> bool | None:
        async with client.get("/api/jobs/1", params={"limit": "1"}) as response:
            if response.status != 200:
                return None
            done: int = (await response.json())["progress"]["done"]
        return True if done >= count else None

    await eventually(reached)


async def test_submit_wait_reopens_a_stream_that_ends_early_with_last_event_id(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    # A replica that stops ends its streams with a retry hint; the client comes back
    # (here to the same address) with the last id it saw, and gets the rest.
    seen_ids: list[str | None] = []

    async def created(request: web.Request) -> web.Response:
        return web.json_response({"job_id": 1}, status=201)

    async def events(request: web.Request) -> web.StreamResponse:
        seen_ids.append(request.headers.get("Last-Event-ID"))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if len(seen_ids) == 1:
            progress = (
                'id: 1-0-1\nevent: progress\ndata: {"job_id":1,"done":1,"failed":0,"total":2}'
            )
            await response.write(f"{progress}\n\n: shutdown\nretry: 10\n\n".encode())
        else:
            done = 'id: 1-0-2\nevent: done\ndata: {"status":"completed","job_id":1}'
            await response.write(f"{done}\n\n".encode())
        return response

    async def detail(request: web.Request) -> web.Response:
        progress = {"total": 2, "done": 2, "failed": 0}
        return web.json_response({"job_id": 1, "status": "completed", "progress": progress})

    app = web.Application()
    app.router.add_post("/api/submit", created)
    app.router.add_get("/api/jobs/1/events", events)
    app.router.add_get("/api/jobs/1", detail)
    server = await aiohttp_server(app)
    job_file = write_payload(tmp_path, visit("RP00001", "http://n.test/1"))
    code, out, err = await run_cli(
        "--url", str(server.make_url("")).rstrip("/"), "submit", str(job_file), "--wait"
    )
    assert code == 0, err
    assert json.loads(out) == {"status": "completed", "job_id": 1}
    assert seen_ids == [None, "1-0-1"]
    assert "polling" not in err
    assert "1/2 images" in err
