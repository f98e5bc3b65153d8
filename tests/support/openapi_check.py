"""Validating real responses of the service against its own OpenAPI document."""

from __future__ import annotations

from typing import Any

from aiohttp import ClientResponse
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse

__all__ = ["ContractChecker"]


class ContractChecker:
    """Wraps the served document; ``check`` raises if a response breaks it."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.openapi = OpenAPI.from_dict(document)

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
        # openapi-core hands non-JSON bodies to the schema as they come; text is a string.
        data: Any = body.decode() if response.content_type.startswith("text/") else body
        mock = MockResponse(
            data,
            status_code=response.status,
            headers=dict(response.headers),
            content_type=response.content_type,
        )
        self.openapi.validate_response(request, mock)
        return body
