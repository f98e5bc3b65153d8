"""The circuit breaker in the whole service: one job cannot poison an origin for another,
a dead origin still opens, and images wait for it (holding nothing) instead of failing."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.api import keys
from service.config import Settings
from service.net.downloader import CIRCUIT_OPEN
from service.pipeline.flow import Pipeline
from tests.support.fault_host import FaultHost
from tests.support.image_host import ImageHost
from tests.support.jobs import submit, visit
from tests.support.polling import eventually, wait_for_status


async def errors_by_url(client: TestClient[Any, Any], job_id: int) -> dict[str, str | None]:
    detail = await (await client.get(f"/api/jobs/{job_id}", params={"limit": "1000"})).json()
    return {row["url"]: row["error"] for row in detail["results"]}


async def circuit_open_failures(client: TestClient[Any, Any]) -> float:
    text = await (await client.get("/metrics")).text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels = sample.name, sample.labels
            if name == "retail_pulse_image_failures_total" and labels == {"reason": "circuit_open"}:
                return sample.value
    raise AssertionError("no circuit_open failure count in /metrics")


async def circuit_waiting(pipeline: Pipeline, at_least: int) -> int | None:
    return pipeline.circuit_waiting if pipeline.circuit_waiting >= at_least else None


async def test_one_jobs_failing_urls_do_not_fail_another_jobs_images_on_the_same_origin(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], image_host: ImageHost
) -> None:
    # The default threshold; a cool-down long enough that an origin-wide circuit
    # opened by job A would still refuse job B.
    settings = make_settings(circuit_breaker_cool_down=300.0, breaker_wait_max=1.0)
    client = await make_client(settings)
    failing = [image_host.url(f"/status/503?a={number}") for number in range(25)]
    a = await submit(client, visit("S00339218", *failing))
    assert (await wait_for_status(client, a))["status"] == "failed"
    a_errors = await errors_by_url(client, a)
    # A's circuit opened for A: its later tries were refused, and waited in vain.
    assert CIRCUIT_OPEN in a_errors.values()
    assert set(a_errors.values()) <= {CIRCUIT_OPEN, "HTTP 503 after 3 attempts"}

    # Same scheme, host and port; other paths.
    good = [image_host.url(f"/img/{8 + number}x8.png") for number in range(5)]
    b = await submit(client, visit("S00339218", *good))
    assert (await wait_for_status(client, b))["status"] == "completed"
    assert set((await errors_by_url(client, b)).values()) == {None}


async def test_a_dead_origin_opens_for_every_job_whose_images_wait_for_it_to_recover(
    make_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    image_host: ImageHost,
    fault_host: FaultHost,
) -> None:
    settings = make_settings(
        max_in_flight=2,  # so that a waiting image holding a worker would stall everything
        retry_attempts=5,  # a probe is one of its image's attempts; a slow run may see a few
        circuit_breaker_threshold=4,
        circuit_breaker_min_jobs=2,
        circuit_breaker_cool_down=0.5,
        breaker_wait_max=30.0,
    )
    client = await make_client(settings)
    pipeline = client.app[keys.PIPELINE]
    image_host.go_down()
    a_urls = [image_host.url(f"/img/{10 + number}x10.png") for number in range(6)]
    b_urls = [image_host.url(f"/img/{10 + number}x12.jpg") for number in range(6)]
    a = await submit(client, visit("S00339218", *a_urls))
    b = await submit(client, visit("RP00001", *b_urls))

    # More images wait than one job has: the circuit is open for both jobs.
    await eventually(lambda: circuit_waiting(pipeline, at_least=8), within=10)
    refused_while_down = image_host.outage.refused
    assert refused_while_down < 12 * 5  # not every try of every image: the host was spared

    # The waiting images hold no worker: another origin's job goes through meanwhile.
    other = await submit(client, visit("S00339218", fault_host.url("/img")))
    assert (await wait_for_status(client, other))["status"] == "completed"

    image_host.come_back()
    for job in (a, b):
        assert (await wait_for_status(client, job))["status"] == "completed"
    assert pipeline.circuit_waiting == 0
    assert pipeline.queued_images == 0


async def test_an_image_that_waits_longer_than_breaker_wait_max_fails_with_circuit_open(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], image_host: ImageHost
) -> None:
    wait_max = 1.0
    settings = make_settings(
        max_in_flight=2,
        circuit_breaker_threshold=2,
        circuit_breaker_cool_down=0.2,  # probes go out, fail, and reopen it, while images wait
        breaker_wait_max=wait_max,
    )
    client = await make_client(settings)
    pipeline = client.app[keys.PIPELINE]
    image_host.go_down()
    urls = [image_host.url(f"/img/{10 + number}x10.png") for number in range(6)]
    started = time.monotonic()
    job = await submit(client, visit("S00339218", *urls))

    assert await eventually(lambda: circuit_waiting(pipeline, at_least=1), within=10)
    assert (await wait_for_status(client, job))["status"] == "failed"
    # A lower bound, certain by construction: none fails before it has waited wait_max.
    assert time.monotonic() - started >= wait_max
    errors = list((await errors_by_url(client, job)).values())
    # Images that probed spent their attempts on it; the others waited out wait_max.
    assert set(errors) <= {CIRCUIT_OPEN, "HTTP 503 after 3 attempts"}
    assert errors.count(CIRCUIT_OPEN) >= 1
    # Their kind is the circuit's own, as the failure metric counts it.
    assert await circuit_open_failures(client) == errors.count(CIRCUIT_OPEN)
    assert pipeline.circuit_waiting == 0
