"""Downloading image bytes: one shared client session, size caps and timeouts."""

from __future__ import annotations

import logging

import aiohttp

from service.config import Settings

__all__ = ["Downloader", "FetchError", "create_client_session"]

log = logging.getLogger(__name__)

CHUNK_SIZE = 64 * 1024


class FetchError(Exception):
    """A download failed; ``reason`` is the short human explanation."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def create_client_session(settings: Settings) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=settings.max_in_flight, ttl_dns_cache=60)
    timeout = aiohttp.ClientTimeout(
        total=settings.total_timeout,
        connect=settings.connect_timeout,
        # sock_read bounds the gap between chunks, so a host trickling bytes stalls out.
        sock_read=settings.read_timeout,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        headers={"User-Agent": "retail-pulse/0.1", "Accept": "image/*"},
        raise_for_status=False,
    )


class Downloader:
    """Fetches one URL into memory, enforcing the byte cap while streaming."""

    def __init__(self, session: aiohttp.ClientSession, settings: Settings) -> None:
        self._session = session
        self._max_bytes = settings.max_image_bytes
        self._max_redirects = settings.max_redirects
        self._total_timeout = settings.total_timeout

    async def fetch(self, url: str) -> bytes:
        try:
            async with self._session.get(
                url,
                # aiohttp raises on the max_redirects-th redirect and treats 0 as
                # unlimited, so "follow N" is N + 1 here, and 0 disables following.
                allow_redirects=self._max_redirects > 0,
                max_redirects=self._max_redirects + 1,
            ) as response:
                if not 200 <= response.status < 300:
                    raise FetchError(f"HTTP {response.status}")
                declared = response.content_length
                if declared is not None and declared > self._max_bytes:
                    raise FetchError(f"image larger than {self._max_bytes} bytes")
                return await self._read_capped(response)
        except FetchError:
            raise
        except aiohttp.TooManyRedirects:
            raise FetchError(f"too many redirects (more than {self._max_redirects})") from None
        except aiohttp.NonHttpUrlRedirectClientError as exc:
            raise FetchError(f"redirect to a non-http(s) URL: {exc}") from None
        except aiohttp.InvalidURL as exc:
            raise FetchError(f"invalid URL: {exc}") from None
        except TimeoutError:
            raise FetchError("timed out") from None
        except aiohttp.ClientResponseError as exc:
            raise FetchError(f"bad response: {exc.message}") from None
        except aiohttp.ClientPayloadError as exc:
            raise FetchError(f"connection broken mid-body: {_describe(exc)}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise FetchError(f"connection error: {_describe(exc)}") from None

    async def _read_capped(self, response: aiohttp.ClientResponse) -> bytes:
        # Content-Length may be absent or lie, so the cap holds on what arrives.
        chunks: list[bytes] = []
        received = 0
        async for chunk in response.content.iter_chunked(CHUNK_SIZE):
            received += len(chunk)
            if received > self._max_bytes:
                raise FetchError(f"image larger than {self._max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__
