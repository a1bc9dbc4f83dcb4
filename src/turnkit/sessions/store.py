"""The `SessionStore` contract, the id and tenant rules every store shares, and a polling base class."""

from __future__ import annotations

import asyncio
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, Protocol, runtime_checkable

from turnkit.errors import TurnkitError
from turnkit.types import SessionSnapshot, SnapshotStatus

__all__ = [
    "DEFAULT_TENANT",
    "MAX_ID_LENGTH",
    "TERMINAL_STATUSES",
    "SessionStore",
    "SessionStoreBase",
    "SnapshotMutator",
    "TenantOf",
    "check_id",
    "default_tenant_of",
    "reported_status",
]

SnapshotMutator = Callable[[SessionSnapshot | None], SessionSnapshot | None]
TenantOf = Callable[[Mapping[str, Any] | None], str | None]

MAX_ID_LENGTH: Final = 256
TERMINAL_STATUSES: Final[frozenset[str]] = frozenset({"completed", "failed", "aborted"})
# The partition of callers without a tenant. Tenant keys must be non-empty ids, so no
# caller-chosen tenant can ever name this one.
DEFAULT_TENANT: Final = ""


@runtime_checkable
class SessionStore(Protocol):
    """What the agent runtime needs from a store: read a snapshot, and atomically rewrite one."""

    async def get_snapshot(
        self,
        *,
        snapshot_id: str | None = None,
        session_id: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> SessionSnapshot | None:
        """The snapshot with this id, or the latest snapshot of this session; None when absent."""
        ...

    async def save_snapshot(
        self,
        snapshot_id: str,
        fn: SnapshotMutator,
        *,
        context: Mapping[str, Any] | None = None,
    ) -> SessionSnapshot | None:
        """Atomically replace the snapshot with `fn(existing)`; `fn` returning None skips the write."""
        ...


def check_id(value: object, what: str) -> str:
    """Return `value` if it is a usable id (1-256 characters, no control characters), else raise."""
    if not isinstance(value, str) or not value:
        raise TurnkitError("INVALID_ARGUMENT", f"{what} must be a non-empty string")
    if len(value) > MAX_ID_LENGTH:
        raise TurnkitError("INVALID_ARGUMENT", f"{what} is longer than {MAX_ID_LENGTH} characters")
    # Cc covers NUL, the C0/C1 controls and DEL; Cs (lone surrogates) cannot be encoded to UTF-8.
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value):
        raise TurnkitError("INVALID_ARGUMENT", f"{what} contains a control character")
    return value


def default_tenant_of(context: Mapping[str, Any] | None) -> str | None:
    """The tenant named by `context["tenant"]`, or None (the default tenant) when there is none."""
    tenant = (context or {}).get("tenant")
    return None if tenant is None else str(tenant)


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def reported_status(
    snapshot: SessionSnapshot, *, now: datetime, expire_after: float
) -> SnapshotStatus | None:
    """The status a read reports: a `pending` snapshot whose last sign of life is too old is `expired`."""
    if snapshot.status != "pending":
        return snapshot.status
    seen = _parse_time(snapshot.heartbeat_at) or _parse_time(snapshot.updated_at)
    seen = seen or _parse_time(snapshot.created_at)
    if seen is not None and (now - seen).total_seconds() > expire_after:
        return "expired"
    return "pending"


class SessionStoreBase(ABC):
    """Shared store behaviour: id checks, tenant keys, expiry, and a polling `watch_status`."""

    def __init__(
        self,
        *,
        expire_after: float = 60.0,
        tenant_of: TenantOf | None = None,
        poll_interval: float = 0.25,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.expire_after = expire_after
        self.poll_interval = poll_interval
        self._tenant_of = tenant_of or default_tenant_of
        self._clock = clock or (lambda: datetime.now(UTC))

    def now(self) -> datetime:
        """The store's current time (injectable, so tests can move it)."""
        return self._clock()

    def tenant_key(self, context: Mapping[str, Any] | None) -> str:
        """The partition a caller's context maps to; checked like an id."""
        tenant = self._tenant_of(context)
        return DEFAULT_TENANT if tenant is None else check_id(tenant, "tenant")

    def status_of(self, snapshot: SessionSnapshot) -> SnapshotStatus | None:
        """The status to report for a stored snapshot at the current time."""
        return reported_status(snapshot, now=self.now(), expire_after=self.expire_after)

    @abstractmethod
    async def get_snapshot(
        self,
        *,
        snapshot_id: str | None = None,
        session_id: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> SessionSnapshot | None:
        """The snapshot with this id, or the latest snapshot of this session; None when absent."""

    @abstractmethod
    async def save_snapshot(
        self,
        snapshot_id: str,
        fn: SnapshotMutator,
        *,
        context: Mapping[str, Any] | None = None,
    ) -> SessionSnapshot | None:
        """Atomically replace the snapshot with `fn(existing)`; `fn` returning None skips the write."""

    async def read_status(
        self, snapshot_id: str, *, context: Mapping[str, Any] | None = None
    ) -> SnapshotStatus | None:
        """The reported status of one snapshot (None when absent); stores may read less than a snapshot."""
        snapshot = await self.get_snapshot(snapshot_id=snapshot_id, context=context)
        return None if snapshot is None else snapshot.status

    def change_waiter(
        self, snapshot_id: str, *, context: Mapping[str, Any] | None = None
    ) -> Callable[[], Awaitable[None]]:
        """Start listening for a change of one snapshot; awaiting the result returns once one may have
        happened. Listening starts before the caller reads, so a change in between is not missed.
        This default only polls: it waits one poll interval."""
        return lambda: asyncio.sleep(self.poll_interval)

    async def watch_status(
        self, snapshot_id: str, *, context: Mapping[str, Any] | None = None
    ) -> AsyncIterator[SnapshotStatus]:
        """Yield the snapshot's status now and on every change, ending after a terminal status.

        A snapshot that does not exist yet is waited for; `expired` is reported when a pending
        snapshot's heartbeat goes stale (and `pending` again if it resumes).
        """
        check_id(snapshot_id, "snapshot id")
        last: str | None = None
        while True:
            wait = self.change_waiter(snapshot_id, context=context)
            status = await self.read_status(snapshot_id, context=context)
            if status is not None and status != last:
                last = status
                yield status
            if status in TERMINAL_STATUSES:
                return
            await wait()
