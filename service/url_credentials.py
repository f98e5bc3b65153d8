"""Credentials in URLs (``user:password@``): the rule that refuses them, and masking for display.

aiohttp turns a URL's userinfo into HTTP Basic auth, so a URL with one carries a
secret. The service is handed URLs in several places (image URLs; webhook URLs
later), and every one goes through ``credentials_refusal``. Where credentials are
allowed, the URL is kept as given only where it is fetched; everywhere it is
shown (results, exports, status errors, logs, failure reasons) the password is
masked as ``***``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from yarl import URL

__all__ = [
    "CREDENTIALS_NOT_ALLOWED",
    "credentials_refusal",
    "credentials_refusals",
    "has_credentials",
    "mask_credentials",
    "masked_urls",
]

CREDENTIALS_NOT_ALLOWED = (
    "URL must not contain credentials (user:password@); set allow_url_credentials to allow them."
)

# scheme://userinfo@ : the userinfo runs to the last "@" before the authority ends
# (at "/", "?", "#"), which is where yarl, and so aiohttp, split it from the host.
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/?#\s]*)@")


def has_credentials(url: URL) -> bool:
    """Whether aiohttp would send Basic auth for ``url`` (any user or password part)."""
    return url.raw_user is not None or url.raw_password is not None


def credentials_refusal(url: str, *, allowed: bool) -> str | None:
    """Why ``url`` is refused for carrying credentials, or None.

    A URL that does not parse is not this check's to refuse: the URL check says why.
    """
    # Most URLs have no "@" at all: no second parse for them.
    if allowed or "@" not in url:
        return None
    try:
        parsed = URL(url)
    except (ValueError, UnicodeError):
        return None
    return CREDENTIALS_NOT_ALLOWED if has_credentials(parsed) else None


def credentials_refusals(urls: Sequence[str], *, allowed: bool) -> dict[int, str]:
    """``credentials_refusal`` for a list of URLs: index -> why, for the refused ones."""
    if allowed or not _may_have_userinfo(urls):
        return {}
    return {
        index: refusal
        for index, url in enumerate(urls)
        if (refusal := credentials_refusal(url, allowed=allowed))
    }


def _may_have_userinfo(urls: Sequence[str]) -> bool:
    # One C-level scan: a job's URLs almost never hold an "@" at all.
    return "@" in "".join(urls)


def _mask(match: re.Match[str]) -> str:
    user, colon, _ = match["userinfo"].partition(":")
    return f"{match['scheme']}{user}{':***' if colon else ''}@"


def mask_credentials(text: str) -> str:
    """``text`` with the password of every URL in it masked: ``http://user:***@host/x``.

    A user without a password stays ``user@``. For a single URL this searches
    rather than anchoring at the start: yarl skips leading control characters.
    """
    return _USERINFO.sub(_mask, text) if "@" in text else text


def masked_urls(urls: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...] | None]:
    """The URLs to show, and the URLs to fetch only when they differ (any were masked)."""
    given = tuple(urls)
    if not _may_have_userinfo(given):
        return given, None
    shown = tuple(mask_credentials(url) for url in given)
    return shown, None if shown == given else given
