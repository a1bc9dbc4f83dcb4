"""`Session`: one conversation's messages, custom state and artifacts, and the current-session context.

Messages and artifacts are treated as immutable once they are in a session: lists handed out are
new lists of the same objects, so snapshots can share them instead of copying the history. Never
mutate a Message or Artifact in place; build a new one. Custom state is small and copied instead.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, cast, overload

from typing_extensions import TypeVar

from turnkit.errors import TurnkitError
from turnkit.sessions._state_type import S, StateSchema, StateType
from turnkit.sessions._store import SessionStore, SnapshotStoreLike, as_session_store, check_id
from turnkit.types import Artifact, Message, SessionSnapshot, SessionState, SnapshotStatus, WireModel

__all__ = [
    "ArtifactAdded",
    "CustomChanged",
    "MessagesAdded",
    "MessagesSet",
    "Session",
    "SessionEvent",
    "SessionListener",
    "StateSchema",
    "get_current_session",
    "run_with_session",
]

T = TypeVar("T")
W = TypeVar("W", bound=WireModel)


_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CustomChanged:
    """Custom state was replaced by `update_custom`; both values are read-only views."""

    old: Any
    new: Any


@dataclass(frozen=True, slots=True)
class ArtifactAdded:
    """An artifact was added; `replaced` when it took the place of an earlier one of the same name."""

    artifact: Artifact
    replaced: bool


@dataclass(frozen=True, slots=True)
class MessagesAdded:
    """Messages were appended to the history."""

    messages: tuple[Message, ...]


@dataclass(frozen=True, slots=True)
class MessagesSet:
    """The whole history was replaced."""

    messages: tuple[Message, ...]


SessionEvent = CustomChanged | ArtifactAdded | MessagesAdded | MessagesSet
SessionListener = Callable[[SessionEvent], None]


def _many(items: Any, kind: type[W]) -> tuple[W, ...]:
    """One item or an iterable of items, each an instance of `kind` or its wire form."""
    if isinstance(items, (kind, dict)):
        items = [items]
    if type(items) in (list, tuple) and set(map(type, items)) <= {kind}:
        return tuple(items)  # the common case, checked in C: nothing to convert
    return tuple(kind.from_wire(i) for i in items)


class Session(Generic[S]):
    """Messages, typed custom state and artifacts of one session, safe to share between asyncio tasks.

    `update_custom` is serialised by a lock (its function may await); the other mutations are
    single steps that cannot interleave on the event loop. `state_schema` (a Pydantic model class,
    a TypedDict, or a JSON schema dict, enforced when `jsonschema` is installed) types the custom
    state: `get_custom()` returns an `S` and every new value is validated. The state is kept in its
    JSON form (what snapshots and the wire carry) and converted where the user touches it.

    With a `store` (a `SessionStore`, an object with `get_snapshot` / `save_snapshot`, or a store
    URL), the session persists across calls, as seed 000's `Session(store=...)` promises:
    `run_with_session` loads the session's latest completed snapshot from the store when it first
    binds it (the history, custom state and artifacts given to the constructor are only the start
    of a session the store does not have yet), and saves a new snapshot when the coroutine returns
    if anything changed (not when it raises). `await session.load()` and `await session.save()` do
    the same explicitly. Saved snapshots are `completed` and chain by `parent_id`, so an agent with
    the same store can continue the session (`agent.chat(session_id=session.id)`). There is no
    locking across processes: two sessions saving one id at once both write, the newer wins.
    """

    @overload
    def __init__(
        self: Session[S],
        id: str | None = None,
        *,
        messages: Iterable[Message] | None = None,
        custom: S | Mapping[str, Any] | None = None,
        artifacts: Iterable[Artifact] | None = None,
        state_schema: type[S] | StateType[S],
        store: SessionStore | SnapshotStoreLike | str | None = None,
    ) -> None: ...
    @overload
    def __init__(
        self: Session[Any],
        id: str | None = None,
        *,
        messages: Iterable[Message] | None = None,
        custom: Any = None,
        artifacts: Iterable[Artifact] | None = None,
        state_schema: Mapping[str, Any] | None = None,
        store: SessionStore | SnapshotStoreLike | str | None = None,
    ) -> None: ...

    def __init__(
        self,
        id: str | None = None,
        *,
        messages: Iterable[Message] | None = None,
        custom: Any = None,
        artifacts: Iterable[Artifact] | None = None,
        state_schema: StateSchema | StateType[Any] | None = None,
        store: SessionStore | SnapshotStoreLike | str | None = None,
    ) -> None:
        self._id = check_id(id, "session id") if id is not None else str(uuid.uuid4())
        self.state_type: StateType[S] = StateType.of(state_schema)
        # Where the session persists (None: it lives in memory only); see the class docs.
        self.store: SessionStore | None = None if store is None else as_session_store(store)
        self._version = 0  # counts changes, so that a save can tell whether there is one
        self._synced: tuple[str | None, int] | None = None  # (snapshot, version) last loaded or saved
        self._store_lock = asyncio.Lock()
        self._messages: list[Message] = list(_many(messages or (), Message))
        self._custom: Any = None if custom is None else self.state_type.validate(copy.deepcopy(custom))
        self._artifacts: list[Artifact] = []
        self._place(_many(artifacts or (), Artifact))
        self._lock = asyncio.Lock()
        self._custom_owner: asyncio.Task[Any] | None = None
        self._listeners: list[SessionListener] = []

    @classmethod
    def from_state(
        cls,
        state: SessionState,
        *,
        state_schema: StateSchema | StateType[S] | None = None,
        store: SessionStore | SnapshotStoreLike | str | None = None,
    ) -> Session[S]:
        """A session holding `state` (its id, or a new one): messages shared, custom state copied."""
        session = cls(
            state.session_id,
            messages=state.messages,
            custom=state.custom,
            artifacts=state.artifacts,
            state_schema=cast("StateType[S]", StateType.of(state_schema)),
            store=store,
        )
        return session

    @property
    def id(self) -> str:
        """The session id."""
        return self._id

    @property
    def state_schema(self) -> StateSchema | None:
        """The schema the custom state follows (a model class, TypedDict or JSON schema), or None."""
        return self.state_type.schema

    def to_state(self) -> SessionState:
        """The session as a `SessionState`: new lists of the shared messages and artifacts, custom copied."""
        return SessionState.model_construct(
            session_id=self._id,
            messages=list(self._messages),
            custom=copy.deepcopy(self._custom),
            artifacts=list(self._artifacts),
        )

    # --- messages ------------------------------------------------------------------------------

    async def get_messages(self) -> list[Message]:
        """The history as a new list (the Message objects are shared, and must not be mutated)."""
        return list(self._messages)

    async def add_messages(self, messages: Message | Iterable[Message]) -> None:
        """Append one message or several to the history."""
        added = _many(messages, Message)
        self._messages.extend(added)
        self._emit(MessagesAdded(added))

    async def set_messages(self, messages: Iterable[Message]) -> None:
        """Replace the whole history."""
        new = _many(messages, Message)
        self._messages = list(new)
        self._emit(MessagesSet(new))

    # --- custom state --------------------------------------------------------------------------

    async def get_custom(self) -> S:
        """The custom state as an `S` (a copy). With a model or TypedDict schema, an unset state reads
        as its default instance (`MyState()`); it reads as None only while unset when the schema has
        a field without a default, or when there is no schema."""
        # Typed as `S`, not `S | None`: with defaults on every field (or no schema) that is exact,
        # and it spares every caller a None check that could never fire.
        return cast(S, self.state_type.load(copy.deepcopy(self._custom)))

    async def update_custom(
        self,
        # fn returns the new state as an `S` or its JSON form (a dict), or an awaitable of either.
        fn: Callable[[S], S | Mapping[str, Any] | Awaitable[S | Mapping[str, Any] | None] | None],
    ) -> S:
        """Atomically replace custom state with `fn(old)`, `old` as `get_custom` returns it; `fn` may
        be async and may return an `S` or its JSON form (a dict). Returns the new value as an `S`.
        An invalid value raises INVALID_ARGUMENT and leaves the state unchanged."""
        task = asyncio.current_task()
        if task is not None and self._custom_owner is task:
            # The lock is not reentrant: waiting here would wait for ourselves forever.
            raise TurnkitError("FAILED_PRECONDITION", "update_custom called from inside its own update")
        async with self._lock:
            self._custom_owner = task
            try:
                result = fn(await self.get_custom())
                if inspect.isawaitable(result):
                    result = await result
            finally:
                self._custom_owner = None
            # validate() returns a new JSON value, so the caller's object is never shared with us.
            new = self.state_type.validate(result)
            old, self._custom = self._custom, new
            self._emit(CustomChanged(old, new))
            return await self.get_custom()

    # --- artifacts -----------------------------------------------------------------------------

    async def get_artifacts(self) -> list[Artifact]:
        """The artifacts as a new list (the Artifact objects are shared, and must not be mutated)."""
        return list(self._artifacts)

    async def add_artifacts(self, artifacts: Artifact | Iterable[Artifact]) -> None:
        """Add artifacts: a named one replaces an earlier one of that name in place, others append."""
        for artifact, replaced in self._place(_many(artifacts, Artifact)):
            self._emit(ArtifactAdded(artifact, replaced))

    def _place(self, artifacts: Iterable[Artifact]) -> list[tuple[Artifact, bool]]:
        placed = []
        for artifact in artifacts:
            index = None
            if artifact.name is not None:
                index = next((i for i, a in enumerate(self._artifacts) if a.name == artifact.name), None)
            if index is None:
                self._artifacts.append(artifact)
            else:
                self._artifacts[index] = artifact
            placed.append((artifact, index is not None))
        return placed

    # --- persistence ---------------------------------------------------------------------------

    def _require_store(self, what: str) -> SessionStore:
        if self.store is None:
            raise TurnkitError("FAILED_PRECONDITION", f"session {self._id!r} has no store to {what}")
        return self.store

    async def load(self) -> bool:
        """Replace this session's messages, custom state and artifacts with its latest completed
        snapshot in the store (walking back past turns that failed, were aborted or still run);
        False, leaving the session as it is, when the store has none."""
        store = self._require_store("load from")
        async with self._store_lock:
            snap = await store.get_snapshot(session_id=self._id)
            while snap is not None and snap.status not in (None, SnapshotStatus.COMPLETED):
                parent = snap.parent_id
                snap = None if parent is None else await store.get_snapshot(snapshot_id=parent)
            if snap is None:
                self._synced = (None, self._version)
                return False
            state = snap.state or SessionState()
            # Replaced in place, without events: listeners hear about changes, not about loading.
            self._messages = list(state.messages or [])
            self._custom = copy.deepcopy(state.custom)
            self._artifacts = []
            self._place(state.artifacts or [])
            self._synced = (snap.snapshot_id, self._version)
            return True

    async def save(self) -> str:
        """Store the session as a new `completed` snapshot, child of the one last loaded or saved;
        returns its id."""
        store = self._require_store("save to")
        async with self._store_lock:
            version = self._version
            stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            snapshot = SessionSnapshot(
                snapshot_id=str(uuid.uuid4()),
                session_id=self._id,
                parent_id=None if self._synced is None else self._synced[0],
                created_at=stamp,
                updated_at=stamp,
                status=SnapshotStatus.COMPLETED,
                state=self.to_state(),
            )
            await store.save_snapshot(snapshot.snapshot_id, lambda _existing: snapshot)
            self._synced = (snapshot.snapshot_id, version)
            return snapshot.snapshot_id

    async def _open(self) -> None:
        """Before `run_with_session` first runs code with this session: load it from the store."""
        if self.store is None or self._synced is not None:
            return
        if not self._version:
            await self.load()
            return
        # Changed before it was bound: loading would lose those changes, saving might lose stored ones.
        if await self.store.get_snapshot(session_id=self._id) is not None:
            raise TurnkitError(
                "FAILED_PRECONDITION",
                f"session {self._id!r} is in the store but was changed here before it was loaded; "
                "bind it with run_with_session (or await session.load()) before changing it",
            )
        self._synced = (None, -1)  # nothing stored yet: what is here is saved on the way out

    async def _close(self) -> None:
        """After the code `run_with_session` ran returned: save the session if it changed."""
        if self.store is not None and (self._synced is None or self._synced[1] != self._version):
            await self.save()

    # --- listeners -----------------------------------------------------------------------------

    def subscribe(self, listener: SessionListener) -> Callable[[], None]:
        """Call `listener` with every change from now on; returns a function that unsubscribes it.

        Listeners run synchronously right after the change (hand work off, e.g. to a queue).
        """
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def _emit(self, event: SessionEvent) -> None:
        self._version += 1
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                # The change has happened; a broken observer must not make it look as if it had not.
                _log.exception("session listener failed on %s", type(event).__name__)


_current: ContextVar[Session[Any] | None] = ContextVar("turnkit_current_session", default=None)


async def run_with_session(session: Session[Any], coro: Awaitable[T]) -> T:
    """Await `coro` with `session` as the current session (also in the tasks it starts).

    A session with a store is loaded from it first (once) and saved after `coro` returns, when it
    changed (see `Session`)."""
    try:
        await session._open()
    except BaseException:
        if inspect.iscoroutine(coro):
            coro.close()  # never awaited: say nothing about it
        raise
    token = _current.set(session)
    try:
        result = await coro
    finally:
        _current.reset(token)
    await session._close()
    return result


def get_current_session() -> Session[Any]:
    """The session bound by `run_with_session`; FAILED_PRECONDITION when there is none."""
    session = _current.get()
    if session is None:
        raise TurnkitError("FAILED_PRECONDITION", "no current session: call inside run_with_session()")
    return session
