"""Agents: an agent function plus session handling; the three ways to define one build on `Agent`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Generic, Literal

from turnkit._generate import generate
from turnkit._registry import Registry
from turnkit.agents._agent_session import AgentResult, AgentSession
from turnkit.agents._client import AgentChat, LocalTransport
from turnkit.agents._connection import AgentConnection
from turnkit.agents._runner import Invocation
from turnkit.agents._snapshots import abort_snapshot, heartbeat
from turnkit.agents._turn import AgentContext, TurnContext
from turnkit.errors import TurnkitError
from turnkit.sessions import Session, SessionStore
from turnkit.sessions._state_type import S, StateType
from turnkit.types import (
    AgentInit,
    AgentInput,
    AgentOutput,
    AgentStreamChunk,
    Artifact,
    Message,
    SessionSnapshot,
    SessionState,
    SnapshotStatus,
)

__all__ = ["Agent", "AgentFn", "generate_turn"]

# An agent function: drives the session of one invocation (`AgentFn[MyState]` types its state).
AgentFn = Callable[[AgentSession[S], AgentContext], Awaitable[AgentResult | None]]
StateTransform = Callable[[SessionState], SessionState]
ChunkTransform = Callable[[AgentStreamChunk], AgentStreamChunk | None]
# Builds the generate options of one turn from the history and the invocation context.
TurnOptions = Callable[[list[Message], AgentContext], Awaitable[dict[str, Any]]]


class Agent(Generic[S]):
    """A registered agent: run it with `stream_bidi`, talk to it with `chat`, inspect snapshots, abort.

    Generic in its custom state type `S` (from `state_schema`; Any without one): `state_type`
    converts the state between its JSON form, which sessions, stores and the wire carry, and `S`.
    Build agents with `ai.define_agent` / `define_prompt_agent` / `define_custom_agent`, which check
    their options; the constructor takes them as already checked.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        name: str,
        fn: AgentFn[S],
        store: SessionStore | None = None,
        state_type: StateType[S] | None = None,
        state_transform: StateTransform | None = None,
        chunk_transform: ChunkTransform | None = None,
        description: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        prompt_input: Any = None,
        heartbeat_interval: float = 5.0,
        on_conflict: Literal["queue", "reject"] = "queue",
        lease_wait: float = 30.0,
    ) -> None:
        self.registry = registry
        self.name = name
        self.fn = fn
        self.store = store
        self.state_type: StateType[S] = state_type if state_type is not None else StateType()
        self.state_transform = state_transform
        self.chunk_transform = chunk_transform
        self.description = description
        self.extra_metadata = dict(metadata or {})
        self.prompt_input = prompt_input
        # Middleware for every generate call its turns make (`use=`), outermost; set by define_*.
        self.use: list[Any] = []
        self.heartbeat_interval = heartbeat_interval
        # Two turns continuing one session by id: the second waits up to `lease_wait` seconds for
        # the first ("queue"), or fails at once with ABORTED ("reject").
        if on_conflict not in ("queue", "reject"):
            raise TurnkitError(
                "INVALID_ARGUMENT", f"on_conflict must be 'queue' or 'reject', not {on_conflict!r}"
            )
        self.on_conflict = on_conflict
        self.lease_wait = lease_wait
        self._background: dict[str, tuple[TurnContext, asyncio.Task[None]]] = {}

    @property
    def state_management(self) -> Literal["server", "client"]:
        """ "server" when a store keeps the sessions (clients hold snapshot ids), else "client"."""
        return "server" if self.store is not None else "client"

    @property
    def state_schema(self) -> Any:
        """The schema given as `state_schema` (a model class, TypedDict or JSON schema), or None."""
        return self.state_type.schema

    @property
    def metadata(self) -> dict[str, Any]:
        """The agent's metadata as published to clients and tools: the caller's `metadata`, then
        what the runtime owns (state management, abortable, state schema, description), which wins."""
        meta: dict[str, Any] = {
            **self.extra_metadata,
            "stateManagement": self.state_management,
            "abortable": self.store is not None,
        }
        schema = self.state_type.json_schema
        if schema is not None:
            meta["stateSchema"] = schema
        if self.description:
            meta["description"] = self.description
        return meta

    # --- running -------------------------------------------------------------------------------

    async def stream_bidi(
        self,
        init: AgentInit | dict[str, Any] | None = None,
        *,
        context: Mapping[str, Any] | None = None,
        prompt_input: Any = None,
    ) -> AgentConnection:
        """Open a connection: resolve `init` (new chat, session id, snapshot id, or state) and start."""
        agent_ctx = AgentContext(context=dict(context or {}), prompt_input=prompt_input)
        conn: AgentConnection | None = None

        def emit(chunk: AgentStreamChunk, custom_after: Any) -> None:
            assert conn is not None
            conn._emit(chunk, custom_after)

        invocation = Invocation(self, AgentInit.from_wire(init or {}), ctx=agent_ctx, emit=emit)
        conn = await AgentConnection.open(self, invocation, agent_ctx)
        return conn

    async def run(
        self,
        init: AgentInit | dict[str, Any] | None,
        inputs: Sequence[AgentInput | dict[str, Any]],
        *,
        on_chunk: Callable[[AgentStreamChunk], None] | None = None,
        context: Mapping[str, Any] | None = None,
        prompt_input: Any = None,
    ) -> AgentOutput:
        """Run one invocation with these inputs, streaming chunks to `on_chunk`; return its output."""
        conn = await self.stream_bidi(init, context=context, prompt_input=prompt_input)
        items = [AgentInput.from_wire(i) for i in inputs]
        try:
            for item in items:
                await conn.send(item)
            await conn.close()
            if on_chunk is not None and not any(i.detach for i in items):  # detached: no chunks
                while True:
                    async for chunk in conn.receive():
                        on_chunk(chunk)
                    if conn.finished:
                        break
            return await conn.output()
        except BaseException:  # cancelled, or a refused input: the connection must not linger
            await conn.cancel()
            raise

    # --- snapshots and abort -------------------------------------------------------------------

    def client_state(self, state: SessionState | None) -> SessionState | None:
        """The state as clients may see it (after the agent's `state_transform`)."""
        if state is None or self.state_transform is None:
            return state
        return self.state_transform(state)

    def _require_store(self, what: str) -> SessionStore:
        if self.store is None:
            raise TurnkitError(
                "FAILED_PRECONDITION", f"agent {self.name!r} is client-managed (no store); it has no {what}"
            )
        return self.store

    async def get_snapshot(
        self,
        snapshot_id: str | None = None,
        *,
        session_id: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> SessionSnapshot | None:
        """A snapshot by id, or the latest of a session; None when there is none. Its custom state
        is as stored (JSON; `self.state_type.load(...)` types it), as in Genkit."""
        store = self._require_store("snapshots")
        if (snapshot_id is None) == (session_id is None):
            raise TurnkitError("INVALID_ARGUMENT", "give exactly one of snapshot_id and session_id")
        snap = await store.get_snapshot(snapshot_id=snapshot_id, session_id=session_id, context=context)
        if snap is not None and snap.state is not None and self.state_transform is not None:
            snap = snap.model_copy(update={"state": self.state_transform(snap.state)})
        return snap

    async def abort(
        self, snapshot_id: str, *, context: Mapping[str, Any] | None = None
    ) -> SnapshotStatus | None:
        """Abort the turn writing `snapshot_id`; returns its status before (None if there is none).

        Only a `pending` snapshot changes (to `aborted`); the turn stops wherever it runs.
        """
        store = self._require_store("snapshots to abort")
        previous = await abort_snapshot(store, snapshot_id, context=context)
        local = self._background.get(snapshot_id)
        if local is not None and previous == SnapshotStatus.PENDING:
            local[0].abort()  # a turn running here stops at once; others learn through the store
        return previous

    def track_background(
        self,
        turn: TurnContext,
        context: Mapping[str, Any],
        progress: Callable[[], SessionState] | None = None,
    ) -> None:
        """Keep a detached turn's heartbeat going (storing `progress()` with each beat) and make it
        abortable locally until it ends."""
        assert self.store is not None and turn.snapshot_id is not None
        sid = turn.snapshot_id
        beat = asyncio.ensure_future(heartbeat(self.store, sid, self.heartbeat_interval, context, progress))
        self._background[sid] = (turn, beat)

    def untrack_background(self, snapshot_id: str) -> None:
        """Forget a finished detached turn."""
        entry = self._background.pop(snapshot_id, None)
        if entry is not None:
            entry[1].cancel()

    # --- client surface ------------------------------------------------------------------------

    def chat(
        self,
        *,
        session_id: str | None = None,
        snapshot_id: str | None = None,
        messages: Sequence[Message | dict[str, Any]] | None = None,
        artifacts: Sequence[Artifact | dict[str, Any]] | None = None,
        state: S | Mapping[str, Any] | None = None,
        session_state: SessionState | Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        prompt_input: Any = None,
    ) -> AgentChat[S]:
        """A conversation with this agent, new or continuing one.

        Server-managed (with a store): continue a `session_id` or a `snapshot_id`. Client-managed:
        start from `messages`, `artifacts` and the custom `state` (an `S` or its JSON form, checked
        against `state_schema`), as in Genkit, or from a whole `session_state` (what
        `chat.session_state` returned) to continue a conversation. FAILED_PRECONDITION for what the
        agent's mode does not take.
        """
        transport = LocalTransport(self, context=context, prompt_input=prompt_input)
        return AgentChat(
            transport,
            session_id=session_id,
            snapshot_id=snapshot_id,
            messages=messages,
            artifacts=artifacts,
            state=state,
            session_state=session_state,
        )

    async def load_chat(
        self,
        *,
        session_id: str | None = None,
        snapshot_id: str | None = None,
        context: Mapping[str, Any] | None = None,
        prompt_input: Any = None,
    ) -> AgentChat[S]:
        """A chat continuing an existing session or snapshot; NOT_FOUND when it does not exist."""
        snap = await self.get_snapshot(snapshot_id, session_id=session_id, context=context)
        if snap is None:
            raise TurnkitError(
                "NOT_FOUND",
                f"no snapshot for {'session ' + repr(session_id) if session_id else repr(snapshot_id)}",
            )
        chat = self.chat(
            session_id=session_id,
            snapshot_id=snapshot_id or snap.snapshot_id,
            context=context,
            prompt_input=prompt_input,
        )
        chat.loaded = snap  # sets the chat's state, custom state included
        return chat

    def __repr__(self) -> str:
        return f"Agent({self.name!r}, {self.state_management}-managed)"


def generate_turn(registry: Registry, options: TurnOptions) -> AgentFn[Any]:
    """An agent function whose every turn is one `generate` call over the session history."""

    async def agent_fn(sess: AgentSession[Any], ctx: AgentContext) -> AgentResult:
        async def handle(item: AgentInput, turn: TurnContext) -> Any:
            history = await sess.get_messages()
            kwargs = await options(history, ctx)
            sent: list[Message] = kwargs["messages"]
            response = await generate(
                registry, **kwargs, resume=item.resume, model_context=turn.model_context()
            )
            await _sync_history(sess.session, history, sent, response.messages)
            return response

        await sess.run(handle)
        return await sess.result()

    return agent_fn


async def _sync_history(
    session: Session[Any], history: list[Message], sent: list[Message], result: list[Message]
) -> None:
    """Store what generate added to the history, appending when the old history is untouched."""
    if history:
        start = next((i for i, m in enumerate(sent) if m is history[0]), None)
        if start is None:
            start = next((i for i, m in enumerate(sent) if m == history[0]), len(sent) - len(history))
    else:
        start = 0
        while start < len(sent) and sent[start].role == "system":
            start += 1
    tail = result[start:]
    # List equality compares identity first, in C: cheap when generate left the history untouched.
    if tail[: len(history)] == history:
        await session.add_messages(tail[len(history) :])
    else:  # generate rewrote history (e.g. a resumed interrupt): store it whole
        await session.set_messages(tail)
