"""Schemathesis hooks for the CI contract run (loaded via SCHEMATHESIS_HOOKS).

Every image URL in a submitted body is rewritten, just before the request is
sent, to a PNG the service under test serves itself, and every ``callback_url``
to the run's own webhook receiver on 127.0.0.1, so a fuzzed job never makes the
service resolve or call anything but 127.0.0.1. Store ids become one the
bundled store master knows, so fuzzed jobs reach the download and measuring path
instead of all failing as unknown stores.
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis

IMAGE_URL = os.environ["RP_SCHEMATHESIS_IMAGE_URL"]
CALLBACK_URL = os.environ["RP_SCHEMATHESIS_CALLBACK_URL"]
KNOWN_STORE = "S00339218"


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    body = getattr(case, "body", None)
    if not isinstance(body, dict):
        return
    # Non-strings (and null) stay: they keep a negative case negative.
    if isinstance(body.get("callback_url"), str):
        body["callback_url"] = CALLBACK_URL
    if not isinstance(body.get("visits"), list):
        return
    for visit in body["visits"]:
        if not isinstance(visit, dict):
            continue
        if isinstance(visit.get("store_id"), str) and visit["store_id"]:
            visit["store_id"] = KNOWN_STORE
        urls = visit.get("image_url")
        if isinstance(urls, list):
            # Non-strings stay: they keep a negative case negative.
            visit["image_url"] = [IMAGE_URL if isinstance(url, str) else url for url in urls]
