"""Imported by the forkserver alone (``set_forkserver_preload``): it dies with the service.

The forkserver is the service's child, so the parent-death signal set here
kills it when the service dies. A service that died before this line leaves a
forkserver with no children yet: it sees the EOF on its "alive" pipe and exits
by itself, so no pid check is needed here.

Pool workers are forked from the forkserver and inherit this module:
``FORKSERVER_PID`` tells them their parent's pid from before the fork.
"""

from __future__ import annotations

import multiprocessing
import os
import sys

from service.pipeline.parent_death import die_with_parent

__all__ = ["FORKSERVER_PID"]

# Any other importer (a test, a linter) must not tie itself to its own parent.
# (A pool worker has a parent process object; the forkserver, started with -c, has none.)
_IN_FORKSERVER = multiprocessing.parent_process() is None and any(
    "multiprocessing.forkserver import main" in arg for arg in sys.orig_argv
)

FORKSERVER_PID: int | None = os.getpid() if _IN_FORKSERVER else None

if _IN_FORKSERVER:
    die_with_parent(None)
