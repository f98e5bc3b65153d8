"""The operator's dashboard at ``/ui/``: a page and its static files, served with a strict CSP.

The page loads without the API key (a browser cannot add a header to a page load);
it asks ``/api/auth`` whether one is needed, and its data calls carry it.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from service.api.errors import NotFound

__all__ = ["CONTENT_SECURITY_POLICY", "UI_ASSETS", "UI_DIRECTORY", "routes"]

routes = web.RouteTableDef()

UI_DIRECTORY = Path(__file__).resolve().parent.parent / "ui" / "static"

# The files the page loads, and the content type each is served as.
UI_ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "csv.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}

# Only the service's own files; no inline script or style, no plugins, no framing. Trusted
# Types make any assignment of a string as HTML (innerHTML and the like) throw, so data
# can only ever reach the page as text.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    ]
)

_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidated on each load (ETag, Last-Modified), so a new release shows at once.
    "Cache-Control": "no-cache",
}


def _file(name: str, content_type: str) -> web.FileResponse:
    return web.FileResponse(UI_DIRECTORY / name, headers={**_HEADERS, "Content-Type": content_type})


@routes.get("/ui")
async def ui_redirect(request: web.Request) -> web.Response:
    # The page's relative paths assume the trailing slash.
    raise web.HTTPMovedPermanently("/ui/")


@routes.get("/ui/")
async def ui_page(request: web.Request) -> web.FileResponse:
    return _file("index.html", "text/html; charset=utf-8")


@routes.get("/ui/{name}")
async def ui_asset(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    content_type = UI_ASSETS.get(name)
    if content_type is None:
        raise NotFound(f"no dashboard file named {name!r}")
    return _file(name, content_type)
