"""The SQLite store's entry in the contract, lease, conformance and multi-process suites."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

from turnkit.sessions._sqlite import SqliteSessionStore

if TYPE_CHECKING:
    from test_store_contract import StoreCase


# Without dbstat (SQLite builds may leave it out): what the rows hold, keys and values alike.
_ROW_BYTES = (
    "SELECT (SELECT coalesce(sum(length(CAST(tenant || key AS BLOB)) + length(data) + 8), 0) FROM records)"
    " + (SELECT coalesce(sum(length(CAST(tenant || session || key AS BLOB))), 0) FROM heads)"
    " + (SELECT coalesce(sum(length(CAST(tenant || log AS BLOB)) + length(entry) + 8), 0) FROM logs)"
)


def used_bytes(path: Path) -> int:
    """Bytes the database's pages hold (WAL included: a reader sees committed frames), free space not.

    Whole pages (`page_count * page_size`) would measure the file, but grow in 4 KiB steps, which
    hides whether one write costs O(turn); `dbstat` counts every used byte of every page instead.
    """
    if not path.exists():
        return 0
    conn = sqlite3.connect(path)
    try:
        try:
            used = conn.execute("SELECT sum(pgsize - unused) FROM dbstat").fetchone()[0]
        except sqlite3.OperationalError:  # no dbstat in this SQLite
            used = conn.execute(_ROW_BYTES).fetchone()[0]
        return int(used or 0)
    finally:
        conn.close()


def store_case(tmp_path: Path) -> StoreCase:
    """Store instances over one database file; `url` opens the same file from another process.

    The suites never close the stores they open: each one's connection and worker thread end when
    the store is garbage.
    """
    from test_store_contract import StoreCase  # here: that module imports this one

    path = tmp_path / "sessions.db"

    def open_store(**options: Any) -> SqliteSessionStore:
        return SqliteSessionStore(path, **options)

    return StoreCase(open_store, lambda: used_bytes(path), f"sqlite:{path}")
