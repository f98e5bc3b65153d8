"""Running the real service as a child process, and finding its descendants."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "ServiceProcess",
    "children",
    "descendants",
    "free_port",
    "kill_quietly",
    "pid_alive",
    "wait_until_gone",
]

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _children_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces or parentheses; fields follow the last ')'.
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    return children


def children(pid: int) -> set[int]:
    """Live processes whose parent is ``pid``."""
    return set(_children_by_parent().get(pid, []))


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid``, read from /proc."""
    children = _children_by_parent()
    found: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def kill_quietly(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


async def wait_until_gone(pids: set[int], *, within: float = 15.0) -> set[int]:
    """Poll until none of ``pids`` is alive; return those still alive at the deadline."""
    deadline = time.monotonic() + within
    while True:
        left = {pid for pid in pids if pid_alive(pid)}
        if not left or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.05)


def _with_open_files(limits: tuple[int, int], command: list[str]) -> list[str]:
    # A small Python sets the limit and execs the command, which inherits it; unlike a
    # preexec_fn, it is safe however many threads the test process runs.
    setup = (
        "import os, resource, sys; "
        f"resource.setrlimit(resource.RLIMIT_NOFILE, {limits!r}); "
        "os.execv(sys.argv[1], sys.argv[1:])"
    )
    return [sys.executable, "-c", setup, *command]


class ServiceProcess:
    """``python -m service`` on a free loopback port, with RP_* settings from ``env``.

    ``open_files`` is the (soft, hard) RLIMIT_NOFILE the service starts with.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        args: list[str] | None = None,
        *,
        open_files: tuple[int, int] | None = None,
    ) -> None:
        self.port = free_port()
        full_env = {key: value for key, value in os.environ.items() if not key.startswith("RP_")}
        full_env.update({"RP_HOST": "127.0.0.1", "RP_PORT": str(self.port)})
        # Test image hosts are on loopback, which the address policy refuses by default.
        full_env["RP_ALLOW_PRIVATE_NETWORKS"] = "true"
        # A job store of its own, never the checkout's ./retail-pulse.db.
        self.scratch = Path(tempfile.mkdtemp(prefix="rp-service-"))
        full_env["RP_DATABASE_URL"] = f"sqlite:///{self.scratch / 'jobs.db'}"
        full_env.update(env)
        command = [sys.executable, "-m", "service", *(args or [])]
        self.process = subprocess.Popen(
            command if open_files is None else _with_open_files(open_files, command),
            cwd=REPO_ROOT,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # Its own process group, so kill() can take the pool workers down with it.
            start_new_session=True,
        )
        self.base_url = f"http://127.0.0.1:{self.port}"

    def wait_healthy(self, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                _, stderr = self.kill()  # its workers may still hold the pipes open
                raise AssertionError(f"service exited early: {stderr}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/healthz", timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        raise AssertionError("service did not become healthy")

    def stop(self, within: float = 30.0) -> tuple[int, str, str]:
        """Wait for exit (after a signal was sent); return (code, stdout, stderr)."""
        stdout, stderr = self.process.communicate(timeout=within)
        return self.process.returncode, stdout, stderr

    def kill(self) -> tuple[str, str]:
        """Kill the service and everything it started; never hangs on their pipes."""
        # The forkserver and workers inherit stdout/stderr: unless they die too,
        # communicate() would wait for pipes they keep open.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        stdout, stderr = self.process.communicate(timeout=30)
        return stdout, stderr
