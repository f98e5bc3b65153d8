"""The optional API key: /api/* needs it when set; open paths and unset keys need nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service.api.auth import OPEN_PATHS
from service.config import Settings

KEY = "s3cret-key"
CHALLENGE = 'Bearer realm="retail-pulse"'


@pytest.fixture
async def guarded(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = await make_client(make_settings(api_key=KEY))
    return client


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-API-Key": "wrong"},
        {"X-API-Key": KEY + "x"},
        {"X-API-Key": ""},
        {"Authorization": f"Basic {KEY}"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer wrong"},
        {"X-API-Key": "ключ"},
    ],
    ids=["none", "wrong", "longer", "empty", "basic", "bearer-empty", "bearer-wrong", "non-ascii"],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/api/status?jobid=1"), ("GET", "/api/jobs/1"), ("POST", "/api/submit/")],
)
async def test_api_without_the_right_key_is_401(
    guarded: TestClient[Any, Any], headers: dict[str, str], method: str, path: str
) -> None:
    response = await guarded.request(method, path, headers=headers, json={})
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == CHALLENGE
    body = await response.json()
    assert set(body) == {"error"}
    assert "API key" in body["error"]


@pytest.mark.parametrize(
    "headers",
    [{"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY}"}, {"authorization": f"bearer {KEY}"}],
)
async def test_api_with_the_key_in_either_header_is_served(
    guarded: TestClient[Any, Any], headers: dict[str, str]
) -> None:
    # An unknown job answers 400 {}: the request got past the key check.
    response = await guarded.get("/api/status", params={"jobid": "1"}, headers=headers)
    assert (response.status, await response.json()) == (400, {})


async def test_healthz_stays_open(guarded: TestClient[Any, Any]) -> None:
    assert "/healthz" in OPEN_PATHS
    response = await guarded.get("/healthz")
    assert (response.status, await response.json()) == (200, {"status": "ok"})


async def test_paths_outside_the_allow_list_are_closed(guarded: TestClient[Any, Any]) -> None:
    # Secure by default: a route nobody listed (even an unknown one) needs the key.
    response = await guarded.get("/anything-else")
    assert response.status == 401


async def test_no_key_configured_means_no_check(client: TestClient[Any, Any]) -> None:
    response = await client.get("/api/status", params={"jobid": "1"})
    assert (response.status, await response.json()) == (400, {})
