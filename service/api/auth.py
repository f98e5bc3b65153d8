"""Optional API-key check for every route except an explicit allow-list of open paths."""

from __future__ import annotations

import hmac

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from service.api.errors import Unauthorized

__all__ = ["OPEN_PATHS", "OPEN_PREFIXES", "api_key_middleware", "is_open"]

# Paths that answer without a key: probes and scrapers that cannot carry secrets,
# and the API's own description and docs page (a browser cannot add the header
# to a page load; the document holds no data, and the operations it lists still
# need the key). Everything else is protected, so a new route is closed unless
# listed here.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/api/openapi.json", "/api/docs"})
OPEN_PREFIXES = ("/api/docs/assets/",)


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="retail-pulse"'}


def _presented_key(request: web.Request) -> str | None:
    key = request.headers.get("X-API-Key")
    if key is not None:
        return key.strip()
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


def api_key_middleware(api_key: str) -> Middleware:
    """Require ``X-API-Key: <key>`` or ``Authorization: Bearer <key>`` outside ``OPEN_PATHS``."""
    expected = api_key.encode("utf-8")

    @web.middleware
    async def check_api_key(request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_open(request.path):
            return await handler(request)
        presented = _presented_key(request)
        if presented is None:
            raise Unauthorized(
                "missing API key: send X-API-Key or Authorization: Bearer", headers=_CHALLENGE
            )
        # Constant time, on bytes: compare_digest refuses non-ASCII str, and a
        # header may carry anything.
        if not hmac.compare_digest(presented.encode("utf-8", "backslashreplace"), expected):
            raise Unauthorized("invalid API key", headers=_CHALLENGE)
        return await handler(request)

    return check_api_key
