"""The OpenAPI document: complete, valid, true to real responses; and the docs page."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from openapi_core.validation.response.exceptions import InvalidData
from openapi_spec_validator import validate

from service.api import keys
from service.api.openapi import DOCS_ASSETS
from service.app import create_app
from service.config import Settings
from tests.support.image_host import ImageHost
from tests.support.jobs import payload, visit
from tests.support.openapi_check import ContractChecker
from tests.support.polling import wait_for_status


async def _document(client: TestClient[Any, Any]) -> dict[str, Any]:
    response = await client.get("/api/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    document: dict[str, Any] = await response.json()
    return document


async def test_document_is_valid_openapi_3(client: TestClient[Any, Any]) -> None:
    document = await _document(client)
    assert document["openapi"].startswith("3.")
    validate(document)


async def test_every_route_is_documented(settings: Settings) -> None:
    app = create_app(settings)
    document_paths = app[keys.OPENAPI]["paths"]
    routes = [
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"  # HEAD mirrors each GET
    ]
    assert len(routes) >= 12
    undocumented = [
        (method, path) for method, path in routes if method not in document_paths.get(path, {})
    ]
    assert undocumented == []
    # And nothing documented that the app does not serve.
    served = {path for _, path in routes}
    assert set(document_paths) <= served


async def test_document_carries_configured_limits(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    client = await make_client(
        make_settings(max_page_size=77, default_page_size=7, max_visit_time_length=33)
    )
    document = await _document(client)
    description = document["paths"]["/api/jobs"]["get"]["description"]
    assert "7" in description
    assert "77" in description
    submit = document["paths"]["/api/submit"]["post"]["description"]
    assert "`visit_time` up to 33" in submit
    assert document["components"]["schemas"]["Submit"]["required"] == ["count", "visits"]


async def test_real_responses_validate_against_the_document(
    client: TestClient[Any, Any], image_host: ImageHost
) -> None:
    checker = ContractChecker(await _document(client))
    body = payload(
        visit(
            "S00339218",
            image_host.url("/img/40x30.jpg"),
            image_host.url("/status/404"),
            visit_time="2026-01-02T03:04:05+05:30",
        ),
        visit("UNKNOWN", image_host.url("/img/4x3.png")),
    )
    raw = json.dumps(body).encode()
    created = await client.post(
        "/api/submit", data=raw, headers={"Content-Type": "application/json"}
    )
    assert created.status == 201
    job_id = json.loads(await checker.check(created, raw))["job_id"]
    await wait_for_status(client, job_id)

    bad = b'{"count": "two"}'
    rejected = await client.post(
        "/api/submit/", data=bad, headers={"Content-Type": "application/json"}
    )
    assert rejected.status == 400
    await checker.check(rejected, bad)

    exchanges: list[tuple[str, int]] = [
        (f"/api/status?jobid={job_id}", 200),
        ("/api/status?jobid=999", 400),
        ("/api/status", 400),
        ("/api/jobs", 200),
        ("/api/jobs?status=failed&limit=5", 200),
        ("/api/jobs?status=bogus", 400),
        (f"/api/jobs?limit=1&before={job_id + 1}", 200),
        (f"/api/jobs/{job_id}?offset=1&limit=1", 200),
        ("/api/jobs/abc", 400),
        ("/api/jobs/999", 404),
        (f"/api/jobs/{job_id}/results", 200),
        (f"/api/jobs/{job_id}/results?format=csv", 200),
        (f"/api/jobs/{job_id}/results?format=xml", 400),
        ("/api/jobs/999/results", 404),
        ("/api/jobs/999/results?format=csv", 404),
        # The job has ended: its stream sends the done event and ends.
        (f"/api/jobs/{job_id}/events", 200),
        ("/api/jobs/999/events", 404),
        ("/api/jobs/abc/events", 400),
        ("/healthz", 200),
        ("/readyz", 200),
        ("/api/stats", 200),
        ("/api/auth", 200),
        ("/metrics", 200),
        ("/api/openapi.json", 200),
        ("/api/docs", 200),
        ("/api/docs/assets/swagger-ui.css", 200),
        ("/api/docs/assets/nope.js", 404),
    ]
    for path, status in exchanges:
        response = await client.get(path)
        assert response.status == status, path
        await checker.check(response)


async def test_contract_checker_catches_an_undocumented_shape(
    client: TestClient[Any, Any],
) -> None:
    # The checker is only worth something if it fails on a response the document forbids.
    document = await _document(client)
    document["components"]["schemas"]["Health"]["properties"]["status"]["enum"] = ["fine"]
    checker = ContractChecker(document)
    with pytest.raises(InvalidData):
        await checker.check(await client.get("/healthz"))


async def test_contract_checker_checks_each_event_of_a_stream(
    client: TestClient[Any, Any],
) -> None:
    created = await client.post("/api/submit", json=payload(visit("NOPE", "http://n.test/1")))
    job_id = (await created.json())["job_id"]
    await wait_for_status(client, job_id)
    path = f"/api/jobs/{job_id}/events"
    document = await _document(client)
    await ContractChecker(document).check(await client.get(path))
    stream = document["paths"]["/api/jobs/{job_id}/events"]["get"]["responses"]["200"]
    stream["content"]["text/event-stream"]["schema"]["properties"]["event"]["enum"] = ["progress"]
    with pytest.raises(InvalidData):
        await ContractChecker(document).check(await client.get(path))


async def test_docs_page_loads_its_assets_from_the_service(client: TestClient[Any, Any]) -> None:
    response = await client.get("/api/docs")
    assert response.status == 200
    assert response.content_type == "text/html"
    page = await response.text()
    assert "/api/openapi.json" in page
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sources, page
    for source in sources:
        # Served by us, never a CDN.
        assert source.startswith("/api/docs/assets/"), source
        asset = await client.get(source)
        assert asset.status == 200, source
        assert asset.content_type == DOCS_ASSETS[source.rsplit("/", 1)[1]]
        assert len(await asset.read()) > 100
    bundle = await client.get("/api/docs/assets/swagger-ui-bundle.js")
    assert b"SwaggerUIBundle" in await bundle.read()
    for escape in ("../app.py", "..%2F..%2Fsetup.cfg", "index.html"):
        assert (await client.get(f"/api/docs/assets/{escape}")).status == 404


async def test_with_an_api_key_the_document_declares_it_and_stays_readable(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    client = await make_client(make_settings(api_key="sesame"))
    # The document, the docs page and its assets need no key: a browser cannot send one.
    document = await _document(client)
    assert (await client.get("/api/docs")).status == 200
    assert (await client.get("/api/docs/assets/swagger-ui.css")).status == 200
    schemes = document["components"]["securitySchemes"]
    assert schemes["apiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert schemes["bearer"] == {"type": "http", "scheme": "bearer"}
    paths = document["paths"]
    for path, method in [("/api/submit", "post"), ("/api/status", "get"), ("/api/jobs", "get")]:
        operation = paths[path][method]
        assert operation["security"] == [{"apiKey": []}, {"bearer": []}]
        assert "401" in operation["responses"]
    for path in ("/healthz", "/readyz", "/metrics", "/api/openapi.json", "/api/docs/assets/{name}"):
        assert paths[path]["get"]["security"] == []
    # A real 401 and a real keyed answer both conform.
    checker = ContractChecker(document)
    refused = await client.get("/api/jobs")
    assert refused.status == 401
    await checker.check(refused)
    served = await client.get("/api/jobs", headers={"X-API-Key": "sesame"})
    assert served.status == 200
    await checker.check(served)


async def test_without_an_api_key_the_document_has_no_security(
    client: TestClient[Any, Any],
) -> None:
    document = await _document(client)
    assert "securitySchemes" not in document.get("components", {})
    assert all(
        "security" not in operation and "401" not in operation["responses"]
        for operations in document["paths"].values()
        for operation in operations.values()
    )
