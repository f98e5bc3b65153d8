"""A raw-socket loopback HTTP server that misbehaves on purpose, for the download hardening tests.

It writes HTTP/1.1 by hand so it can do what a well-behaved server framework
will not: lie about Content-Length, reset the connection mid-body, trickle
bytes, never answer, or stream a 1 GB body (generated as it is sent, with
back-pressure, never held in memory). Paths:

  /img                      a small real PNG
  /flaky/<key>/<n>          503 for the first n requests with that key, then the PNG
  /retry-after/<key>/<v>    429 with ``Retry-After: <v>`` (URL-decoded) once, then the PNG
  /reset                    declares 100 kB, sends 1 kB, then resets the connection (RST)
  /trickle                  declares 1 MB, then sends one byte every 50 ms
  /never                    reads the request and never answers
  /stream/<mode>/<n>        n zero bytes; mode: close (no length), chunked, length, or
                            lie-<m> (declares m bytes)
  /loop                     redirects to itself
  /ftp                      redirects to an ftp:// URL
  /bomb                     a 30000x30000 PNG of 100 bytes (a decompression bomb header)
  /redirect-to?url=<u>      redirects to u
  /redirect-not-utf8        redirects to an ftp:// URL holding bytes that are not UTF-8
  /gzip/<n>                 n zero bytes, sent gzip-compressed with a (small) Content-Length
Each request's path is appended to ``requests``; ``sent[path]`` counts body bytes sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import struct
import zlib
from collections import Counter
from urllib.parse import parse_qs, unquote, urlsplit

from tests.support.images import make_image

__all__ = ["FaultHost", "png_bomb"]

_STREAM_CHUNK = b"\0" * (64 * 1024)


def png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A valid PNG header declaring width x height, with only a few rows of pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grey
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 4096))
        + chunk(b"IEND", b"")
    )


class FaultHost:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.requests: list[str] = []
        self.sent: Counter[str] = Counter()
        self._counts: Counter[str] = Counter()
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._closing = False

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    async def start(self) -> FaultHost:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        return self

    async def close(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()
        # Dropping the connections ends every handler (never, trickle, stream) with an error.
        for writer in list(self._writers):
            writer.transport.abort()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closing:
            # Accepted just before the close, but started after it had dropped the rest.
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._handlers.discard(task)
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        target = head.split(b"\r\n", 1)[0].split(b" ")[1].decode()
        parts = urlsplit(target)
        path = parts.path
        self.requests.append(path)
        segments = path.strip("/").split("/")
        kind = segments[0]

        if kind == "img":
            await self._respond(writer, path, 200, make_image(10, 10, "png"), "image/png")
        elif kind == "flaky":
            key, failures = segments[1], int(segments[2])
            self._counts[key] += 1
            if self._counts[key] <= failures:
                await self._respond(writer, path, 503, b"")
            else:
                await self._respond(writer, path, 200, make_image(10, 10, "png"), "image/png")
        elif kind == "retry-after":
            key, value = segments[1], unquote(segments[2])
            self._counts[key] += 1
            if self._counts[key] == 1:
                await self._respond(writer, path, 429, b"", extra={"Retry-After": value})
            else:
                await self._respond(writer, path, 200, make_image(10, 10, "png"), "image/png")
        elif kind == "reset":
            await self._head(writer, 200, {"Content-Length": "100000"})
            await self._send(writer, path, b"\xff" * 1000)
            sock = writer.get_extra_info("socket")
            # Linger 0 turns close into a TCP RST: a connection reset, not a clean end.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        elif kind == "trickle":
            await self._head(writer, 200, {"Content-Length": "1000000"})
            while True:
                await self._send(writer, path, b"\0")
                await asyncio.sleep(0.05)
        elif kind == "never":
            await reader.read()  # until the client gives up and closes
        elif kind == "stream":
            await self._stream(writer, path, segments[1], int(segments[2]))
        elif kind == "loop":
            await self._respond(writer, path, 302, b"", extra={"Location": "/loop"})
        elif kind == "ftp":
            location = f"ftp://{self.host}/image.jpg"
            await self._respond(writer, path, 302, b"", extra={"Location": location})
        elif kind == "bomb":
            await self._respond(writer, path, 200, png_bomb(), "image/png")
        elif kind == "gzip":
            body = gzip.compress(bytes(int(segments[1])))
            extra = {"Content-Encoding": "gzip"}
            await self._respond(writer, path, 200, body, "image/jpeg", extra=extra)
        elif kind == "redirect-not-utf8":
            # Surrogate escapes: _head writes them as the raw bytes 0xff 0xfe.
            location = f"ftp://{self.host}/\udcff\udcfe.jpg"
            await self._respond(writer, path, 302, b"", extra={"Location": location})
        elif kind == "redirect-to":
            location = parse_qs(parts.query)["url"][0]
            await self._respond(writer, path, 302, b"", extra={"Location": location})
        else:
            await self._respond(writer, path, 404, b"")

    async def _stream(self, writer: asyncio.StreamWriter, path: str, mode: str, total: int) -> None:
        headers: dict[str, str] = {"Content-Type": "image/jpeg"}
        if mode == "length":
            headers["Content-Length"] = str(total)
        elif mode.startswith("lie-"):
            headers["Content-Length"] = mode.removeprefix("lie-")
        elif mode == "chunked":
            headers["Transfer-Encoding"] = "chunked"
        await self._head(writer, 200, headers)
        remaining = total
        while remaining > 0:
            piece = _STREAM_CHUNK[: min(remaining, len(_STREAM_CHUNK))]
            remaining -= len(piece)
            if mode == "chunked":
                writer.write(f"{len(piece):x}\r\n".encode())
                await self._send(writer, path, piece)
                writer.write(b"\r\n")
            else:
                await self._send(writer, path, piece)
        if mode == "chunked":
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    async def _head(
        self, writer: asyncio.StreamWriter, status: int, headers: dict[str, str]
    ) -> None:
        lines = [f"HTTP/1.1 {status} X", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape"))
        await writer.drain()

    async def _send(self, writer: asyncio.StreamWriter, path: str, data: bytes) -> None:
        writer.write(data)
        await writer.drain()  # back-pressure: a client that stops reading stops us too
        self.sent[path] += len(data)

    async def _respond(
        self,
        writer: asyncio.StreamWriter,
        path: str,
        status: int,
        body: bytes,
        content_type: str = "application/octet-stream",
        extra: dict[str, str] | None = None,
    ) -> None:
        headers = {"Content-Type": content_type, "Content-Length": str(len(body))}
        headers.update(extra or {})
        await self._head(writer, status, headers)
        await self._send(writer, path, body)
