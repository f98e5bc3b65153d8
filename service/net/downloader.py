"""Downloading image bytes: the guarded client session, size caps, timeouts, retries and breaker.

``Downloader.try_fetch`` makes one attempt and says whether (and after how
long) another is worth it, or that the image must wait for the origin's open
circuit, so the pipeline can wait either out without holding a worker.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable

import aiohttp
from aiohttp import hdrs
from yarl import URL

from service.config import DownloadSettings
from service.net.address_policy import AddressPolicy, refusal_behind
from service.net.byte_budget import ByteLease
from service.net.circuit_breaker import CircuitBreaker, origin_key
from service.net.circuit_waits import CircuitWaits
from service.net.guarded_session import guarded_session
from service.net.retry import RETRYABLE_STATUSES, RetryPolicy, parse_retry_after
from service.outcomes import FailureKind
from service.url_credentials import mask_credentials

__all__ = [
    "CIRCUIT_OPEN",
    "CircuitWait",
    "Downloader",
    "FetchError",
    "RetryLater",
    "create_client_session",
]

log = logging.getLogger(__name__)

CHUNK_SIZE = 64 * 1024
# The breaker keys on the origin, but this text stays as documented: clients match it,
# and it names no origin, so the failure metric's reason label stays a fixed set.
CIRCUIT_OPEN = "host unavailable (circuit open)"


class FetchError(Exception):
    """A download failed for good; ``reason`` is the short human explanation.

    Reasons are shown to clients and logged, and some quote a URL (a redirect
    target, aiohttp's own message), so any password in them is masked here.
    """

    def __init__(self, reason: str, kind: FailureKind) -> None:
        reason = mask_credentials(reason)
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


class RetryLater(Exception):
    """Attempt ``attempt`` failed transiently; try again after ``delay`` seconds."""

    def __init__(self, reason: str, attempt: int, delay: float) -> None:
        super().__init__(f"{reason} (attempt {attempt}, retry in {delay:.2f}s)")
        self.reason = reason
        self.attempt = attempt
        self.delay = delay


class CircuitWait(Exception):
    """The origin's circuit is open for this image: it waits, holding nothing, to be let through.

    ``until`` is when the wait ends at the latest, on the downloader's clock: pass it
    back as ``wait_until`` on the next try, which fails with ``CIRCUIT_OPEN`` if the
    circuit still refuses by then. ``park(wake)`` has ``wake`` called once, when it is
    time for that try: the circuit closed, it wants a probe, or ``until`` came.
    ``wake`` answers whether it took the image back (False: its job has ended).
    """

    def __init__(self, waits: CircuitWaits, origin: str, until: float) -> None:
        super().__init__(CIRCUIT_OPEN)
        self.until = until
        self._waits = waits
        self._origin = origin

    def park(self, wake: Callable[[], bool]) -> None:
        self._waits.park(self._origin, self.until, wake)


class _Transient(Exception):
    """Internal: a failure worth retrying; ``host_unwell`` if it also counts against the origin.

    A 408 or 429 is retried but does not count: the host answered, and a 429's
    limit may be on one client's paths, so neither says the host is unwell.
    """

    def __init__(
        self,
        reason: str,
        kind: FailureKind,
        retry_after: float | None = None,
        *,
        host_unwell: bool = True,
    ) -> None:
        reason = mask_credentials(reason)  # it becomes a RetryLater or FetchError reason
        super().__init__(reason)
        self.reason = reason
        self.kind = kind
        self.retry_after = retry_after
        self.host_unwell = host_unwell


def create_client_session(
    settings: DownloadSettings,
    *,
    policy: AddressPolicy | None = None,
    resolver: aiohttp.abc.AbstractResolver | None = None,
) -> aiohttp.ClientSession:
    """The downloads' shared session, under the address policy (``guarded_session``).

    ``policy`` and ``resolver`` (the one wrapped by the guard) are for tests.
    """
    return guarded_session(
        settings,
        limit=settings.max_in_flight,
        headers={"User-Agent": "retail-pulse/0.1", "Accept": "image/*"},
        dns_cache_seconds=60,
        policy=policy,
        resolver=resolver,
    )


class Downloader:
    """Fetches one URL into memory, enforcing the byte cap while streaming."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: DownloadSettings,
        *,
        retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        observe_seconds: Callable[[float], None] | None = None,
    ) -> None:
        self._session = session
        # Told how long each attempt took, whatever its end (the download-time metric).
        self._observe_seconds = observe_seconds
        self._max_bytes = settings.max_image_bytes
        self._max_redirects = settings.max_redirects
        self._retry = (
            retry
            if retry is not None
            else RetryPolicy(
                attempts=settings.retry_attempts,
                base=settings.retry_base_delay,
                cap=settings.retry_max_delay,
            )
        )
        # "is not None": an empty breaker is falsy (it has a length).
        self._breaker = (
            breaker
            if breaker is not None
            else CircuitBreaker(
                settings.circuit_breaker_threshold,
                settings.circuit_breaker_cool_down,
                min_jobs=settings.circuit_breaker_min_jobs,
            )
        )
        self._wait_max = settings.breaker_wait_max
        self._waits = CircuitWaits(self._breaker)

    async def try_fetch(
        self,
        url: str,
        attempt: int = 1,
        *,
        job: int = 0,
        wait_until: float | None = None,
        lease: ByteLease | None = None,
    ) -> bytes:
        """Attempt number ``attempt`` for an image of ``job``: the bytes, ``RetryLater``,
        ``CircuitWait`` or a final ``FetchError``.

        ``wait_until`` is the ``until`` of the image's last ``CircuitWait``, if any. A
        refused try costs no attempt. With a ``lease``, the body is read only once the
        lease holds its size, and the lease is left holding the size of the bytes returned.
        """
        try:
            # Parsed once here and handed to aiohttp as is, which then skips its own parse.
            target = URL(url)
            origin = origin_key(target)
        except (ValueError, UnicodeError) as exc:
            raise FetchError(f"invalid URL: {exc}", FailureKind.INVALID_URL) from None
        if not self._breaker.allow(origin, job):
            raise self._refusal(origin, wait_until)
        verdict = False  # whether the breaker heard how this attempt went
        started = time.perf_counter()
        try:
            data = await self._attempt(target, lease)
            self._breaker.record_success(origin)
            verdict = True
            return data
        except _Transient as failure:
            if failure.host_unwell:
                # An image counts once, on its first try: its retries would let a
                # few failing URLs weigh as much as many.
                self._breaker.record_failure(origin, job, counts=attempt == 1)
                verdict = True
            plural = "attempt" if attempt == 1 else "attempts"
            if not self._retry.should_retry(attempt):
                reason = f"{failure.reason} after {attempt} {plural}"
                raise FetchError(reason, failure.kind) from None
            delay = self._retry.delay(attempt, failure.retry_after)
            raise RetryLater(failure.reason, attempt, delay) from None
        except FetchError:
            # The host answered (or was never contacted): no verdict on its health.
            raise
        finally:
            if not verdict:
                self._breaker.release(origin)
            self._waits.update(origin)
            if self._observe_seconds is not None:
                self._observe_seconds(time.perf_counter() - started)

    def _refusal(self, origin: str, wait_until: float | None) -> FetchError | CircuitWait:
        now = self._breaker.clock()
        until = wait_until if wait_until is not None else now + self._wait_max
        if now >= until:
            return FetchError(CIRCUIT_OPEN, FailureKind.CIRCUIT_OPEN)
        return CircuitWait(self._waits, origin, until)

    async def _attempt(self, url: URL, lease: ByteLease | None) -> bytes:
        try:
            async with self._session.get(
                url,
                # aiohttp raises on the max_redirects-th redirect and treats 0 as
                # unlimited, so "follow N" is N + 1 here, and 0 disables following.
                allow_redirects=self._max_redirects > 0,
                max_redirects=self._max_redirects + 1,
            ) as response:
                status = response.status
                if status in RETRYABLE_STATUSES:
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                    raise _Transient(
                        f"HTTP {status}",
                        FailureKind.HTTP_STATUS,
                        retry_after,
                        host_unwell=status >= 500,
                    )
                if not 200 <= status < 300:
                    raise FetchError(f"HTTP {status}", FailureKind.HTTP_STATUS)
                declared = response.content_length
                if declared is not None and declared > self._max_bytes:
                    raise FetchError(
                        f"image larger than {self._max_bytes} bytes", FailureKind.TOO_LARGE
                    )
                # The body's size in memory, when the headers tell it: not for a body
                # without a length, nor a compressed one (its length is compressed).
                known = declared if declared is not None and _uncompressed(response) else None
                if lease is not None:
                    size = known if known is not None else self._max_bytes
                    if not lease.try_reserve(size):  # no coroutine in the common case
                        await lease.reserve(size)
                data = await self._read_body(response, known)
                if lease is not None:
                    lease.shrink(len(data))
                return data
        except (FetchError, _Transient):
            raise
        except Exception as exc:
            refusal = refusal_behind(exc)
            if refusal is not None:
                raise FetchError(refusal.reason, refusal.kind) from None
            raise _classify(exc, self._max_redirects) from None

    async def _read_body(self, response: aiohttp.ClientResponse, known: int | None) -> bytes:
        if known is not None:
            # aiohttp ends a plain body at its Content-Length, so the cap holds
            # and one read() saves a loop turn per chunk. A compressed body is
            # streamed: its decompressed size is what the cap is about.
            return await response.read()
        return await self._read_capped(response)

    async def _read_capped(self, response: aiohttp.ClientResponse) -> bytes:
        # Content-Length may be absent or lie, so the cap holds on what arrives.
        chunks: list[bytes] = []
        received = 0
        async for chunk in response.content.iter_chunked(CHUNK_SIZE):
            received += len(chunk)
            if received > self._max_bytes:
                raise FetchError(
                    f"image larger than {self._max_bytes} bytes", FailureKind.TOO_LARGE
                )
            chunks.append(chunk)
        return b"".join(chunks)


