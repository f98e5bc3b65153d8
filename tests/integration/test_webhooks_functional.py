"""Completion webhooks through the real service and real loopback receivers, on every store:
signed deliveries, retries, refused destinations, a new delivery per run, the submit's checks."""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from service.api import keys
from service.api.schemas import WebhookBodySchema
from service.app import create_app
from service.config import Settings
from tests.support.image_host import ImageHost
from tests.support.images import make_image
from tests.support.jobs import payload, post_job, submit, visit
from tests.support.polling import eventually
from tests.support.receivers import Receiver, reference_verify
from tests.support.resolvers import StubResolver

Client = TestClient[Any, Any]

DOCS_API = Path(__file__).resolve().parents[2] / "docs" / "api.md"

SECRET = "whsec-test-0123456789"
# Retries in tens of milliseconds, so a test sees several attempts at once.
FAST = {
    "webhook_secret": SECRET,
    "webhook_retry_base": 0.05,
    "webhook_retry_max_delay": 0.2,
}


@pytest.fixture
def start(
    any_store_url: str, make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> Callable[..., Any]:
    async def start(**overrides: Any) -> Client:
        values = {**FAST, **overrides}
        client: Client = await make_client(make_settings(database_url=any_store_url, **values))
        return client

    return start


async def serve(aiohttp_server: Any, receiver: Receiver) -> str:
    server = await aiohttp_server(receiver.app())
    return str(server.make_url("/hooks/retail-pulse"))


async def detail(client: Client, job_id: int) -> dict[str, Any]:
    async with client.get(f"/api/jobs/{job_id}") as response:
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
        return body


async def settled_delivery(client: Client, job_id: int) -> dict[str, Any]:
    """The job's latest delivery once it is no longer pending."""

    async def probe() -> dict[str, Any] | None:
        delivery: dict[str, Any] | None = (await detail(client, job_id))["delivery"]
        return delivery if delivery and delivery["state"] != "pending" else None

    return await eventually(probe, within=15)


async def attempts_counted(client: Client, expected: dict[str, float]) -> dict[str, float]:
    """``retail_pulse_webhook_attempts_total`` by outcome, once it shows ``expected``
    (an attempt is counted just after its outcome is committed), or as it last was."""
    pattern = r'(?m)^retail_pulse_webhook_attempts_total\{outcome="(\w+)"\} (\S+)$'
    counted: dict[str, float] = {}

    async def probe() -> bool | None:
        nonlocal counted
        async with client.get("/metrics") as response:
            text = await response.text()
        counted = {outcome: float(value) for outcome, value in re.findall(pattern, text)}
        return True if counted == expected else None

    with contextlib.suppress(AssertionError):
        await eventually(probe, within=5)
    return counted


def documented_verify() -> Callable[[str, str, bytes], bool]:
    """The receiver's check as docs/api.md shows it (its Webhooks section's Python block)."""
    section = DOCS_API.read_text(encoding="utf-8").split("\n## Webhooks\n", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(code, namespace)
    verify: Callable[[str, str, bytes], bool] = namespace["verify"]
    return verify


def with_callback(url: str, *visits: dict[str, Any]) -> dict[str, Any]:
    return {**payload(*visits), "callback_url": url}


# -- delivery and retries ------------------------------------------------------------


async def test_a_receiver_that_fails_twice_then_accepts_gets_three_signed_attempts(
    start: Callable[..., Any], aiohttp_server: Any, image_host: ImageHost
) -> None:
    receiver = Receiver(500, 503)
    url = await serve(aiohttp_server, receiver)
    client = await start()
    # 105 unknown stores beside a real one: the body's error list is cut to 100.
    ghosts = [visit(f"GHOST{n:03}", image_host.url("/img/2x2.png")) for n in range(105)]
    body = with_callback(url, visit("RP00001", image_host.url("/img/6x4.png")), *ghosts)
    response = await post_job(client, body)
    job_id = (await response.json())["job_id"]

    delivery = await settled_delivery(client, job_id)
    assert len(receiver.calls) == 3
    ids = {call.delivery for call in receiver.calls}
    assert ids == {delivery["id"]}
    assert delivery == {
        "id": delivery["id"],
        "state": "delivered",
        "attempts": 3,
        "last_error": None,
    }
    expected = {"delivered": 1.0, "retrying": 2.0, "given_up": 0.0}
    assert await attempts_counted(client, expected) == expected

    now = time.time()
    verify = documented_verify()
    for call in receiver.calls:
        assert call.path == "/hooks/retail-pulse"
        assert call.headers["Content-Type"] == "application/json"
        signature = call.headers["Retail-Pulse-Signature"]
        assert reference_verify(SECRET, signature, call.raw, now, tolerance=60)
        assert not reference_verify("another secret", signature, call.raw, now, tolerance=60)
        assert not reference_verify(SECRET, signature, call.raw + b" ", now, tolerance=60)
        # What the docs tell receivers to run agrees.
        assert verify(SECRET, signature, call.raw)
        assert not verify("another secret", signature, call.raw)
    # One body for every attempt of one delivery.
    assert len({call.raw for call in receiver.calls}) == 1

    posted = receiver.calls[-1].json()
    assert WebhookBodySchema().validate(posted) == {}
    assert posted["status"] == "failed"
    assert posted["job_id"] == job_id
    assert posted["error_count"] == 105
    assert [error["store_id"] for error in posted["error"]] == [f"GHOST{n:03}" for n in range(100)]
    assert posted["progress"] == {"total": 106, "done": 106, "failed": 105}
    assert datetime.fromisoformat(posted["finished_at"]).tzinfo is not None
    status = await (await client.get("/api/status", params={"jobid": str(job_id)})).json()
    assert {key: posted[key] for key in ("status", "job_id")} == {
        key: status[key] for key in ("status", "job_id")
    }
    assert posted["error"] == status["error"][:100]


async def test_a_delivery_is_given_up_after_webhook_max_attempts(
    start: Callable[..., Any], aiohttp_server: Any
) -> None:
    receiver = Receiver(*[404] * 10)
    url = await serve(aiohttp_server, receiver)
    client = await start(webhook_max_attempts=3)
    response = await post_job(client, with_callback(url, visit("GHOST", "http://127.0.0.1:9/x")))
    job_id = (await response.json())["job_id"]
    delivery = await settled_delivery(client, job_id)
    assert (delivery["state"], delivery["attempts"], delivery["last_error"]) == (
        "given_up",
        3,
        "HTTP 404",
    )
    assert len(receiver.calls) == 3
    expected = {"delivered": 0.0, "retrying": 2.0, "given_up": 1.0}
    assert await attempts_counted(client, expected) == expected


async def test_a_redirect_is_a_failed_attempt_and_is_not_followed(
    start: Callable[..., Any], aiohttp_server: Any
) -> None:
    target = Receiver()
    target_url = await serve(aiohttp_server, target)

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(target_url)

    app = web.Application()
    app.router.add_post("/hook", redirect)
    server = await aiohttp_server(app)
    client = await start(webhook_max_attempts=2)
    body = with_callback(str(server.make_url("/hook")), visit("GHOST", "http://127.0.0.1:9/x"))
    job_id = (await (await post_job(client, body)).json())["job_id"]
    delivery = await settled_delivery(client, job_id)
    assert delivery["state"] == "given_up"
    assert delivery["last_error"] == "HTTP 302 (redirects are not followed)"
    assert target.calls == []


async def test_a_job_without_callback_url_has_no_delivery(
    start: Callable[..., Any], image_host: ImageHost
) -> None:
    client = await start()
    job_id = await submit(client, visit("GHOST", image_host.url("/img/2x2.png")))
    assert (await detail(client, job_id))["delivery"] is None


# -- a new delivery per run ----------------------------------------------------------


class SwitchableHost:
    """An image that answers 503 until ``healthy`` is set."""

    def __init__(self) -> None:
        self.healthy = False

    def app(self) -> web.Application:
        async def image(request: web.Request) -> web.Response:
            if not self.healthy:
                return web.Response(status=503)
            return web.Response(body=make_image(7, 5, "png"), content_type="image/png")

        app = web.Application()
        app.router.add_get("/flaky", image)
        return app


async def test_a_retry_that_finishes_the_job_again_makes_a_new_delivery(
    start: Callable[..., Any], aiohttp_server: Any
) -> None:
    host = SwitchableHost()
    image = str((await aiohttp_server(host.app())).make_url("/flaky"))
    receiver = Receiver()
    url = await serve(aiohttp_server, receiver)
    client = await start(retry_attempts=1)
    response = await post_job(client, with_callback(url, visit("RP00001", image)))
    job_id = (await response.json())["job_id"]
    first = await settled_delivery(client, job_id)
    assert receiver.calls[0].json()["status"] == "failed"

    host.healthy = True
    async with client.post(f"/api/jobs/{job_id}/retry") as answer:
        assert answer.status == 202

    async def second_delivery() -> dict[str, Any] | None:
        delivery: dict[str, Any] = (await detail(client, job_id))["delivery"]
        return (
            delivery if delivery["id"] != first["id"] and delivery["state"] != "pending" else None
        )

    second = await eventually(second_delivery, within=15)
    assert second["state"] == "delivered"
    assert [call.delivery for call in receiver.calls] == [first["id"], second["id"]]
    posted = receiver.calls[1].json()
    assert posted["status"] == "completed"
    assert "error" not in posted
    assert posted["error_count"] == 0
    assert posted["progress"] == {"total": 1, "done": 1, "failed": 0}


async def test_a_cancelled_job_posts_its_cancelled_status(
    start: Callable[..., Any], aiohttp_server: Any, image_host: ImageHost
) -> None:
    receiver = Receiver()
    url = await serve(aiohttp_server, receiver)
    client = await start()
    body = with_callback(url, visit("RP00001", image_host.url("/hold/4x4.png")))
    job_id = (await (await post_job(client, body)).json())["job_id"]
    async with client.post(f"/api/jobs/{job_id}/cancel") as answer:
        assert answer.status == 202
    delivery = await settled_delivery(client, job_id)
    assert delivery["state"] == "delivered"
    posted = receiver.calls[0].json()
    assert (posted["status"], posted["job_id"]) == ("cancelled", job_id)
    assert posted["progress"]["total"] == 1
    image_host.release()


# -- the address policy ------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "settings", "reason"),
    [
        # An IP literal: the destination guard refuses it before any connection.
        ("127.0.0.1", {}, "destination address not allowed: 127.0.0.1"),
        # A name: the resolver (scripted here) answers a refused address, which is dropped.
        ("localhost", {}, "destination address not allowed: localhost"),
        # Public or not, a host outside allowed_hosts.
        (
            "127.0.0.1",
            {"allow_private_networks": True, "allowed_hosts": ("hooks.example.com",)},
            "destination host not allowed: 127.0.0.1",
        ),
    ],
)
async def test_a_webhook_to_a_refused_destination_is_given_up_and_never_connected(
    make_settings: Callable[..., Settings],
    aiohttp_client: Any,
    aiohttp_server: Any,
    host: str,
    settings: dict[str, Any],
    reason: str,
) -> None:
    receiver = Receiver()
    server = await aiohttp_server(receiver.app())
    resolver = StubResolver(["127.0.0.1"])
    # Loopback refused: the job needs no download (its only store is unknown, so it ends
    # as it is created).
    values = {**FAST, "allow_private_networks": False, **settings}
    app = create_app(make_settings(**values))
    app[keys.WEBHOOK_RESOLVER] = resolver
    client: Client = await aiohttp_client(app)
    url = f"http://{host}:{server.port}/hook"
    body = with_callback(url, visit("GHOST", "http://127.0.0.1:9/x.png"))
    job_id = (await (await post_job(client, body)).json())["job_id"]

    delivery = await settled_delivery(client, job_id)
    assert (delivery["state"], delivery["attempts"], delivery["last_error"]) == (
        "given_up",
        1,
        reason,
    )
    assert receiver.calls == []
    if host == "localhost":
        assert resolver.calls >= 1


# -- the submit ------------------------------------------------------------------------


async def test_callback_url_without_webhook_secret_is_400_naming_the_setting(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    client: Client = await make_client(make_settings())
    body = with_callback("https://hooks.example.com/x", visit("GHOST", "http://127.0.0.1:9/x"))
    response = await post_job(client, body, expect=400)
    answer = await response.json()
    assert "webhook_secret" in answer["error"]
    assert list(answer["details"]) == ["callback_url"]
    # Without the field, the same submit is fine.
    await submit(client, visit("GHOST", "http://127.0.0.1:9/x"))


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://hooks.example.com/x", "Not an absolute http(s) URL."),
        ("/relative/hook", "Not an absolute http(s) URL."),
        ("https://hooks.example.com/" + "a" * 2100, "Longer than 2048 characters."),
        (
            "https://user:pw@hooks.example.com/x",
            "URL must not contain credentials (user:password@); "
            "set allow_url_credentials to allow them.",
        ),
        (42, "Not a valid string."),
    ],
)
async def test_a_bad_callback_url_is_400(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], url: Any, message: str
) -> None:
    client: Client = await make_client(make_settings(**FAST))
    body = {**payload(visit("GHOST", "http://127.0.0.1:9/x")), "callback_url": url}
    response = await post_job(client, body, expect=400)
    assert (await response.json())["details"] == {"callback_url": [message]}


async def test_credentials_in_callback_url_are_sent_when_allowed_and_never_logged(
    make_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    aiohttp_server: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver = Receiver(500)
    server = await aiohttp_server(receiver.app())
    client: Client = await make_client(make_settings(**FAST, allow_url_credentials=True))
    url = f"http://hook-user:hook-Pa55@127.0.0.1:{server.port}/hook"
    caplog.set_level(logging.DEBUG)
    body = with_callback(url, visit("GHOST", "http://127.0.0.1:9/x"))
    job_id = (await (await post_job(client, body)).json())["job_id"]
    assert (await settled_delivery(client, job_id))["state"] == "delivered"
    # aiohttp sends the userinfo as Basic auth, on every attempt.
    assert {call.headers["Authorization"] for call in receiver.calls} == {
        "Basic aG9vay11c2VyOmhvb2stUGE1NQ=="
    }
    logged = "\n".join(f"{record.getMessage()} {record.__dict__}" for record in caplog.records)
    assert "hook-user:***@127.0.0.1" in logged
    assert "hook-Pa55" not in logged
    assert SECRET not in logged
