"""Driving Debian's Chromium with Playwright for the dashboard's tests, and saying which versions.

Playwright for Python ships its own driver but never a browser here: ``playwright
install`` cannot work. The tests launch ``/usr/bin/chromium`` (``RP_TEST_CHROMIUM``)
through ``executable_path``, headless, with a proxy that goes nowhere, so the
browser's own background calls die instead of leaving the machine; it never proxies
loopback, where the service under test is.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

__all__ = [
    "CHROMIUM",
    "LAUNCH_FLAGS",
    "browser_problem",
    "expected_chromium",
    "installed_chromium",
    "require_browser",
    "version_note",
]

CHROMIUM = Path(os.environ.get("RP_TEST_CHROMIUM", "/usr/bin/chromium"))

LAUNCH_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--proxy-server=127.0.0.1:9",
]


def browser_problem() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if importlib.util.find_spec("playwright") is None:
        return "Playwright for Python is not installed (it is in the test extra)"
    if not CHROMIUM.exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


def require_browser() -> None:
    """Skip the calling test without a browser, saying why; under CI (``CI`` set), fail."""
    problem = browser_problem()
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"browser tests cannot run: {problem}")
    pytest.skip(f"browser tests skipped: {problem}")


@functools.cache
def expected_chromium() -> str | None:
    """The Chromium version this Playwright release was built and tested for."""
    spec = importlib.util.find_spec("playwright")
    if spec is None or spec.origin is None:
        return None
    browsers = Path(spec.origin).parent / "driver" / "package" / "browsers.json"
    try:
        listed = json.loads(browsers.read_text(encoding="utf-8"))["browsers"]
    except (OSError, ValueError, KeyError):
        return None
    for browser in listed:
        if browser.get("name") == "chromium":
            version: str = browser["browserVersion"]
            return version
    return None


@functools.cache
def installed_chromium() -> str | None:
    """``/usr/bin/chromium --version``, as a dotted version."""
    if not CHROMIUM.exists():
        return None
    try:
        result = subprocess.run(
            [str(CHROMIUM), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"(\d+)\.\d+\.\d+\.\d+", result.stdout)
    return match[0] if match else None


def _major(version: str | None) -> str | None:
    return version.split(".", 1)[0] if version else None


def version_note() -> str:
    """One line: which Playwright drives which Chromium, and whether their versions match."""
    problem = browser_problem()
    if problem is not None:
        return f"browser tests: skipped here: {problem}"
    playwright = importlib.metadata.version("playwright")
    wanted, found = expected_chromium(), installed_chromium()
    line = (
        f"browser tests: Playwright {playwright} (built for Chromium {wanted}) "
        f"drives {CHROMIUM} (Chromium {found})"
    )
    if _major(wanted) == _major(found):
        return f"{line}: major versions match"
    return (
        f"{line}: VERSIONS DIFFER ({_major(wanted)} vs {_major(found)}); if the browser tests "
        f"fail to drive it, pin playwright to the release built for Chromium {_major(found)}"
    )
