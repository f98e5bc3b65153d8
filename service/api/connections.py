"""Client connections to the HTTP API: the header timeout, the connection cap, the file limit.

aiohttp's server applies no timeout to a request's line and headers, and by default
keeps even a connection that never sent a byte for an hour. ``ServiceRunner`` serves
the app through ``GuardedRequestHandler``, a ``web.RequestHandler`` that answers 408
and closes when the headers do not arrive within ``header_timeout``, and that refuses
connections past ``max_connections``. The body's deadline (``body_timeout``) is the
submit handler's; this handler only lets that 408 close without reading on.

The hook leans on aiohttp internals, each pinned by
``tests/integration/test_connections_functional.py``: ``BaseRunner._make_server``
(the abstract method every runner implements), ``web.Server._kwargs`` (the handler
arguments), ``RequestHandler._waiter`` (pending exactly while the handler waits for a
request, as aiohttp's own keep-alive timer reads it), ``RequestHandler._lingering_time``
(read after each response whose body was left unfinished), and that the server's request
factory runs once a request's headers are parsed, before its body is read.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from typing import Any, cast

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader

from service.config import ConnectionSettings
from service.metrics import Metrics

__all__ = [
    "ConnectionGuard",
    "GuardedRequestHandler",
    "GuardedServer",
    "ServiceRunner",
    "raise_open_file_limit",
]

log = logging.getLogger(__name__)

# Repeated refusals and timeouts are summed into one line at most this often.
LOG_EVERY = 10.0
# Descriptors kept for what is not a client connection: the listener, downloads, the job
# store, the pool's pipes, logs. Only used to warn that max_connections cannot fit.
OTHER_FILES = 256


def _response(status: str, message: str, extra_headers: str = "") -> bytes:
    # Written straight to the socket: no request exists, so no middleware can answer.
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status}\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"{extra_headers}"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


class _Tally:
    """Counts an event; logs the count at most once per ``LOG_EVERY`` s, not once per event."""

    def __init__(
        self, level: int, message: str, count_field: str, limit_field: str, limit: float
    ) -> None:
        self._level = level
        self._message = message  # formatted with the count, then the limit
        self._count_field = count_field
        self._limit_field = limit_field
        self._limit = limit
        self._count = 0
        self._next_log = 0.0

    def add(self) -> None:
        self._count += 1
        now = time.monotonic()
        if now >= self._next_log:
            fields = {self._count_field: self._count, self._limit_field: self._limit}
            log.log(self._level, self._message, self._count, self._limit, extra=fields)
            self._count = 0
            self._next_log = now + LOG_EVERY


class ConnectionGuard:
    """The state every connection shares: how many are open, the limits, and their tallies."""

    def __init__(self, settings: ConnectionSettings, metrics: Metrics) -> None:
        self.header_timeout = settings.header_timeout
        self.max_connections = settings.max_connections
        self._metrics = metrics
        self._open = 0
        self.timed_out_response = _response(
            "408 Request Timeout",
            f"request headers not received within {settings.header_timeout:g} s",
        )
        self.refused_response = _response(
            "503 Service Unavailable",
            "too many open connections; try again shortly",
            "Retry-After: 1\r\n",
        )
        self._refusals = _Tally(
            logging.WARNING,
            "refused %d connection(s) with 503: max_connections (%d) are open",
            "refused",
            "max_connections",
            settings.max_connections,
        )
        self._timeouts = _Tally(
            logging.INFO,
            "closed %d connection(s) with 408: no complete request headers within %g s",
            "timed_out",
            "header_timeout",
            settings.header_timeout,
        )
        metrics.watch_connections(self)

    @property
    def open(self) -> int:
        return self._open

    def admit(self) -> bool:
        """Count a new connection in, or refuse it (counted and logged) at the cap."""
        if self._open >= self.max_connections:
            self._metrics.connections_refused.inc()
            self._refusals.add()
            return False
        self._open += 1
        return True

    def release(self) -> None:
        self._open -= 1

    def timed_out(self) -> None:
        self._metrics.header_timeouts.inc()
        self._timeouts.add()


class GuardedRequestHandler(web.RequestHandler):
    """aiohttp's connection handler, plus the header timeout and the connection cap.

    The header timer runs from the connection's start, and on a kept-alive connection
    from the first byte of the next request; it stops when ``GuardedServer`` turns the
    parsed headers into a request. While it runs, aiohttp's idle timer is off: a client
    sending a request is not idle, and a silent new one gets the 408 instead.
    """

    __slots__ = ("_admitted", "_guard", "_header_timer")

    def __init__(self, manager: web.Server, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._header_timer: asyncio.TimerHandle | None = None
        self._admitted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._guard.admit():
            # A uvloop transport is no asyncio.Transport subclass, but has the same methods.
            refused = cast(asyncio.Transport, transport)
            refused.write(self._guard.refused_response)
            refused.close()
            return
        self._admitted = True
        super().connection_made(transport)
        self._start_header_timer()

    def data_received(self, data: bytes) -> None:
        if self._admitted and self._header_timer is None and data and self._waiting_for_request():
            self._start_header_timer()
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._admitted:
            return
        self._admitted = False
        self._stop_header_timer()
        self._guard.release()
        super().connection_lost(exc)

    def headers_received(self) -> None:
        """The request's line and headers are in; the body is not the timer's business."""
        self._stop_header_timer()

    def close_without_reading_the_rest(self) -> None:
        """Close once the response in hand is sent, leaving the rest of the body unread.

        aiohttp would otherwise read an unfinished body for up to ``lingering_time`` (10 s)
        before it closes: time a client that stalled its upload would keep the connection.
        """
        self._lingering_time = 0.0

    def _waiting_for_request(self) -> bool:
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    def _start_header_timer(self) -> None:
        # keep_alive(True) cancels aiohttp's idle timer and leaves keep-alive on.
        self.keep_alive(True)
        self._header_timer = asyncio.get_running_loop().call_later(
            self._guard.header_timeout, self._header_timed_out
        )

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timed_out(self) -> None:
        self._header_timer = None
        waiter = self._waiter
        if waiter is not None and waiter.done():
            return  # the headers completed in this very loop turn; the request is on its way
        transport = self.transport
        if transport is None:
            return
        transport.write(self._guard.timed_out_response)
        self._guard.timed_out()
        self.force_close()


class GuardedServer(web.Server):
    """aiohttp's ``web.Server`` making ``GuardedRequestHandler``s, told when headers are in."""

    def __init__(self, plain: web.Server, guard: ConnectionGuard) -> None:
        # The plain server's arguments, so the handlers get what the app and runner set.
        super().__init__(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=asyncio.get_running_loop(),
            **plain._kwargs,
        )
        self._make_plain_request = plain.request_factory
        self.request_factory = self._make_request_seen
        self._guard = guard

    def __call__(self) -> GuardedRequestHandler:
        return GuardedRequestHandler(self, self._guard, loop=self._loop, **self._kwargs)

    def _make_request_seen(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: web.RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        # aiohttp builds the request once the headers are parsed, before reading the body.
        if isinstance(protocol, GuardedRequestHandler):
            protocol.headers_received()
        return self._make_plain_request(message, payload, protocol, writer, task)


class ServiceRunner(web.AppRunner):
    """``web.AppRunner`` whose server guards its connections (see the module docstring)."""

    def __init__(self, app: web.Application, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._guard = guard

    @property
    def guard(self) -> ConnectionGuard:
        return self._guard

    async def _make_server(self) -> web.Server:
        return GuardedServer(await super()._make_server(), self._guard)


def raise_open_file_limit(max_connections: int) -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit, log the result, and return it.

    Each client connection holds a descriptor. At the common default soft limit of
    1,024, accept() would fail (and asyncio stop accepting for a second at a time)
    long before ``max_connections``, and downloads would fail with it.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    raised = soft
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            raised = hard
        except (ValueError, OSError) as exc:
            # An unlimited hard limit is not a valid soft one on every system.
            log.warning("could not raise the open-file limit from %d: %s", soft, exc)
    log.info(
        "open-file limit: %d -> %d (the hard limit is %s)",
        soft,
        raised,
        "unlimited" if hard == resource.RLIM_INFINITY else hard,
        extra={"soft_before": soft, "soft": raised},
    )
    if max_connections + OTHER_FILES > raised:
        log.warning(
            "max_connections (%d) does not fit the open-file limit (%d), which must also "
            "hold about %d other files (downloads, the job store, the pool): past that, "
            "accepting and downloading fail; raise the hard limit (ulimit -Hn, "
            "LimitNOFILE=, docker run --ulimit nofile=) or lower max_connections",
            max_connections,
            raised,
            OTHER_FILES,
        )
    return raised
