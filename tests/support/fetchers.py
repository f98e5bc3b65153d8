"""Stand-in fetchers for pipeline tests that are about scheduling, not downloading."""

from __future__ import annotations

from service.net.byte_budget import ByteLease

__all__ = ["UrlBytesFetcher"]


class UrlBytesFetcher:
    """Answers at once with the URL's own bytes, so each image's data names it."""

    async def try_fetch(
        self, url: str, attempt: int = 1, *, lease: ByteLease | None = None
    ) -> bytes:
        return url.encode()
