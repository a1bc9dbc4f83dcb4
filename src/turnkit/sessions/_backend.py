"""The storage seam: what a backend must provide for the linear engine to run on it.

A SQLite, PostgreSQL or Redis store is a `RecordBackend` plus a small `LinearSessionStore`
subclass (see `memory.py`). Each method is one atomic operation; the engine does everything else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from turnkit.errors import TurnkitError

__all__ = ["RecordBackend", "StoredRecord", "parent_gone"]


def parent_gone(key: str) -> TurnkitError:
    """The error of a save refused because the snapshot it continues from was deleted meanwhile."""
    return TurnkitError(
        "NOT_FOUND",
        f"snapshot {key!r}, which this snapshot continues from, no longer exists (its session was"
        " deleted or pruned while the turn ran); nothing was saved",
    )


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A record as a backend holds it: its revision (1 for a new record) and the engine's JSON text."""

    rev: int
    data: str


class RecordBackend(Protocol):
    """Raw per-tenant storage the engine runs on; the seam a SQLite, Postgres or Redis store implements.

    `tenant` is "" for the default tenant, otherwise a checked id; keys, session ids and log ids are
    arbitrary strings that must be stored exactly (encode them; never build paths or queries from them).
    """

    async def get_record(self, tenant: str, key: str) -> StoredRecord | None:
        """The record stored under `key`, or None."""
        ...

    async def put_record(
        self, tenant: str, key: str, data: str, *, expected_rev: int, head_of: str | None = None
    ) -> bool:
        """Store `data` at revision `expected_rev + 1` only if the current revision is `expected_rev`
        (0: no record yet); in the same atomic step make `key` the head of session `head_of`, if given.
        Return False, changing nothing, when the revision did not match.

        A backend with leases should also take `fence: tuple[str, str] | None = None` (a lease name and
        owner): then it writes only while that owner holds the lease, checked in the same atomic step,
        and raises ABORTED (`turnkit.sessions._lease.lease_lost`) otherwise. The engine passes it only
        to backends whose `put_record` has that parameter.

        A backend should also take `requires: str | None = None` (used with `expected_rev=0`): then
        it creates the record only if record `requires` (the new snapshot's parent) still exists,
        checked in the same atomic step, and raises NOT_FOUND (`parent_gone`) otherwise. This is what
        keeps a turn that continues a deleted session from writing its history back."""
        ...

    async def get_head(self, tenant: str, session_id: str) -> str | None:
        """The key last made head of this session, or None."""
        ...

    async def append_log(self, tenant: str, log_id: str, start: int, entries: Sequence[str]) -> bool:
        """Append `entries` (one-line JSON texts) only if the log holds exactly `start` entries
        (0: a log that does not exist yet). Return False, changing nothing, otherwise."""
        ...

    async def read_log(self, tenant: str, log_id: str, start: int, end: int) -> list[str]:
        """Entries `start` to `end` (exclusive) of a log; fewer if the log is shorter."""
        ...
