"""PR_SET_PDEATHSIG through ctypes, tried in real child processes (never in the test process)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from tests.support.processes import REPO_ROOT


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_a_child_whose_parent_is_already_gone_kills_itself() -> None:
    # Its real parent is this process, not the pid it was told: as if the parent had
    # died between its fork and the prctl call.
    result = _python(
        "from service.pipeline.parent_death import die_with_parent;"
        f"die_with_parent({os.getpid() + 1_000_000}); print('still here')"
    )
    assert result.returncode == -signal.SIGKILL
    assert "still here" not in result.stdout


def test_a_child_whose_parent_is_as_expected_gets_the_signal_set_and_lives_on() -> None:
    # /proc/self/status has no field for it; prctl(PR_GET_PDEATHSIG) reads it back.
    result = _python(
        "import ctypes, ctypes.util; from service.pipeline.parent_death import die_with_parent;"
        f"print(die_with_parent({os.getpid()})); libc = ctypes.CDLL(ctypes.util.find_library('c'));"
        "value = ctypes.c_int(); libc.prctl(2, ctypes.byref(value), 0, 0, 0); print(value.value)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", str(int(signal.SIGKILL))]


def test_the_forkserver_preload_does_nothing_anywhere_else() -> None:
    result = _python(
        "import ctypes, ctypes.util; import service.pipeline.forkserver_preload as preload;"
        "libc = ctypes.CDLL(ctypes.util.find_library('c')); value = ctypes.c_int();"
        "libc.prctl(2, ctypes.byref(value), 0, 0, 0); print(preload.FORKSERVER_PID, value.value)"
    )
    assert result.stdout.split() == ["None", "0"], result.stderr
