"""HTTP errors raised by handlers; the error middleware renders them as JSON bodies."""

from __future__ import annotations

from typing import Any

__all__ = [
    "ApiError",
    "BadRequest",
    "ExpectationFailed",
    "NotFound",
    "PayloadTooLarge",
    "RequestTimeout",
    "Unauthorized",
    "UnsupportedMediaType",
]


class ApiError(Exception):
    """Rendered by the error middleware as ``{"error": message, ...}``."""

    status = 500
    # True when the connection cannot carry another request after this answer.
    closes_connection = False

    def __init__(
        self, message: str, *, details: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers or {}


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class NotFound(ApiError):
    status = 404


class ExpectationFailed(ApiError):
    status = 417


class RequestTimeout(ApiError):
    """The body did not arrive in time; what is left of it would be read as the next request."""

    status = 408
    closes_connection = True


class PayloadTooLarge(ApiError):
    status = 413


class UnsupportedMediaType(ApiError):
    status = 415
