"""The service under test as a subprocess, and peak-RSS sampling of its process tree."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from bench.host import free_port, wait_http

__all__ = [
    "Profiler",
    "RssSampler",
    "ServiceProcess",
    "cpu_seconds",
    "loop_thread_cpu",
    "tree_cpu",
    "tree_rss",
]

REPO = Path(__file__).resolve().parent.parent
_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICKS = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as handle:
                found.extend(int(child) for child in handle.read().split())
        except OSError:
            continue
    return found


def _stat_cpu(path: str) -> float:
    try:
        with open(path) as handle:
            # Fields after the parenthesised command name; utime and stime are 14 and 15.
            fields = handle.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used so far, all its threads (0 if gone)."""
    return _stat_cpu(f"/proc/{pid}/stat")


def loop_thread_cpu(pid: int) -> float:
    """CPU seconds of the process's main thread alone: the service's event loop.

    The rest of the process's CPU is its helper threads: the SQLite writer, the
    process pool's feeder, the log writer.
    """
    # schedstat counts nanoseconds on the CPU; stat's clock ticks are too coarse for a short run.
    try:
        with open(f"/proc/{pid}/task/{pid}/schedstat") as handle:
            return int(handle.read().split()[0]) / 1e9
    except (OSError, IndexError, ValueError):
        return _stat_cpu(f"/proc/{pid}/task/{pid}/stat")


def _tree(root: int) -> list[int]:
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(_children(pid))
    return found


def tree_cpu(root: int) -> dict[int, float]:
    """CPU seconds of ``root`` and each live descendant, by pid."""
    return {pid: cpu_seconds(pid) for pid in _tree(root)}


def tree_rss(root: int) -> tuple[int, int]:
    """(summed resident bytes, process count) of ``root`` and all its descendants.

    Summing RSS counts pages shared between processes once per process, so it
    overstates the true footprint a little; it is the conservative figure.
    """
    total = processes = 0
    stack = [root]
    while stack:
        pid = stack.pop()
        try:
            with open(f"/proc/{pid}/statm") as handle:
                total += int(handle.read().split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            continue
        processes += 1
        stack.extend(_children(pid))
    return total, processes


class RssSampler:
    """Samples the trees' RSS every ``interval`` seconds in a thread; keeps the peaks.

    ``peak`` is the largest sum over every root's tree seen at one sample;
    ``peak_per_root`` the largest each tree reached on its own.
    """

    def __init__(self, roots: Sequence[int], interval: float = 0.05) -> None:
        self._roots = list(roots)
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self.peak = 0
        self.peak_processes = 0
        self.peak_per_root = [0] * len(self._roots)
        self.samples = 0

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _sample(self) -> None:
        trees = [tree_rss(root) for root in self._roots]
        rss, processes = sum(tree[0] for tree in trees), sum(tree[1] for tree in trees)
        self.samples += 1
        if rss > self.peak:
            self.peak, self.peak_processes = rss, processes
        for position, (tree, _) in enumerate(trees):
            self.peak_per_root[position] = max(self.peak_per_root[position], tree)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self._interval)


class ServiceProcess:
    """``python -m service`` from the working tree (or ``repo``) on a free loopback port."""

    def __init__(
        self, env: Mapping[str, str], stores: Path, log_path: Path, repo: Path = REPO
    ) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._repo = repo
        # A job store of its own beside the log, never the checkout's ./retail-pulse.db.
        database = f"sqlite:///{log_path.parent / f'jobs-{self.port}.db'}"
        self._env = {
            **os.environ,
            "RP_DATABASE_URL": database,
            **env,
            "PYTHONPATH": str(repo),
        }
        self._command = [
            sys.executable,
            "-m",
            "service",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--stores",
            str(stores),
        ]
        self._log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServiceProcess:
        with self._log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self._command,
                cwd=self._repo,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_http(f"{self.base_url}/healthz", time.monotonic() + 60, self.process)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        # SIGTERM is the service's graceful shutdown: it stops its own pool workers.
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.returncode != 0:
            print(f"bench: service exited with {process.returncode}", file=sys.stderr)


class Profiler:
    """py-spy sampling the service's main process for the duration, when asked for.

    Output is py-spy's "raw" collapsed stacks, one line per stack with its sample
    count, which ``python -m bench.topframes`` summarises. Profiling skews timings:
    figures from a profiled run are not benchmark results.
    """

    def __init__(self, pid: int, output: Path | None) -> None:
        self._pid = pid
        self._output = output
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Profiler:
        if self._output is None:
            return self
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self._output.parent.mkdir(parents=True, exist_ok=True)
        command = [py_spy, "record", "--pid", str(self._pid), "--rate", "200", "--nonblocking"]
        command += ["--format", "raw", "--output", str(self._output)]
        self._process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )
        time.sleep(0.5)  # let it attach before the workload starts
        return self

    def __exit__(self, *_: object) -> None:
        if self._process is None:
            return
        # py-spy writes its output when interrupted.
        self._process.send_signal(signal.SIGINT)
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
