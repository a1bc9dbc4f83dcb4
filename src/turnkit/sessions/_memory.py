"""`InMemorySessionStore`: the linear engine over plain dicts, for tests, demos and single processes."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Unpack

from turnkit.sessions._backend import StoredRecord, parent_gone
from turnkit.sessions._engine import LinearSessionStore, StoreOptions
from turnkit.sessions._lease import lease_lost
from turnkit.sessions._listing import first_after

__all__ = ["InMemorySessionStore", "MemoryBackend"]


class MemoryBackend:
    """Records, heads and logs in dicts. Every method runs without awaiting, so each one is atomic on
    the event loop: compare-and-set needs no lock."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], StoredRecord] = {}
        self.heads: dict[tuple[str, str], str] = {}
        self.logs: dict[tuple[str, str], list[str]] = {}
        self.leases: dict[tuple[str, str], tuple[str, float]] = {}
        # (tenant, session) -> keys of its records (spilled states included), for `scan_session`
        self.session_keys: dict[tuple[str, str], set[str]] = {}
        self.session_of: dict[tuple[str, str], str] = {}  # (tenant, key) -> its session
        self.epoch = uuid.uuid4().hex

    async def get_record(self, tenant: str, key: str) -> StoredRecord | None:
        """The record stored under `key`, or None."""
        return self.records.get((tenant, key))

    async def put_record(
        self,
        tenant: str,
        key: str,
        data: str,
        *,
        expected_rev: int,
        head_of: str | None = None,
        fence: tuple[str, str] | None = None,
        requires: str | None = None,
    ) -> bool:
        """Store `data` if the record is still at `expected_rev` (and, with a `fence` (lease name,
        owner), only while that owner holds the lease; with `requires`, only while that record
        exists), and move the session head if asked."""
        if fence is not None and self.leases.get((tenant, fence[0]), ("",))[0] != fence[1]:
            raise lease_lost(fence[0])
        if requires is not None and (tenant, requires) not in self.records:
            raise parent_gone(requires)
        current = self.records.get((tenant, key))
        if (current.rev if current else 0) != expected_rev:
            return False
        self.records[(tenant, key)] = StoredRecord(expected_rev + 1, data)
        session = head_of or self.session_of.get((tenant, key.split("\x1f", 1)[0]))
        if session is not None:
            self.session_of[(tenant, key)] = session
            self.session_keys.setdefault((tenant, session), set()).add(key)
        if head_of is not None:
            self.heads[(tenant, head_of)] = key
        return True

    async def get_head(self, tenant: str, session_id: str) -> str | None:
        """The snapshot most recently created in the session, or None."""
        return self.heads.get((tenant, session_id))

    async def list_heads(self, tenant: str, after: str | None, limit: int) -> list[tuple[str, str]]:
        """Up to `limit` sessions of the tenant after `after` (id order), with their heads."""
        ids = first_after((s for t, s in self.heads if t == tenant), after, limit)
        return [(s, self.heads[(tenant, s)]) for s in ids]

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

    async def renew_lease(self, tenant: str, name: str, owner: str, ttl: float) -> bool:
        """Extend the lease if `owner` still holds it (expired or not); never take it afresh."""
        if self.leases.get((tenant, name), ("",))[0] != owner:
            return False
        self.leases[(tenant, name)] = (owner, time.monotonic() + ttl)
        return True

    async def release_lease(self, tenant: str, name: str, owner: str) -> None:
        """Drop the lease if `owner` holds it."""
        if self.leases.get((tenant, name), ("",))[0] == owner:
            del self.leases[(tenant, name)]

    async def store_epoch(self) -> str:
        """The identity of this backend's data (fixed: it lives and dies with the process)."""
        return self.epoch

    async def list_tenants(self) -> list[str]:
        """Every tenant holding records, heads or logs."""
        return sorted({t for t, _ in self.records} | {t for t, _ in self.heads} | {t for t, _ in self.logs})

    async def scan_records(self, tenant: str) -> list[tuple[str, StoredRecord]]:
        """Every record of a tenant, with its key."""
        return [(k, r) for (t, k), r in self.records.items() if t == tenant]

    async def scan_session(self, tenant: str, session_id: str) -> list[tuple[str, StoredRecord]]:
        """The session's records (its snapshots and their spilled states), with their keys."""
        keys = self.session_keys.get((tenant, session_id), set())
        return [(k, r) for k in keys if (r := self.records.get((tenant, k))) is not None]

    async def delete_data(
        self, tenant: str, *, records: Sequence[str], logs: Sequence[str], heads: Sequence[str]
    ) -> None:
        """Delete these records, logs and heads."""
        for key in records:
            self.records.pop((tenant, key), None)
            session = self.session_of.pop((tenant, key), None)
            if session is not None:
                keys = self.session_keys.get((tenant, session), set())
                keys.discard(key)
                if not keys:
                    self.session_keys.pop((tenant, session), None)
        for log_id in logs:
            self.logs.pop((tenant, log_id), None)
        for session_id in heads:
            self.heads.pop((tenant, session_id), None)

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
