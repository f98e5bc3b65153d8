"""The loopback image host: nginx when installed, else an aiohttp static server.

Both serve ``/img/<n>/<anything>.jpg`` as file ``<n>.jpg``, so a workload gets
as many unique URLs as it wants over a handful of generated JPEGs.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from PIL import Image, ImageFilter

__all__ = ["ImageHost", "free_port", "make_jpegs", "start_image_host", "wait_http"]

IMAGE_SIZE = (640, 480)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def make_jpegs(directory: Path, count: int) -> list[int]:
    """Write ``count`` distinct 640x480 photo-like JPEGs as 0.jpg..; returns their sizes."""
    sizes = []
    for number in range(count):
        # Blurred noise per channel: smooth areas and edges, like a shelf photo,
        # so the file size and decode cost are those of a photo, not of static.
        bands = [
            Image.effect_noise(IMAGE_SIZE, 60 + 10 * number).filter(ImageFilter.GaussianBlur(2))
            for _ in range(3)
        ]
        buffer = BytesIO()
        Image.merge("RGB", bands).save(buffer, format="JPEG", quality=85)
        path = directory / f"{number}.jpg"
        path.write_bytes(buffer.getvalue())
        path.chmod(0o644)
        sizes.append(len(buffer.getvalue()))
    return sizes


def wait_http(url: str, deadline: float, process: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``url`` until it answers 200; fail early if ``process`` exits."""
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer in time")
        time.sleep(0.05)


_NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    types {{ image/jpeg jpg; }}
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location ~ "^/img/(\\d+)/[^/]+\\.jpg$" {{ try_files /$1.jpg =404; }}
        location / {{ return 404; }}
    }}
}}
"""


@dataclass
class ImageHost:
    kind: str
    base_url: str
    files: int
    process: subprocess.Popen[bytes]

    def url(self, number: int, tag: str) -> str:
        return f"{self.base_url}/img/{number % self.files}/{tag}-{number}.jpg"

    def stop(self) -> None:
        if self.process.poll() is None:
            # nginx: SIGTERM is a fast shutdown; the aiohttp host exits on it too.
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_image_host(workdir: Path, files: int, prefer: str = "auto") -> ImageHost:
    """Start nginx (if installed and not ``prefer == "aiohttp"``) or the aiohttp fallback."""
    root = workdir / "www"
    root.mkdir()
    # nginx workers drop to an unprivileged user, which must read the files.
    workdir.chmod(0o755)
    root.chmod(0o755)
    make_jpegs(root, files)
    port = free_port()
    nginx = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if nginx and prefer != "aiohttp":
        tmp = workdir / "nginx"
        tmp.mkdir()
        conf = tmp / "nginx.conf"
        conf.write_text(_NGINX_CONF.format(tmp=tmp, port=port, root=root))
        command = [nginx, "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "error.log")]
        kind = "nginx"
    else:
        command = [sys.executable, "-m", "bench.static_host", str(root), str(port)]
        kind = "aiohttp"
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    host = ImageHost(kind, f"http://127.0.0.1:{port}", files, process)
    try:
        wait_http(host.url(0, "probe"), time.monotonic() + 15, process)
    except BaseException:
        host.stop()
        raise
    return host
