"""Run one real job against a running service and check its results; stdlib only.

``python scripts/smoke_job.py BASE_URL IMAGE_BASE`` submits a visit of two images served by
``scripts/image_server.py`` at IMAGE_BASE, polls ``/api/status`` to ``completed`` (with a
deadline) and checks each measured perimeter. Exit 0 on success, 1 with a reason otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any

__all__ = ["main", "run_job"]

# Sizes the image server generates on request, and the perimeters they must measure.
IMAGES = {"img/640x480.jpg": 2240, "img/320x200.png": 1040}
STORE_ID = "S00339218"


class SmokeError(Exception):
    """The service answered, but not as it should."""


def _call(url: str, body: object | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def run_job(base_url: str, image_base: str, within: float) -> int:
    urls = [f"{image_base}/{path}" for path in IMAGES]
    payload = {
        "count": 1,
        "visits": [{"store_id": STORE_ID, "image_url": urls, "visit_time": "smoke test"}],
    }
    status, body = _call(f"{base_url}/api/submit", payload)
    if status != 201 or not isinstance(body.get("job_id"), int):
        raise SmokeError(f"submit answered {status} {body!r}")
    job_id: int = body["job_id"]
    deadline = time.monotonic() + within
    while True:
        status, body = _call(f"{base_url}/api/status?jobid={job_id}")
        if status != 200:
            raise SmokeError(f"status answered {status} {body!r}")
        if body["status"] != "ongoing":
            break
        if time.monotonic() > deadline:
            raise SmokeError(f"job {job_id} still ongoing after {within}s")
        time.sleep(0.1)
    if body != {"status": "completed", "job_id": job_id}:
        raise SmokeError(f"job {job_id} ended {body!r}")
    status, detail = _call(f"{base_url}/api/jobs/{job_id}")
    if status != 200:
        raise SmokeError(f"job view answered {status} {detail!r}")
    measured = {row["url"]: row["perimeter"] for row in detail["results"]}
    expected = dict(zip(urls, IMAGES.values(), strict=True))
    if measured != expected:
        raise SmokeError(f"perimeters {measured!r}, expected {expected!r}")
    return job_id


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base_url", help="the service, e.g. http://127.0.0.1:8080")
    parser.add_argument("image_base", help="the image server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--within", type=float, default=60.0, help="seconds to wait for the job")
    args = parser.parse_args()
    try:
        job_id = run_job(args.base_url.rstrip("/"), args.image_base.rstrip("/"), args.within)
    except (SmokeError, OSError, ValueError, KeyError) as exc:
        print(f"smoke job: FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"smoke job: job {job_id} completed with the expected perimeters")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
