"""Retention and data-loss detection for the linear engine: deleting sessions, pruning old ones and
superseded snapshots, and telling a store that lost its data from a session that never existed.

Deleting works on what a backend can list (`MaintenanceBackend`): records are read once to learn
which session owns each, which message logs it names and which record its delta is based on; a
session's records, the logs only they name, and its head then go in one call. Nothing another
snapshot still needs goes: a kept snapshot's delta base is kept (and its logs). `delete_session`
reads only the session's records when the backend can list them (`SessionScanBackend`: memory,
PostgreSQL, Redis; the engine keeps a session's deltas and logs within the session), otherwise the
tenant's (SQLite and the file store, which keep no index by session so that a turn stores no more);
`prune` reads each tenant once.

A turn continued by snapshot id holds no lease, so a deletion can run while it does. Its late save
cannot bring the session back: a new snapshot is written only while its parent still exists (checked
by the backend in the same atomic step as the write), and a deletion reads the session again after
deleting, until nothing of it is left (a save that landed between the read and the delete).

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

__all__ = ["MaintenanceBackend", "Retention", "SessionScanBackend", "check_keep", "check_max_age"]

_SPILL_SEP: Final = "\x1f"
_ROUNDS: Final = 20  # a deletion re-reads this often for saves that raced it before giving up
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


@runtime_checkable
class SessionScanBackend(Protocol):
    """A backend that can read one session's records without reading the whole tenant."""

    async def scan_session(self, tenant: str, session_id: str) -> list[tuple[str, StoredRecord]]:
        """The session's snapshot records and the superseded states kept for them, with their keys."""
        ...


def check_max_age(value: float | timedelta | None, name: str) -> float | timedelta | None:
    """`value` if it is a positive age (seconds or a timedelta) or None; INVALID_ARGUMENT otherwise."""
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
        raise TurnkitError(
            "INVALID_ARGUMENT", f"{name} must be a positive number of seconds or a timedelta, not {value!r}"
        )
    return value


