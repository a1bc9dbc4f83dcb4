"""The client surface: `agent.chat()` over a transport (in-process or HTTP).

A chat keeps what the client must remember between turns (the snapshot or session id of a
server-managed agent, the whole state of a client-managed one) and its view of the session
(`messages`, `artifacts`, custom `state`), and sends one turn per call. A failed turn raises
`AgentError`; the chat stays at its last good state (see `turnkit.agents._response` for the rule
on errors and on `state` / `custom`).

Snapshots (`agent.get_snapshot()`, `chat.get_snapshot()`, `chat.loaded`) carry the custom state as
stored (JSON), as Genkit's `get_snapshot` does; only a `DetachedTask`'s snapshots carry it as an `S`
(also as Genkit does). `agent.state_type.load(snap.state.custom)` types a stored one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, cast

from turnkit.agents._chat_view import StreamedMessages, initial_state, merge_artifacts, patched
from turnkit.agents._handles import AgentTurn, DetachedTask
from turnkit.agents._response import AgentChunk, AgentError, AgentResponse
from turnkit.errors import TurnkitError
from turnkit.sessions._state_type import S, StateType
from turnkit.sessions._store import FINISHED_STATUSES
from turnkit.types import (
    AgentFinishReason,
    AgentInit,
    AgentInput,
    AgentOutput,
    AgentStreamChunk,
    Artifact,
    ErrorInfo,
    Message,
    Part,
    Resume,
    SessionSnapshot,
    SessionState,
    SnapshotStatus,
)

if TYPE_CHECKING:
    from turnkit.agents._agent import Agent
    from turnkit.agents._connection import AgentConnection

__all__ = ["AgentChat", "AgentTransport", "ChunkSink", "LocalTransport"]

ChunkSink = Callable[[AgentStreamChunk], None]
MessageInput = str | Message | AgentInput | dict[str, Any]
# Interrupt answers: one part or several, as models or wire dicts.
ResumeParts = Part | dict[str, Any] | Sequence[Part | dict[str, Any]]

# Turns after which the chat keeps its previous state: they left no trace in the session.
_NO_TRACE = (AgentFinishReason.FAILED, AgentFinishReason.ABORTED)


class AgentTransport(Protocol[S]):
    """How a chat reaches an agent: one turn per call, snapshots, abort."""

    state_management: Literal["server", "client"]
    # The agent's custom state type: the chat loads `state` through it.
    state_type: StateType[S]

    async def run_turn(self, init: AgentInit, item: AgentInput, on_chunk: ChunkSink | None) -> AgentOutput:
        """Run one turn and return its output; chunks go to `on_chunk` as they come.

        The output's `state` is the whole session after the turn when the transport knows it (a
        client-managed agent sends it; the in-process transport adds it for a server-managed one).
        Without it, the chat rebuilds its view from the streamed chunks.
        """
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
        """Abort a (detached) turn by its snapshot id; returns the status before (None: no snapshot)."""
        ...


class LocalTransport(Generic[S]):
    """The in-process transport: runs the agent in this process."""

    def __init__(
        self, agent: Agent[S], *, context: Mapping[str, Any] | None = None, prompt_input: Any = None
    ) -> None:
        self.agent = agent
        self.context = dict(context or {})
        self.prompt_input = prompt_input
        self.state_management = agent.state_management
        self.state_type: StateType[S] = agent.state_type
        self._conn: AgentConnection | None = None
        self._abort_pending = False
        # The last failed turn's error as the runtime kept it (its `__cause__` the original exception).
        self.last_error: TurnkitError | None = None

    async def run_turn(self, init: AgentInit, item: AgentInput, on_chunk: ChunkSink | None) -> AgentOutput:
        """Run one turn through a fresh connection; the output carries the session state after it."""
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
            self.last_error = conn.error
            session = conn.session
            if output.state is None and session is not None and not item.detach:
                # In process the whole state is at hand: the chat need not rebuild it from chunks.
                # (Set in place: this output is this call's own, and a copy costs more than the turn.)
                output.state = self.agent.client_state(session.to_state())
            return output
        except BaseException:  # cancelled, or a refused input: the connection must not linger
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
        """Abort through the agent's store; returns the status before (None: no snapshot)."""
        return await self.agent.abort(snapshot_id, context=self.context)


