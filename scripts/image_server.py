"""A loopback image host for trying the service by hand, `make postman` and `make wheel-check`.

Serves real generated images at /img/<W>x<H>.<jpg|png|gif|webp>, any HTTP status at
/status/<code> and the other paths of ``tests.support.image_host`` (the test suite's host).
Run it from the checkout root as ``.venv/bin/python -m scripts.image_server``; it binds
127.0.0.1 on ``--port`` (default: a free port), prints the URL it serves on, and writes the
port to ``--port-file`` once it is listening, so scripts never guess a port.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

from aiohttp import web

from tests.support.image_host import build_image_host_app

__all__ = ["main", "serve"]


async def serve(host: str, port: int, port_file: Path | None) -> None:
    runner = web.AppRunner(build_image_host_app([]), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    if port_file is not None:
        # Write then rename, so a reader never sees a half-written port.
        partial = port_file.with_name(port_file.name + ".partial")
        partial.write_text(f"{bound}\n")
        os.replace(partial, port_file)
    base = f"http://{host}:{bound}" if ":" not in host else f"http://[{host}]:{bound}"
    print(f"serving test images on {base} (e.g. {base}/img/640x480.jpg); Ctrl-C stops", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: a free one)")
    parser.add_argument("--port-file", type=Path, help="write the bound port to this file")
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.host, args.port, args.port_file))
    except OSError as exc:
        print(f"image_server: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
