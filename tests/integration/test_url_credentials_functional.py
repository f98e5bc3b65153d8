"""Image URLs with credentials (user:password@): refused by default; when allowed, used for
the download and masked everywhere the URL shows (status, results, CSV, logs, reasons)."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from yarl import URL

from service.config import Settings
from service.logging_setup import configure_logging, stop_logging
from service.net.downloader import Downloader, FetchError, create_client_session
from tests.support.fetchers import fetch_retrying
from tests.support.image_host import BASIC_AUTH, ImageHost
from tests.support.jobs import payload, post_job, submit, visit
from tests.support.polling import wait_for_status

Client = TestClient[Any, Any]
USER, PASSWORD = BASIC_AUTH
REFUSAL = (
    "URL must not contain credentials (user:password@); set allow_url_credentials to allow them."
)


def with_userinfo(url: str, userinfo: str) -> str:
    return url.replace("http://", f"http://{userinfo}@", 1)


@pytest.mark.parametrize(
    "userinfo", [f"{USER}:{PASSWORD}", USER, f":{PASSWORD}", f"{USER}:", f"a:{PASSWORD}@b"]
)
async def test_a_url_with_credentials_is_refused_by_default(
    make_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    image_host: ImageHost,
    userinfo: str,
) -> None:
    client: Client = await make_client(make_settings())
    good = image_host.url("/img/4x4.png")
    response = await post_job(
        client, payload(visit("S00339218", good, with_userinfo(good, userinfo))), expect=400
    )
    body = await response.json()
    assert body["error"] == f"visits[0].image_url[1]: {REFUSAL}"
    assert body["details"] == {"visits": {"0": {"image_url": {"1": [REFUSAL]}}}}
    assert PASSWORD not in await response.text()
    assert image_host.requests == []


async def test_an_at_sign_outside_the_authority_is_not_a_credential(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], image_host: ImageHost
) -> None:
    client: Client = await make_client(make_settings())
    url = image_host.url("/img/4x4.png?by=agent@example.com&at=x@y")
    job_id = await submit(client, visit("S00339218", url))
    assert (await wait_for_status(client, job_id))["status"] == "completed"
    detail = await (await client.get(f"/api/jobs/{job_id}")).json()
    assert detail["results"][0]["url"] == url


@pytest.mark.usefixtures("restore_root_logging")
@pytest.mark.parametrize("log_format", ["json", "text"])
async def test_allowed_credentials_are_sent_and_never_shown(
    make_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    image_host: ImageHost,
    log_format: str,
) -> None:
    logs = io.StringIO()
    configure_logging("debug", log_format, logs)
    client: Client = await make_client(make_settings(allow_url_credentials=True, retry_attempts=1))
    secret = f"{USER}:{PASSWORD}"
    authed = image_host.url("/basic-auth/8x6.png")
    missing = image_host.url("/status/404")
    job_id = await submit(
        client,
        visit("S00339218", with_userinfo(authed, secret), with_userinfo(missing, secret)),
    )
    masked_authed = with_userinfo(authed, f"{USER}:***")
    masked_missing = with_userinfo(missing, f"{USER}:***")

    status = await wait_for_status(client, job_id)
    detail = await (await client.get(f"/api/jobs/{job_id}")).json()
    csv_response = await client.get(f"/api/jobs/{job_id}/results", params={"format": "csv"})
    csv_text = await csv_response.text()
    stop_logging()  # drains the writer thread
    log_text = logs.getvalue()

    # The host answers 401 without the right Authorization header: the image was
    # measured, so the credentials went with the download.
    first, second = detail["results"]
    assert (first["url"], first["width"], first["height"], first["error"]) == (
        masked_authed,
        8,
        6,
        None,
    )
    assert (second["url"], second["error"]) == (masked_missing, "HTTP 404")
    assert status["error"] == [
        {"store_id": "S00339218", "error": f"image {masked_missing} failed: HTTP 404"}
    ]
    assert masked_authed in csv_text and masked_missing in csv_text
    assert masked_missing in log_text  # the "image failed" line names the URL, masked
    basic = base64.b64encode(secret.encode()).decode()
    for shown in (str(status), str(detail), csv_text, log_text):
        assert PASSWORD not in shown
        assert basic not in shown


async def test_a_failure_reason_quoting_a_url_masks_its_password(
    make_settings: Callable[..., Settings], image_host: ImageHost
) -> None:
    # aiohttp's refusal of a non-http(s) redirect quotes the target URL.
    settings = make_settings(retry_attempts=1)
    target = f"ftp://{USER}:{PASSWORD}@files.test/x.jpg"
    url = URL(image_host.url("/redirect-to")).with_query(url=target)
    async with create_client_session(settings.download) as session:
        with pytest.raises(FetchError) as caught:
            await fetch_retrying(Downloader(session, settings.download), str(url))
    assert (
        caught.value.reason == f"redirect to a non-http(s) URL: ftp://{USER}:***@files.test/x.jpg"
    )
    assert PASSWORD not in str(caught.value)