class AgentChat(Generic[S]):
    """A conversation with one agent: send turns, stream them, answer interrupts, detach, abort.

    `state` (also `custom`) is the custom state (an `S`, as the agent's `state_schema` says),
    `messages` and `artifacts` the session as this chat knows it, `session_state` all of it as wire
    data (custom state as JSON).

    A client-managed agent (no store) starts from what the chat is given, as in Genkit: `messages`,
    `artifacts` and the custom `state` (an `S` or its JSON form, checked against the schema), or a
    whole `session_state` (as `chat.session_state` gave it) to continue a conversation. A
    server-managed one continues a `session_id` or `snapshot_id` instead.
    """

    def __init__(
        self,
        transport: AgentTransport[S],
        *,
        session_id: str | None = None,
        snapshot_id: str | None = None,
        messages: Sequence[Message | dict[str, Any]] | None = None,
        artifacts: Sequence[Artifact | dict[str, Any]] | None = None,
        state: S | Mapping[str, Any] | None = None,
        session_state: SessionState | Mapping[str, Any] | None = None,
    ) -> None:
        self.transport = transport
        self._state = initial_state(
            transport.state_management,
            transport.state_type,
            session_id,
            snapshot_id,
            messages,
            artifacts,
            state,
            session_state,
        )
        # Client-managed: send the state even when empty once the caller gave one.
        self._seeded = any(v is not None for v in (messages, artifacts, state, session_state))
        self.session_id = session_id
        self.snapshot_id = snapshot_id
        self._by_session = session_id is not None and snapshot_id is None
        self.last: AgentResponse[S] | None = None
        self._loaded: SessionSnapshot | None = None
        self._running: asyncio.Task[Any] | None = None
        self._waiting: set[asyncio.Future[Any]] = set()  # tasks of turns asked for, not running yet
        self._abort_next = False
        # One turn at a time: two concurrent sends would both continue the same snapshot and fork.
        self._lock = asyncio.Lock()
        self._detached: tuple[str, str | None] | None = None  # (pending snapshot, the one before it)
        # A snapshot id given with a session id is checked against it by the agent.
        self._guard_session = session_id if snapshot_id is not None else None
        # Server-managed: True once the chat keeps a message the server did not record (a turn the
        # client stopped waiting for, whose prompt stays shown, as in Genkit). From then on the
        # chat extends its own history instead of taking the server's.
        self._own_history = False

    # --- what the chat knows -----------------------------------------------------------------------

    @property
    def state(self) -> S:
        """The custom state, as the agent's state type (defaults applied); live while a turn streams.
        None only while unset when the schema has a field without a default, or without a schema."""
        return cast(S, self.transport.state_type.load(self._state.custom))

    @property
    def custom(self) -> S:
        """The custom state as an `S`: the same as `state`. Its JSON form is `session_state.custom`."""
        return self.state

    def _set_custom_json(self, value: Any) -> None:
        self._state = self._state.model_copy(update={"custom": value})

    @property
    def session_state(self) -> SessionState:
        """The whole session as this chat knows it: id, messages, custom state (JSON), artifacts."""
        return _copy_state(self._state, self.session_id)

    def _session_state_later(self) -> Callable[[], SessionState]:
        """`session_state` as it is now, copied only when asked for (the chat never changes a state
        object in place: it replaces `_state`)."""
        state, session_id = self._state, self.session_id
        return lambda: _copy_state(state, session_id)

    @property
    def messages(self) -> list[Message]:
        """The conversation so far, as this chat knows it."""
        return list(self._state.messages or [])

    @property
    def artifacts(self) -> list[Artifact]:
        """The session's artifacts, as this chat knows them."""
        return list(self._state.artifacts or [])

    @property
    def loaded(self) -> SessionSnapshot | None:
        """The snapshot this chat was loaded from (`load_chat`), if any, its custom state as stored
        (JSON, as `get_snapshot` gives it)."""
        return self._loaded

    @loaded.setter
    def loaded(self, snapshot: SessionSnapshot | None) -> None:
        self._loaded = snapshot
        if snapshot is not None and snapshot.state is not None:
            self._state = snapshot.state.model_copy(deep=True)
            self._own_history = False
            self.session_id = self.session_id or snapshot.session_id or snapshot.state.session_id

    # --- turns -------------------------------------------------------------------------------------

    def _init(self) -> AgentInit:
        if self.transport.state_management == "client":
            return AgentInit(state=self._state) if self._seeded or self._state.session_id else AgentInit()
        if self._by_session:
            return AgentInit(session_id=self.session_id)
        if self.snapshot_id:
            return AgentInit(snapshot_id=self.snapshot_id, session_id=self._guard_session)
        return AgentInit()

    async def _settle_detached(self) -> None:
        """After a detached turn, continue from it if it completed, else from the snapshot before it."""
        if self._detached is None:
            return
        pending, before = self._detached
        snap = await self.transport.get_snapshot(snapshot_id=pending)
        if snap is None or (snap.status in FINISHED_STATUSES and snap.status != SnapshotStatus.COMPLETED):
            self.snapshot_id, self._detached = before, None
        elif snap.status == SnapshotStatus.COMPLETED:
            self._detached = None
            if snap.state is not None:
                self._state = snap.state
        # still pending: the agent refuses to continue from it, which says to wait

    async def _turn(
        self, item: AgentInput, on_chunk: Callable[[AgentChunk[S]], None] | None
    ) -> AgentResponse[S]:
        me = asyncio.current_task()
        assert me is not None
        self._waiting.add(me)  # from here, so that an abort() while it waits for the lock is not lost

        def start() -> None:  # called with no await before the turn counts as running
            self._waiting.discard(me)
            self._running = me

        try:
            async with self._lock:
                await self._settle_detached()
                return await self._turn_locked(item, on_chunk, start)
        finally:
            self._not_waiting(me)

    def _not_waiting(self, task: asyncio.Future[Any]) -> None:
        """A turn stopped waiting (it runs, ended, or was cancelled before it started)."""
        self._waiting.discard(task)
        if not self._waiting and self._running is None:
            self._abort_next = False  # an abort meant for a turn that never ran is spent

    async def _turn_locked(
        self,
        item: AgentInput,
        on_chunk: Callable[[AgentChunk[S]], None] | None,
        start: Callable[[], None],
    ) -> AgentResponse[S]:
        before = self._state
        streamed = StreamedMessages()
        text = ""

        def sink(chunk: AgentStreamChunk) -> None:
            nonlocal text
            if chunk.custom_patch is not None:
                self._set_custom_json(
                    patched(self._state.custom, [op.to_wire() for op in chunk.custom_patch])
                )
            if chunk.artifact is not None:
                self._state = self._state.model_copy(
                    update={"artifacts": merge_artifacts(self._state.artifacts, [chunk.artifact])}
                )
            streamed.add(chunk)
            if on_chunk is not None:
                if chunk.model_chunk is not None and chunk.model_chunk.role in (None, "model"):
                    text += chunk.model_chunk.text
                on_chunk(AgentChunk(chunk, text, self.state))

        init = self._init()  # before the user message joins the view: the agent adds it itself
        if item.message is not None:  # shown at once; taken back if the turn leaves no trace
            self._state = before.model_copy(update={"messages": [*(before.messages or []), item.message]})
        start()
        client = self.transport.state_management == "client"
        try:
            if self._abort_next:  # abort() came before this turn started
                self._abort_next = False
                await self.transport.abort_turn()
            out = await self.transport.run_turn(init, item, sink)
        except TurnkitError as exc:
            self._state = before
            out = AgentOutput(
                session_id=self.session_id, finish_reason=AgentFinishReason.FAILED, error=ErrorInfo.of(exc)
            )
            raise self._failure(out) from exc
        except asyncio.CancelledError:
            # The caller stopped waiting (a timeout, a cancelled task): as in Genkit the prompt stays
            # shown, it was asked. A client-managed chat sends it with its next turn; a
            # server-managed one now keeps a history of its own.
            self._own_history = self._own_history or (not client and item.message is not None)
            raise
        finally:
            self._running = None
        if out.session_id:
            self.session_id = self.session_id or out.session_id
        if out.snapshot_id and out.finish_reason not in (*_NO_TRACE, AgentFinishReason.DETACHED):
            self.snapshot_id = out.snapshot_id
        if out.finish_reason in _NO_TRACE:  # the last good state: a client-managed output carries it
            self._state = out.state if client and out.state is not None else before
        elif out.state is not None and not self._own_history:  # the whole state after the turn
            self._state = out.state
        else:
            self._state = self._state.model_copy(
                update={
                    "session_id": self._state.session_id or out.session_id,
                    "messages": [
                        *(before.messages or []),
                        *([item.message] if item.message else []),
                        *streamed.finish(out.message),
                    ],
                    "artifacts": merge_artifacts(self._state.artifacts, out.artifacts or []),
                }
            )
            if out.state is not None:  # the server's custom state and artifacts are still the truth
                self._state = self._state.model_copy(
                    update={"custom": out.state.custom, "artifacts": out.state.artifacts}
                )
        if not client and out.state is not None:
            out.state = None  # the output as the wire carries it (the transport's output is ours)
        if out.finish_reason == AgentFinishReason.FAILED:
            raise self._failure(out)
        self.last = AgentResponse(out, self._session_state_later(), self.transport.state_type)
        return self.last

    def _failure(self, out: AgentOutput) -> AgentError[S]:
        self.last = AgentResponse(out, self.session_state, self.transport.state_type)
        failure = AgentError.of(out, self.session_state, self.transport.state_type, self.snapshot_id)
        kept = getattr(self.transport, "last_error", None)  # in process: what really went wrong
        if isinstance(kept, TurnkitError):
            failure.__cause__ = kept.__cause__ or kept
        return failure

    async def send(self, message: MessageInput) -> AgentResponse[S]:
        """Send one turn and return its response; raises `AgentError` when the turn fails."""
        return await self._turn(_as_input(message), None)

    def send_stream(self, message: MessageInput) -> AgentTurn[S]:
        """Send one turn and stream it: `async for chunk in turn`, then `await turn`."""
        return self._stream(_as_input(message))

    def _stream(self, item: AgentInput) -> AgentTurn[S]:
        turn = AgentTurn(lambda on_chunk: self._turn(item, on_chunk), self._abort_attached)
        # Waiting from now: it may be cancelled before its first step, when `_turn` never runs.
        self._waiting.add(turn.response)
        turn.response.add_done_callback(self._not_waiting)
        return turn

    async def resume(
        self,
        *,
        respond: ResumeParts | None = None,
        restart: ResumeParts | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> AgentResponse[S]:
        """Answer the last turn's interrupts: `respond` with tool responses, `restart` with tool
        requests (one part or a list; build them with `interrupt.respond(...)` / `.restart(...)`).

        `metadata` is accepted for Genkit's signature but must be None: turnkit's wire protocol has
        no resume-wide metadata (UNIMPLEMENTED otherwise); give each restarted tool its own with
        `interrupt.restart(resumed_metadata=...)`."""
        return await self._turn(_resume_input(respond, restart, metadata), None)

    def resume_stream(
        self,
        *,
        respond: ResumeParts | None = None,
        restart: ResumeParts | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> AgentTurn[S]:
        """`resume`, streamed like `send_stream`."""
        return self._stream(_resume_input(respond, restart, metadata))

    async def detach(self, message: MessageInput) -> DetachedTask[S]:
        """Send one turn to run in the background; returns a handle to poll, wait for, or abort it."""
        if self.transport.state_management != "server":
            raise TurnkitError(
                "FAILED_PRECONDITION", "only a server-managed agent (with a store) can run detached turns"
            )
        item = _as_input(message).model_copy(update={"detach": True})
        async with self._lock:
            await self._settle_detached()
            out = await self.transport.run_turn(self._init(), item, None)
            if out.session_id:
                self.session_id = self.session_id or out.session_id
            if out.snapshot_id:  # the chat now points at the pending snapshot
                self._detached = (out.snapshot_id, self.snapshot_id)
                self.snapshot_id = out.snapshot_id
        return DetachedTask(self.transport, out)

    async def _abort_attached(self) -> bool:
        """Stop the turn this chat is running or about to run; False when there is none."""
        if self._running is not None:
            await self.transport.abort_turn()
            return True
        if self._waiting:
            self._abort_next = True
            return True
        return False

    async def abort(self) -> SnapshotStatus | None:
        """Stop this chat's server-side work.

        While a turn of this chat runs (`send`, a streaming turn), that turn is stopped, model call
        and tools included, and the result is None: it has no stored status yet. Otherwise, as in
        Genkit, the snapshot the chat points at is aborted through the transport (a detached turn
        still running stops) and the result is its status before: `PENDING` when this call stopped
        it, a terminal status when it had already ended (it is left as it was), None when the store
        has no such snapshot. Without a running turn or a snapshot (a client-managed agent, or no
        turn yet) there is nothing to abort: FAILED_PRECONDITION.
        """
        if await self._abort_attached():
            return None
        if self.transport.state_management != "server" or not self.snapshot_id:
            raise TurnkitError(
                "FAILED_PRECONDITION",
                "nothing to abort: no turn of this chat is running and it has no snapshot (a "
                "client-managed agent, or no turn yet)",
            )
        before = await self.transport.abort(self.snapshot_id)
        return None if before is None else SnapshotStatus(before)

    async def get_snapshot(self) -> SessionSnapshot | None:
        """The snapshot this chat is at (server-managed)."""
        if self.snapshot_id:
            return await self.transport.get_snapshot(snapshot_id=self.snapshot_id)
        if self.session_id:
            return await self.transport.get_snapshot(session_id=self.session_id)
        return None


def _copy_state(state: SessionState, session_id: str | None) -> SessionState:
    # New lists, so that changing them does not change what the chat knows.
    return state.model_copy(
        update={
            "session_id": state.session_id or session_id,
            "messages": None if state.messages is None else list(state.messages),
            "artifacts": None if state.artifacts is None else list(state.artifacts),
        }
    )


def _as_input(message: MessageInput) -> AgentInput:
    if isinstance(message, AgentInput):
        return message
    if isinstance(message, str):
        return AgentInput(message=Message(role="user", content=[Part(text=message)]))
    if isinstance(message, Message):
        return AgentInput(message=message)
    return AgentInput.from_wire(message)


def _resume_input(
    respond: ResumeParts | None, restart: ResumeParts | None, metadata: Mapping[str, Any] | None
) -> AgentInput:
    if metadata is not None:
        raise TurnkitError(
            "UNIMPLEMENTED",
            "resume(metadata=...) is not supported: the wire protocol has no resume-wide metadata; "
            "give each restarted tool its own with interrupt.restart(resumed_metadata=...)",
        )

    def parts(given: ResumeParts | None) -> list[Part] | None:
        if given is None:
            return None
        many = [given] if isinstance(given, Part | dict) else given
        return [Part.from_wire(p) for p in many] or None

    return AgentInput(resume=Resume(respond=parts(respond), restart=parts(restart)))
