"""Domain errors: what the job service refuses, and why, without a word of HTTP.

Lower wings raise these; ``api/middlewares.py`` alone turns them into responses.
"""

from __future__ import annotations

__all__ = [
    "IdempotencyMismatch",
    "JobConflict",
    "JobError",
    "JobNotFound",
    "Overloaded",
    "ServiceError",
    "ShuttingDown",
    "StoreFull",
    "StoreUnavailable",
]

# What a refusal asks clients to wait before trying again, in seconds.
DEFAULT_RETRY_AFTER = 5.0


class ServiceError(Exception):
    """The service cannot take this request now; ``retry_after`` says when to try again."""

    def __init__(self, message: str, *, retry_after: float = DEFAULT_RETRY_AFTER) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class Overloaded(ServiceError):
    """Admission control: the new work would push pending images past the limit."""


class ShuttingDown(ServiceError):
    """The service is draining for shutdown and takes no new work."""

    def __init__(self, *, retry_after: float = DEFAULT_RETRY_AFTER) -> None:
        super().__init__("service is shutting down", retry_after=retry_after)


class StoreUnavailable(ServiceError):
    """The job store cannot be reached or written (database down, disk full)."""


class StoreFull(ServiceError):
    """The job store holds ``max_database_bytes`` of unfinished work: no room for a new job."""


class JobError(Exception):
    """What a client asked of a job cannot be done; the message says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class JobNotFound(JobError):
    """No such job (never issued, or deleted by retention)."""


class JobConflict(JobError):
    """The job is not in a state that allows this (cancel a finished job, retry an ongoing one)."""


class IdempotencyMismatch(JobError):
    """An Idempotency-Key already used with a different request body."""
