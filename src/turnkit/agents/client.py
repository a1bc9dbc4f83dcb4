"""The client surface: `agent.chat()` and what it returns, over a transport (in-process or HTTP).

A chat keeps what the client must remember between turns (the snapshot or session id for a
server-managed agent, the whole state for a client-managed one) and sends one turn per call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import jsonpatch

from turnkit.errors import TurnkitError
from turnkit.types import (
    AgentFinishReason,
    AgentInit,
    AgentInput,
    AgentOutput,
    AgentStreamChunk,
    Artifact,
    Message,
    Part,
    Resume,
    SessionSnapshot,
    SessionState,
    SnapshotStatus,
    ToolRequest,
    ToolResponse,
)

if TYPE_CHECKING:
    from turnkit.agents.agent import Agent
    from turnkit.agents.connection import AgentConnection

__all__ = [
    "AgentChat",
    "AgentInterrupt",
    "AgentResponse",
    "AgentTransport",
    "AgentTurn",
    "DetachedTask",
    "LocalTransport",
    "TurnChunk",
    "TurnResult",
]

ChunkSink = Callable[[AgentStreamChunk], None]


@dataclass
class TurnResult:
    """A transport's answer to one turn: the output and, when cheaply known, the full session state."""

    output: AgentOutput
    state: SessionState | None = None


class AgentTransport(Protocol):
    """How a chat reaches an agent: one turn per call, snapshots, abort."""

    state_management: Literal["server", "client"]

    async def run_turn(self, init: AgentInit, item: AgentInput, on_chunk: ChunkSink | None) -> TurnResult:
        """Run one turn and return its output; chunks go to `on_chunk` as they come."""
        ...

    async def abort_turn(self) -> None:
        """Stop the turn this transport is running, if any."""
        ...

    async def get_snapshot(
        self, *, snapshot_id: str | None = None, session_id: str | None = None
    ) -> SessionSnapshot | None:
        """A snapshot by id, or a session's latest."""
        ...

    async def abort(self, snapshot_id: str) -> SnapshotStatus | None:
        """Abort a (detached) turn by its snapshot id; returns the status before."""
        ...


class LocalTransport:
    """The in-process transport: runs the agent in this process."""

    def __init__(
        self, agent: Agent, *, context: Mapping[str, Any] | None = None, prompt_input: Any = None
    ) -> None:
        self.agent = agent
        self.context = dict(context or {})
        self.prompt_input = prompt_input
        self.state_management = agent.state_management
        self._conn: AgentConnection | None = None
        self._abort_pending = False

    async def run_turn(self, init: AgentInit, item: AgentInput, on_chunk: ChunkSink | None) -> TurnResult:
        """Run one turn through a fresh connection."""
        conn = await self.agent.stream_bidi(init, context=self.context, prompt_input=self.prompt_input)
        self._conn = conn
        if self._abort_pending:  # aborted before the connection existed
            self._abort_pending = False
            conn.abort_turn()
        try:
            await conn.send(item)
            await conn.close()
            if on_chunk is not None and not item.detach:
                async for chunk in conn.receive():
                    on_chunk(chunk)
            output = await conn.output()
            session = conn._inv.session
            state = session.to_state() if session is not None and not item.detach else None
            return TurnResult(output, self.agent.client_state(state))
        except asyncio.CancelledError:
            await conn.cancel()
            raise
        finally:
            self._conn = None

    async def abort_turn(self) -> None:
        """Abort the running turn; it ends with finish reason `aborted`."""
        if self._conn is not None:
            self._conn.abort_turn()
        else:
            self._abort_pending = True

    async def get_snapshot(
        self, *, snapshot_id: str | None = None, session_id: str | None = None
    ) -> SessionSnapshot | None:
        """A snapshot from the agent's store."""
        return await self.agent.get_snapshot(snapshot_id, session_id=session_id, context=self.context)

    async def abort(self, snapshot_id: str) -> SnapshotStatus | None:
        """Abort through the agent's store."""
        return await self.agent.abort(snapshot_id, context=self.context)


