"""A measure-batch function for pool workers that obeys commands hidden in image bytes.

Tests serve these bytes as "images" so a real worker does something
deterministic that the test can act on, such as waiting to be killed:

  b"hold-once <pid file>"    write the worker's pid and wait (to be killed); if the
                             pid file already exists, answer 1x1 instead
  b"hold-always <pid file>"  write the worker's pid to "<pid file>.<n>" and wait
  b"wait-for <path>"         keep the worker busy until ``path`` exists, then answer 2x2
  b"count <path>"            append a line to ``path`` (one per attempt), then answer 4x4
  b"fails-in-company"        make the whole call raise unless it is alone, then answer 3x3
Anything else is measured by the real code.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from service.outcomes import FailureKind, ImageOutcome
from service.pipeline import imaging
from service.pipeline.imaging import MeasureOptions

__all__ = [
    "FAILS_IN_COMPANY",
    "count",
    "hold_always",
    "hold_once",
    "measure_batch",
    "wait_for",
]

FAILS_IN_COMPANY = b"fails-in-company"

# A held worker gives up after this long, so a test that fails to kill it cannot hang.
HOLD_LIMIT = 60.0


def hold_once(pid_file: Path) -> bytes:
    return f"hold-once {pid_file}".encode()


def hold_always(pid_file: Path) -> bytes:
    return f"hold-always {pid_file}".encode()


def wait_for(path: Path) -> bytes:
    return f"wait-for {path}".encode()


def count(path: Path) -> bytes:
    return f"count {path}".encode()


def _write_pid(path: Path) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(str(os.getpid()))
    temporary.rename(path)  # atomic: a reader never sees a half-written pid


def _hold() -> ImageOutcome:
    deadline = time.monotonic() + HOLD_LIMIT
    while time.monotonic() < deadline:
        time.sleep(0.05)
    return ImageOutcome.failed("held worker was never killed", FailureKind.INTERNAL)


def _run(data: bytes, options: MeasureOptions) -> ImageOutcome:
    command, _, argument = data.partition(b" ")
    if command == b"hold-once":
        pid_file = Path(argument.decode())
        if pid_file.exists():
            return ImageOutcome.measured(1, 1)
        _write_pid(pid_file)
        return _hold()
    if command == b"hold-always":
        prefix = argument.decode()
        attempt = 1
        while Path(f"{prefix}.{attempt}").exists():
            attempt += 1
        _write_pid(Path(f"{prefix}.{attempt}"))
        return _hold()
    if command == b"wait-for":
        gate = Path(argument.decode())
        deadline = time.monotonic() + HOLD_LIMIT
        while not gate.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        return ImageOutcome.measured(2, 2)
    if command == b"count":
        with Path(argument.decode()).open("a") as attempts:
            attempts.write("measured\n")
        return ImageOutcome.measured(4, 4)
    if data == FAILS_IN_COMPANY:
        return ImageOutcome.measured(3, 3)
    return imaging.measure_image(data, options)


def _ignore(index: int) -> None:
    pass


def measure_batch(
    images: list[bytes], options: MeasureOptions, starting: Callable[[int], None] = _ignore
) -> list[ImageOutcome]:
    if FAILS_IN_COMPANY in images and len(images) > 1:
        raise ValueError("the whole call fails, as an unpicklable result would")
    results: list[ImageOutcome] = []
    for index, data in enumerate(images):
        starting(index)  # as the real batch function does: the deadline counts from here
        results.append(_run(data, options))
    return results
