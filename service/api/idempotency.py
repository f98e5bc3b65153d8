"""The ``Idempotency-Key`` header of a submit: its rules, and what "the same body" means.

Following the IETF draft "The Idempotency-Key HTTP Header Field" and Stripe: a key of up
to 255 printable ASCII characters; the same key and the same body (the same JSON once
parsed, whatever its bytes) answer the first job; the same key and another body is 422.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from aiohttp import web

from service.api.errors import BadRequest
from service.jobs.store import IdempotencyKey

__all__ = [
    "HEADER",
    "MAX_KEY_LENGTH",
    "REPLAYED_HEADER",
    "has_idempotency_key",
    "idempotency_key",
]

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255


def _key(request: web.Request) -> str | None:
    raw = request.headers.getall(HEADER, [])
    if not raw:
        return None
    if len(raw) > 1:
        raise BadRequest(f"{HEADER}: send one key, not {len(raw)}")
    key = raw[0]
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not all(" " < char <= "~" for char in key):
        raise BadRequest(
            f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters, no spaces"
        )
    return key


def has_idempotency_key(request: web.Request) -> bool:
    return HEADER in request.headers


def idempotency_key(request: web.Request, body: Any) -> IdempotencyKey | None:
    """The request's key with the hash of its parsed body; None without the header."""
    key = _key(request)
    if key is None:
        return None
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()
    return IdempotencyKey(key, digest)
