"""How many bytes of image data the service holds at once, across every download.

Without a budget the bound is ``max_in_flight * max_image_bytes`` (64 * 25 MB
by default), reached when many large images arrive together. With one, a
download reserves its size once its headers are in (the Content-Length, or
``max_image_bytes`` when the length is unknown) and holds it until its image
is measured; past the budget, downloads wait with their body unread.

Waiters are served in arrival order, so a large image is not starved by a
stream of small ones. A reservation never exceeds the whole budget, so one
image can always go ahead once the others are done: no deadlock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from types import TracebackType

__all__ = ["ByteBudget", "ByteLease"]


class ByteBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def waiting(self) -> int:
        """Reservations queued for room (cancelled ones may linger until their turn)."""
        return sum(not future.done() for _, future in self._waiters)

    def lease(self) -> ByteLease:
        return ByteLease(self)

    def try_acquire(self, amount: int) -> int | None:
        """Take ``amount`` bytes (at most ``limit``) if there is room and nobody waits."""
        amount = min(amount, self.limit)
        if self._waiters or self.in_use + amount > self.limit:
            return None
        self.in_use += amount
        return amount

    async def acquire(self, amount: int) -> int:
        """Wait for room for ``amount`` bytes; returns what was taken (at most ``limit``)."""
        taken = self.try_acquire(amount)
        if taken is not None:
            return taken
        amount = min(amount, self.limit)
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (amount, granted)
        self._waiters.append(entry)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.release(amount)  # granted just as the waiter was cancelled
            else:
                # A release may have dropped the cancelled entry already.
                with contextlib.suppress(ValueError):
                    self._waiters.remove(entry)
                self._grant()  # those behind it may fit now
            raise
        return amount

    def release(self, amount: int) -> None:
        self.in_use -= amount
        self._grant()

    def _grant(self) -> None:
        while self._waiters:
            amount, granted = self._waiters[0]
            if granted.done():
                self._waiters.popleft()
                continue
            if self.in_use + amount > self.limit:
                return
            self._waiters.popleft()
            self.in_use += amount
            granted.set_result(None)


class ByteLease:
    """One image's share of the budget: the pipeline opens and closes it, the download sizes it."""

    def __init__(self, budget: ByteBudget) -> None:
        self._budget = budget
        self.held = 0

    def try_reserve(self, amount: int) -> bool:
        """Hold ``amount`` bytes if there is room now; False means ``await reserve``."""
        extra = amount - self.held
        if extra > 0:
            taken = self._budget.try_acquire(extra)
            if taken is None:
                return False
            self.held += taken
        return True

    async def reserve(self, amount: int) -> None:
        """Hold ``amount`` bytes, waiting for room if it is more than already held."""
        extra = amount - self.held
        if extra > 0:
            self.held += await self._budget.acquire(extra)

    def shrink(self, amount: int) -> None:
        """Give back what is held beyond ``amount`` (the body turned out smaller)."""
        if amount < self.held:
            self._budget.release(self.held - amount)
            self.held = amount

    def close(self) -> None:
        if self.held:
            self._budget.release(self.held)
            self.held = 0

    def __enter__(self) -> ByteLease:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
