"""The job store's schema: numbered SQL migrations per dialect, read from the package.

``migrations/<dialect>/NNNN_name.sql`` are applied in order, each in its own
transaction, and the number of the last one applied is recorded in the
database. A database whose number is higher than any file here was migrated by
newer code, and is refused rather than misread.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from service.jobs.store import StoreOpenError

__all__ = ["Migration", "SchemaError", "migrations", "newer_schema"]

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class SchemaError(StoreOpenError):
    """The database's schema cannot be used by this code; the message is one line."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations(dialect: str) -> list[Migration]:
    """Every migration of ``dialect`` ("sqlite" or "postgres"), in version order."""
    folder = resources.files("service.jobs").joinpath("migrations", dialect)
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), entry.name, entry.read_text(encoding="utf-8")))
    found.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in found]
    if versions != list(range(1, len(found) + 1)):
        raise SchemaError(f"{dialect} migrations are not numbered 1..n: {versions}")
    return found


def newer_schema(found: int, known: int) -> SchemaError:
    return SchemaError(
        f"the database schema is version {found}, newer than this code knows ({known}); "
        "run a newer Retail Pulse against it"
    )
