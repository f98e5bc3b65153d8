"""A loopback image host for `make postman` and `make wheel-check`: the test suite's one.

Serves real generated images at /img/<W>x<H>.<jpg|png|gif|webp>, any HTTP status at
/status/<code> and the other paths of ``tests.support.image_host``. Run from the repository
root with the root on PYTHONPATH; it binds 127.0.0.1 on a free port and writes that port to
``--port-file`` once it is listening, so callers never guess a port.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from pathlib import Path

from aiohttp import web

from tests.support.image_host import build_image_host_app

__all__ = ["main", "serve"]


async def serve(port_file: Path, host: str) -> None:
    runner = web.AppRunner(build_image_host_app([]), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    port = runner.addresses[0][1]
    # Write then rename, so a reader never sees a half-written port.
    partial = port_file.with_name(port_file.name + ".partial")
    partial.write_text(f"{port}\n")
    os.replace(partial, port_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port-file", type=Path, required=True, help="where to write the port")
    parser.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    args = parser.parse_args()
    asyncio.run(serve(args.port_file, args.host))


if __name__ == "__main__":
    main()
