"""Log lines: JSON objects with the extras, or readable text; written by a thread."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
import time

import pytest

from service.logging_setup import JsonFormatter, TextFormatter, configure_logging, stop_logging


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord(
        "service.jobs.model", logging.WARNING, __file__, 1, "job %s %s", (7, "finished"), None
    )
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_line_has_the_fields_and_extras() -> None:
    line = JsonFormatter().format(_record(job_id=7, status="failed", url="http://a.test/x y"))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry.pop("timestamp").endswith("+00:00")
    assert entry == {
        "level": "warning",
        "logger": "service.jobs.model",
        "message": "job 7 finished",
        "job_id": 7,
        "status": "failed",
        "url": "http://a.test/x y",
    }


def test_json_line_survives_values_json_cannot_encode_and_exceptions() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        record = _record(path=object())
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["path"].startswith("<object object")
    assert "ValueError: boom" in entry["exception"]


@pytest.mark.parametrize("char", ["\n", "\r", "\x1b", "\x85", "\u2028", "\u2029"])
def test_json_line_stays_one_line_and_keeps_the_text(char: str) -> None:
    line = JsonFormatter().format(_record(store_id=f"GHOST{char}FAKE"))
    assert line.splitlines() == [line]
    assert json.loads(line)["store_id"] == f"GHOST{char}FAKE"


def test_text_line_is_readable() -> None:
    line = TextFormatter().format(_record(job_id=7))
    assert line.endswith("WARNING service.jobs.model: job 7 finished job_id=7")
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


# Every character that could end a line or drive a terminal, and how a text log writes it.
CONTROL_ESCAPES = [
    ("\n", r"\n"),
    ("\r", r"\r"),
    ("\t", r"\t"),
    ("\x00", r"\x00"),
    ("\x0b", r"\x0b"),
    ("\x0c", r"\x0c"),
    ("\x1b", r"\x1b"),
    ("\x1c", r"\x1c"),
    ("\x1e", r"\x1e"),
    ("\x7f", r"\x7f"),
    ("\x85", r"\x85"),
    ("\x9f", r"\x9f"),
    ("\u2028", r"\u2028"),
    ("\u2029", r"\u2029"),
]


@pytest.mark.parametrize(("char", "escaped"), CONTROL_ESCAPES)
def test_text_line_escapes_control_characters_in_message_and_values(
    char: str, escaped: str
) -> None:
    record = logging.LogRecord(
        "service.images", logging.INFO, __file__, 1, "store %s failed", (f"a{char}b",), None
    )
    record.store_id = f"GHOST{char}FAKE"
    line = TextFormatter().format(record)
    assert line.splitlines() == [line]
    assert f": store a{escaped}b failed " in line
    assert line.endswith(f' store_id="GHOST{escaped}FAKE"')


def test_text_values_are_quoted_so_they_cannot_add_fields() -> None:
    record = _record(store_id='S1 level=error job_id=99 "x" \\', url="http://a.test/x.jpg", n=3)
    record.empty = ""
    line = TextFormatter().format(record)
    assert line.endswith(
        r' store_id="S1 level=error job_id=99 \"x\" \\" url=http://a.test/x.jpg n=3 empty=""'
    )


def test_text_traceback_keeps_its_lines_after_the_one_line_record() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = _record(store_id="a\nb")
        record.exc_info = sys.exc_info()
    first, *traceback = TextFormatter().format(record).splitlines()
    assert first.endswith(r'store_id="a\nb"')
    assert traceback[0] == "Traceback (most recent call last):"
    assert traceback[-1] == "ValueError: boom"


@pytest.mark.usefixtures("restore_root_logging")
@pytest.mark.parametrize("fmt", ["json", "text"])
def test_configure_logging_writes_at_the_configured_level(fmt: str) -> None:
    stream = io.StringIO()
    configure_logging("warning", fmt, stream)
    logging.getLogger("service.x").info("quiet", extra={"job_id": 1})
    logging.getLogger("service.x").warning("loud %d", 2, extra={"job_id": 3})
    stop_logging()  # drains the writer thread
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    if fmt == "json":
        entry = json.loads(lines[0])
        assert (entry["message"], entry["job_id"], entry["level"]) == ("loud 2", 3, "warning")
    else:
        assert lines[0].endswith("WARNING service.x: loud 2 job_id=3")


class BlockedStream:
    """A stderr whose reader stalls until ``release``: writes wait, lines are kept."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._open = threading.Event()

    def write(self, text: str) -> int:
        assert self._open.wait(timeout=30), "the stream was never released"
        self.lines.extend(text.splitlines())
        return len(text)

    def flush(self) -> None:
        pass

    def release(self) -> None:
        self._open.set()


@pytest.mark.usefixtures("restore_root_logging")
def test_a_blocked_log_stream_drops_records_past_the_limit_and_says_how_many() -> None:
    stream = BlockedStream()
    configure_logging("info", "json", stream, queue_limit=5)  # type: ignore[arg-type]
    log = logging.getLogger("service.x")
    for number in range(100):
        log.info("record %d", number)  # must return at once: the writer is stuck
    stream.release()
    records = logging.getLogger().handlers[0].queue  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    while records.qsize():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    log.warning("after")
    stop_logging()
    entries = [json.loads(line) for line in stream.lines]
    written = [entry for entry in entries if entry["message"].startswith("record ")]
    # At most the limit queued plus the one the writer held when the stream blocked.
    assert len(written) <= 6
    notice = entries[-2]
    assert (
        notice["message"] == f"dropped {100 - len(written)} log records: the log writer fell behind"
    )
    assert notice["dropped_records"] == 100 - len(written)
    assert notice["level"] == "warning"
    assert entries[-1]["message"] == "after"
