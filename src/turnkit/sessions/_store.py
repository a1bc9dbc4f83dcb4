"""The `SessionStore` contract, the id and tenant rules every store shares, and a polling base class."""

from __future__ import annotations

import asyncio
import errno
import inspect
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

from turnkit.errors import TurnkitError
from turnkit.types import SessionSnapshot, SnapshotStatus, SnapshotStatusName

if TYPE_CHECKING:
    from turnkit.sessions._lease import SessionLease
    from turnkit.sessions._listing import SessionPage  # _listing imports this module

__all__ = [
    "DEFAULT_TENANT",
    "FINISHED_STATUSES",
    "MAX_ID_LENGTH",
    "TERMINAL_STATUSES",
    "Pruned",
    "SessionStore",
    "SessionStoreBase",
    "SnapshotMutator",
    "SnapshotStoreLike",
    "TenantOf",
    "as_session_store",
    "check_id",
    "default_tenant_of",
    "os_error",
    "reported_status",
]

SnapshotMutator = Callable[[SessionSnapshot | None], SessionSnapshot | None]
TenantOf = Callable[[Mapping[str, Any] | None], str | None]

MAX_ID_LENGTH: Final = 256
# The statuses no writer changes once a snapshot has one (StrEnum members: a status read as its
# wire string is found too). `expired` is not among them: a stale turn's heartbeat may come back.
TERMINAL_STATUSES: Final[frozenset[SnapshotStatus]] = frozenset(
    {SnapshotStatus.COMPLETED, SnapshotStatus.FAILED, SnapshotStatus.ABORTED}
)
# The statuses after which a client polling a (detached) turn stops: the terminal ones, and
# `expired` (the turn stopped beating; only an abort changes it from here on as far as a client knows).
FINISHED_STATUSES: Final[frozenset[SnapshotStatus]] = TERMINAL_STATUSES | {SnapshotStatus.EXPIRED}
# The partition of callers without a tenant. Tenant keys must be non-empty ids, so no
# caller-chosen tenant can ever name this one.
DEFAULT_TENANT: Final = ""


@dataclass
class Pruned:
    """What one `prune()` removed, and the sessions it left alone because a turn held them."""

    sessions_deleted: int = 0
    snapshots_deleted: int = 0
    busy: list[str] = field(default_factory=list)


@runtime_checkable
class SessionStore(Protocol):
    """What the agent runtime needs from a store: read a snapshot, atomically rewrite one, and watch
    one's status (which is how a detached turn learns it was aborted from elsewhere).

    `SessionStoreBase` supplies a polling `watch_status` and no leases (`session_lease` returns
    None); a store written with only the two snapshot methods (as Genkit's docs show) is accepted by
    `as_session_store`, which fills in the rest.
    """

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

    def watch_status(
        self, snapshot_id: str, *, context: Mapping[str, Any] | None = None
    ) -> AsyncIterator[SnapshotStatus | SnapshotStatusName]:
        """Yield the snapshot's status now and on every change, ending after a terminal status."""
        ...

    def session_lease(
        self, session_id: str, *, context: Mapping[str, Any] | None = None, wait: float = 30.0
    ) -> SessionLease | None:
        """The lease a turn holds on a session while it continues it (an async context manager that
        waits up to `wait` seconds for another holder, then raises ABORTED), or None when the store
        has no leases: then two turns continuing one session at once may fork it."""
        ...

    async def delete_session(self, session_id: str, *, context: Mapping[str, Any] | None = None) -> int:
        """Delete a session's snapshots, messages and artifacts (a user's right to be forgotten);
        return how many snapshots went. FAILED_PRECONDITION while a turn holds the session."""
        ...

    async def prune(
        self, *, older_than: float | timedelta | None = None, max_snapshots_per_session: int | None = None
    ) -> Pruned:
        """Delete sessions untouched for longer than `older_than` seconds, and each session's oldest
        snapshots beyond `max_snapshots_per_session` that the newer ones do not need (either limit
        defaults to the store's option of that name); sessions a turn holds are skipped."""
        ...

    async def list_sessions(
        self, *, limit: int = 100, cursor: str | None = None, context: Mapping[str, Any] | None = None
    ) -> SessionPage:
        """A page of the caller's tenant's sessions in session id order, each with its latest
        snapshot id; `next_cursor` continues after the page (None: it was the last)."""
        ...


