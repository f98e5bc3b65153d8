"""Summarise py-spy raw (collapsed) stacks: ``python -m bench.topframes FILE [N]``.

Prints the top frames by self time (the leaf of each stack) and by total time
(any position), as shares of all samples, with idle event-loop waits counted
apart so the busy share is visible.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

__all__ = ["main", "summarise"]

# Leaf frames that mean "the event loop was waiting for work", not busy.
IDLE_MARKERS = ("select (selectors.py", "poll (selectors.py", "run_once (uvloop", "_run_once")


def summarise(path: Path, top: int = 15) -> str:
    self_time: Counter[str] = Counter()
    total_time: Counter[str] = Counter()
    samples = idle = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame for frame in stack.split(";") if not frame.startswith("process ")]
        if not frames:
            continue
        samples += count
        leaf = frames[-1]
        if any(marker in leaf for marker in IDLE_MARKERS[:2]):
            idle += count
        self_time[leaf] += count
        for frame in set(frames):
            total_time[frame] += count
    lines = [f"{path.name}: {samples} samples, {100 * idle / max(samples, 1):.0f}% idle in select"]
    lines.append("-- self --")
    lines += [f"{100 * n / samples:5.1f}%  {frame}" for frame, n in self_time.most_common(top)]
    lines.append("-- total --")
    lines += [f"{100 * n / samples:5.1f}%  {frame}" for frame, n in total_time.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    top = int(argv[1]) if len(argv) > 1 else 15
    print(summarise(Path(argv[0]), top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
