"""Optional API-key check for every route except an explicit allow-list of open paths, and
``GET /api/auth``, which says whether a key is needed."""

from __future__ import annotations

import hmac

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from service.api import keys
from service.api.errors import Unauthorized
from service.api.json_body import json_response
from service.api.schemas import AuthSchema

__all__ = ["OPEN_PATHS", "OPEN_PREFIXES", "api_key_middleware", "is_open", "routes"]

# Paths that answer without a key: probes and scrapers that cannot carry secrets,
# and the API's own description and docs page (a browser cannot add the header
# to a page load; the document holds no data, and the operations it lists still
# need the key). Everything else is protected, so a new route is closed unless
# listed here.
# The dashboard's page and assets are open for the same reason; its data calls carry the
# key, and /api/auth tells it whether one is needed (and nothing else).
OPEN_PATHS = frozenset(
    {"/healthz", "/readyz", "/metrics", "/api/openapi.json", "/api/docs", "/api/auth", "/ui"}
)
OPEN_PREFIXES = ("/api/docs/assets/", "/ui/")


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="retail-pulse"'}

routes = web.RouteTableDef()

_auth_schema = AuthSchema()


def _presented_key(request: web.Request) -> str | None:
    key = request.headers.get("X-API-Key")
    if key is not None:
        return key.strip()
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


def _matches(presented: str, expected: bytes) -> bool:
    # Constant time, on bytes: compare_digest refuses non-ASCII str, and a header may
    # carry anything.
    return hmac.compare_digest(presented.encode("utf-8", "backslashreplace"), expected)


@routes.get("/api/auth")
async def auth_status(request: web.Request) -> web.Response:
    """Whether a key is needed; with a key presented, whether it is the right one."""
    api_key = request.app[keys.SETTINGS].api_key
    body: dict[str, bool] = {"key_required": bool(api_key)}
    presented = _presented_key(request)
    if api_key and presented is not None:
        # A page checks a typed key here rather than by a refused data call (a 401 in
        # the console); it learns no more than that 401 would tell it.
        body["key_valid"] = _matches(presented, api_key.encode("utf-8"))
    return json_response(_auth_schema.dump(body))


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
        if not _matches(presented, expected):
            raise Unauthorized("invalid API key", headers=_CHALLENGE)
        return await handler(request)

    return check_api_key
