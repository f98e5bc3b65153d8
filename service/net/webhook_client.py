"""Posting webhook deliveries: a client session of their own, under the downloads' address policy.

Deliveries never share the image downloads' session: not its connector (its pool,
DNS cache and connection limit serve images), nor its headers (``Accept: image/*``).
Every connection passes the same three gates as a download (the guarded resolver,
the socket gate, the per-request destination guard), with the same settings
(``allow_private_networks``, ``allowed_hosts``, the timeouts). Redirects are not
followed at all: a receiver answers the POST itself, so a 3xx is a failed attempt,
and no redirect can lead a delivery to an address the policy would refuse.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver

from service.config import DownloadSettings
from service.net.address_policy import AddressPolicy, refusal_behind
from service.net.guarded_session import guarded_session
from service.url_credentials import mask_credentials

__all__ = ["PostResult", "WebhookClient", "create_webhook_session"]

USER_AGENT = "retail-pulse/0.1 (webhooks)"


@dataclass(frozen=True, slots=True)
class PostResult:
    """One POST: ``error`` is None when the receiver answered 2xx. ``final`` when no later
    attempt can do better (the address policy refused the destination, the URL is invalid)."""

    error: str | None = None
    final: bool = False


def create_webhook_session(
    settings: DownloadSettings,
    *,
    limit: int,
    policy: AddressPolicy | None = None,
    resolver: AbstractResolver | None = None,
) -> aiohttp.ClientSession:
    """The deliveries' session: at most ``limit`` connections, every one checked by the policy.

    ``policy`` and ``resolver`` (the one the guard wraps) are for tests.
    """
    return guarded_session(
        settings,
        limit=limit,
        headers={"User-Agent": USER_AGENT},
        # aiohttp's default: deliveries are few, and a receiver may move.
        dns_cache_seconds=10,
        policy=policy,
        resolver=resolver,
    )


class WebhookClient:
    """Posts one delivery attempt (the job wing's ``WebhookSender``)."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> PostResult:
        try:
            async with self._session.post(
                url, data=body, headers=dict(headers), allow_redirects=False
            ) as response:
                status = response.status
        except Exception as exc:
            return _failure(exc)
        if 200 <= status < 300:
            return PostResult()
        if 300 <= status < 400:
            return PostResult(f"HTTP {status} (redirects are not followed)")
        return PostResult(f"HTTP {status}")


def _failure(exc: Exception) -> PostResult:
    refusal = refusal_behind(exc)
    if refusal is not None:
        return PostResult(mask_credentials(str(refusal)), final=True)
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        return PostResult(mask_credentials(f"invalid URL: {_describe(exc)}"), final=True)
    if isinstance(exc, TimeoutError):
        return PostResult("timed out")
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return PostResult(f"cannot resolve host: {_describe(exc.os_error)}")
    if isinstance(exc, aiohttp.ClientError | OSError):
        return PostResult(mask_credentials(f"connection error: {_describe(exc)}"))
    raise exc


def _describe(exc: BaseException) -> str:
    # First line only, bounded: aiohttp's messages can quote what the remote end sent.
    text = str(exc).strip()
    text = text.splitlines()[0] if text else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
