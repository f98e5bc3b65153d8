"""JSON bodies: orjson, with the json module for what orjson refuses but JSON allows."""

from __future__ import annotations

import json

from service.api.json_body import json_response


def test_a_body_is_json_with_its_status() -> None:
    response = json_response({"job_id": 7, "error": [{"store_id": "S1"}]}, status=201)
    assert response.status == 201
    assert response.content_type == "application/json"
    assert isinstance(response.body, bytes)
    assert json.loads(response.body) == {"job_id": 7, "error": [{"store_id": "S1"}]}


def test_an_integer_past_64_bits_still_encodes() -> None:
    response = json_response({"offset": 2**70})
    assert isinstance(response.body, bytes)
    assert json.loads(response.body) == {"offset": 2**70}