def check_keep(value: int | None, name: str) -> int | None:
    """`value` if it is an integer of at least 1 or None; INVALID_ARGUMENT otherwise."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise TurnkitError("INVALID_ARGUMENT", f"{name} must be an integer of at least 1, not {value!r}")
    return value


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


class _Index:
    """A tenant's (or a session's) records as retention sees them, indexed for deleting some of them
    in time proportional to what goes, and kept up to date as they go."""

    def __init__(self, stored: Sequence[tuple[str, StoredRecord]]) -> None:
        self.by_owner: dict[str, list[_Item]] = {}
        self.sessions: dict[str, list[_Item]] = {}  # session -> its snapshots (not spilled states)
        self.based_on: dict[str, set[str]] = {}  # snapshot -> owners of records based on it
        self.log_users: dict[str, set[str]] = {}  # log -> owners of records naming it
        for key, record in stored:
            item = _parse(key, record)
            self.by_owner.setdefault(item.owner, []).append(item)
            if item.session is not None and item.key == item.owner:
                self.sessions.setdefault(item.session, []).append(item)
            if item.base is not None:
                self.based_on.setdefault(item.base, set()).add(item.owner)
            for log in item.logs:
                self.log_users.setdefault(log, set()).add(item.owner)

    def items_of(self, owner: str) -> list[_Item]:
        return self.by_owner.get(owner, [])

    def plan(self, doomed: set[str]) -> tuple[list[str], list[str]]:
        """The records and logs deleting these snapshots removes; FAILED_PRECONDITION if a snapshot
        that stays is stored as a change to one of them."""
        for key in doomed:
            for user in self.based_on.get(key, ()):
                if user not in doomed:
                    raise TurnkitError(
                        "FAILED_PRECONDITION",
                        f"snapshot {user!r} is stored as a change to snapshot {key!r}, which would be deleted",
                    )
        gone = [i for key in doomed for i in self.items_of(key)]
        logs = {log for i in gone for log in i.logs}
        return [i.key for i in gone], sorted(g for g in logs if self.log_users.get(g, set()) <= doomed)

    def remove(self, doomed: set[str]) -> None:
        for key in doomed:
            for item in self.by_owner.pop(key, []):
                if item.base is not None:
                    self.based_on.get(item.base, set()).discard(key)
                for log in item.logs:
                    users = self.log_users.get(log)
                    if users is not None:
                        users.discard(key)
                        if not users:
                            del self.log_users[log]
                if item.session is not None and item.key == key:
                    left = [s for s in self.sessions.get(item.session, []) if s.key != key]
                    if left:
                        self.sessions[item.session] = left
                    else:
                        self.sessions.pop(item.session, None)


class Retention:
    """The retention and data-loss half of `LinearSessionStore` (a mixin: it uses the store's backend,
    tenants, leases and cache)."""

    _seen_sessions: OrderedDict[tuple[str, str], str]

    if TYPE_CHECKING:  # what the mixin uses of `LinearSessionStore`
        backend: RecordBackend
        max_age: float | timedelta | None
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
        """Remember that this session exists, and under which store identity.

        The identity is read afresh for each session first seen (not cached): a session made after
        a reset must be remembered under the new identity, or its later deletion would read as loss.
        """
        key = (tenant, session_id)
        if key in self._seen_sessions:
            self._seen_sessions.move_to_end(key)
            return
        epoch = await self.store_epoch()
        if epoch is None:
            return
        self._seen_sessions[key] = epoch
        while len(self._seen_sessions) > _SEEN_MAX:
            self._seen_sessions.popitem(last=False)

    async def check_not_lost(self, tenant: str, session_id: str) -> None:
        """A session this instance saw has no head: DATA_LOSS if the store was reset since.

        Only a process that saw the session can tell: to any other, a lost session reads as absent.
        """
        seen = self._seen_sessions.pop((tenant, session_id), None)
        if seen is None:
            return
        current = await self.store_epoch()
        if current == seen:  # deleted (by another process, say), not lost
            return
        self._seen_sessions[(tenant, session_id)] = seen  # still lost on the next read
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

    async def _session_index(self, tenant: str, session_id: str) -> _Index:
        """The records a deletion of this session must look at: the session's own when the backend
        can list them, else the tenant's."""
        if isinstance(self.backend, SessionScanBackend):
            return _Index(await self.backend.scan_session(tenant, session_id))
        return _Index(await self._maintenance().scan_records(tenant))

    async def delete_session(self, session_id: str, *, context: Mapping[str, Any] | None = None) -> int:
        """Delete a session: all its snapshots, their messages and artifacts, and its head.

        Refused with FAILED_PRECONDITION while a turn holds the session (its lease, or a pending
        snapshot still running). A turn that continued a snapshot of the session and saves after
        the deletion fails with NOT_FOUND, writing nothing. Returns how many snapshots were deleted
        (0: no such session).
        """
        check_id(session_id, "session id")
        tenant = self.tenant_key(context)
        self._maintenance()
        async with self._hold(session_id, context):
            deleted = 0
            for round_ in range(_ROUNDS):
                index = await self._session_index(tenant, session_id)
                mine = {i.key for i in index.sessions.get(session_id, [])}
                if not mine:
                    break
                if round_ == 0:
                    await self._refuse_if_running(tenant, session_id, mine)
                deleted += await self._delete(tenant, index, mine, heads=[session_id])
            else:
                raise TurnkitError(
                    "ABORTED", f"session {session_id!r} kept getting new snapshots while being deleted"
                )
            if deleted == 0 and await self.backend.get_head(tenant, session_id) is not None:
                await self._maintenance().delete_data(tenant, records=(), logs=(), heads=[session_id])
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
        Each tenant's records are read once (and once more after deleting sessions, for saves that
        raced the deletion).
        """
        age = self.max_age if older_than is None else check_max_age(older_than, "older_than")
        seconds = age.total_seconds() if isinstance(age, timedelta) else age
        keep = check_keep(max_snapshots_per_session, "max_snapshots_per_session")
        keep = keep or self.max_snapshots_per_session
        result = Pruned()
        if seconds is None and keep is None:
            return result
        backend = self._maintenance()
        cutoff = None if seconds is None else self.now() - timedelta(seconds=seconds)
        for tenant in await backend.list_tenants():
            index = _Index(await backend.scan_records(tenant))
            gone: set[str] = set()
            for session_id, snaps in list(index.sessions.items()):
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
                                tenant, index, mine, heads=[session_id]
                            )
                            result.sessions_deleted += 1
                            gone.add(session_id)
                        else:
                            assert keep is not None
                            result.snapshots_deleted += await self._trim(tenant, index, snaps, keep)
                except TurnkitError as err:
                    if err.status != "FAILED_PRECONDITION":
                        raise
                    result.busy.append(session_id)
            await self._sweep(tenant, gone)
        return result

    async def _sweep(self, tenant: str, sessions: set[str]) -> None:
        """Delete what turns saved in these (deleted) sessions while they were being deleted."""
        for _ in range(_ROUNDS):
            if not sessions:
                return
            index = _Index(await self._maintenance().scan_records(tenant))
            sessions = {s for s in sessions if s in index.sessions}
            for session_id in sessions:
                mine = {i.key for i in index.sessions[session_id]}
                await self._delete(tenant, index, mine, heads=[session_id])
        raise TurnkitError("ABORTED", "deleted sessions kept getting new snapshots while being pruned")

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

    async def _trim(self, tenant: str, index: _Index, snaps: list[_Item], keep: int) -> int:
        """Delete a session's oldest snapshots beyond `keep`, but never the head or a kept one's base."""
        head = None if snaps[0].session is None else await self.backend.get_head(tenant, snaps[0].session)
        by_age = sorted(snaps, key=lambda s: (_time(s.touched) is None, _time(s.touched) or 0), reverse=True)
        kept = {s.key for s in by_age[:keep]} | ({head} if head else set())
        work = list(kept)
        while work:  # a kept snapshot's delta chain stays whole
            for item in index.items_of(work.pop()):
                if item.base is not None and item.base not in kept:
                    kept.add(item.base)
                    work.append(item.base)
        doomed = {s.key for s in snaps} - kept
        return await self._delete(tenant, index, doomed, heads=()) if doomed else 0

    async def _delete(self, tenant: str, index: _Index, doomed: set[str], *, heads: Sequence[str]) -> int:
        """Delete these snapshots (with their spilled states), and the logs no kept record names."""
        records, logs = index.plan(doomed)
        await self._maintenance().delete_data(tenant, records=records, logs=logs, heads=heads)
        index.remove(doomed)
        for key in records:
            self._cache.pop((tenant, key), None)
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
