"""CI: run schemathesis against a live service on 127.0.0.1 (``make schemathesis``).

No fuzzed job may reach the network. Two independent guards:
1. ``scripts/schemathesis_hooks.py`` rewrites every submitted image URL to a PNG the
   service itself serves on 127.0.0.1.
2. As root with ``unshare`` available (CI is), the run re-executes itself in a
   fresh network namespace that has only a loopback interface, so even a URL the
   hook missed cannot leave the machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IN_NAMESPACE = "RP_SCHEMATHESIS_NETNS"
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    ]
)
MAX_EXAMPLES = os.environ.get("RP_SCHEMATHESIS_EXAMPLES", "200")


def reexec_in_network_namespace() -> int | None:
    """Run this script again inside `unshare --net`; None when that is not possible."""
    if os.environ.get(IN_NAMESPACE) or os.geteuid() != 0 or not shutil.which("unshare"):
        return None
    probe = subprocess.run(
        ["unshare", "--net", "sh", "-c", "ip link set lo up"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        return None
    command = f'ip link set lo up && exec "{sys.executable}" "{Path(__file__)}"'
    env = {**os.environ, IN_NAMESPACE: "1"}
    return subprocess.run(
        ["unshare", "--net", "sh", "-c", command], env=env, check=False
    ).returncode


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_ready(base: str, server: subprocess.Popen[bytes], within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"service exited early with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"service not ready within {within}s")


def report_jobs(base: str) -> None:
    """Say how many fuzzed jobs got past validation, so a run that never does is visible."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(("retail_pulse_jobs_", "retail_pulse_images_processed")) or (
                line.startswith("retail_pulse_image_failures_total") and not line.endswith(" 0.0")
            ):
                print(f"schemathesis: service metrics: {line}")


def main() -> int:
    code = reexec_in_network_namespace()
    if code is not None:
        return code
    isolation = "loopback-only network namespace" if os.environ.get(IN_NAMESPACE) else "none"
    print(f"schemathesis: network isolation: {isolation}; image URLs rewritten to loopback")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # The default kind of job store, in a file of this run's own.
    scratch = tempfile.mkdtemp(prefix="rp-schemathesis-")
    server_env = {
        **os.environ,
        "RP_DATABASE_URL": f"sqlite:///{scratch}/jobs.db",
        "RP_GPU_DELAY_MIN": "0",
        "RP_GPU_DELAY_MAX": "0",
        "RP_WORKERS": "1",
        "RP_LOG_LEVEL": "warning",
        "RP_CONNECT_TIMEOUT": "1",
        "RP_TOTAL_TIMEOUT": "3",
        # The only image host is the service itself on 127.0.0.1; an address policy
        # that refuses loopback by default would leave the measuring path unfuzzed.
        # (Ignored where the setting does not exist.)
        "RP_ALLOW_PRIVATE_NETWORKS": "true",
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--stores",
            str(ROOT / "stores.csv"),
        ],
        cwd=ROOT,
        env=server_env,
    )
    try:
        wait_ready(base, server)
        run_env = {
            **os.environ,
            "SCHEMATHESIS_HOOKS": "schemathesis_hooks",
            "PYTHONPATH": str(ROOT / "scripts"),
            "RP_SCHEMATHESIS_IMAGE_URL": f"{base}/api/docs/assets/favicon-32x32.png",
        }
        result = subprocess.run(
            [
                str(Path(sys.executable).with_name("schemathesis")),
                "run",
                f"{base}/api/openapi.json",
                "--checks",
                CHECKS,
                "--phases",
                "examples,coverage,fuzzing",
                "--mode",
                "all",
                "--max-examples",
                MAX_EXAMPLES,
                # One worker: concurrent ast.parse in hypothesis (from threads) trips a
                # CPython 3.11.7 bug, "AST constructor recursion depth mismatch".
                "--workers",
                "1",
                "--generation-database",
                "none",
                "--request-timeout",
                "10",
                # GET /api/events is a live stream that never ends, so a call to it could
                # only time out. Its per-job sibling stays in: it ends once the job has
                # (at once for a finished job, and a 404 for an unknown one).
                "--exclude-path",
                "/api/events",
                "--no-color",
            ],
            cwd=ROOT,
            env=run_env,
            check=False,
        )
        report_jobs(base)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server_code = server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server_code = server.wait()
        shutil.rmtree(scratch, ignore_errors=True)
    if server_code != 0:
        print(f"schemathesis: service exited with {server_code} after the run", file=sys.stderr)
        return 1
    return result.returncode


if __name__ == "__main__":
    raise SystemExit(main())
