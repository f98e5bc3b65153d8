"""The Postman collection: well-formed v2.1, scripted, and its examples in step with the API."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from marshmallow import Schema

from service.api.schemas import (
    AuthSchema,
    ErrorSchema,
    HealthSchema,
    JobCreatedSchema,
    JobDetailSchema,
    JobListSchema,
    RetryAcceptedSchema,
    StatsSchema,
    StatusSchema,
    SubmitSchema,
)
from service.config import Settings

POSTMAN = Path(__file__).resolve().parents[3] / "postman"
COLLECTION = json.loads((POSTMAN / "retail-pulse.postman_collection.json").read_text("utf-8"))
ENVIRONMENT = json.loads((POSTMAN / "local.postman_environment.json").read_text("utf-8"))
SCHEMA_V21 = "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"


def _leaves(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for item in items:
        if "item" in item:
            yield from _leaves(item["item"])
        else:
            yield item


REQUESTS = list(_leaves(COLLECTION["item"]))
PAIRS = [(item, example) for item in REQUESTS for example in item["response"]]


def _params(pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[Any]:
    return [pytest.param(i, e, id=f"{i['name']} / {e['name']}") for i, e in pairs]


def _path(request: dict[str, Any]) -> str:
    return "/" + "/".join(request["url"]["path"])


def _query(request: dict[str, Any]) -> dict[str, str]:
    return {entry["key"]: entry["value"] for entry in request["url"].get("query", [])}


def _script(item: dict[str, Any], listen: str) -> str:
    return "\n".join(
        line
        for event in item.get("event", [])
        if event["listen"] == listen
        for line in event["script"]["exec"]
    )


def _submit_schema() -> SubmitSchema:
    return SubmitSchema(limits=Settings().limits)


def _response_schema(path: str, code: int) -> Schema | None:
    """The schema a response body must match, or None for the status endpoint's 400 {}."""
    if code >= 400:
        return None if path == "/api/status" else ErrorSchema()
    if path.startswith("/api/submit"):
        return JobCreatedSchema()
    if path == "/api/status" or path.endswith("/cancel"):
        return StatusSchema()
    if path.endswith("/retry"):
        return RetryAcceptedSchema()
    if path.startswith("/api/jobs/"):
        return JobDetailSchema()
    other: dict[str, Schema] = {
        "/api/jobs": JobListSchema(),
        "/api/auth": AuthSchema(),
        "/api/stats": StatsSchema(),
        "/healthz": HealthSchema(),
    }
    assert path in other, f"no schema known for {path}"
    return other[path]


def test_collection_is_v21_and_every_url_uses_base_url() -> None:
    assert COLLECTION["info"]["schema"] == SCHEMA_V21
    variables = {variable["key"] for variable in COLLECTION["variable"]}
    assert {"baseUrl", "imageUrlJpg", "imageUrlPng", "imageUrlMissing"} <= variables
    assert len(REQUESTS) >= 15
    for item in REQUESTS:
        assert item["request"]["url"]["raw"].startswith("{{baseUrl}}/"), item["name"]


def test_request_names_are_unique() -> None:
    # The poll requests re-run themselves by name with setNextRequest.
    names = [item["name"] for item in REQUESTS]
    assert len(names) == len(set(names))


def test_every_request_has_assertions_and_a_saved_example() -> None:
    for item in REQUESTS:
        assert "pm.test(" in _script(item, "test"), f"{item['name']} has no pm.test"
        assert item["response"], f"{item['name']} has no saved example"


def test_polls_are_bounded_loops() -> None:
    polls = [item for item in REQUESTS if item["name"].startswith("Poll")]
    assert len(polls) >= 3
    for item in polls:
        script = _script(item, "test")
        assert "setNextRequest(pm.info.requestName)" in script
        assert "attempts < maxAttempts" in script


def test_local_environment_points_images_at_the_image_server() -> None:
    values = {entry["key"]: entry["value"] for entry in ENVIRONMENT["values"]}
    collection_variables = {variable["key"] for variable in COLLECTION["variable"]}
    image_variables = {key for key in collection_variables if key.startswith("imageUrl")}
    assert image_variables <= set(values)
    for key in image_variables:
        assert values[key].startswith("{{imageBase}}/"), key


@pytest.mark.parametrize(("item", "example"), _params(PAIRS))
def test_example_body_matches_the_response_schema(
    item: dict[str, Any], example: dict[str, Any]
) -> None:
    path = _path(example["originalRequest"])
    if path.endswith("/events") and example["code"] == 200:
        _check_event_stream(example["body"])
        return
    body = json.loads(example["body"])
    schema = _response_schema(path, example["code"])
    if schema is None:
        assert body == {}
    else:
        assert schema.validate(body) == {}


def _check_event_stream(text: str) -> None:
    """An event stream example: each event's data is what its kind carries."""
    assert text.endswith("\n\n")
    for block in text.strip("\n").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        assert set(fields) == {"id", "event", "data"}, block
        data = json.loads(fields["data"])
        assert fields["id"].startswith(f"{data['job_id']}-")
        if fields["event"] == "done":
            assert StatusSchema().validate(data) == {}
        else:
            assert fields["event"] == "progress"
            assert set(data) == {"job_id", "done", "failed", "total"}


@pytest.mark.parametrize(
    ("item", "example"),
    _params([(i, e) for i, e in PAIRS if _path(e["originalRequest"]).startswith("/api/submit")]),
)
def test_example_submission_is_accepted_or_rejected_as_shown(
    item: dict[str, Any], example: dict[str, Any]
) -> None:
    raw = example["originalRequest"]["body"]["raw"]
    try:
        payload = json.loads(raw)
    except json.JSONDecodeError:
        assert example["code"] == 400
        return
    errors = _submit_schema().validate(payload)
    # A 422 refuses a valid body for its Idempotency-Key; only a 400 is the body's fault.
    assert (errors == {}) == (example["code"] != 400), errors


@pytest.mark.parametrize(
    ("item", "example"),
    _params(
        [
            (i, e)
            for i, e in PAIRS
            # A 409 or 422 answers a state that earlier requests made; newman checks those.
            if (e["code"] >= 400 and e["code"] not in (409, 422))
            or _path(e["originalRequest"]) == "/healthz"
        ]
    ),
)
async def test_error_examples_are_what_the_service_answers(
    make_client: Callable[..., Any],
    settings: Settings,
    item: dict[str, Any],
    example: dict[str, Any],
) -> None:
    # These requests are refused before any download, so the example URLs are never fetched.
    client = await make_client(settings)
    request = example["originalRequest"]
    body = request.get("body", {}).get("raw")
    response = await client.request(
        request["method"],
        _path(request),
        params=_query(request),
        data=body,
        headers={"Content-Type": "application/json"} if body else None,
    )
    assert response.status == example["code"]
    assert await response.json() == json.loads(example["body"])