class AgentInterrupt:
    """An interrupted tool request, with helpers to answer it."""

    def __init__(self, part: Part) -> None:
        assert part.tool_request is not None
        self.part = part
        self.name = part.tool_request.name
        self.ref = part.tool_request.ref
        self.input = part.tool_request.input
        self.data = (part.metadata or {}).get("interrupt")

    def respond(self, output: Any, *, metadata: dict[str, Any] | None = None) -> Part:
        """A tool response that answers this interrupt with `output` (for `resume(respond=...)`)."""
        return Part(
            tool_response=ToolResponse(name=self.name, ref=self.ref, output=output), metadata=metadata
        )

    def restart(self, resumed: Any = True) -> Part:
        """The same tool request, to run the tool again with `resumed` metadata (for `resume(restart=...)`)."""
        return Part(
            tool_request=ToolRequest(name=self.name, ref=self.ref, input=self.input),
            metadata={"resumed": resumed},
        )

    def __repr__(self) -> str:
        return f"AgentInterrupt({self.name!r}, ref={self.ref!r})"


class AgentResponse:
    """The result of one turn as a client sees it."""

    def __init__(self, output: AgentOutput, state: SessionState | None = None) -> None:
        self.output = output
        self.state = output.state or state

    @property
    def message(self) -> Message | None:
        """The turn's final message."""
        return self.output.message

    @property
    def text(self) -> str:
        """The text of the final message."""
        return self.output.message.text if self.output.message else ""

    @property
    def messages(self) -> list[Message]:
        """The whole history after this turn (when the transport knows it)."""
        return list(self.state.messages or []) if self.state else []

    @property
    def custom(self) -> Any:
        """The custom state after this turn (when the transport knows it)."""
        return self.state.custom if self.state else None

    @property
    def artifacts(self) -> list[Artifact]:
        """The session's artifacts after this turn."""
        return list(self.output.artifacts or (self.state.artifacts if self.state else None) or [])

    @property
    def finish_reason(self) -> AgentFinishReason | None:
        """Why the turn ended: stop, interrupted, failed, aborted, detached, ..."""
        return self.output.finish_reason

    @property
    def snapshot_id(self) -> str | None:
        """The snapshot this turn wrote (server-managed agents)."""
        return self.output.snapshot_id

    @property
    def session_id(self) -> str | None:
        """The session id."""
        return self.output.session_id or (self.state.session_id if self.state else None)

    @property
    def error(self) -> TurnkitError | None:
        """The failure of a failed turn."""
        err = self.output.error
        return TurnkitError(err.status or "UNKNOWN", err.message, details=err.details) if err else None

    @property
    def interrupts(self) -> list[AgentInterrupt]:
        """The tool requests waiting for the client (finish reason `interrupted`)."""
        return [AgentInterrupt(p) for p in (self.message.interrupts if self.message else [])]

    def assert_valid(self) -> AgentResponse:
        """Raise the turn's error when it failed; return self otherwise."""
        if self.error is not None:
            raise self.error
        return self

    def __repr__(self) -> str:
        return f"AgentResponse(finish_reason={self.finish_reason!r}, text={self.text[:40]!r})"


class TurnChunk:
    """A streamed chunk with what the client has accumulated so far."""

    def __init__(self, chunk: AgentStreamChunk, accumulated_text: str, custom: Any) -> None:
        self.chunk = chunk
        self.accumulated_text = accumulated_text
        self.custom = custom

    @property
    def text(self) -> str:
        """This chunk's model text."""
        return self.chunk.model_chunk.text if self.chunk.model_chunk else ""

    @property
    def artifact(self) -> Artifact | None:
        """The artifact this chunk carries."""
        return self.chunk.artifact

    @property
    def tool_requests(self) -> list[Part]:
        """Tool requests in this chunk's model content."""
        return [
            p for p in (self.chunk.model_chunk.content if self.chunk.model_chunk else []) if p.tool_request
        ]

    @property
    def turn_end(self) -> bool:
        """Whether this chunk ends the turn."""
        return self.chunk.turn_end is not None


