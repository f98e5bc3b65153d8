"""Exit 0 when the service's /healthz answers 200 ``{"status": "ok"}``; stdlib only.

The container's HEALTHCHECK runs it (the slim image has no curl), and the CI scripts use
``--wait`` to block until a freshly started service is ready.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

__all__ = ["healthy", "main"]


def healthy(url: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return isinstance(body, dict) and body.get("status") == "ok"


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def main() -> int:
    # The container runs this inside the service's own network namespace, so loopback and
    # RP_PORT (what the service listens on) are right by default.
    default_url = f"http://127.0.0.1:{os.environ.get('RP_PORT', '8080')}/healthz"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default=default_url, help=f"default {default_url}")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds per request")
    parser.add_argument("--wait", type=float, default=0.0, help="retry for this many seconds")
    parser.add_argument("--pid", type=int, help="with --wait: give up once this process exits")
    args = parser.parse_args()
    deadline = time.monotonic() + args.wait
    while not healthy(args.url, args.timeout):
        if args.pid is not None and not _running(args.pid):
            print(f"healthcheck: process {args.pid} exited", file=sys.stderr)
            return 1
        if time.monotonic() >= deadline:
            print(f"healthcheck: {args.url} is not healthy", file=sys.stderr)
            return 1
        time.sleep(0.1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
