"""The webhook worker: posts each job's completion to its callback URL, signed, until the
receiver takes it or the attempts run out.

One worker per process. It takes due deliveries from the store with a lease (on
PostgreSQL any replica may take any delivery, and one whose taker died is taken
over once its lease runs out; SQLite and memory stores serve this process alone),
posts them through a ``WebhookSender`` (the HTTP client lives in the net wing),
and writes each attempt's outcome. A job that ends wakes it at once (it is a
``JobObserver``), and so does a retry of its own coming due; otherwise it looks
for due deliveries every ``POLL_EVERY`` seconds, which is how it finds those due
elsewhere (another replica's) and how a restart resumes the pending ones.

Each attempt is signed Stripe's way: ``Retail-Pulse-Signature: t=<unix seconds>,
v1=<hex HMAC-SHA256 of "<t>.<raw body>">``, keyed with ``webhook_secret``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from service.config import WebhookSettings
from service.errors import StoreUnavailable
from service.jobs.deliveries import Delivery, DeliveryOutcome, DeliveryState
from service.jobs.model import JobSummary
from service.jobs.store import CreatedJob, JobStore
from service.metrics import Metrics
from service.pipeline.flow import SettledImage
from service.url_credentials import mask_credentials

__all__ = [
    "DELIVERY_HEADER",
    "SIGNATURE_HEADER",
    "PostResult",
    "WebhookSender",
    "WebhookWorker",
    "retry_delay",
    "signature",
]

log = logging.getLogger(__name__)

DELIVERY_HEADER = "Retail-Pulse-Delivery"
SIGNATURE_HEADER = "Retail-Pulse-Signature"
# Seconds between looks for due deliveries when nothing woke the worker.
POLL_EVERY = 1.0


class PostResult(Protocol):
    """What one POST gave."""

    @property
    def error(self) -> str | None:
        """None when the receiver answered 2xx; else why not (credentials masked)."""
        ...

    @property
    def final(self) -> bool:
        """No later attempt can do better: the address policy refused the destination."""
        ...


class WebhookSender(Protocol):
    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> PostResult:
        """POST ``body`` to ``url`` once, under the address policy; never raises for the
        network or the receiver."""
        ...


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Retail-Pulse-Signature`` value of ``body`` sent at ``timestamp``."""
    signed = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def retry_delay(attempts: int, base: float, cap: float) -> float:
    """Seconds to wait after ``attempts`` failed attempts: base, 2 x base, 4 x base, ... cap."""
    return min(cap, base * 2.0 ** min(attempts - 1, 64))


# The attempt counter's label for the state an attempt left its delivery in.
_OUTCOME_LABELS = {
    DeliveryState.DELIVERED: "delivered",
    DeliveryState.PENDING: "retrying",
    DeliveryState.GIVEN_UP: "given_up",
}


