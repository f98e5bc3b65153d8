"""Logging: JSON lines (or text) on stderr, written by a background thread; the access log."""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import queue
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any

from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web import BaseRequest, StreamResponse

__all__ = ["AccessLogger", "JsonFormatter", "TextFormatter", "configure_logging"]

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)).keys()
) | {"message", "asctime", "taskName"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _RECORD_ATTRIBUTES and not key.startswith("_")
    }


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


_JSON_UNSAFE = re.compile(r"[\x85\u2028\u2029]")
_JSON_LINE_BREAKS = {code: f"\\u{code:04x}" for code in (0x85, 0x2028, 0x2029)}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp, level, logger, message, then the extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _extras(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        # default=str: an extra that is not JSON (a datetime, a Path) must not lose the line.
        line = json.dumps(entry, default=str, ensure_ascii=False)
        # JSON leaves these raw, but str.splitlines and some viewers break lines there.
        return line.translate(_JSON_LINE_BREAKS) if _JSON_UNSAFE.search(line) else line


# What must not reach a text line raw: C0 and C1 controls and DEL (a newline would
# forge a line, an ESC would drive the terminal) and the Unicode line and paragraph
# separators (str.splitlines and some log viewers break lines there).
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ESCAPES: dict[int, str] = {
    **{code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))},
    **{ord(char): escape for char, escape in (("\n", r"\n"), ("\r", r"\r"), ("\t", r"\t"))},
    **{code: f"\\u{code:04x}" for code in (0x2028, 0x2029)},
}
# A value with any of these is quoted, so it cannot pass for more key=value pairs.
_NEEDS_QUOTES = re.compile(r'[\s="\\\x00-\x1f\x7f-\x9f\u2028\u2029]')


def _escape(text: str) -> str:
    """Control characters as escapes, as JSON writes them: the record stays one line."""
    return text.translate(_ESCAPES) if _UNSAFE.search(text) else text


def _text_value(value: object) -> str:
    text = str(value)
    if text and not _NEEDS_QUOTES.search(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').translate(_ESCAPES) + '"'


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message key=value ...`` for people reading a terminal.

    Messages and values can carry client text (a store id, a URL), so control
    characters are escaped and values with spaces, quotes or ``=`` are quoted: a
    record is one line. Only the traceback after it spans lines.
    """

    def format(self, record: logging.LogRecord) -> str:
        message = _escape(record.getMessage())
        text = f"{_timestamp(record)} {record.levelname} {record.name}: {message}"
        extras = _extras(record)
        if extras:
            text += " " + " ".join(
                f"{_escape(key)}={_text_value(value)}" for key, value in extras.items()
            )
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class AccessLogger(AbstractAccessLogger):
    """aiohttp's access log as one record per request, with its fields as extras."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %d",
            request.method,
            request.path_qs,
            response.status,
            extra={
                "method": request.method,
                "path": request.path_qs,
                "status": response.status,
                "bytes": response.body_length,
                "duration_ms": round(time * 1000, 3),
                "remote": request.remote,
            },
        )


class _BoundedQueueHandler(logging.handlers.QueueHandler):
    """Queues the record itself, message arguments merged, so the extras survive
    and the listener thread does the formatting and the writing.

    At most ``limit`` records wait: past that (stderr blocked by a stalled log
    shipper) records are dropped and counted rather than held in memory, and a
    warning with the count goes out ahead of the first record that fits again.
    ``emit`` runs under the handler's lock, so the count needs no other.
    """

    def __init__(self, records: queue.SimpleQueue[logging.LogRecord], limit: int) -> None:
        super().__init__(records)
        self._records = records
        self._limit = limit
        self._dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        if self._records.qsize() >= self._limit:
            self._dropped += 1
            return
        if self._dropped:
            self.enqueue(_drop_notice(self._dropped))
            self._dropped = 0
        super().emit(record)

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        message = record.getMessage()
        record = logging.makeLogRecord(vars(record))
        record.msg = message
        record.args = None
        return record


class _MalformedRequestFilter(logging.Filter):
    """A malformed request is the client's fault: one info line, not an error and a traceback.

    aiohttp answers bytes that are not valid HTTP (a NUL in a header, an overlong
    line) with a 400 and logs the parser's exception at error level. Scanners send
    those all day; as errors they would bury real ones.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if record.name != "aiohttp.server" or not isinstance(error, HttpProcessingError):
            return True
        remote = record.args[0] if isinstance(record.args, tuple) and record.args else None
        # The parser's message quotes the offending bytes after its first line.
        reason = (str(error.message).strip().splitlines() or [type(error).__name__])[0]
        record.msg = "malformed HTTP request from %s: %s"
        record.args = (remote, reason[:200])
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.exc_info = record.exc_text = None
        return record.levelno >= logging.getLogger().getEffectiveLevel()


def _drop_notice(dropped: int) -> logging.LogRecord:
    notice = logging.LogRecord(
        __name__,
        logging.WARNING,
        __file__,
        0,
        "dropped %d log records: the log writer fell behind",
        (dropped,),
        None,
    )
    notice.dropped_records = dropped
    return notice


_listener: logging.handlers.QueueListener | None = None


class _FieldsFilter(logging.Filter):
    """Adds the same fields to every record: which replica wrote it."""

    def __init__(self, fields: Mapping[str, object]) -> None:
        super().__init__()
        self._fields = dict(fields)

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in self._fields.items():
            setattr(record, key, value)
        return True


def configure_logging(
    level: str,
    fmt: str = "json",
    stream: IO[str] | None = None,
    queue_limit: int = 10_000,
    fields: Mapping[str, object] | None = None,
) -> None:
    """Send every logger's records to ``stream`` (stderr) in ``fmt``, from a writer thread.

    Writing to a pipe can block, and the event loop must not: the loop only
    queues records (at most ``queue_limit`` waiting), and a listener thread
    formats and writes them.
    """
    global _listener  # noqa: PLW0603 - the process has one logging setup
    stop_logging()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    queued = _BoundedQueueHandler(records, queue_limit)
    queued.addFilter(_MalformedRequestFilter())
    if fields:
        queued.addFilter(_FieldsFilter(fields))
    root.addHandler(queued)
    root.setLevel(level.upper())
    _listener = logging.handlers.QueueListener(records, handler)
    _listener.start()
    atexit.register(stop_logging)


def stop_logging() -> None:
    """Write out what is queued and stop the writer thread."""
    global _listener
    listener, _listener = _listener, None
    if listener is not None:
        listener.stop()
