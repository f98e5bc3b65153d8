"""When to retry a failed download, and how long to wait first: backoff with full jitter."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

__all__ = ["RETRYABLE_STATUSES", "RetryPolicy", "parse_retry_after"]

# Statuses worth another try: the host is overloaded or briefly broken.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504}) | frozenset(range(505, 600))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Up to ``attempts`` tries; before try n+1 wait uniform(0, min(cap, base * 2**(n-1))).

    Full jitter (rather than a fixed exponential delay) spreads the retries of
    many images that failed together, so they do not hit the host in waves.
    A server's ``Retry-After`` replaces the jittered delay, still bounded by ``cap``.
    """

    attempts: int = 3
    base: float = 0.5
    cap: float = 10.0
    uniform: Callable[[float, float], float] = field(default=random.uniform, compare=False)

    def should_retry(self, attempt: int) -> bool:
        """Whether a retryable failure on try number ``attempt`` (from 1) gets another try."""
        return attempt < self.attempts

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed try number ``attempt`` before the next one."""
        if retry_after is not None:
            return min(self.cap, max(0.0, retry_after))
        ceiling = min(self.cap, self.base * 2 ** (attempt - 1))
        return self.uniform(0.0, ceiling)


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None if unusable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now())
