"""The decode deadline's slot table and the watchdog's verdicts, with a clock the test sets."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys

import pytest

from service.pipeline.watchdog import (
    SlotTable,
    Verdict,
    Watchdog,
    WorkerState,
    format_seconds,
    is_stopped,
)

CONTEXT = multiprocessing.get_context("forkserver")


def test_a_worker_publishes_each_image_of_its_batch_then_clears() -> None:
    table = SlotTable(CONTEXT, 2)
    slot = table.claim(4242)
    assert slot is not None
    assert list(table.states()) == [WorkerState(4242, 0, 0.0)]

    slot.first_token = 100
    slot.begin(0)
    first = next(table.states())
    slot.begin(3)
    (state,) = table.states()
    assert (state.pid, state.token) == (4242, 103)
    assert state.started >= first.started > 0

    slot.clear()
    assert next(table.states()).token == 0


def test_slots_are_claimed_once_each() -> None:
    table = SlotTable(CONTEXT, 2)
    assert table.claim(1) is not None
    assert table.claim(2) is not None
    assert table.claim(3) is None
    assert [state.pid for state in table.states()] == [1, 2]


def _table(*busy: tuple[int, int, float]) -> SlotTable:
    """A table whose workers (pid, token, started at) are on the given images."""
    table = SlotTable(CONTEXT, len(busy))
    for pid, token, started in busy:
        slot = table.claim(pid)
        assert slot is not None
        slot.first_token = token
        slot.begin(0)
        # Back-date the start: the verdicts below run on a clock the test sets.
        slot._cells[slot._started] = started
        if not token:
            slot.clear()
    return table


def test_an_image_past_the_deadline_on_a_running_worker_is_to_blame() -> None:
    watchdog = Watchdog(10.0, stopped=lambda pid: False)
    table = _table((11, 7, 100.0), (12, 9, 105.0), (13, 0, 50.0))
    assert watchdog.inspect(table, now=110.0) == []  # at the deadline, not past it
    assert watchdog.inspect(table, now=110.1) == [Verdict(11, 7, overran=True)]
    assert watchdog.inspect(table, now=115.1) == [
        Verdict(11, 7, overran=True),
        Verdict(12, 9, overran=True),
    ]


def test_a_stopped_worker_is_killed_after_the_deadline_and_nothing_is_blamed() -> None:
    stopped = {21, 22}
    watchdog = Watchdog(10.0, stopped=lambda pid: pid in stopped)
    # 21 is stopped on an image; 22 is stopped between batches.
    table = _table((21, 5, 100.0), (22, 0, 0.0))
    assert watchdog.inspect(table, now=101.0) == []  # 22 first seen stopped now
    assert watchdog.inspect(table, now=110.5) == [Verdict(21, 5, overran=False)]
    assert watchdog.inspect(table, now=111.5) == [
        Verdict(21, 5, overran=False),
        Verdict(22, 0, overran=False),
    ]


def test_a_worker_that_was_stopped_and_continued_starts_over() -> None:
    stopped = {31}
    watchdog = Watchdog(10.0, stopped=lambda pid: pid in stopped)
    table = _table((31, 0, 0.0))
    assert watchdog.inspect(table, now=100.0) == []
    stopped.clear()
    assert watchdog.inspect(table, now=105.0) == []
    stopped.add(31)
    assert watchdog.inspect(table, now=111.0) == []  # stopped again at 111, not since 100
    assert watchdog.inspect(table, now=121.5) == [Verdict(31, 0, overran=False)]


def test_is_stopped_reads_the_state_of_a_real_process() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert not is_stopped(child.pid)
        os.kill(child.pid, signal.SIGSTOP)
        # The kernel stops it before kill() returns for a process on another CPU only
        # eventually; wait for the state to show.
        child_stopped = os.waitpid(child.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(child_stopped[1])
        assert is_stopped(child.pid)
    finally:
        child.kill()
        child.wait()
    assert not is_stopped(child.pid)  # gone


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (10.0, "10 s"),
        (2.5, "2.5 s"),
        (0.25, "0.25 s"),
        (1.0, "1 s"),
        (120.0, "120 s"),
        (0.0004, "0.0004 s"),
    ],
)
def test_the_limit_reads_as_a_person_would_write_it(seconds: float, shown: str) -> None:
    assert format_seconds(seconds) == shown
