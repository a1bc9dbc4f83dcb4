"""Retention and data-loss detection for the linear engine: deleting sessions, pruning old ones and
superseded snapshots, and telling a store that lost its data from a session that never existed.

Deleting works on what a backend can list (`MaintenanceBackend`): every record of a tenant is read
once to learn which session owns it, which message logs it names and which record its delta is
based on; a session's records, the logs only they name, and its head then go in one call. Nothing
another snapshot still needs goes: a kept snapshot's delta base is kept (and its logs). Pruning
reads each tenant once the same way.

Data loss: a backend that has a store identity (`store_epoch()`, a random id written with its
schema, recreated when the data is gone) lets the engine notice that a session it saw is missing
because the store was reset (Redis restarted without persistence, a schema dropped), and report
DATA_LOSS instead of silently starting the session again from nothing.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

from turnkit.errors import TurnkitError
from turnkit.sessions._backend import StoredRecord
from turnkit.sessions._deltas import data_loss
from turnkit.sessions._store import Pruned, check_id

if TYPE_CHECKING:
    from turnkit.sessions._backend import RecordBackend
    from turnkit.sessions._deltas import Node
    from turnkit.sessions._lease import SessionLease
    from turnkit.types import SnapshotStatus, SnapshotStatusName

__all__ = ["MaintenanceBackend", "Retention"]

_SPILL_SEP: Final = "\x1f"
_SEEN_MAX: Final = 100_000  # sessions whose store identity an instance remembers


@runtime_checkable
class MaintenanceBackend(Protocol):
    """What a backend provides so that sessions can be deleted and pruned (every store here does)."""

    async def list_tenants(self) -> list[str]:
        """Every tenant holding data ("" is the default tenant)."""
        ...

    async def scan_records(self, tenant: str) -> list[tuple[str, StoredRecord]]:
        """Every record of a tenant, with its key."""
        ...

    async def delete_data(
        self, tenant: str, *, records: Sequence[str], logs: Sequence[str], heads: Sequence[str]
    ) -> None:
        """Delete these records, message logs and session heads (each may be absent already)."""
        ...


@dataclass
class _Item:
    """One stored record as retention sees it."""

    key: str
    owner: str  # the snapshot it belongs to (itself, or the snapshot a spilled state was kept for)
    session: str | None
    logs: set[str]
    base: str | None  # the record its delta is based on
    touched: str | None  # ISO time of its last update


def _parse(key: str, stored: StoredRecord) -> _Item:
    record = json.loads(stored.data)
    meta, state = record.get("meta"), record.get("state")
    owner = key.split(_SPILL_SEP, 1)[0]
    logs = {str(seg[0]) for seg in (state or {}).get("msgs") or ()}
    base = None
    if state is not None and state.get("depth", 0) > 0:
        base = state.get("base", None if meta is None else meta.get("parentId"))
    session = touched = None
    if meta is not None:
        session = meta.get("sessionId")
        touched = meta.get("heartbeatAt") or meta.get("updatedAt") or meta.get("createdAt")
    return _Item(key, owner, session, logs, base, touched)


def _time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


class Retention:
    """The retention and data-loss half of `LinearSessionStore` (a mixin: it uses the store's backend,
    tenants, leases and cache)."""

    _seen_sessions: OrderedDict[tuple[str, str], str]
    _epoch: str | None

    if TYPE_CHECKING:  # what the mixin uses of `LinearSessionStore`
        backend: RecordBackend
        max_age: float | None
        max_snapshots_per_session: int | None
        _cache: OrderedDict[tuple[str, str], Node]

        def tenant_key(self, context: Mapping[str, Any] | None) -> str: ...
        def now(self) -> datetime: ...
        def clear_cache(self) -> None: ...
        def session_lease(
            self, session_id: str, *, context: Mapping[str, Any] | None = None, wait: float = 30.0
        ) -> SessionLease: ...
        async def read_status(
            self, snapshot_id: str, *, context: Mapping[str, Any] | None = None
        ) -> SnapshotStatus | SnapshotStatusName | None: ...

    # --- data loss -------------------------------------------------------------------------------

    async def store_epoch(self) -> str | None:
        """The store's identity now (None when its backend has none): it changes when the data is reset."""
        epoch_of = getattr(self.backend, "store_epoch", None)
        if epoch_of is None:
            return None
        epoch: str = await epoch_of()
        return epoch

    async def saw_session(self, tenant: str, session_id: str) -> None:
        """Remember that this session exists, and under which store identity."""
        key = (tenant, session_id)
        if key in self._seen_sessions:
            self._seen_sessions.move_to_end(key)
            return
        if self._epoch is None:
            self._epoch = await self.store_epoch()
            if self._epoch is None:
                return
        self._seen_sessions[key] = self._epoch
        while len(self._seen_sessions) > _SEEN_MAX:
            self._seen_sessions.popitem(last=False)

    async def check_not_lost(self, tenant: str, session_id: str) -> None:
        """A session this instance saw has no head: DATA_LOSS if the store was reset since."""
        seen = self._seen_sessions.get((tenant, session_id))
        if seen is None:
            return
        current = await self.store_epoch()
        if current == seen:  # deleted (by another process, say), not lost
            del self._seen_sessions[(tenant, session_id)]
            return
        self._epoch = current
        self.clear_cache()
        raise data_loss(
            f"session {session_id!r} is gone: the store lost its data since this process last saw the"
            f" session (its identity changed from {seen} to {current}: restarted without persistence,"
            f" or its schema dropped?); the session's snapshots cannot be read"
        )

    # --- deleting --------------------------------------------------------------------------------

    def _maintenance(self) -> MaintenanceBackend:
        if not isinstance(self.backend, MaintenanceBackend):
            raise TurnkitError(
                "UNIMPLEMENTED", f"{type(self.backend).__name__} cannot list or delete stored data"
            )
        return self.backend

    async def delete_session(self, session_id: str, *, context: Mapping[str, Any] | None = None) -> int:
        """Delete a session: all its snapshots, their messages and artifacts, and its head.

        Refused with FAILED_PRECONDITION while a turn holds the session (its lease, or a pending
        snapshot still running). Returns how many snapshots were deleted (0: no such session).
        """
        check_id(session_id, "session id")
        tenant = self.tenant_key(context)
        backend = self._maintenance()
        async with self._hold(session_id, context):
            items = [_parse(k, r) for k, r in await backend.scan_records(tenant)]
            mine = {i.owner for i in items if i.session == session_id and i.key == i.owner}
            if not mine:
                head = await self.backend.get_head(tenant, session_id)
                if head is not None:
                    await backend.delete_data(tenant, records=(), logs=(), heads=[session_id])
                self._seen_sessions.pop((tenant, session_id), None)
                return 0
            await self._refuse_if_running(tenant, session_id, mine)
            deleted = await self._delete(tenant, items, mine, heads=[session_id])
            self._seen_sessions.pop((tenant, session_id), None)
            return deleted

    async def prune(
        self,
        *,
        older_than: float | timedelta | None = None,
        max_snapshots_per_session: int | None = None,
    ) -> Pruned:
        """Delete, in every tenant, the sessions untouched for longer than `older_than` (seconds; the
        store's `max_age` by default), and from the other sessions the oldest snapshots beyond
        `max_snapshots_per_session` (the store's option by default) that the newest ones do not need.

        Sessions a turn holds are left alone (listed in `busy`). With neither limit, nothing goes.
        """
        age = self.max_age if older_than is None else older_than
        seconds = age.total_seconds() if isinstance(age, timedelta) else age
        keep = max_snapshots_per_session or self.max_snapshots_per_session
        if keep is not None and keep < 1:
            raise TurnkitError("INVALID_ARGUMENT", "max_snapshots_per_session must be at least 1")
        result = Pruned()
        if seconds is None and keep is None:
            return result
        backend = self._maintenance()
        cutoff = None if seconds is None else self.now() - timedelta(seconds=seconds)
        for tenant in await backend.list_tenants():
            items = [_parse(k, r) for k, r in await backend.scan_records(tenant)]
            sessions: dict[str, list[_Item]] = {}
            for item in items:
                if item.session is not None and item.key == item.owner:
                    sessions.setdefault(item.session, []).append(item)
            for session_id, snaps in sessions.items():
                times = [t for t in (_time(s.touched) for s in snaps) if t is not None]
                stale = cutoff is not None and bool(times) and max(times) < cutoff
                if not stale and (keep is None or len(snaps) <= keep):
                    continue
                context = None if tenant == "" else {"tenant": tenant}
                try:
                    async with self._hold(session_id, context):
                        if stale:
                            mine = {s.key for s in snaps}
                            await self._refuse_if_running(tenant, session_id, mine)
                            result.snapshots_deleted += await self._delete(
                                tenant, items, mine, heads=[session_id]
                            )
                            result.sessions_deleted += 1
                        else:
                            assert keep is not None
                            result.snapshots_deleted += await self._trim(tenant, items, snaps, keep)
                except TurnkitError as err:
                    if err.status != "FAILED_PRECONDITION":
                        raise
                    result.busy.append(session_id)
                    continue
                items = [_parse(k, r) for k, r in await backend.scan_records(tenant)]
        return result

    def _hold(self, session_id: str, context: Mapping[str, Any] | None) -> Any:
        """The session's lease, taken at once or FAILED_PRECONDITION (a turn holds it)."""
        return _HeldForMaintenance(self, session_id, context)

    async def _refuse_if_running(self, tenant: str, session_id: str, keys: set[str]) -> None:
        """FAILED_PRECONDITION if one of these snapshots is a turn still running (pending, not expired)."""
        context = None if tenant == "" else {"tenant": tenant}
        for key in keys:
            if await self.read_status(key, context=context) == "pending":
                raise TurnkitError(
                    "FAILED_PRECONDITION",
                    f"session {session_id!r} has a turn running (snapshot {key!r} is pending); "
                    "abort it or wait for it to end",
                )

    async def _trim(self, tenant: str, items: list[_Item], snaps: list[_Item], keep: int) -> int:
        """Delete a session's oldest snapshots beyond `keep`, but never the head or a kept one's base."""
        head = None if snaps[0].session is None else await self.backend.get_head(tenant, snaps[0].session)
        by_age = sorted(snaps, key=lambda s: (_time(s.touched) is None, _time(s.touched) or 0), reverse=True)
        kept = {s.key for s in by_age[:keep]} | ({head} if head else set())
        by_key = {i.key: i for i in items}
        work = list(kept)
        while work:  # a kept snapshot's delta chain stays whole
            key = work.pop()
            for item in [by_key.get(key), *(i for i in items if i.owner == key and i.key != key)]:
                if item is not None and item.base is not None and item.base not in kept:
                    kept.add(item.base)
                    work.append(item.base)
        doomed = {s.key for s in snaps} - kept
        return await self._delete(tenant, items, doomed, heads=()) if doomed else 0

    async def _delete(
        self, tenant: str, items: list[_Item], doomed: set[str], *, heads: Sequence[str]
    ) -> int:
        """Delete these snapshots (with their spilled states), and the logs no kept record names."""
        gone = [i for i in items if i.owner in doomed]
        kept = [i for i in items if i.owner not in doomed]
        for item in kept:
            if item.base is not None and item.base in doomed:
                raise TurnkitError(
                    "FAILED_PRECONDITION",
                    f"snapshot {item.owner!r} is stored as a change to snapshot {item.base!r}, which"
                    " would be deleted",
                )
        still_named = set().union(*(i.logs for i in kept)) if kept else set()
        logs = sorted(set().union(*(i.logs for i in gone)) - still_named) if gone else []
        backend = self._maintenance()
        await backend.delete_data(tenant, records=[i.key for i in gone], logs=logs, heads=heads)
        for item in gone:
            self._cache.pop((tenant, item.key), None)
        return len(doomed)


class _HeldForMaintenance:
    """Holds a session's lease (if the store has leases) for a deletion: refused while a turn has it."""

    def __init__(self, store: Retention, session_id: str, context: Mapping[str, Any] | None) -> None:
        self.store = store
        self.session_id = session_id
        self.context = context
        self.lease: Any = None

    async def __aenter__(self) -> None:
        try:
            lease = self.store.session_lease(self.session_id, context=self.context, wait=0)
        except TurnkitError as err:
            if err.status == "UNIMPLEMENTED":
                return
            raise
        try:
            await lease.__aenter__()
        except TurnkitError as err:
            if err.status != "ABORTED":
                raise
            raise TurnkitError(
                "FAILED_PRECONDITION",
                f"session {self.session_id!r} is held by a running turn; try again once it ends",
            ) from None
        self.lease = lease

    async def __aexit__(self, *exc: object) -> None:
        if self.lease is not None:
            await self.lease.__aexit__(None, None, None)
