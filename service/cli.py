"""``retail-pulse``: the command-line client (submit, status, results) and ``serve``."""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

__all__ = ["EXIT_CANCELLED", "EXIT_COMPLETED", "EXIT_FAILED", "EXIT_USAGE", "main"]

EXIT_COMPLETED = 0
EXIT_FAILED = 1
EXIT_USAGE = 2  # also bad input and connection errors: the job's fate is unknown
EXIT_CANCELLED = 3

DEFAULT_URL = "http://127.0.0.1:8080"
COPY_CHUNK = 64 * 1024
BAR_WIDTH = 30
# Times a job's event stream is reopened when it ends before the job (a replica stopping);
# after that, or when it is refused, the client polls.
STREAM_RECONNECTS = 3


class CliError(Exception):
    """Ends the command with a one-line message and exit code 2."""


class Client:
    """A tiny JSON-over-HTTP client for the service; errors become ``CliError``."""

    def __init__(self, base_url: str, timeout: float, api_key: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.api_key = api_key

    def _open(
        self, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Any:
        headers = dict(headers or {})
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["X-API-Key"] = self.api_key
        request = urllib.request.Request(
            self.base_url + path,
            data=body,
            method="POST" if body is not None else "GET",
            headers=headers,
        )
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            raise CliError(f"{exc.code} from {self.base_url}{path}: {_error_text(exc)}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CliError(f"cannot reach {self.base_url}: {reason}") from None

    def get_json(self, path: str) -> Any:
        with self._open(path) as response:
            return json.load(response)

    def post_json(self, path: str, payload: Any) -> Any:
        with self._open(path, json.dumps(payload).encode()) as response:
            return json.load(response)

    def download(self, path: str, target: IO[bytes]) -> None:
        with self._open(path) as response:
            shutil.copyfileobj(response, target, COPY_CHUNK)

    def stream(self, path: str, last_event_id: str | None) -> Any:
        """An open ``text/event-stream`` response, read line by line."""
        headers = {"Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        return self._open(path, headers=headers)


def _error_text(exc: urllib.error.HTTPError) -> str:
    raw = exc.read().decode(errors="replace")
    try:
        body = json.loads(raw)
    except json.JSONDecodeError:
        return raw.strip()[:200] or exc.reason
    if isinstance(body, dict) and "error" in body:
        return str(body["error"])
    return raw.strip()[:200]


def _status_exit(status: dict[str, Any]) -> int:
    return {"completed": EXIT_COMPLETED, "cancelled": EXIT_CANCELLED}.get(
        str(status.get("status")), EXIT_FAILED
    )


class ProgressBar:
    """``[#####.....] 12/40 images`` on stderr; redrawn in place on a terminal,
    a line per change otherwise (logs and CI)."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._last: tuple[int, int] | None = None

    def show(self, done: int, total: int) -> None:
        if (done, total) == self._last:
            return
        self._last = (done, total)
        filled = BAR_WIDTH * done // total if total else BAR_WIDTH
        line = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{total} images"
        self._stream.write(f"\r{line}" if self._tty else f"{line}\n")
        self._stream.flush()

    def close(self) -> None:
        if self._tty and self._last is not None:
            self._stream.write("\n")
            self._stream.flush()


def _job_path(job_id: str, suffix: str = "") -> str:
    return f"/api/jobs/{urllib.parse.quote(job_id, safe='')}{suffix}"


@dataclass
class SseEvent:
    event: str
    data: str
    id: str | None


class EventReader:
    """The events of a ``text/event-stream``, parsed as the SSE spec says (comments skipped).

    ``retry`` is the reconnection time the stream last asked for, in milliseconds.
    """

    def __init__(self, lines: Iterable[bytes]) -> None:
        self._lines = lines
        self.retry: int | None = None

    def __iter__(self) -> Iterator[SseEvent]:
        event, event_id = "message", None
        data: list[str] = []
        for raw in self._lines:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if not line:
                if data:
                    yield SseEvent(event, "\n".join(data), event_id)
                event, data = "message", []
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
            elif name == "id":
                event_id = value
            elif name == "retry" and value.isdigit():
                self.retry = int(value)


def _follow(client: Client, job_id: str, bar: ProgressBar) -> dict[str, Any] | None:
    """Follow the job's event stream to its done event and return that status; None when
    the stream is refused or keeps breaking off (the caller polls instead)."""
    last_id: str | None = None
    retry = 1000
    for attempt in range(STREAM_RECONNECTS + 1):
        try:
            with client.stream(_job_path(job_id, "/events"), last_id) as response:
                reader = EventReader(response)
                for event in reader:
                    last_id = event.id or last_id
                    body = json.loads(event.data)
                    if event.event == "progress":
                        bar.show(body["done"], body["total"])
                    elif event.event == "done":
                        return body if isinstance(body, dict) else None
                retry = reader.retry or retry
        except (
            CliError,
            OSError,
            http.client.HTTPException,
            ValueError,
            LookupError,
            TypeError,
        ) as exc:
            # Refused (404 from an older service, 503 at the stream cap or shutting
            # down), unreachable or garbled: polling still works, or says what is wrong.
            print(f"live events unavailable ({exc}); polling instead", file=sys.stderr)
            return None
        # The stream ended before the job (a replica stopping): reconnect where it asks.
        if attempt < STREAM_RECONNECTS:
            time.sleep(retry / 1000)
    print("live events keep breaking off; polling instead", file=sys.stderr)
    return None


def _poll(client: Client, job_id: str, bar: ProgressBar, interval: float) -> dict[str, Any]:
    while True:
        detail = client.get_json(_job_path(job_id, "?limit=1"))
        bar.show(detail["progress"]["done"], detail["progress"]["total"])
        if detail["status"] != "ongoing":
            break
        time.sleep(interval)
    status: dict[str, Any] = client.get_json(f"/api/status?jobid={job_id}")
    return status


def cmd_submit(client: Client, args: argparse.Namespace) -> int:
    try:
        payload = json.loads(Path(args.payload).read_text(encoding="utf-8"))
    except OSError as exc:
        raise CliError(f"cannot read {args.payload}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CliError(f"{args.payload} is not valid JSON: {exc}") from None
    created = client.post_json("/api/submit", payload)
    job_id = str(created["job_id"])
    if not args.wait:
        print(json.dumps(created))
        return EXIT_COMPLETED
    print(f"job {job_id} submitted", file=sys.stderr)
    bar = ProgressBar(sys.stderr)
    try:
        status = _follow(client, job_id, bar)
        if status is None:
            status = _poll(client, job_id, bar, args.interval)
        else:
            # The done event carries the status alone: one read draws the final bar.
            with contextlib.suppress(CliError):
                detail = client.get_json(_job_path(job_id, "?limit=1"))
                bar.show(detail["progress"]["done"], detail["progress"]["total"])
    finally:
        bar.close()
    print(json.dumps(status, indent=2))
    return _status_exit(status)


def cmd_status(client: Client, args: argparse.Namespace) -> int:
    # /api/status answers 400 {} for unknown ids; the job route names the problem.
    detail = client.get_json(_job_path(args.job_id, "?limit=1"))
    status = client.get_json(f"/api/status?jobid={detail['job_id']}")
    print(json.dumps(status, indent=2))
    return EXIT_COMPLETED


def cmd_cancel(client: Client, args: argparse.Namespace) -> int:
    status = client.post_json(_job_path(args.job_id, "/cancel"), {})
    print(json.dumps(status, indent=2))
    return EXIT_CANCELLED


def cmd_retry(client: Client, args: argparse.Namespace) -> int:
    queued = client.post_json(_job_path(args.job_id, "/retry"), {})
    print(json.dumps(queued))
    return EXIT_COMPLETED


def cmd_results(client: Client, args: argparse.Namespace) -> int:
    if args.csv is None:
        page = client.get_json(
            _job_path(args.job_id, f"/results?offset={args.offset}&limit={args.limit}")
        )
        print(json.dumps(page, indent=2))
        return EXIT_COMPLETED
    path = _job_path(args.job_id, "/results?format=csv")
    if args.csv == "-":
        client.download(path, sys.stdout.buffer)
        return EXIT_COMPLETED
    # Write beside the target and rename, so a failed download leaves no half file.
    target = Path(args.csv)
    partial = target.with_name(target.name + ".part")
    try:
        with partial.open("wb") as handle:
            client.download(path, handle)
        partial.replace(target)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise CliError(f"cannot write {target}: {exc.strerror or exc}") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    print(f"wrote {target}", file=sys.stderr)
    return EXIT_COMPLETED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="retail-pulse", description="Command-line client for the Retail Pulse job API."
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("RP_URL", DEFAULT_URL),
        help=f"service base URL (default: $RP_URL or {DEFAULT_URL})",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("RP_API_KEY") or None,
        help="sent as X-API-Key when the service requires one (default: $RP_API_KEY)",
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds per HTTP request (default 30)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    submit = commands.add_parser("submit", help="submit a job from a JSON payload file")
    submit.add_argument("payload", help="JSON file: {count, visits: [...]}")
    submit.add_argument(
        "--wait",
        action="store_true",
        help="follow the job's live events (or poll), then print the final status",
    )
    submit.add_argument(
        "--interval",
        type=float,
        default=0.5,
        help="seconds between polls when live events are unavailable (default 0.5)",
    )
    submit.set_defaults(run=cmd_submit)

    status = commands.add_parser("status", help="print a job's status")
    status.add_argument("job_id")
    status.set_defaults(run=cmd_status)

    cancel = commands.add_parser("cancel", help="cancel a job (exit code 3 once cancelled)")
    cancel.add_argument("job_id")
    cancel.set_defaults(run=cmd_cancel)

    retry = commands.add_parser("retry", help="process a failed job's failed images again")
    retry.add_argument("job_id")
    retry.set_defaults(run=cmd_retry)

    results = commands.add_parser("results", help="print or download a job's results")
    results.add_argument("job_id")
    results.add_argument("--csv", metavar="FILE", help="write every row as CSV ('-': stdout)")
    results.add_argument("--offset", type=int, default=0, help="first row of a JSON page")
    results.add_argument("--limit", type=int, default=100, help="rows in a JSON page")
    results.set_defaults(run=cmd_results)

    # add_help=False: `serve --help` is the service's own help.
    commands.add_parser(
        "serve", help="run the service (same flags as python -m service)", add_help=False
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "serve":
        # Everything after `serve` belongs to the service's own parser.
        from service.app import main as serve  # noqa: PLC0415 - the client needs no server

        return serve(extra)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    client = Client(args.url, args.timeout, args.api_key)
    try:
        code: int = args.run(client, args)
    except CliError as exc:
        print(f"retail-pulse: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return code