class AgentTurn:
    """A streaming turn: iterate `stream`, await `response`, or `abort()` it."""

    def __init__(self, chat: AgentChat, item: AgentInput) -> None:
        self._chat = chat
        self._queue: asyncio.Queue[TurnChunk | None] = asyncio.Queue()
        self._text = ""
        chat._scheduled += 1
        self._task = asyncio.ensure_future(chat._turn(item, self._on_chunk, scheduled=True))
        self._task.add_done_callback(lambda _: self._queue.put_nowait(None))

    def _on_chunk(self, chunk: AgentStreamChunk) -> None:
        if chunk.model_chunk is not None and (chunk.model_chunk.role in (None, "model")):
            self._text += chunk.model_chunk.text
        self._queue.put_nowait(TurnChunk(chunk, self._text, self._chat.custom))

    @property
    def stream(self) -> AsyncIterator[TurnChunk]:
        """The turn's chunks, in order."""
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[TurnChunk]:
        while (item := await self._queue.get()) is not None:
            yield item

    @property
    def response(self) -> asyncio.Task[AgentResponse]:
        """An awaitable of the turn's response."""
        return self._task

    async def abort(self) -> AgentResponse:
        """Stop this turn (model call and tools included); returns its response (finish reason `aborted`)."""
        await self._chat.abort()
        return await self._task


