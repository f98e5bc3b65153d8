"""A loopback HTTP server that plays a field agent's image host, good and bad.

Paths:
  /img/<W>x<H>.<ext>[?anything]   a real image (jpg, png, gif, webp)
  /truncated/<W>x<H>.<ext>        the first half of one
  /status/<code>                  that HTTP status, empty body
  /html                           a web page instead of an image
  /slow/<seconds>/<W>x<H>.<ext>   an image after a delay
  /redirect/<n>/<W>x<H>.<ext>     n redirects, then the image
  /redirect-to?url=<u>            a redirect to u
  /hold/<W>x<H>.<ext>             an image once the test calls ``release()``
  /basic-auth/<W>x<H>.<ext>       an image with HTTP Basic auth as BASIC_AUTH, else 401
Every request's path is recorded in ``requests``. While the host is down
(``go_down()`` until ``come_back()``), every path answers 503.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import encode_basic_auth, web
from aiohttp.test_utils import TestServer

from tests.support.images import make_image, truncated

__all__ = ["BASIC_AUTH", "ImageHost", "Outage", "build_image_host_app"]

# The user and password /basic-auth/ wants; not in its path, so a test can check
# that the password shows nowhere.
BASIC_AUTH = ("field-agent", "s3cret-Pa55w0rd")

_SIZE = re.compile(r"^(\d+)x(\d+)\.(jpg|jpeg|png|gif|webp)$")
_CONTENT_TYPES = {
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "png": "image/png",
    "gif": "image/gif",
    "webp": "image/webp",
}


def _image_response(name: str, cut: bool = False) -> web.Response:
    match = _SIZE.match(name)
    if match is None:
        raise web.HTTPNotFound()
    width, height, extension = int(match[1]), int(match[2]), match[3]
    data = make_image(width, height, extension)
    return web.Response(
        body=truncated(data) if cut else data, content_type=_CONTENT_TYPES[extension]
    )


@dataclass(slots=True)
class Outage:
    """Whether the whole host is down, and how many requests it turned away so far."""

    down: bool = False
    refused: int = 0


def build_image_host_app(
    requests: list[str], gate: asyncio.Event | None = None, outage: Outage | None = None
) -> web.Application:
    held = gate or asyncio.Event()
    state = outage or Outage()

    @web.middleware
    async def record(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        requests.append(request.path)
        if state.down:
            state.refused += 1
            return web.Response(status=503)
        return await handler(request)

    async def image(request: web.Request) -> web.Response:
        return _image_response(request.match_info["name"])

    async def truncated_image(request: web.Request) -> web.Response:
        return _image_response(request.match_info["name"], cut=True)

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]))

    async def html(request: web.Request) -> web.Response:
        return web.Response(text="<html><body>not an image</body></html>", content_type="text/html")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.match_info["seconds"]))
        return _image_response(request.match_info["name"])

    async def redirect(request: web.Request) -> web.Response:
        remaining = int(request.match_info["n"])
        name = request.match_info["name"]
        target = f"/img/{name}" if remaining <= 1 else f"/redirect/{remaining - 1}/{name}"
        raise web.HTTPFound(target)

    async def redirect_to(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["url"])

    async def hold(request: web.Request) -> web.Response:
        await held.wait()
        return _image_response(request.match_info["name"])

    async def basic_auth(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != encode_basic_auth(*BASIC_AUTH):
            raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Basic realm="images"'})
        return _image_response(request.match_info["name"])

    app = web.Application(middlewares=[record])
    app.router.add_get("/basic-auth/{name}", basic_auth)
    app.router.add_get("/hold/{name}", hold)
    app.router.add_get("/img/{name}", image)
    app.router.add_get("/truncated/{name}", truncated_image)
    app.router.add_get(r"/status/{code:\d{3}}", status)
    app.router.add_get("/html", html)
    app.router.add_get("/slow/{seconds}/{name}", slow)
    app.router.add_get(r"/redirect/{n:\d+}/{name}", redirect)
    app.router.add_get("/redirect-to", redirect_to)
    return app


class ImageHost:
    """A running image host: ``url(path)`` builds absolute URLs to it."""

    def __init__(
        self,
        server: TestServer,
        requests: list[str],
        gate: asyncio.Event | None = None,
        outage: Outage | None = None,
    ) -> None:
        self.server = server
        self.requests = requests
        self.gate = gate or asyncio.Event()
        self.outage = outage or Outage()

    def go_down(self) -> None:
        """Answer 503 on every path until ``come_back``."""
        self.outage.down = True

    def come_back(self) -> None:
        self.outage.down = False

    def release(self) -> None:
        """Let every /hold/ request, waiting or future, answer."""
        self.gate.set()

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))