class SnapshotStoreLike(Protocol):
    """The least a store must have to back an agent or a `Session`: the two snapshot methods, as
    Genkit's docs (and seed 000's `RedisSessionStore`) write them, without `context`.

    `store=` accepts any object shaped like this; `as_session_store` wraps it into a full
    `SessionStore` (passing `context` only to methods that take it, polling for status changes).
    A `SessionStore` is one too.
    """

    async def get_snapshot(
        self, *, snapshot_id: str | None = None, session_id: str | None = None
    ) -> SessionSnapshot | None:
        """The snapshot with this id, or the latest snapshot of this session; None when absent."""
        ...

    # Positional-only: a store may name these parameters as it likes.
    async def save_snapshot(self, snapshot_id: str, fn: SnapshotMutator, /) -> SessionSnapshot | None:
        """Replace the snapshot with `fn(existing)` (read-modify-write); `fn` returning None skips it."""
        ...


def check_id(value: object, what: str) -> str:
    """Return `value` if it is a usable id (1-256 characters, no control characters), else raise."""
    if not isinstance(value, str) or not value:
        raise TurnkitError("INVALID_ARGUMENT", f"{what} must be a non-empty string")
    if len(value) > MAX_ID_LENGTH:
        raise TurnkitError("INVALID_ARGUMENT", f"{what} is longer than {MAX_ID_LENGTH} characters")
    # Cc covers NUL, the C0/C1 controls and DEL; Cs (lone surrogates) cannot be encoded to UTF-8.
    # Printable ASCII (uuids, the usual ids) has neither: two C calls instead of a walk per character.
    if value.isascii() and value.isprintable():
        return value
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value):
        raise TurnkitError("INVALID_ARGUMENT", f"{what} contains a control character")
    return value


_FULL: Final = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def os_error(exc: OSError, where: str) -> TurnkitError:
    """A store's file-system failure as a turnkit error: RESOURCE_EXHAUSTED when the disk (or quota)
    is full, UNAVAILABLE when the storage cannot be reached, else INTERNAL; never shown to clients."""
    if exc.errno in _FULL:
        return TurnkitError("RESOURCE_EXHAUSTED", f"{where}: no space left ({exc})", public=False)
    if exc.errno in (errno.EIO, errno.ENOTCONN, errno.ESTALE, errno.ETIMEDOUT, errno.EHOSTDOWN):
        return TurnkitError("UNAVAILABLE", f"{where}: storage unavailable ({exc})", public=False)
    return TurnkitError("INTERNAL", f"{where}: {exc}", public=False)


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
) -> SnapshotStatus | SnapshotStatusName | None:
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

    def status_of(self, snapshot: SessionSnapshot) -> SnapshotStatus | SnapshotStatusName | None:
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

    def session_lease(
        self, session_id: str, *, context: Mapping[str, Any] | None = None, wait: float = 30.0
    ) -> SessionLease | None:
        """The lease of a session (see `SessionStore.session_lease`). This default: None, no leases."""
        return None

    async def delete_session(self, session_id: str, *, context: Mapping[str, Any] | None = None) -> int:
        """Delete a session's snapshots, messages and artifacts, refused (FAILED_PRECONDITION) while
        a turn holds it; return how many snapshots went. This default: UNIMPLEMENTED."""
        raise TurnkitError("UNIMPLEMENTED", f"{type(self).__name__} cannot delete sessions")

    async def prune(
        self, *, older_than: float | timedelta | None = None, max_snapshots_per_session: int | None = None
    ) -> Pruned:
        """Delete sessions untouched for longer than `older_than`, and superseded snapshots beyond
        `max_snapshots_per_session` per session. This default: UNIMPLEMENTED."""
        raise TurnkitError("UNIMPLEMENTED", f"{type(self).__name__} cannot prune sessions")

    async def list_sessions(
        self, *, limit: int = 100, cursor: str | None = None, context: Mapping[str, Any] | None = None
    ) -> SessionPage:
        """A page of the caller's tenant's sessions in session id order. This default: UNIMPLEMENTED."""
        raise TurnkitError("UNIMPLEMENTED", f"{type(self).__name__} cannot list sessions")

    async def read_status(
        self, snapshot_id: str, *, context: Mapping[str, Any] | None = None
    ) -> SnapshotStatus | SnapshotStatusName | None:
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
    ) -> AsyncIterator[SnapshotStatus | SnapshotStatusName]:
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


