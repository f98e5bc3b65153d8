"""Validating real responses of the service against its own OpenAPI document."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import ClientResponse
from openapi_core import Config, OpenAPI
from openapi_core.testing import MockRequest, MockResponse

from tests.support.sse import parse_events

__all__ = ["ContractChecker"]


class ContractChecker:
    """Wraps the served document; ``check`` raises if a response breaks it."""

    def __init__(self, document: dict[str, Any]) -> None:
        # An event stream's schema describes one event (OpenAPI 3.0 has no item schema):
        # each event is checked on its own, handed over as JSON.
        config = Config(extra_media_type_deserializers={"text/event-stream": json.loads})
        self.openapi = OpenAPI.from_dict(document, config=config)

    async def check(self, response: ClientResponse, request_body: bytes | None = None) -> bytes:
        """Validate one real exchange (request and response); returns the response body."""
        body = await response.read()
        request = MockRequest(
            "http://127.0.0.1",
            response.method.lower(),
            response.url.path,
            args=dict(response.url.query),
            data=request_body,
        )
        if response.content_type == "text/event-stream":
            events = [vars(block) for block in parse_events(body.decode()) if block.data]
            assert events, "an event stream without events"
            items = [
                json.dumps({name: block[name] for name in ("id", "event", "data")})
                for block in events
            ]
        else:
            # openapi-core hands non-JSON bodies to the schema as they come; text is a string.
            items = [body.decode() if response.content_type.startswith("text/") else body]
        for data in items:
            mock = MockResponse(
                data,
                status_code=response.status,
                headers=dict(response.headers),
                content_type=response.content_type,
            )
            self.openapi.validate_response(request, mock)
        return body
