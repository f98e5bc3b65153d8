"""Pool processes that die with their parent: ``PR_SET_PDEATHSIG`` through ctypes (Linux).

A pool worker's parent is the forkserver, and the forkserver's is the service.
Each holds the other's pipes open, so when the service is SIGKILLed (or
OOM-killed, or segfaults) neither would ever see an EOF and both would live on.
With the parent-death signal, the kernel kills the forkserver when the service
dies, and each worker when the forkserver dies; the resource tracker then sees
the last writer of its pipe go and exits by itself.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal

__all__ = ["die_with_parent"]

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int | None) -> bool:
    """Ask the kernel for SIGKILL when this process's parent dies; False where it cannot.

    ``parent`` is the pid the parent had before this process was forked. If the
    parent is already gone (the signal is only sent for a death after the call),
    this process kills itself.
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False  # not Linux, or no prctl
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)
    return True
