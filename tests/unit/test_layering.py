"""Imports point down the wings: api -> jobs -> pipeline -> net, all standing on the ground."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVICE = Path(__file__).resolve().parents[2] / "service"

# What each part of service/ may import from service/ (beyond itself).
ALLOWED: dict[str, set[str]] = {
    "ground": {"ground"},
    "net": {"ground"},
    "pipeline": {"ground", "net"},
    "jobs": {"ground", "net", "pipeline"},
    "api": {"ground", "net", "pipeline", "jobs"},
    "root": {"ground", "net", "pipeline", "jobs", "api", "root"},
}
# The composition root and the entry points; everything else at the top is the ground.
ROOT_MODULES = {"app", "cli", "__main__"}
WINGS = {"api", "jobs", "pipeline", "net"}


def part_of(module: str) -> str:
    """'service.jobs.manager' -> 'jobs'; 'service.config' -> 'ground'; 'service.app' -> 'root'."""
    name = module.split(".")[1] if module.count(".") else ""
    if name in WINGS:
        return name
    return "root" if name in ROOT_MODULES else "ground"


def service_imports(path: Path) -> list[str]:
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("service"):
            if node.module == "service":
                found += [f"service.{alias.name}" for alias in node.names]
            else:
                found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.startswith("service.")]
    return found


def all_modules() -> list[Path]:
    return sorted(SERVICE.rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(SERVICE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.parametrize("path", all_modules(), ids=module_name)
def test_imports_point_down(path: Path) -> None:
    here = part_of(module_name(path))
    upward = [
        imported
        for imported in service_imports(path)
        if part_of(imported) not in ALLOWED[here] and part_of(imported) != here
    ]
    assert not upward, f"{module_name(path)} ({here}) imports {upward} from above"


@pytest.mark.parametrize("path", sorted((SERVICE / "jobs").glob("*.py")), ids=lambda p: p.name)
def test_the_job_wing_knows_no_http_server(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            assert not node.module.startswith("aiohttp"), f"{path.name} imports {node.module}"
        if isinstance(node, ast.Import):
            assert not any(alias.name.startswith("aiohttp") for alias in node.names)


def test_the_ground_and_the_measurement_import_no_asyncio() -> None:
    # Pool workers import these; they must stay plain synchronous code.
    for name in ("outcomes.py", "pipeline/imaging.py", "pipeline/jpeg_scans.py"):
        source = (SERVICE / name).read_text(encoding="utf-8")
        assert "import asyncio" not in source, name


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    # The rule itself: a net module importing the job wing is caught.
    bad = tmp_path / "bad.py"
    bad.write_text("from service.jobs.manager import JobManager\n", encoding="utf-8")
    assert part_of(service_imports(bad)[0]) not in ALLOWED["net"]