def _accepts_context(method: Callable[..., Any]) -> bool:
    """Whether a store method takes a `context` keyword (by name, or through `**kwargs`)."""
    try:
        params = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):  # no introspectable signature (some builtins): assume the old form
        return False
    return any(
        p.kind is inspect.Parameter.VAR_KEYWORD
        or (p.name == "context" and p.kind is not inspect.Parameter.POSITIONAL_ONLY)
        for p in params
    )


async def _resolved(value: Any) -> Any:
    # A user's store may answer synchronously; awaiting only awaitables accepts both forms.
    return await value if inspect.isawaitable(value) else value


def _as_snapshot(value: Any, method: str) -> SessionSnapshot | None:
    if value is None or isinstance(value, SessionSnapshot):
        return value
    if isinstance(value, Mapping):  # a store that keeps snapshots as plain JSON objects
        return SessionSnapshot.model_validate(value)
    raise TurnkitError(
        "INTERNAL", f"store.{method} returned {type(value).__name__}, not a SessionSnapshot or None"
    )


class _ForeignStoreAdapter(SessionStoreBase):
    """Presents a user-written store (two snapshot methods, maybe without `context`) as a full
    `SessionStore`: `context` reaches the store only if its methods take it, `watch_status` is the
    store's own or else polls `get_snapshot`, and a pending snapshot whose heartbeat is older than
    `expire_after` reads as `expired`, as with every other store. It adds no leases (the store's own
    `session_lease` is used if it has one): without, turns that continue one session by id at the
    same moment are not lined up."""

    def __init__(self, store: Any) -> None:
        super().__init__()
        self.store = store
        self._get_takes_context = _accepts_context(store.get_snapshot)
        self._save_takes_context = _accepts_context(store.save_snapshot)
        own_watch = getattr(store, "watch_status", None)
        self._own_watch = own_watch if callable(own_watch) and _accepts_context(own_watch) else None
        own_lease = getattr(store, "session_lease", None)
        self._own_lease = own_lease if callable(own_lease) else None

    def session_lease(
        self, session_id: str, *, context: Mapping[str, Any] | None = None, wait: float = 30.0
    ) -> SessionLease | None:
        """The wrapped store's own `session_lease` if it has one, else None (no leases)."""
        if self._own_lease is None:
            return None
        lease: SessionLease | None = self._own_lease(session_id, context=context, wait=wait)
        return lease

    def _reported(self, snapshot: SessionSnapshot | None) -> SessionSnapshot | None:
        # As every store here reports it: a pending snapshot whose heartbeat went stale is expired.
        if snapshot is None or snapshot.status != "pending":
            return snapshot
        status = self.status_of(snapshot)
        return snapshot if status == snapshot.status else snapshot.model_copy(update={"status": status})

    async def get_snapshot(
        self,
        *,
        snapshot_id: str | None = None,
        session_id: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> SessionSnapshot | None:
        """The wrapped store's `get_snapshot`, with `context` passed only if it takes one."""
        extra = {"context": context} if self._get_takes_context else {}
        found = self.store.get_snapshot(snapshot_id=snapshot_id, session_id=session_id, **extra)
        return self._reported(_as_snapshot(await _resolved(found), "get_snapshot"))

    async def save_snapshot(
        self,
        snapshot_id: str,
        fn: SnapshotMutator,
        *,
        context: Mapping[str, Any] | None = None,
    ) -> SessionSnapshot | None:
        """The wrapped store's `save_snapshot`, with `context` passed only if it takes one."""
        extra = {"context": context} if self._save_takes_context else {}
        saved = self.store.save_snapshot(snapshot_id, lambda old: fn(self._reported(old)), **extra)
        return _as_snapshot(await _resolved(saved), "save_snapshot")

    async def watch_status(
        self, snapshot_id: str, *, context: Mapping[str, Any] | None = None
    ) -> AsyncIterator[SnapshotStatus | SnapshotStatusName]:
        """The wrapped store's own `watch_status` if it has one, else polling `get_snapshot`."""
        if self._own_watch is None:
            async for status in super().watch_status(snapshot_id, context=context):
                yield status
            return
        async for status in self._own_watch(snapshot_id, context=context):
            yield status

    # Retention and listing: the wrapped store's own methods when it has them (same signatures as
    # the contract; `context` passed only if they take it), else UNIMPLEMENTED as for any base store.

    def _own(self, name: str, context: Mapping[str, Any] | None) -> Callable[..., Any] | None:
        method = getattr(self.store, name, None)
        if not callable(method):
            return None
        if context is not None and _accepts_context(method):
            return lambda *args, **kwargs: method(*args, context=context, **kwargs)
        return method  # type: ignore[no-any-return]

    async def delete_session(self, session_id: str, *, context: Mapping[str, Any] | None = None) -> int:
        """The wrapped store's `delete_session`, if it has one."""
        own = self._own("delete_session", context)
        if own is None:
            return await super().delete_session(session_id, context=context)
        return int(await _resolved(own(session_id)))

    async def prune(
        self, *, older_than: float | timedelta | None = None, max_snapshots_per_session: int | None = None
    ) -> Pruned:
        """The wrapped store's `prune`, if it has one."""
        own = self._own("prune", None)
        if own is None:
            return await super().prune(
                older_than=older_than, max_snapshots_per_session=max_snapshots_per_session
            )
        result: Pruned = await _resolved(
            own(older_than=older_than, max_snapshots_per_session=max_snapshots_per_session)
        )
        return result

    async def list_sessions(
        self, *, limit: int = 100, cursor: str | None = None, context: Mapping[str, Any] | None = None
    ) -> SessionPage:
        """The wrapped store's `list_sessions`, if it has one."""
        own = self._own("list_sessions", context)
        if own is None:
            return await super().list_sessions(limit=limit, cursor=cursor, context=context)
        page: SessionPage = await _resolved(own(limit=limit, cursor=cursor))
        return page


def as_session_store(value: object) -> SessionStore:
    """The `SessionStore` that `value` names: a store as is, a store URL (see `store_from_url`) opened,
    or a user-written object with `get_snapshot` / `save_snapshot` (with or without the `context`
    keyword and `watch_status`) wrapped so the runtime can use it. Anything else is INVALID_ARGUMENT."""
    if isinstance(value, SessionStoreBase):
        return value
    if isinstance(value, str):
        from turnkit.sessions._url import store_from_url  # _url imports the engine, which imports us

        return store_from_url(value)
    get = getattr(value, "get_snapshot", None)
    save = getattr(value, "save_snapshot", None)
    if not (callable(get) and callable(save)) or isinstance(value, type):
        raise TurnkitError(
            "INVALID_ARGUMENT",
            f"store must be a SessionStore, a store URL string, or an object with get_snapshot and "
            f"save_snapshot methods; got {type(value).__name__}",
        )
    watch = getattr(value, "watch_status", None)
    lease = getattr(value, "session_lease", None)
    whole = callable(watch) and _accepts_context(watch) and callable(lease)
    if _accepts_context(get) and _accepts_context(save) and whole:
        return value  # type: ignore[return-value]  # already the whole contract
    return _ForeignStoreAdapter(value)
