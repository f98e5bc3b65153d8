"""Every ``web.AppKey`` of the application, in one place."""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractResolver

from service.api.schemas import SubmitSchema
from service.config import Settings
from service.jobs.events import EventHub
from service.jobs.manager import JobManager
from service.jobs.stats import StatsSource, ThroughputMeter
from service.jobs.store import JobStore
from service.jobs.webhooks import WebhookWorker
from service.metrics import Metrics
from service.pipeline.flow import Pipeline
from service.pipeline.measure_pool import BatchFunction, MeasurePool
from service.replica import Replica
from service.store_master import StoreMaster

__all__ = [
    "BATCH_FUNCTION",
    "CLIENT_SESSION",
    "EVENT_HUB",
    "JOB_MANAGER",
    "JOB_STORE",
    "MEASURE_POOL",
    "METRICS",
    "OPENAPI",
    "PIPELINE",
    "REPLICA",
    "SETTINGS",
    "STATS",
    "STORE_MASTER",
    "SUBMIT_SCHEMA",
    "THROUGHPUT",
    "WEBHOOKS",
    "WEBHOOK_RESOLVER",
]

SETTINGS = web.AppKey("settings", Settings)
REPLICA = web.AppKey("replica", Replica)
STORE_MASTER = web.AppKey("store_master", StoreMaster)
SUBMIT_SCHEMA = web.AppKey("submit_schema", SubmitSchema)
CLIENT_SESSION = web.AppKey("client_session", aiohttp.ClientSession)
MEASURE_POOL = web.AppKey("measure_pool", MeasurePool)
# Optional: what pool workers run per batch (tests set it to inject faults into real workers).
BATCH_FUNCTION: web.AppKey[BatchFunction] = web.AppKey("batch_function")
# A seam for tests, which watch its in-flight and queued counts.
PIPELINE = web.AppKey("pipeline", Pipeline)
JOB_MANAGER = web.AppKey("job_manager", JobManager)
JOB_STORE = web.AppKey("job_store", JobStore)
# Live events: every open stream of this process, fed by one ticker.
EVENT_HUB = web.AppKey("event_hub", EventHub)
METRICS = web.AppKey("metrics", Metrics)
# The webhook worker; absent while no webhook_secret is set.
WEBHOOKS = web.AppKey("webhooks", WebhookWorker)
# Optional: the resolver behind the webhook session's guard (tests set a scripted one).
WEBHOOK_RESOLVER = web.AppKey("webhook_resolver", AbstractResolver)
# Images settled per 5 seconds (a test may replace it, with its own clock, before startup).
THROUGHPUT = web.AppKey("throughput", ThroughputMeter)
# Where GET /api/stats reads the service's figures.
STATS = web.AppKey("stats", StatsSource)
# The OpenAPI document, built once per app from the schemas and the settings.
OPENAPI = web.AppKey("openapi", dict[str, Any])
