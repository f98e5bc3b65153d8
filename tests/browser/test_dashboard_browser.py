"""The dashboard in a real browser, against the real service and a loopback image host."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service.config import Settings
from tests.browser.conftest import Dashboard
from tests.support.browser import CHROMIUM, expected_chromium, installed_chromium
from tests.support.image_host import ImageHost
from tests.support.jobs import payload, submit, visit
from tests.support.polling import wait_for_status

pytestmark = pytest.mark.browser

OpenDashboard = Callable[..., Any]
XSS = "<img src=x onerror=alert(1)>"
# What the page writes between numbers: an en dash in ranges, a times sign in sizes.
DASH, TIMES = "\u2013", "\u00d7"


def base_url(client: TestClient[Any, Any]) -> str:
    return str(client.make_url("/")).rstrip("/")


async def test_playwright_drives_the_installed_chromium(
    browser: Any, open_dashboard: OpenDashboard, client: TestClient[Any, Any]
) -> None:
    # The first check of the run: the launch worked, and the browser is the one installed.
    assert browser.version == installed_chromium(), (browser.version, CHROMIUM)
    assert expected_chromium() is not None
    dashboard: Dashboard = await open_dashboard(base_url(client))
    await dashboard.open()
    await dashboard.page.get_by_role("heading", name="Jobs").wait_for()
    assert await dashboard.page.evaluate("1 + 1") == 2


async def test_a_job_submitted_through_the_form_is_watched_to_the_end(
    open_dashboard: OpenDashboard, client: TestClient[Any, Any], image_host: ImageHost
) -> None:
    url = image_host.url
    job = payload(
        visit("S00339218", url("/img/4x3.png"), url("/img/5x5.png"), url("/status/404")),
        visit("RP00001", url("/hold/6x2.png"), url("/hold/7x3.png")),
    )
    dashboard: Dashboard = await open_dashboard(base_url(client))
    page = dashboard.page
    await dashboard.open("#/submit")
    await page.get_by_label("Job JSON").fill(json.dumps(job))
    await page.get_by_role("button", name="Submit job").click()
    await page.wait_for_url(re.compile(r"#/jobs/\d+$"))
    job_id = int(page.url.rsplit("/", 1)[1])
    progress = page.locator("#job-summary progress")
    # Two images are held by the image host: the page shows the job part done, live.
    await page.wait_for_function(
        "() => document.querySelector('#job-summary progress')?.value === 3"
    )
    assert await progress.get_attribute("max") == "5"
    assert await page.locator("h1 .status").text_content() == "ongoing"
    await page.locator("#job-summary").get_by_text("3 / 5 (1 failed)").wait_for()
    image_host.release()
    await page.wait_for_function(
        "() => document.querySelector('#job-summary progress')?.value === 5"
    )
    await page.locator("h1 .status", has_text="failed").wait_for()
    # The failed store and its reason, as the API gives them.
    stores = page.locator("#failed-stores tbody tr")
    await stores.first.wait_for()
    assert await stores.count() == 1
    assert await stores.locator("th").text_content() == "S00339218"
    assert "HTTP 404" in (await stores.locator("td").text_content() or "")
    # The jobs list shows it done too, with its status in words.
    await page.get_by_role("link", name="Jobs", exact=True).click()
    row = page.locator(f'#jobs tr[data-job="{job_id}"]')
    await row.wait_for()
    assert await row.locator(".status").text_content() == "failed"
    assert await row.locator("progress").get_attribute("value") == "5"
    assert "5 / 5 (1 failed)" in (await row.text_content() or "")


async def test_a_csv_upload_becomes_visits_and_a_job(
    open_dashboard: OpenDashboard, client: TestClient[Any, Any], image_host: ImageHost
) -> None:
    url = image_host.url
    csv_text = (
        "store_id,image_url,visit_time\n"
        f"S00339218,{url('/img/2x2.png')},2026-11-29T10:00:00Z\n"
        f'RP00001,"{url("/img/3x3.png")}",2026-11-29T11:00:00Z\n'
        f"S00339218,{url('/img/4x4.png')},2026-11-29T10:00:00Z\n"
    )
    dashboard: Dashboard = await open_dashboard(base_url(client))
    page = dashboard.page
    await dashboard.open("#/submit")
    await page.get_by_label("From a CSV file").set_input_files(
        {"name": "visits.csv", "mimeType": "text/csv", "buffer": csv_text.encode()}
    )
    await page.get_by_text("visits.csv: 2 visits, 3 images.").wait_for()
    job = json.loads(await page.get_by_label("Job JSON").input_value())
    assert job["count"] == 2
    assert [(v["store_id"], len(v["image_url"])) for v in job["visits"]] == [
        ("S00339218", 2),
        ("RP00001", 1),
    ]
    await page.get_by_role("button", name="Submit job").click()
    await page.wait_for_url(re.compile(r"#/jobs/\d+$"))
    await page.locator("h1 .status", has_text="completed").wait_for()


async def test_a_refused_submit_shows_the_service_s_reason(
    open_dashboard: OpenDashboard, client: TestClient[Any, Any]
) -> None:
    dashboard: Dashboard = await open_dashboard(base_url(client))
    page = dashboard.page
    await dashboard.open("#/submit")
    await page.get_by_label("Job JSON").fill('{"count": 2, "visits": []}')
    # A 400 is an answer, not a console error: the fetch is not logged as failed... but
    # Chromium logs every non-2xx fetch, so this test tolerates exactly that one line.
    await page.get_by_role("button", name="Submit job").click()
    await page.locator("#submit-errors").get_by_text("Refused:").wait_for()
    assert "visits" in (await page.locator("#submit-errors").text_content() or "")
    assert page.url.endswith("#/submit")
    assert [line for line in dashboard.console_errors if "400" not in line] == []
    dashboard.console_errors.clear()


async def _mixed_job(client: TestClient[Any, Any], image_host: ImageHost) -> int:
    """25 images; 4, 9, 14, 19 and 24 (1-based 5, 10, ...) fail with a 404."""
    url = image_host.url
    urls = [url("/status/404") if n % 5 == 4 else url(f"/img/{n + 2}x3.png") for n in range(25)]
    job_id = await submit(client, visit("S00339218", *urls))
    await wait_for_status(client, job_id)
    return job_id


async def _indexes(page: Any) -> list[str]:
    return [
        text.strip()
        for text in await page.locator("#images tbody td.num:first-child").all_text_contents()
    ]


async def test_job_view_pages_through_results_and_filters_failed_images(
    open_dashboard: OpenDashboard, client: TestClient[Any, Any], image_host: ImageHost
) -> None:
    job_id = await _mixed_job(client, image_host)
    dashboard: Dashboard = await open_dashboard(base_url(client))
    page = dashboard.page
    await dashboard.open(f"#/jobs/{job_id}")
    await page.get_by_label("Per page").select_option("10")
    await page.get_by_text(f"Images 1{DASH}10 of 25").wait_for()
    assert await _indexes(page) == [str(n) for n in range(1, 11)]
    first = page.locator('#images tbody tr[data-index="0"] td')
    cells = await first.all_text_contents()
    assert cells[1:4] == ["S00339218", "GREEN VALLEY MART", "2026-11-29T10:00:00Z"]
    assert cells[5:7] == [f"2 {TIMES} 3", "10"]
    await page.get_by_role("button", name="Next").click()
    await page.get_by_text(f"Images 11{DASH}20 of 25").wait_for()
    assert await _indexes(page) == [str(n) for n in range(11, 21)]
    await page.get_by_role("button", name="Next").click()
    await page.get_by_text(f"Images 21{DASH}25 of 25").wait_for()
    assert await page.get_by_role("button", name="Next").is_disabled()
    # Failed images only: read through the index, paged by the next failed image.
    await page.get_by_label("Failed images only").check()
    await page.get_by_label("Per page").select_option("10")
    await page.locator("#images-where", has_text="Failed images from #5").wait_for()
    assert await _indexes(page) == ["5", "10", "15", "20", "25"]
    errors = await page.locator("#images tbody td.error").all_text_contents()
    assert all("HTTP 404" in error for error in errors), errors
    states = await page.locator("#images tbody td:last-child").all_text_contents()
    assert set(states) == {"failed"}


async def test_markup_in_data_is_shown_as_text_and_never_run(
    open_dashboard: OpenDashboard, client: TestClient[Any, Any], image_host: ImageHost
) -> None:
    job_id = await submit(
        client,
        visit("S00339218", image_host.url("/img/3x3.png"), visit_time=XSS),
        visit(XSS, "http://unknown.test/a.png"),
    )
    await wait_for_status(client, job_id)
    dashboard: Dashboard = await open_dashboard(base_url(client))
    page = dashboard.page
    await dashboard.open(f"#/jobs/{job_id}")
    cell = page.locator('#images tbody tr[data-index="0"] td').nth(3)
    await cell.wait_for()
    assert await cell.text_content() == XSS
    stores = page.locator("#failed-stores tbody th")
    await stores.first.wait_for()
    assert await stores.first.text_content() == XSS
    # Text, not elements: no image was made, none was fetched, no alert was raised.
    assert await page.locator("main img").count() == 0
    assert not any(url.endswith("/x") for url in dashboard.requests)
    assert dashboard.dialogs == []


async def test_service_view_charts_throughput_and_lists_failures(
    open_dashboard: OpenDashboard, client: TestClient[Any, Any], image_host: ImageHost
) -> None:
    await _mixed_job(client, image_host)
    dashboard: Dashboard = await open_dashboard(base_url(client))
    page = dashboard.page
    await dashboard.open("#/service")
    chart = page.locator("svg#throughput-chart")
    await chart.wait_for()
    assert await chart.locator("polyline").count() == 1
    tiles = page.locator("#service-tiles")
    await tiles.get_by_text("ready", exact=True).wait_for()
    assert "Replicas" in (await tiles.text_content() or "")
    failures = page.locator("#failures tbody tr")
    await failures.first.wait_for()
    assert await failures.locator("th").all_text_contents() == ["http_status"]
    assert await failures.locator("td").all_text_contents() == ["5"]


async def test_the_page_is_keyboard_usable(
    open_dashboard: OpenDashboard, client: TestClient[Any, Any], image_host: ImageHost
) -> None:
    job_id = await submit(client, visit("S00339218", image_host.url("/img/2x2.png")))
    await wait_for_status(client, job_id)
    dashboard: Dashboard = await open_dashboard(base_url(client))
    page = dashboard.page
    await dashboard.open()
    link = page.get_by_role("link", name=f"Job {job_id}")
    await link.wait_for()
    # Tab from the top reaches the job's link (past the navigation and the filters).
    for _ in range(12):
        await page.keyboard.press("Tab")
        focused = await page.evaluate("document.activeElement.textContent")
        if focused == f"Job {job_id}":
            break
    else:
        pytest.fail("Tab never reached the job's link")
    await page.keyboard.press("Enter")
    await page.wait_for_url(re.compile(rf"#/jobs/{job_id}$"))
    # The view's heading takes the focus, so a screen reader announces the new view.
    await page.wait_for_function("document.activeElement.tagName === 'H1'")
    await page.get_by_label("Failed images only").focus()
    await page.keyboard.press("Space")
    await page.get_by_text("No failed images here.").wait_for()


async def test_live_refreshes_keep_the_keyboard_focus(
    open_dashboard: OpenDashboard, client: TestClient[Any, Any], image_host: ImageHost
) -> None:
    job_id = await submit(client, visit("S00339218", image_host.url("/hold/2x2.png")))
    dashboard: Dashboard = await open_dashboard(base_url(client))
    page = dashboard.page
    await dashboard.open()
    link = page.get_by_role("link", name=f"Job {job_id}")
    await link.focus()
    # The row of an ongoing job is redrawn every second (its age moves): the focused
    # link must be the same element afterwards, not a fresh copy.
    await page.evaluate("window.focusedLink = document.activeElement")
    age = f'#jobs tr[data-job="{job_id}"] td[data-label="Age"]'
    await page.wait_for_function(
        "([cell, text]) => document.querySelector(cell).textContent !== text",
        arg=[age, await page.locator(age).text_content()],
    )
    assert await page.evaluate("document.activeElement === window.focusedLink")
    # The same in the job view, on its export link, while its duration moves.
    await page.keyboard.press("Enter")
    await page.wait_for_url(re.compile(rf"#/jobs/{job_id}$"))
    export = page.locator("#export-csv")
    await export.focus()
    await page.evaluate("window.focusedLink = document.activeElement")
    duration = "#job-summary dd:nth-of-type(5)"
    await page.wait_for_function(
        "([cell, text]) => document.querySelector(cell).textContent !== text",
        arg=[duration, await page.locator(duration).text_content()],
    )
    assert await page.evaluate("document.activeElement === window.focusedLink")
    image_host.release()
    await page.locator("h1 .status", has_text="completed").wait_for()


async def test_screenshots_of_every_view_at_desktop_and_phone_widths(
    open_dashboard: OpenDashboard,
    client: TestClient[Any, Any],
    image_host: ImageHost,
    artifacts: Path,
) -> None:
    job_id = await _mixed_job(client, image_host)
    views = {
        "jobs": ("", "#jobs tbody tr"),
        "job": (f"#/jobs/{job_id}", "#images tbody tr"),
        "service": ("#/service", "svg#throughput-chart"),
        "submit": ("#/submit", "#submit-form"),
    }
    for width in (1280, 390):
        dashboard: Dashboard = await open_dashboard(base_url(client), width=width)
        page = dashboard.page
        for name, (route, ready) in views.items():
            await dashboard.open(route)
            await page.locator(ready).first.wait_for()
            # Readable at this width: nothing but a table's own scroller is wider than it.
            overflow = await page.evaluate("document.documentElement.scrollWidth")
            assert overflow <= width, (name, width, overflow)
            await page.screenshot(path=str(artifacts / f"{name}-{width}.png"), full_page=True)
    for width in (1280, 390):
        for name in views:
            assert (artifacts / f"{name}-{width}.png").stat().st_size > 1000


async def test_with_an_api_key_the_page_asks_first_and_exports_through_a_blob(
    open_dashboard: OpenDashboard,
    make_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    image_host: ImageHost,
    tmp_path: Path,
) -> None:
    key = "dashboard-s3cret"
    client = await make_client(make_settings(api_key=key))
    async with client.post(
        "/api/submit",
        json=payload(
            visit("S00339218", image_host.url("/img/3x2.png"), image_host.url("/img/5x4.png"))
        ),
        headers={"X-API-Key": key},
    ) as response:
        job_id = (await response.json())["job_id"]
    dashboard: Dashboard = await open_dashboard(base_url(client))
    page = dashboard.page
    await dashboard.open(f"#/jobs/{job_id}")
    # Asked before any data call: nothing was refused, so the console stays clean.
    await page.get_by_role("heading", name="API key needed").wait_for()
    key_box = page.get_by_label("API key")
    await key_box.fill("wrong")
    await page.get_by_role("button", name="Use this key").click()
    await page.get_by_text("That key was refused.").wait_for()
    await key_box.fill(key)
    await page.get_by_role("button", name="Use this key").click()
    await page.locator("h1 .status", has_text="completed").wait_for()
    assert await page.evaluate("sessionStorage.length") == 1
    # The export carries the key in a header: fetched, then saved from a Blob.
    async with page.expect_download() as download_info:
        await page.get_by_role("button", name="Export CSV").click()
    download = await download_info.value
    assert download.suggested_filename == f"job-{job_id}-results.csv"
    saved = tmp_path / "export.csv"
    await download.save_as(saved)
    lines = saved.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("store_id,store_name")
    assert len(lines) == 3
    # Forget the key: it leaves the tab, and the page asks again.
    await page.get_by_role("button", name="Forget key").click()
    await page.get_by_role("heading", name="API key needed").wait_for()
    assert await page.evaluate("sessionStorage.length") == 0
    assert not any("401" in line for line in dashboard.console_errors)
