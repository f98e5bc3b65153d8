"""Failure reasons map to a small fixed set of metric label values."""

from __future__ import annotations

import pytest

from service.jobs.model import UNKNOWN_STORE_REASON
from service.metrics import FAILURE_CATEGORIES, failure_category


@pytest.mark.parametrize(
    ("reason", "category"),
    [
        ("HTTP 404", "http_4xx"),
        ("HTTP 410", "http_4xx"),
        ("HTTP 500", "http_5xx"),
        ("HTTP 503", "http_5xx"),
        ("HTTP 304", "http_other"),
        ("timed out", "timeout"),
        ("connection error: Cannot connect to host x:80 [Connect call failed]", "connection"),
        ("connection broken mid-body: Response payload is not completed", "connection"),
        ("bad response: Invalid header", "connection"),
        ("image larger than 25000000 bytes", "too_large"),
        ("image too large: 90000x90000", "too_large"),
        ("too many JPEG scans (more than 100)", "too_many_scans"),
        ("too many redirects (more than 5)", "redirects"),
        ("redirect to a non-http(s) URL: ftp://x", "redirects"),
        ("invalid URL: http://[::1", "invalid_url"),
        ("not an image (unrecognised format)", "not_image"),
        ("corrupt or truncated image: image file is truncated", "corrupt"),
        ("invalid image dimensions: 0x5", "corrupt"),
        ("address 10.0.0.1 not allowed (private network)", "address_refused"),
        ("circuit open for host a.test", "circuit_open"),
        ("host unavailable (circuit open)", "circuit_open"),
        ("destination address not allowed", "address_refused"),
        ("destination host not allowed", "address_refused"),
        ("unsupported URL scheme", "invalid_url"),
        ("not an http(s) URL: ftp://x", "invalid_url"),
        ("cannot resolve host: Name or service not known", "connection"),
        ("HTTP 503 after 3 attempts", "http_5xx"),
        ("timed out after 3 attempts", "timeout"),
        (UNKNOWN_STORE_REASON, "unknown_store"),
        ("internal error: KeyError", "other"),
        ("something nobody planned for https://x.test/?q=1", "other"),
    ],
)
def test_reason_maps_to_its_category(reason: str, category: str) -> None:
    assert failure_category(reason) == category


def test_categories_are_a_small_fixed_set() -> None:
    assert len(FAILURE_CATEGORIES) == len(set(FAILURE_CATEGORIES)) <= 16
    assert all(name.isidentifier() and name.islower() for name in FAILURE_CATEGORIES)
