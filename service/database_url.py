"""The ``database_url`` setting: which job store to open, parsed once, and shown without secrets.

- ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``: one file, one process;
- ``postgresql://user[:password]@host[:port]/dbname`` (or ``postgres://``): shared by replicas;
- ``memory``: nothing kept across a restart (tests and benchmarks).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["DatabaseKind", "DatabaseUrl", "mask_password", "parse_database_url"]


class DatabaseKind(StrEnum):
    MEMORY = "memory"
    SQLITE = "sqlite"
    POSTGRESQL = "postgresql"


@dataclass(frozen=True, slots=True)
class DatabaseUrl:
    kind: DatabaseKind
    # The database file (SQLite) or the connection string (PostgreSQL, password included).
    path: Path | None = None
    dsn: str | None = None

    @property
    def durable(self) -> bool:
        return self.kind is not DatabaseKind.MEMORY

    def __str__(self) -> str:
        """The URL for logs and messages: never with its password."""
        if self.kind is DatabaseKind.SQLITE:
            return f"sqlite:///{self.path}"
        if self.kind is DatabaseKind.POSTGRESQL:
            return mask_password(self.dsn or "")
        return "memory"


# scheme://user:password@ : the password runs to the last "@" of the authority.
_PASSWORD = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@]*:)[^/?#]*@")


def mask_password(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    return _PASSWORD.sub(lambda match: f"{match['head']}***@", url)


def parse_database_url(text: str) -> DatabaseUrl:
    """Parse the setting; ``ValueError`` with a one-line reason (its text is safe to show)."""
    value = text.strip()
    if value == "memory":
        return DatabaseUrl(DatabaseKind.MEMORY)
    scheme, _, rest = value.partition("://")
    scheme = scheme.lower()
    if scheme == "sqlite":
        # sqlite:///relative.db has three slashes; a fourth makes the path absolute.
        if not rest.startswith("/") or len(rest) < 2:
            raise ValueError(
                "a SQLite URL is sqlite:///relative/path.db or sqlite:////absolute/path.db"
            )
        path = rest[1:]
        if "?" in path or "#" in path:
            raise ValueError("a SQLite URL takes no query or fragment")
        return DatabaseUrl(DatabaseKind.SQLITE, path=Path(path))
    if scheme in ("postgresql", "postgres"):
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            raise ValueError(f"not a valid PostgreSQL URL: {exc}") from None
        if not parts.hostname or not parts.path.strip("/"):
            raise ValueError("a PostgreSQL URL is postgresql://user[:password]@host[:port]/dbname")
        return DatabaseUrl(DatabaseKind.POSTGRESQL, dsn=value)
    shown = mask_password(value)
    raise ValueError(
        f"unknown database URL {shown!r}: use sqlite:///PATH, postgresql://... or memory"
    )
