"""`InMemorySessionStore`: the linear engine over plain dicts, for tests, demos and single processes."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Unpack

from turnkit.sessions.backend import StoredRecord
from turnkit.sessions.engine import LinearSessionStore, StoreOptions

__all__ = ["InMemorySessionStore", "MemoryBackend"]


class MemoryBackend:
    """Records, heads and logs in dicts. Every method runs without awaiting, so each one is atomic on
    the event loop: compare-and-set needs no lock."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], StoredRecord] = {}
        self.heads: dict[tuple[str, str], str] = {}
        self.logs: dict[tuple[str, str], list[str]] = {}
        self.leases: dict[tuple[str, str], tuple[str, float]] = {}

    async def get_record(self, tenant: str, key: str) -> StoredRecord | None:
        """The record stored under `key`, or None."""
        return self.records.get((tenant, key))

    async def put_record(
        self, tenant: str, key: str, data: str, *, expected_rev: int, head_of: str | None = None
    ) -> bool:
        """Store `data` if the record is still at `expected_rev`, and move the session head if asked."""
        current = self.records.get((tenant, key))
        if (current.rev if current else 0) != expected_rev:
            return False
        self.records[(tenant, key)] = StoredRecord(expected_rev + 1, data)
        if head_of is not None:
            self.heads[(tenant, head_of)] = key
        return True

    async def get_head(self, tenant: str, session_id: str) -> str | None:
        """The snapshot most recently created in the session, or None."""
        return self.heads.get((tenant, session_id))

    async def append_log(self, tenant: str, log_id: str, start: int, entries: Sequence[str]) -> bool:
        """Append to a log that holds exactly `start` entries."""
        log = self.logs.setdefault((tenant, log_id), [])
        if len(log) != start:
            return False
        log.extend(entries)
        return True

    async def read_log(self, tenant: str, log_id: str, start: int, end: int) -> list[str]:
        """Entries `start` to `end` of a log."""
        return self.logs.get((tenant, log_id), [])[start:end]

    async def try_lease(self, tenant: str, name: str, owner: str, ttl: float) -> bool:
        """Take or renew a lease unless another owner holds an unexpired one."""
        now = time.monotonic()
        held = self.leases.get((tenant, name))
        if held is not None and held[0] != owner and held[1] > now:
            return False
        self.leases[(tenant, name)] = (owner, now + ttl)
        return True

    async def release_lease(self, tenant: str, name: str, owner: str) -> None:
        """Drop the lease if `owner` holds it."""
        if self.leases.get((tenant, name), ("",))[0] == owner:
            del self.leases[(tenant, name)]

    def stored_bytes(self) -> int:
        """Characters held in records and logs (a measure of storage growth)."""
        return sum(len(r.data) for r in self.records.values()) + sum(
            len(e) for log in self.logs.values() for e in log
        )


class InMemorySessionStore(LinearSessionStore):
    """A session store in process memory: fast, lost on exit, invisible to other processes.

    Options are those of `LinearSessionStore`. Status watchers wake at once on every save.
    Store instances given the same `backend` share their data (as processes sharing a database
    would), which lets tests read through a cold cache.
    """

    def __init__(self, *, backend: MemoryBackend | None = None, **options: Unpack[StoreOptions]) -> None:
        super().__init__(backend or MemoryBackend(), **options)
        self.backend: MemoryBackend
