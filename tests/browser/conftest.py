"""A real browser for the dashboard's tests: Debian's Chromium, driven by Playwright's async API.

pytest-playwright's fixtures are synchronous and cannot serve pytest-aiohttp's servers
from inside a test, so these fixtures use the async API on the test's own loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.support.browser import CHROMIUM, LAUNCH_FLAGS, require_browser, version_note

if TYPE_CHECKING:
    from playwright.async_api import Browser, ConsoleMessage, Dialog, Page, Request

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


class Dashboard:
    """One page of the dashboard, with everything it logged, asked or fetched."""

    def __init__(self, page: Page, base_url: str) -> None:
        self.page = page
        self.base_url = base_url.rstrip("/")
        self.console_errors: list[str] = []
        self.dialogs: list[str] = []
        self.requests: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.console_errors.append(f"page error: {error}"))
        page.on("dialog", self._dialog)
        page.on("request", self._request)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)

    async def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        await dialog.dismiss()

    def _request(self, request: Request) -> None:
        self.requests.append(request.url)

    async def open(self, route: str = "") -> None:
        await self.page.goto(f"{self.base_url}/ui/{route}")

    def assert_clean(self) -> None:
        """No console error, no dialog, and no request anywhere but the service."""
        assert self.console_errors == []
        assert self.dialogs == []
        elsewhere = [
            url
            for url in self.requests
            if not url.startswith((self.base_url + "/", "blob:", "data:"))
        ]
        assert elsewhere == []


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    require_browser()
    # Imported once the browser is known to be there (the skip says why it is not).
    from playwright.async_api import Error, async_playwright  # noqa: PLC0415

    async with async_playwright() as playwright:
        try:
            launched = await playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=LAUNCH_FLAGS
            )
        except Error as exc:
            pytest.fail(f"Playwright cannot drive {CHROMIUM}: {exc}\n{version_note()}")
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def open_dashboard(browser: Browser) -> AsyncIterator[Callable[..., Any]]:
    """``await open_dashboard(base_url, width=1280)``: a fresh page; checked clean at the end."""
    opened: list[Dashboard] = []

    async def open_page(base_url: str, *, width: int = 1280, height: int = 900) -> Dashboard:
        context = await browser.new_context(
            viewport={"width": width, "height": height}, accept_downloads=True
        )
        dashboard = Dashboard(await context.new_page(), base_url)
        opened.append(dashboard)
        return dashboard

    yield open_page
    for dashboard in opened:
        dashboard.assert_clean()
        await dashboard.page.context.close()


@pytest.fixture
def artifacts() -> Path:
    """Where screenshots go (ignored by git; CI keeps them)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
