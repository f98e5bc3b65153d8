"""The image host used when nginx is not installed: aiohttp serving /img/<n>/<any>.jpg."""

from __future__ import annotations

import sys
from pathlib import Path

from aiohttp import web

__all__ = ["build_app", "main"]


def build_app(root: Path) -> web.Application:
    files = {path.stem: path.read_bytes() for path in root.glob("*.jpg")}

    async def image(request: web.Request) -> web.Response:
        data = files.get(request.match_info["number"])
        if data is None:
            raise web.HTTPNotFound()
        return web.Response(body=data, content_type="image/jpeg")

    app = web.Application()
    app.router.add_get(r"/img/{number:\d+}/{name:[^/]+\.jpg}", image)
    return app


def main(argv: list[str]) -> int:
    root, port = Path(argv[0]), int(argv[1])
    web.run_app(build_app(root), host="127.0.0.1", port=port, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
