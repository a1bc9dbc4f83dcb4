"""The PostgreSQL store in the contract, lease and conformance suites: one fresh schema per test.

`store_case(tmp_path)` opens stores over a schema named `tk_test_<unix time>_<pid>_<n>`, one per
`tmp_path` (so per test, as the file store's directory is). A `StoreCase` has no teardown hook, so
schemas are dropped as soon as the process moves on to a test with another `tmp_path` (tests run one
at a time per process, also under xdist), the last one at exit, and any left by a crashed run once
they are an hour old (at the first use in a later run; younger ones may belong to a run in progress).
Stores a test leaves open close themselves when the test's event loop ends.

`stored_bytes()` is the sum of `octet_length` of the stored record data and log entries: what the
engine asked to keep, as the store encodes it (compressed when that is shorter). `pg_total_relation_size` would add indexes, page headers, free space and TOAST
compression, and grows in 8 KiB pages, so the growth of one write could not be told from it; the
linearity property under test is about what is stored, not how PostgreSQL lays it out.

The server is `TURNKIT_TEST_POSTGRES` (default `postgresql://127.0.0.1:5432/test`); when it is down
the tests skip (fail in CI), through `require_service`.
"""

from __future__ import annotations

import atexit
import itertools
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from conftest import require_service

if TYPE_CHECKING:
    import psycopg

    from test_store_contract import StoreCase

DSN = os.environ.get("TURNKIT_TEST_POSTGRES", "postgresql://127.0.0.1:5432/test")
PREFIX = "tk_test_"
STALE_AFTER = 3600.0  # seconds: an older test schema belongs to a run that is over


def require_postgres() -> None:
    """Skip (or fail in CI) when the test server is not reachable."""
    parts = urlsplit(DSN)
    require_service("PostgreSQL", parts.hostname or "127.0.0.1", parts.port or 5432)


class SchemaRegistry:
    """The test schemas of this process, and one autocommit admin connection to make and drop them."""

    def __init__(self) -> None:
        self.by_path: dict[Path, str] = {}
        self.counter = itertools.count(1)
        self.conn: psycopg.Connection[Any] | None = None

    def admin(self) -> psycopg.Connection[Any]:
        """The admin connection; the first one also sweeps schemas left by crashed runs."""
        import psycopg

        if self.conn is None or self.conn.closed:
            self.conn = psycopg.connect(DSN, autocommit=True)
            self.conn.execute("SET lock_timeout = '5s'")
            atexit.register(self.drop_all)
            self.sweep()
        return self.conn

    def for_path(self, tmp_path: Path) -> str:
        """The schema of one test's `tmp_path`; a new path means the previous tests are over."""
        if tmp_path not in self.by_path:
            self.admin()
            for old in list(self.by_path):
                self.drop(self.by_path.pop(old))
            self.by_path[tmp_path] = f"{PREFIX}{int(time.time())}_{os.getpid()}_{next(self.counter)}"
        return self.by_path[tmp_path]

    def drop(self, schema: str) -> None:
        """Drop a schema with everything in it; on failure leave it to a later sweep."""
        import psycopg
        from psycopg import sql

        try:
            self.admin().execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        except psycopg.Error as exc:
            print(f"could not drop test schema {schema}: {exc}")

    def sweep(self) -> None:
        """Drop the test schemas that are older than `STALE_AFTER`."""
        assert self.conn is not None
        rows = self.conn.execute(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)", (PREFIX,)
        ).fetchall()
        for (name,) in rows:
            born = name[len(PREFIX) :].split("_", 1)[0]
            if born.isdigit() and time.time() - int(born) > STALE_AFTER:
                self.drop(name)

    def drop_all(self) -> None:
        """Drop this process's schemas and close the admin connection (at exit)."""
        while self.by_path:
            self.drop(self.by_path.popitem()[1])
        if self.conn is not None:
            self.conn.close()

    def stored_bytes(self, schema: str) -> int:
        """Bytes of record data and log entries held in a schema (0 before its tables exist)."""
        from psycopg import sql

        conn = self.admin()
        if conn.execute("SELECT to_regclass(%s)", (f"{schema}.logs",)).fetchone() == (None,):
            return 0
        query = sql.SQL(
            "SELECT (SELECT coalesce(sum(octet_length(data)), 0) FROM {})"
            " + (SELECT coalesce(sum(octet_length(entry)), 0) FROM {})"
        ).format(sql.Identifier(schema, "records"), sql.Identifier(schema, "logs"))
        row = conn.execute(query).fetchone()
        return 0 if row is None else int(row[0])


SCHEMAS = SchemaRegistry()


def store_case(tmp_path: Path) -> StoreCase:
    """Stores over this test's own schema (a new instance, with a cold cache, per `open`)."""
    from test_store_contract import StoreCase
    from turnkit.sessions.postgres import PostgresSessionStore

    require_postgres()
    schema = SCHEMAS.for_path(tmp_path)
    return StoreCase(
        lambda **options: PostgresSessionStore(DSN, schema=schema, **options),
        lambda: SCHEMAS.stored_bytes(schema),
        f"{DSN}?schema={schema}",
    )
