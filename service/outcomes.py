"""How an image settles: its dimensions, or a typed failure with the message users read.

Every wing shares these values: the downloader and the measurement produce them,
the job manager records them, metrics and logs sort failures by ``FailureKind``.
Nothing here imports asyncio, so pool workers build outcomes too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "MAX_ERROR_LENGTH",
    "PERMANENT_FAILURES",
    "RETRYABLE_FAILURES",
    "SHUTDOWN_REASON",
    "UNKNOWN_STORE_REASON",
    "FailureKind",
    "ImageOutcome",
]

UNKNOWN_STORE_REASON = "store not found in store master"
SHUTDOWN_REASON = "service shutting down"

# An image's error can quote what a remote host sent (a redirect's Location runs to
# 8 KB), and every result row carries it: longer reasons are cut to this.
MAX_ERROR_LENGTH = 300

# aiohttp decodes response headers with "surrogateescape", so bytes that are not
# UTF-8 in a Location header reach an error message as lone surrogates.
_SURROGATES = re.compile(r"[\ud800-\udfff]")


class FailureKind(StrEnum):
    """Why an image failed, as a fixed set: the values are metric labels and log fields."""

    FETCH = "fetch"  # connection refused or reset, DNS, a broken or malformed response
    HTTP_STATUS = "http_status"  # the host answered with a non-2xx status
    TIMEOUT = "timeout"
    TOO_LARGE = "too_large"  # the body is over max_image_bytes
    NOT_AN_IMAGE = "not_an_image"
    DECODE = "decode"  # corrupt, truncated or unsupported image data
    PIXELS = "pixels"  # over max_pixels, or impossible dimensions
    TOO_MANY_SCANS = "too_many_scans"  # a JPEG over max_jpeg_scans
    DECODE_TIMEOUT = "decode_timeout"  # measuring it took longer than decode_timeout
    REFUSED_ADDRESS = "refused_address"  # the SSRF policy or allowed_hosts refused it
    REDIRECT_REFUSED = "redirect_refused"  # too many redirects, or to a refused scheme
    INVALID_URL = "invalid_url"
    CIRCUIT_OPEN = "circuit_open"
    UNKNOWN_STORE = "unknown_store"
    SHUTDOWN = "shutdown"
    INTERNAL = "internal"  # a worker crash, a cancelled call or a bug


# Failures a retry cannot change: the same URL, store master and limits fail the same way.
PERMANENT_FAILURES = frozenset(
    {
        FailureKind.UNKNOWN_STORE,
        FailureKind.REFUSED_ADDRESS,
        FailureKind.REDIRECT_REFUSED,
        FailureKind.INVALID_URL,
        FailureKind.PIXELS,
        FailureKind.TOO_MANY_SCANS,
        FailureKind.DECODE_TIMEOUT,
    }
)
# What POST /api/jobs/<id>/retry processes again: everything else, a 404 included (an
# image is often uploaded after its visit was submitted).
RETRYABLE_FAILURES = frozenset(FailureKind) - PERMANENT_FAILURES


@dataclass(frozen=True, slots=True)
class ImageOutcome:
    """How one image settled: its dimensions, or why it failed (``error`` and ``kind``)."""

    width: int | None = None
    height: int | None = None
    error: str | None = None
    kind: FailureKind | None = None

    @classmethod
    def measured(cls, width: int, height: int) -> ImageOutcome:
        return cls(width=width, height=height)

    @classmethod
    def failed(cls, reason: str, kind: FailureKind) -> ImageOutcome:
        if len(reason) > MAX_ERROR_LENGTH:
            reason = reason[: MAX_ERROR_LENGTH - 1] + "\u2026"
        if not reason.isascii():
            # Every view and the CSV export must be able to encode it as UTF-8.
            reason = _SURROGATES.sub("\ufffd", reason)
        return cls(error=reason, kind=kind)

    @property
    def perimeter(self) -> int | None:
        if self.width is None or self.height is None:
            return None
        return 2 * (self.width + self.height)