class DetachedTask:
    """A turn running in the background: poll it, wait for it, or abort it."""

    def __init__(self, transport: AgentTransport, output: AgentOutput) -> None:
        self._transport = transport
        self.output = output
        self.snapshot_id = output.snapshot_id or ""
        self.session_id = output.session_id

    async def poll(self) -> SessionSnapshot | None:
        """The snapshot as it is now (status pending, completed, failed, aborted or expired)."""
        return await self._transport.get_snapshot(snapshot_id=self.snapshot_id)

    async def wait(self, *, timeout: float = 60.0, interval: float = 0.05) -> SessionSnapshot:  # noqa: ASYNC109 - a polling deadline, not a cancel scope
        """Poll until the snapshot is no longer pending; DEADLINE_EXCEEDED after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            snap = await self.poll()
            if snap is not None and snap.status != "pending":
                return snap
            if time.monotonic() >= deadline:
                raise TurnkitError(
                    "DEADLINE_EXCEEDED", f"snapshot {self.snapshot_id!r} still pending after {timeout}s"
                )
            await asyncio.sleep(interval)

    async def abort(self) -> SnapshotStatus | None:
        """Abort the background turn; returns the status before."""
        return await self._transport.abort(self.snapshot_id)


class AgentChat:
    """A conversation with one agent: send turns, stream them, answer interrupts, detach, abort."""

    def __init__(
        self,
        transport: AgentTransport,
        *,
        session_id: str | None = None,
        snapshot_id: str | None = None,
        state: SessionState | dict[str, Any] | None = None,
    ) -> None:
        self.transport = transport
        server = transport.state_management == "server"
        if state is not None and server:
            raise TurnkitError(
                "FAILED_PRECONDITION",
                "Cannot send 'state' to a server-managed agent; use session_id or snapshot_id",
            )
        if not server and (session_id or snapshot_id):
            raise TurnkitError(
                "FAILED_PRECONDITION",
                "Cannot use 'sessionId' or 'snapshotId' with a client-managed agent; pass state",
            )
        self.session_id = session_id
        self.snapshot_id = snapshot_id
        self._by_session = session_id is not None and snapshot_id is None
        self.state: SessionState | None = SessionState.from_wire(state) if state is not None else None
        self.custom: Any = self.state.custom if self.state else None
        self.last: AgentResponse | None = None
        self.loaded: SessionSnapshot | None = None
        self._running: asyncio.Task[Any] | None = None
        self._scheduled = 0  # streaming turns created but not started yet
        self._abort_next = False
        # One turn at a time: two concurrent sends would both continue the same snapshot and fork.
        self._lock = asyncio.Lock()
        self._detached: tuple[str, str | None] | None = None  # (pending snapshot, the one before it)
        # A snapshot id given with a session id is checked against it by the agent.
        self._guard_session = session_id if snapshot_id is not None else None

    def _init(self) -> AgentInit:
        if self.transport.state_management == "client":
            return AgentInit(state=self.state) if self.state is not None else AgentInit()
        if self._by_session:
            return AgentInit(session_id=self.session_id)
        if self.snapshot_id:
            return AgentInit(snapshot_id=self.snapshot_id, session_id=self._guard_session)
        return AgentInit()

    async def _turn(
        self, item: AgentInput, on_chunk: ChunkSink | None, *, scheduled: bool = False
    ) -> AgentResponse:
        async with self._lock:
            await self._settle_detached()
            return await self._turn_locked(item, on_chunk, scheduled=scheduled)

    async def _settle_detached(self) -> None:
        """After a detached turn, continue from it if it completed, else from the snapshot before it."""
        if self._detached is None:
            return
        pending, before = self._detached
        snap = await self.transport.get_snapshot(snapshot_id=pending)
        if snap is None or snap.status in ("failed", "aborted", "expired"):
            self.snapshot_id, self._detached = before, None
        elif snap.status == "completed":
            self._detached = None
        # still pending: the agent refuses to continue from it, which says to wait

    async def _turn_locked(
        self, item: AgentInput, on_chunk: ChunkSink | None, *, scheduled: bool = False
    ) -> AgentResponse:
        def sink(chunk: AgentStreamChunk) -> None:
            if chunk.custom_patch is not None:
                ops = [op.to_wire() for op in chunk.custom_patch]
                self.custom = (
                    jsonpatch.apply_patch(self.custom, ops)
                    if self.custom is not None or ops[0]["path"]
                    else ops[0].get("value")
                )
            if on_chunk is not None:
                on_chunk(chunk)

        self._running = asyncio.current_task()
        if scheduled:
            self._scheduled -= 1
        if self._abort_next:  # abort() came before this turn started
            self._abort_next = False
            await self.transport.abort_turn()
        try:
            result = await self.transport.run_turn(self._init(), item, sink)
        finally:
            self._running = None
        out = result.output
        if out.session_id:
            self.session_id = self.session_id or out.session_id
        if out.snapshot_id and out.finish_reason not in ("failed", "aborted", "detached"):
            self.snapshot_id = out.snapshot_id
        if self.transport.state_management == "client" and out.state is not None:
            self.state = out.state
        state = result.state or out.state
        if state is not None and state.custom is not None:
            self.custom = state.custom
        self.last = AgentResponse(out, state)
        return self.last

    async def send(self, message: str | Message | AgentInput | dict[str, Any]) -> AgentResponse:
        """Send one turn and return its response (a failed turn is returned, not raised)."""
        return await self._turn(_as_input(message), None)

    def send_stream(self, message: str | Message | AgentInput | dict[str, Any]) -> AgentTurn:
        """Send one turn and stream it."""
        return AgentTurn(self, _as_input(message))

    async def resume(
        self, *, respond: Sequence[Part | dict[str, Any]] = (), restart: Sequence[Part | dict[str, Any]] = ()
    ) -> AgentResponse:
        """Answer the last turn's interrupts: `respond` with tool responses, `restart` with tool requests."""
        resume = Resume(
            respond=[Part.from_wire(p) for p in respond] or None,
            restart=[Part.from_wire(p) for p in restart] or None,
        )
        return await self._turn(AgentInput(resume=resume), None)

    async def detach(self, message: str | Message | AgentInput | dict[str, Any]) -> DetachedTask:
        """Send one turn to run in the background; returns a handle to poll, wait for, or abort it."""
        if self.transport.state_management != "server":
            raise TurnkitError(
                "FAILED_PRECONDITION", "only a server-managed agent (with a store) can run detached turns"
            )
        item = _as_input(message).model_copy(update={"detach": True})
        async with self._lock:
            await self._settle_detached()
            result = await self.transport.run_turn(self._init(), item, None)
            if result.output.session_id:
                self.session_id = self.session_id or result.output.session_id
            if result.output.snapshot_id:  # the chat now points at the pending snapshot
                self._detached = (result.output.snapshot_id, self.snapshot_id)
                self.snapshot_id = result.output.snapshot_id
        return DetachedTask(self.transport, result.output)

    async def abort(self) -> None:
        """Stop the turn this chat is running (attached), model call and tools included."""
        if self._running is not None:
            await self.transport.abort_turn()
        elif self._scheduled:
            self._abort_next = True

    async def get_snapshot(self) -> SessionSnapshot | None:
        """The snapshot this chat is at (server-managed)."""
        if self.snapshot_id:
            return await self.transport.get_snapshot(snapshot_id=self.snapshot_id)
        if self.session_id:
            return await self.transport.get_snapshot(session_id=self.session_id)
        return None


def _as_input(message: str | Message | AgentInput | dict[str, Any]) -> AgentInput:
    if isinstance(message, AgentInput):
        return message
    if isinstance(message, str):
        return AgentInput(message=Message(role="user", content=[Part(text=message)]))
    if isinstance(message, Message):
        return AgentInput(message=message)
    return AgentInput.from_wire(message)
