"""Failure kinds map to the failure counter's fixed set of label values."""

from __future__ import annotations

import pytest

from service.metrics import FAILURE_CATEGORIES, failure_label
from service.outcomes import FailureKind


@pytest.mark.parametrize(
    ("kind", "reason", "label"),
    [
        (FailureKind.HTTP_STATUS, "HTTP 404", "http_4xx"),
        (FailureKind.HTTP_STATUS, "HTTP 410", "http_4xx"),
        (FailureKind.HTTP_STATUS, "HTTP 503 after 3 attempts", "http_5xx"),
        (FailureKind.HTTP_STATUS, "HTTP 304", "http_other"),
        (FailureKind.TIMEOUT, "timed out after 3 attempts", "timeout"),
        (FailureKind.FETCH, "connection error: Cannot connect to host x:80", "connection"),
        (FailureKind.TOO_LARGE, "image larger than 25000000 bytes", "too_large"),
        (FailureKind.PIXELS, "image too large: 90000x90000", "too_large"),
        (FailureKind.TOO_MANY_SCANS, "too many JPEG scans (more than 100)", "too_many_scans"),
        (FailureKind.DECODE_TIMEOUT, "decode took longer than 10 s", "decode_timeout"),
        (FailureKind.REDIRECT_REFUSED, "too many redirects (more than 5)", "redirects"),
        (FailureKind.INVALID_URL, "invalid URL: http://[::1", "invalid_url"),
        (FailureKind.NOT_AN_IMAGE, "not an image (unrecognised format)", "not_image"),
        (FailureKind.DECODE, "corrupt or truncated image: image file is truncated", "corrupt"),
        (FailureKind.REFUSED_ADDRESS, "destination address not allowed", "address_refused"),
        (FailureKind.CIRCUIT_OPEN, "host unavailable (circuit open)", "circuit_open"),
        (FailureKind.UNKNOWN_STORE, "store not found in store master", "unknown_store"),
        (FailureKind.SHUTDOWN, "service shutting down", "other"),
        (FailureKind.INTERNAL, "internal error: KeyError", "other"),
    ],
)
def test_kind_maps_to_its_label(kind: FailureKind, reason: str, label: str) -> None:
    assert failure_label(kind, reason) == label


def test_every_kind_has_a_label_from_the_fixed_set() -> None:
    for kind in FailureKind:
        assert failure_label(kind, "HTTP 500") in FAILURE_CATEGORIES


def test_labels_are_a_small_fixed_set() -> None:
    assert len(FAILURE_CATEGORIES) == len(set(FAILURE_CATEGORIES)) <= 16
    assert all(name.isidentifier() and name.islower() for name in FAILURE_CATEGORIES)
