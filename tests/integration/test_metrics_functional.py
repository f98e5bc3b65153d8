"""/metrics after a scripted run: every count exact, gauges live, registries per app."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.config import Settings
from tests.support.image_host import ImageHost
from tests.support.jobs import submit, visit
from tests.support.polling import eventually, wait_for_status

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(client: TestClient[Any, Any]) -> Samples:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.content_type == "text/plain"
    samples: Samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def test_counts_after_a_scripted_run_are_exact(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], image_host: ImageHost
) -> None:
    # One pool worker and one image in flight: every image is its own batch, so
    # the batch histogram's count is exact too.
    # Two attempts per download: a 503 is tried twice, everything else once.
    client = await make_client(make_settings(workers=1, max_in_flight=1, retry_attempts=2))
    before = await scrape(client)
    assert value(before, "retail_pulse_jobs_submitted_total") == 0
    assert value(before, "retail_pulse_image_failures_total", reason="timeout") == 0

    failed_job = await submit(
        client,
        visit(
            "S00339218",
            image_host.url("/img/64x48.jpg"),
            image_host.url("/img/10x10.png"),
            image_host.url("/status/404"),
            image_host.url("/status/503"),
            image_host.url("/html"),
            image_host.url("/truncated/300x200.png"),
        ),
        visit("NO-SUCH-STORE", "http://a.test/1", "http://a.test/2"),
    )
    assert (await wait_for_status(client, failed_job))["status"] == "failed"
    completed_job = await submit(client, visit("S01408764", image_host.url("/img/5x5.gif")))
    assert (await wait_for_status(client, completed_job))["status"] == "completed"

    after = await scrape(client)
    assert value(after, "retail_pulse_jobs_submitted_total") == 2
    assert value(after, "retail_pulse_jobs_finished_total", status="failed") == 1
    assert value(after, "retail_pulse_jobs_finished_total", status="completed") == 1
    assert value(after, "retail_pulse_images_processed_total", outcome="measured") == 3
    assert value(after, "retail_pulse_images_processed_total", outcome="failed") == 6
    failures = {
        labels[0][1]: count
        for (name, labels), count in after.items()
        if name == "retail_pulse_image_failures_total" and count
    }
    assert failures == {
        "http_4xx": 1,
        "http_5xx": 1,
        "not_image": 1,
        "corrupt": 1,
        "unknown_store": 2,
    }
    # Download attempts: 7 images fetched (the unknown store's two never are), the 503 twice.
    assert value(after, "retail_pulse_download_seconds_count") == 8
    # Measured in the pool: the 3 images, the HTML page and the truncated file.
    assert value(after, "retail_pulse_pool_batch_size_count") == 5
    assert value(after, "retail_pulse_pool_batch_size_sum") == 5
    assert value(after, "retail_pulse_job_duration_seconds_count") == 2
    assert value(after, "retail_pulse_images_in_flight") == 0
    assert value(after, "retail_pulse_images_queued") == 0
    assert value(after, "retail_pulse_images_pending") == 0
    # Every image's share of the byte budget went back, failures included.
    assert value(after, "retail_pulse_image_bytes_held") == 0
    assert value(after, "retail_pulse_image_bytes_waiting") == 0


async def test_in_flight_and_queued_gauges_read_the_pipeline(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], image_host: ImageHost
) -> None:
    client = await make_client(make_settings(max_in_flight=2))
    await submit(
        client, visit("S00339218", *(image_host.url(f"/hold/{n}x{n}.jpg") for n in range(1, 6)))
    )
    # Poll until both workers wait on a held image.

    async def both_busy() -> Samples | None:
        samples = await scrape(client)
        return samples if value(samples, "retail_pulse_images_in_flight") == 2 else None

    samples = await eventually(both_busy)
    assert value(samples, "retail_pulse_images_queued") == 3
    assert value(samples, "retail_pulse_images_pending") == 5
    image_host.release()


async def test_each_app_has_its_own_registry(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], image_host: ImageHost
) -> None:
    first = await make_client(make_settings())
    second = await make_client(make_settings())
    job_id = await submit(first, visit("S00339218", image_host.url("/img/3x3.jpg")))
    await wait_for_status(first, job_id)
    assert value(await scrape(first), "retail_pulse_jobs_submitted_total") == 1
    assert value(await scrape(second), "retail_pulse_jobs_submitted_total") == 0
