"""A loopback webhook receiver: records every POST it gets and answers with scripted statuses."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

__all__ = ["Call", "Receiver", "reference_verify"]


@dataclass(frozen=True, slots=True)
class Call:
    """One POST as the receiver got it: the raw body, exactly as signed."""

    path: str
    headers: dict[str, str]
    raw: bytes

    @property
    def delivery(self) -> str:
        return self.headers["Retail-Pulse-Delivery"]

    def json(self) -> Any:
        return json.loads(self.raw)


class Receiver:
    """Answers ``statuses`` in turn, then 200. The first ``hold`` requests wait until
    ``release()`` before they are answered (a receiver that takes its time)."""

    def __init__(self, *statuses: int, hold: int = 0) -> None:
        self.statuses = list(statuses)
        self.calls: list[Call] = []
        self._hold = hold
        self._released = asyncio.Event()

    def release(self) -> None:
        self._released.set()

    def app(self) -> web.Application:
        async def hook(request: web.Request) -> web.Response:
            raw = await request.read()
            self.calls.append(Call(request.path, dict(request.headers), raw))
            if len(self.calls) <= self._hold:
                await self._released.wait()
            status = self.statuses.pop(0) if self.statuses else 200
            return web.Response(status=status, text="ok")

        app = web.Application()
        app.router.add_post("/{tail:.*}", hook)
        return app


def reference_verify(secret: str, header: str, raw: bytes, now: float, tolerance: float) -> bool:
    """How a receiver checks ``Retail-Pulse-Signature``, written apart from the service's code:
    Stripe's scheme, ``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">``."""
    fields = dict(item.split("=", 1) for item in header.split(","))
    timestamp = int(fields["t"])
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + raw, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["v1"]) and abs(now - timestamp) <= tolerance
