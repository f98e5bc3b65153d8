"""Check a built wheel holds every file of the ``service`` package and nothing else.

``python scripts/check_wheel_contents.py WHEEL SOURCE_DIR``: every file under
SOURCE_DIR/service (code and any package data) must be in the wheel, and the wheel must
hold no top-level package but ``service`` (no tests, scripts or bench code).
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

__all__ = ["main", "problems"]

PACKAGE = "service"


def problems(wheel: Path, source: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    wanted = {
        path.relative_to(source).as_posix()
        for path in (source / PACKAGE).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    found: list[str] = [f"missing from the wheel: {name}" for name in sorted(wanted - names)]
    tops = {name.split("/", 1)[0] for name in names}
    extra = sorted(top for top in tops if top != PACKAGE and not top.endswith(".dist-info"))
    found.extend(f"unexpected in the wheel: {top}/" for top in extra)
    return found


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    wheel, source = Path(sys.argv[1]), Path(sys.argv[2])
    found = problems(wheel, source)
    for line in found:
        print(f"wheel-check: {line}", file=sys.stderr)
    if not found:
        print(f"wheel-check: {wheel.name} holds all of {PACKAGE}/ and nothing else")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
