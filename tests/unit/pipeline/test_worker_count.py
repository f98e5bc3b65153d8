"""How many pool workers the default (workers = 0) starts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.pipeline.measure_pool import default_worker_count

AFFINITY = len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [
        ("max 100000\n", AFFINITY),
        ("100000 100000\n", 1),
        ("150000 100000\n", min(AFFINITY, 2)),
        ("50000 100000\n", 1),
        ("garbage\n", AFFINITY),
    ],
)
def test_cgroup_quota_caps_the_worker_count(tmp_path: Path, cpu_max: str, expected: int) -> None:
    quota = tmp_path / "cpu.max"
    quota.write_text(cpu_max)
    assert default_worker_count(quota) == expected


def test_without_a_cgroup_file_the_affinity_decides(tmp_path: Path) -> None:
    assert default_worker_count(tmp_path / "absent") == AFFINITY
