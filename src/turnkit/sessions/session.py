"""`Session`: one conversation's messages, custom state and artifacts, and the current-session context.

Messages and artifacts are treated as immutable once they are in a session: lists handed out are
new lists of the same objects, so snapshots can share them instead of copying the history. Never
mutate a Message or Artifact in place; build a new one. Custom state is small and copied instead.
"""

from __future__ import annotations

import asyncio
import copy
import importlib
import inspect
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from turnkit.errors import TurnkitError
from turnkit.sessions.store import check_id
from turnkit.types import Artifact, Message, SessionState, WireModel

if TYPE_CHECKING:
    from turnkit.sessions.store import SessionStore

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
StateSchema = type[BaseModel] | Mapping[str, Any]

_log = logging.getLogger(__name__)

try:  # JSON-schema validation is optional: without the package, dict schemas are not enforced.
    _jsonschema: Any = importlib.import_module("jsonschema")
except ImportError:  # pragma: no cover - the dev extra installs it
    _jsonschema = None


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


class Session:
    """Messages, typed custom state and artifacts of one session, safe to share between asyncio tasks.

    `update_custom` is serialised by a lock (its function may await); the other mutations are
    single steps that cannot interleave on the event loop. `state_schema` (a Pydantic model class,
    or a JSON schema dict, enforced when `jsonschema` is installed) validates every custom value;
    a Pydantic-validated value is kept in its JSON form. `store` is carried for the runtime that
    persists this session; the session itself never touches it.
    """

    def __init__(
        self,
        id: str | None = None,
        *,
        messages: Iterable[Message] | None = None,
        custom: Any = None,
        artifacts: Iterable[Artifact] | None = None,
        state_schema: StateSchema | None = None,
        store: SessionStore | None = None,
    ) -> None:
        self._id = check_id(id, "session id") if id is not None else str(uuid.uuid4())
        self.state_schema = state_schema
        self.store = store
        self._messages: list[Message] = list(_many(messages or (), Message))
        self._custom: Any = None if custom is None else self._validate(copy.deepcopy(custom))
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
        state_schema: StateSchema | None = None,
        store: SessionStore | None = None,
    ) -> Session:
        """A session holding `state` (its id, or a new one): messages shared, custom state copied."""
        return cls(
            state.session_id,
            messages=state.messages,
            custom=state.custom,
            artifacts=state.artifacts,
            state_schema=state_schema,
            store=store,
        )

    @property
    def id(self) -> str:
        """The session id."""
        return self._id

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

    async def get_custom(self) -> Any:
        """A copy of the custom state (None when unset)."""
        return copy.deepcopy(self._custom)

    async def update_custom(self, fn: Callable[[Any], Any]) -> Any:
        """Atomically replace custom state with `fn(copy of old)`; `fn` may be async. Returns a copy of
        the new value. An invalid value raises INVALID_ARGUMENT and leaves the state unchanged."""
        task = asyncio.current_task()
        if task is not None and self._custom_owner is task:
            # The lock is not reentrant: waiting here would wait for ourselves forever.
            raise TurnkitError("FAILED_PRECONDITION", "update_custom called from inside its own update")
        async with self._lock:
            self._custom_owner = task
            try:
                result = fn(copy.deepcopy(self._custom))
                if inspect.isawaitable(result):
                    result = await result
            finally:
                self._custom_owner = None
            new = self._validate(result)
            old, self._custom = self._custom, new
            self._emit(CustomChanged(old, new))
            return copy.deepcopy(new)

    def _validate(self, value: Any) -> Any:
        schema = self.state_schema
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            try:
                model = value if isinstance(value, schema) else schema.model_validate(value)
            except ValidationError as exc:
                raise TurnkitError("INVALID_ARGUMENT", f"invalid custom state: {exc}") from exc
            return model.model_dump(mode="json", by_alias=True)
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json", by_alias=True)
        if schema is not None and _jsonschema is not None:
            try:
                _jsonschema.validate(value, dict(schema))
            except _jsonschema.ValidationError as exc:
                raise TurnkitError("INVALID_ARGUMENT", f"invalid custom state: {exc.message}") from exc
        return value

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
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                # The change has happened; a broken observer must not make it look as if it had not.
                _log.exception("session listener failed on %s", type(event).__name__)


_current: ContextVar[Session | None] = ContextVar("turnkit_current_session", default=None)


async def run_with_session(session: Session, coro: Awaitable[T]) -> T:
    """Await `coro` with `session` as the current session (also in the tasks it starts)."""
    token = _current.set(session)
    try:
        return await coro
    finally:
        _current.reset(token)


def get_current_session() -> Session:
    """The session bound by `run_with_session`; FAILED_PRECONDITION when there is none."""
    session = _current.get()
    if session is None:
        raise TurnkitError("FAILED_PRECONDITION", "no current session: call inside run_with_session()")
    return session
