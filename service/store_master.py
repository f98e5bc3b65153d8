"""The store master: loaded once from CSV at startup, then looked up by store id."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Store", "StoreMaster", "StoreMasterError", "load_store_master"]

REQUIRED_COLUMNS = ("AreaCode", "StoreName", "StoreID")


class StoreMasterError(Exception):
    """The store master file is missing or malformed; the message is one line."""


@dataclass(frozen=True, slots=True)
class Store:
    store_id: str
    name: str
    area_code: str


class StoreMaster:
    """Read-only lookup of stores by id."""

    def __init__(self, stores: Mapping[str, Store]) -> None:
        self._stores = dict(stores)

    def __len__(self) -> int:
        return len(self._stores)

    def __contains__(self, store_id: object) -> bool:
        return store_id in self._stores

    def get(self, store_id: str) -> Store | None:
        return self._stores.get(store_id)


def load_store_master(path: str | Path) -> StoreMaster:
    """Parse a CSV with header ``AreaCode,StoreName,StoreID`` (names may hold quoted commas)."""
    path = Path(path)
    try:
        # utf-8-sig: spreadsheets often save the master with a byte-order mark.
        with path.open(newline="", encoding="utf-8-sig") as handle:
            return _parse(csv.reader(handle), str(path))
    except FileNotFoundError:
        raise StoreMasterError(f"store master not found: {path}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise StoreMasterError(f"cannot read store master {path}: {exc}") from None


def _parse(rows: Iterator[list[str]], source: str) -> StoreMaster:
    header = next(rows, None)
    if header is None:
        raise StoreMasterError(f"store master {source} is empty")
    header = [name.strip() for name in header]
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        raise StoreMasterError(
            f"store master {source} has header {','.join(header)!r}; "
            f"expected columns {','.join(REQUIRED_COLUMNS)}"
        )
    area_at, name_at, id_at = (header.index(name) for name in REQUIRED_COLUMNS)
    stores: dict[str, Store] = {}
    for line_number, row in enumerate(rows, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise StoreMasterError(
                f"store master {source} line {line_number}: "
                f"expected {len(header)} fields, found {len(row)}"
            )
        store_id = row[id_at].strip()
        if not store_id:
            raise StoreMasterError(f"store master {source} line {line_number}: empty StoreID")
        stores[store_id] = Store(store_id, row[name_at].strip(), row[area_at].strip())
    if not stores:
        raise StoreMasterError(f"store master {source} has no stores")
    return StoreMaster(stores)
