"""Request bodies' Content-Encoding: the codings submit accepts, decoded within the body limit.

aiohttp's own request decoding is off (``auto_decompress=False`` in ``create_app``):
it makes a body that is not what its coding says an unexpected error in the handler
(a 500), and a coding it cannot decode (br, zstd without their packages) a plain-text
400 from its parser. Here each gets a JSON answer, and the decoded size counts against
the same limit as the body, so a small compressed bomb costs at most that limit.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

from service.api.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

__all__ = ["ACCEPTED_CODINGS", "decode_body", "request_coding"]

# Named in Accept-Encoding on a 415, as RFC 9110 (15.5.16) asks.
ACCEPTED_CODINGS = "gzip, deflate"

# "x-gzip" is gzip (RFC 9110 8.4.1.3).
_CODINGS = {"gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate"}


def request_coding(values: Iterable[str]) -> str | None:
    """The body's one coding, "gzip" or "deflate", from its Content-Encoding values;
    None when it has none (or identity). Anything else, several codings included, is 415."""
    codings = [token.strip().lower() for value in values for token in value.split(",")]
    codings = [coding for coding in codings if coding and coding != "identity"]
    if not codings:
        return None
    if len(codings) == 1 and codings[0] in _CODINGS:
        return _CODINGS[codings[0]]
    text = ", ".join(codings)
    # Quoted only when it is plain text: a header may carry any bytes.
    shown = f" {text!r}" if text.isascii() and text.isprintable() and len(text) <= 40 else ""
    raise UnsupportedMediaType(
        f"unsupported Content-Encoding{shown}: send the body as gzip, deflate or identity",
        headers={"Accept-Encoding": ACCEPTED_CODINGS},
    )


def decode_body(raw: bytes, coding: str, limit: int) -> bytes:
    """``raw`` decoded from ``coding``: 400 when it is not valid ``coding``, 413 when the
    decoded body is over ``limit`` bytes (decoding stops there)."""
    if coding == "gzip":
        # One member: nothing sends more, and walking many would copy the rest each time.
        wbits = 16 + zlib.MAX_WBITS
    else:
        # RFC 9110's deflate is the zlib format; some clients send raw deflate. The zlib
        # header's compression-method nibble tells them apart (as aiohttp does).
        wbits = zlib.MAX_WBITS if raw[:1] and raw[0] & 0x0F == 8 else -zlib.MAX_WBITS
    decoder = zlib.decompressobj(wbits)
    try:
        decoded = decoder.decompress(raw, limit + 1)
    except zlib.error as exc:
        reason = str(exc).partition(": ")[2] or str(exc)
        raise BadRequest(f"request body is not valid {coding}: {reason}") from None
    if len(decoded) > limit:
        raise PayloadTooLarge(f"request body larger than {limit} bytes once decoded ({coding})")
    if not decoder.eof:
        raise BadRequest(f"request body is not valid {coding}: it ends early")
    if decoder.unused_data:
        raise BadRequest(f"request body is not valid {coding}: data after its end")
    return decoded
