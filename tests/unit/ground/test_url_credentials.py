"""The credentials rule and the masking, checked against how yarl (so aiohttp) reads a URL."""

from __future__ import annotations

import pytest
from yarl import URL

from service.url_credentials import (
    CREDENTIALS_NOT_ALLOWED,
    credentials_refusal,
    has_credentials,
    mask_credentials,
    masked_urls,
)

# (URL as given, as shown)
MASKED = [
    ("http://user:pw@h.test/x.jpg", "http://user:***@h.test/x.jpg"),
    ("https://user:pw@h.test:8443/x.jpg?q=1#f", "https://user:***@h.test:8443/x.jpg?q=1#f"),
    ("HTTP://User:PW@H.test/", "HTTP://User:***@H.test/"),
    ("http://user@h.test/x.jpg", "http://user@h.test/x.jpg"),
    ("http://:pw@h.test/x.jpg", "http://:***@h.test/x.jpg"),
    ("http://user:@h.test/x.jpg", "http://user:***@h.test/x.jpg"),
    ("http://user:p:w@h.test/", "http://user:***@h.test/"),
    ("http://user:p@w@h.test/", "http://user:***@h.test/"),
    ("http://user:p%40w@h.test/", "http://user:***@h.test/"),
    ("http://user:pw@[::1]:8080/x", "http://user:***@[::1]:8080/x"),
    ("http://user:pw@h;x@y.test/", "http://user:***@y.test/"),
    # yarl skips leading control characters, so the masking must not anchor at 0.
    ("\x01http://user:pw@h.test/", "\x01http://user:***@h.test/"),
]

UNCHANGED = [
    "http://h.test/x.jpg",
    "http://h.test/x@2x.jpg",
    "http://h.test/x.jpg?by=a@b.test",
    "http://h.test/x.jpg#a@b",
    "http://@h.test/x.jpg",
]


@pytest.mark.parametrize(("given", "shown"), MASKED)
def test_mask_credentials_hides_the_password_yarl_would_send(given: str, shown: str) -> None:
    assert mask_credentials(given) == shown
    original, masked = URL(given), URL(shown)
    assert has_credentials(original)
    assert (masked.host, masked.port, masked.raw_path) == (
        original.host,
        original.port,
        original.raw_path,
    )
    assert masked.user == original.user
    assert masked.password in (None, "***")


@pytest.mark.parametrize("url", UNCHANGED)
def test_urls_without_credentials_are_left_alone(url: str) -> None:
    assert not has_credentials(URL(url))
    assert mask_credentials(url) == url
    assert credentials_refusal(url, allowed=False) is None


@pytest.mark.parametrize(("given", "shown"), MASKED)
def test_credentials_are_refused_unless_allowed(given: str, shown: str) -> None:
    assert credentials_refusal(given, allowed=False) == CREDENTIALS_NOT_ALLOWED
    assert credentials_refusal(given, allowed=True) is None


def test_mask_credentials_masks_every_url_in_a_message() -> None:
    message = "redirect from http://a:one@h.test/x to ftp://b:two@f.test/y failed"
    assert mask_credentials(message) == (
        "redirect from http://a:***@h.test/x to ftp://b:***@f.test/y failed"
    )


def test_masked_urls_keeps_the_given_urls_only_when_one_changed() -> None:
    plain = ["http://h.test/1.jpg", "http://h.test/2.jpg"]
    assert masked_urls(plain) == (tuple(plain), None)
    mixed = ["http://h.test/1.jpg", "http://u:pw@h.test/2.jpg"]
    assert masked_urls(mixed) == (
        ("http://h.test/1.jpg", "http://u:***@h.test/2.jpg"),
        tuple(mixed),
    )
