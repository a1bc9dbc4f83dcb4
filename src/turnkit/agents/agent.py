"""Agents: an agent function plus session handling; the three ways to define one build on `Agent`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from turnkit.agents.connection import AgentConnection
from turnkit.agents.runner import AgentResult, AgentSession, Invocation, heartbeat
from turnkit.agents.turn import AgentContext, TurnContext
from turnkit.errors import TurnkitError
from turnkit.sessions import Session, SessionStore
from turnkit.types import (
    AgentInit,
    AgentInput,
    AgentOutput,
    AgentStreamChunk,
    Message,
    SessionSnapshot,
    SessionState,
    SnapshotStatus,
)

if TYPE_CHECKING:
    from turnkit.agents.client import AgentChat
    from turnkit.app import Turnkit

__all__ = ["Agent", "AgentFn", "generate_turn"]

AgentFn = Callable[[AgentSession, AgentContext], Awaitable[AgentResult | None]]
StateTransform = Callable[[SessionState], SessionState]
ChunkTransform = Callable[[AgentStreamChunk], AgentStreamChunk | None]
# Builds the generate options of one turn from the history and the invocation context.
TurnOptions = Callable[[list[Message], AgentContext], Awaitable[dict[str, Any]]]


class Agent:
    """A registered agent: run it with `stream_bidi`, talk to it with `chat`, inspect snapshots, abort."""

    def __init__(
        self,
        ai: Turnkit,
        *,
        name: str,
        fn: AgentFn,
        store: SessionStore | None = None,
        state_schema: Any = None,
        state_transform: StateTransform | None = None,
        chunk_transform: ChunkTransform | None = None,
        description: str | None = None,
        prompt_input: Any = None,
        heartbeat_interval: float = 5.0,
        on_conflict: Literal["queue", "reject"] = "queue",
        lease_wait: float = 30.0,
    ) -> None:
        self.ai = ai
        self.name = name
        self.fn = fn
        self.store = store
        self.state_schema = state_schema
        self.state_transform = state_transform
        self.chunk_transform = chunk_transform
        self.description = description
        self.prompt_input = prompt_input
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
    def metadata(self) -> dict[str, Any]:
        """The agent's metadata as published to clients and tools."""
        meta: dict[str, Any] = {"stateManagement": self.state_management, "abortable": self.store is not None}
        schema = _json_schema(self.state_schema)
        if schema is not None:
            meta["stateSchema"] = schema
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

        def emit(chunk: AgentStreamChunk) -> None:
            assert conn is not None
            conn._emit(chunk)

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
        except asyncio.CancelledError:
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
        """A snapshot by id, or the latest of a session; None when there is none."""
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
        previous: list[SnapshotStatus | None] = [None]

        def flip(existing: SessionSnapshot | None) -> SessionSnapshot | None:
            previous[0] = existing.status if existing else None
            if existing is None or existing.status not in ("pending", "expired"):
                return None
            from turnkit.agents.runner import now_iso

            return existing.model_copy(
                update={"status": "aborted", "finish_reason": "aborted", "updated_at": now_iso()}
            )

        await store.save_snapshot(snapshot_id, flip, context=context)
        local = self._background.get(snapshot_id)
        if local is not None and previous[0] == "pending":
            local[0].abort()  # a turn running here stops at once; others learn through the store
        return previous[0]

    def track_background(self, turn: TurnContext, context: Mapping[str, Any]) -> None:
        """Keep a detached turn's heartbeat going and make it abortable locally until it ends."""
        assert self.store is not None and turn.snapshot_id is not None
        sid = turn.snapshot_id
        beat = asyncio.ensure_future(heartbeat(self.store, sid, self.heartbeat_interval, context))
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
        state: SessionState | dict[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        prompt_input: Any = None,
    ) -> AgentChat:
        """A conversation with this agent, new or continuing a session, snapshot, or client state."""
        from turnkit.agents.client import AgentChat, LocalTransport

        transport = LocalTransport(self, context=context, prompt_input=prompt_input)
        return AgentChat(transport, session_id=session_id, snapshot_id=snapshot_id, state=state)

    async def load_chat(
        self,
        *,
        session_id: str | None = None,
        snapshot_id: str | None = None,
        context: Mapping[str, Any] | None = None,
        prompt_input: Any = None,
    ) -> AgentChat:
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
        chat.loaded = snap
        if snap.state is not None:
            chat.custom = snap.state.custom
        return chat

    def __repr__(self) -> str:
        return f"Agent({self.name!r}, {self.state_management}-managed)"


def generate_turn(ai: Turnkit, options: TurnOptions) -> AgentFn:
    """An agent function whose every turn is one `generate` call over the session history."""

    async def agent_fn(sess: AgentSession, ctx: AgentContext) -> AgentResult:
        async def handle(item: AgentInput, turn: TurnContext) -> Any:
            history = await sess.get_messages()
            kwargs = await options(history, ctx)
            sent: list[Message] = kwargs["messages"]
            response = await ai.generate(**kwargs, resume=item.resume, model_context=turn.model_context())
            await _sync_history(sess.session, history, sent, response.messages)
            return response

        await sess.run(handle)
        return await sess.result()

    return agent_fn


async def _sync_history(
    session: Session, history: list[Message], sent: list[Message], result: list[Message]
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


def _json_schema(schema: Any) -> dict[str, Any] | None:
    if schema is None:
        return None
    if isinstance(schema, dict):
        return schema
    with contextlib.suppress(AttributeError):
        result: dict[str, Any] = schema.model_json_schema()
        return result
    return None