def _uncompressed(response: aiohttp.ClientResponse) -> bool:
    encoding = response.headers.get(hdrs.CONTENT_ENCODING, "").strip().lower()
    return encoding in ("", "identity")


def _classify(exc: Exception, max_redirects: int) -> FetchError | _Transient:
    """A final ``FetchError`` or a retryable ``_Transient`` for an aiohttp/socket error."""
    if isinstance(exc, aiohttp.TooManyRedirects):
        return FetchError(
            f"too many redirects (more than {max_redirects})", FailureKind.REDIRECT_REFUSED
        )
    if isinstance(exc, aiohttp.NonHttpUrlRedirectClientError):
        return FetchError(f"redirect to a non-http(s) URL: {exc}", FailureKind.REDIRECT_REFUSED)
    if isinstance(exc, aiohttp.InvalidURL):
        return FetchError(f"invalid URL: {exc}", FailureKind.INVALID_URL)
    if isinstance(exc, aiohttp.NonHttpUrlClientError):
        return FetchError(f"not an http(s) URL: {exc}", FailureKind.INVALID_URL)
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        # A name that does not exist will not exist in a second either.
        gai = exc.os_error
        if isinstance(gai, socket.gaierror) and gai.errno == socket.EAI_AGAIN:
            return _Transient("cannot resolve host (temporary failure)", FailureKind.FETCH)
        return FetchError(f"cannot resolve host: {_describe(gai)}", FailureKind.FETCH)
    if isinstance(exc, TimeoutError):
        return _Transient("timed out", FailureKind.TIMEOUT)
    if isinstance(exc, aiohttp.ClientPayloadError):
        # aiohttp's text nests the whole cause chain; the kind of break is enough here.
        return _Transient("connection broken mid-body", FailureKind.FETCH)
    if isinstance(exc, aiohttp.ClientResponseError):
        return FetchError(f"bad response: {_describe(exc)}", FailureKind.FETCH)
    if isinstance(exc, aiohttp.ClientError | OSError):
        return _Transient(f"connection error: {_describe(exc)}", FailureKind.FETCH)
    raise exc


def _describe(exc: BaseException) -> str:
    # First line only, bounded: aiohttp's parser errors can quote the offending bytes.
    text = str(exc.message if isinstance(exc, aiohttp.ClientResponseError) else exc).strip()
    text = text.splitlines()[0] if text else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