class WebhookWorker:
    """Attempts due deliveries, at most ``webhook_max_in_flight`` at once.

    Also a ``JobObserver``: a job that ended has its delivery committed by then, so
    ``job_finished`` wakes the worker to post it without waiting for the next poll.
    """

    def __init__(
        self,
        store: JobStore,
        sender: WebhookSender,
        settings: WebhookSettings,
        *,
        poll_every: float = POLL_EVERY,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._sender = sender
        self._secret = settings.webhook_secret
        self._max_attempts = settings.webhook_max_attempts
        self._retry_base = settings.webhook_retry_base
        self._retry_cap = settings.webhook_retry_max_delay
        self._max_in_flight = settings.webhook_max_in_flight
        self._lease = settings.lease
        self._poll_every = poll_every
        self._clock = clock
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._attempts: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="webhook-worker")

    async def close(self) -> None:
        """Stop at once. An attempt cut short is made again once its lease runs out (by
        this process after a restart, or by another replica): receivers deduplicate on
        the delivery id."""
        tasks = [*self._attempts, *([self._task] if self._task else [])]
        self._task = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- JobObserver ---------------------------------------------------------------

    def job_created(self, created: CreatedJob) -> None:
        pass

    def images_recorded(self, recorded: Sequence[SettledImage]) -> None:
        pass

    def job_finished(self, summary: JobSummary) -> None:
        self._wake.set()

    # -- the loop ------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            # Cleared before looking, so a wake-up during the look is not lost.
            self._wake.clear()
            await self._take()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_every):
                    await self._wake.wait()

    async def _take(self) -> None:
        room = self._max_in_flight - len(self._attempts)
        if room <= 0:
            return
        try:
            taken = await self._store.take_deliveries(room, self._lease)
        except StoreUnavailable as exc:
            log.warning("cannot take webhook deliveries", extra={"reason": exc.message})
            return
        for delivery in taken:
            task = asyncio.create_task(self._attempt(delivery), name=f"webhook-{delivery.id}")
            self._attempts.add(task)
            task.add_done_callback(self._attempt_done)

    def _attempt_done(self, task: asyncio.Task[None]) -> None:
        was_full = len(self._attempts) >= self._max_in_flight
        self._attempts.discard(task)
        if was_full:
            self._wake.set()  # room for a delivery that may be waiting

    async def _attempt(self, delivery: Delivery) -> None:
        body = delivery.body.encode()
        headers = {
            "Content-Type": "application/json",
            DELIVERY_HEADER: delivery.id,
            SIGNATURE_HEADER: signature(self._secret, int(self._clock()), body),
        }
        try:
            result = await self._sender.post(delivery.url, body, headers)
            error, final = result.error, result.final
        except Exception as exc:
            # A bug here must not end the worker; the attempt counts, and is made again.
            log.exception("webhook attempt failed unexpectedly", extra={"delivery": delivery.id})
            error, final = f"internal error: {type(exc).__name__}", False
        outcome = self._outcome(delivery, error, final)
        try:
            written = await self._store.settle_delivery(outcome)
        except StoreUnavailable as exc:
            log.warning(
                "cannot record a webhook attempt; it is made again once its lease runs out",
                extra={"delivery": delivery.id, "reason": exc.message},
            )
            return
        if not written:
            return
        self._log(delivery, outcome)
        if self._metrics is not None:
            self._metrics.webhook_attempts.labels(_OUTCOME_LABELS[outcome.state]).inc()
        if outcome.retry_in is not None and self._task is not None:
            # Due again then: look for it at that moment rather than at the next poll.
            asyncio.get_running_loop().call_later(outcome.retry_in, self._wake.set)

    def _outcome(self, delivery: Delivery, error: str | None, final: bool) -> DeliveryOutcome:
        attempts = delivery.attempts + 1
        if error is None:
            return DeliveryOutcome(delivery.id, delivery.attempts, DeliveryState.DELIVERED, None)
        if final or attempts >= self._max_attempts:
            return DeliveryOutcome(delivery.id, delivery.attempts, DeliveryState.GIVEN_UP, error)
        delay = retry_delay(attempts, self._retry_base, self._retry_cap)
        return DeliveryOutcome(
            delivery.id, delivery.attempts, DeliveryState.PENDING, error, retry_in=delay
        )

    def _log(self, delivery: Delivery, outcome: DeliveryOutcome) -> None:
        fields = {
            "job_id": delivery.job_id,
            "delivery": delivery.id,
            "url": mask_credentials(delivery.url),
            "attempts": delivery.attempts + 1,
        }
        if outcome.state is DeliveryState.DELIVERED:
            log.info("webhook delivered", extra=fields)
        elif outcome.state is DeliveryState.GIVEN_UP:
            log.warning("webhook given up", extra={**fields, "reason": outcome.error})
        else:
            log.info(
                "webhook attempt failed; will retry",
                extra={**fields, "reason": outcome.error, "retry_in": outcome.retry_in},
            )
