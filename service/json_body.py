"""JSON response bodies, encoded with orjson.

Bodies are encoded on the event loop, and some are large: a failed job's error
list names every failing store, a results page holds up to ``max_page_size``
rows. orjson encodes them about ten times faster than the json module.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

__all__ = ["json_response"]


def json_response(data: Any, *, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")
