"""The turn runtime: one invocation of an agent, from `init` through its turns to the output.

An invocation resolves `init` into a session (new, by snapshot id, by session id, or from
client-held state), then runs the agent function, which calls `sess.run(handle_turn)` to take the
inputs one turn at a time. Each turn of a store-backed agent ends in a snapshot whose parent is the
previous one (written by `_snapshots`). A detached turn first writes a `pending` snapshot with a
heartbeat, answers at once, and finishes in the background; an abort (a store write) stops it
wherever it runs.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import jsonpatch

from turnkit._tracing import TurnTrace
from turnkit._turn_scope import enter_turn
from turnkit._valid_text import check_model_text, check_state_text, trust_state_text
from turnkit.agents._agent_session import AgentResult, AgentSession, TwoArgumentTurnHandler
from turnkit.agents._chunk_buffer import UNKNOWN_STATE
from turnkit.agents._snapshots import (
    TurnOutcomeStatus,
    is_resumable,
    latest_resumable,
    write_outcome,
    write_pending,
)
from turnkit.agents._turn import AgentContext, TurnContext
from turnkit.errors import TurnkitError, as_turnkit_error
from turnkit.sessions import ArtifactAdded, CustomChanged, Session, SessionStore, run_with_session
from turnkit.types import (
    AgentFinishReason,
    AgentInit,
    AgentInput,
    AgentOutput,
    AgentStreamChunk,
    ErrorInfo,
    GenerationUsage,
    JsonPatchOperation,
    Message,
    SessionState,
    SnapshotStatus,
    TurnEnd,
)

if TYPE_CHECKING:
    from turnkit.agents._agent import Agent

__all__ = ["Invocation", "cancel_and_wait", "check_context"]

log = logging.getLogger("turnkit.agents")

# How long a cancelled invocation waits for its turn's handler to stop before giving up the session.
_WIND_DOWN: Final = 5.0
# How long `cancel_and_wait` waits before it cancels again (a cancel swallowed by the awaited code).
_RECANCEL_AFTER: Final = 0.05
# How long to wait before watching a snapshot for aborts again after the store failed.
_REWATCH_AFTER: Final = 1.0


class Invocation:
    """One invocation of an agent (a bidi connection): resolves init, runs turns, produces the output."""

    def __init__(
        self,
        agent: Agent,
        init: AgentInit,
        *,
        ctx: AgentContext,
        emit: Callable[[AgentStreamChunk, Any], None],
    ) -> None:
        self.agent = agent
        self.init = init
        self.ctx = ctx
        self._send_chunk = emit
        ctx._stream = self._emit  # the agent function's `ctx.send_chunk` streams as its turns do
        self._inputs: asyncio.Queue[AgentInput | None] = asyncio.Queue()
        self._detach_requested = False
        self._detached = False
        self._pending_stored = asyncio.Event()  # a detached turn's pending snapshot is in the store
        self._turn_count = 0
        self._lease: Any = None
        self._abort_requested = False
        self._current_turn: TurnContext | None = None
        self.session: Session[Any] | None = None
        self.snapshot_id: str | None = None  # the last completed snapshot of this invocation
        # The state before the running turn: what a failed turn reports as the last good one.
        self._state_before_turn: SessionState | None = None
        self.error: TurnkitError | None = None
        # A store failure while saving a turn: the invocation raises it instead of returning an output.
        self.store_failure: TurnkitError | None = None
        self._detached_output: asyncio.Future[AgentOutput] = asyncio.get_running_loop().create_future()
        self._pending_write: asyncio.Task[None] | None = None
        self._store_abort_watcher: asyncio.Task[None] | None = None  # a detached turn's (see run_turn)
        self.turn_usage: GenerationUsage | None = None  # the last turn's token usage, summed
        self._turn_trace: TurnTrace | None = None  # the running turn's span, marked if it detaches

    # --- inputs --------------------------------------------------------------------------------

    def send(self, item: AgentInput) -> None:
        """Queue an input; a detach request applies to the running or next turn at once."""
        check_model_text(item, "input")  # INVALID_ARGUMENT now, not an internal error mid-turn
        if item.detach:
            if self.agent.store is None:
                raise TurnkitError(
                    "FAILED_PRECONDITION", f"agent {self.agent.name!r} has no session store; it cannot detach"
                )
            self._detach_requested = True
            if item.message is None and item.resume is None:
                if self._current_turn is not None:
                    self._start_detach(self._current_turn)
                return
        self._inputs.put_nowait(item)

    def close(self) -> None:
        """No more inputs: the agent function's `run` returns after the queued ones."""
        self._inputs.put_nowait(None)

    async def next_input(self) -> AgentInput | None:
        """The next input, or None once closed (or once detached)."""
        if self._detached:
            return None
        if self._detach_requested and self._inputs.empty():
            return None
        return await self._inputs.get()

    @property
    def detached(self) -> bool:
        """Whether the client has detached from this invocation."""
        return self._detached

    def abort_current(self) -> None:
        """Abort the running turn, or the next one if none has started yet."""
        if self._current_turn is not None:
            self._current_turn.abort()
        else:
            self._abort_requested = True

    @property
    def detached_output(self) -> asyncio.Future[AgentOutput]:
        """Resolved with the detached answer (the pending snapshot's id) when the client detaches."""
        return self._detached_output

    def _emit(self, chunk: AgentStreamChunk, custom_after: Any = UNKNOWN_STATE) -> None:
        """Stream a chunk; `custom_after` is the custom state (as clients see it) after a patch chunk,
        which lets a slow reader's buffer collapse patches into one replacement."""
        if self._detached:
            return
        transform = self.agent.chunk_transform
        if transform is not None:
            transformed = transform(chunk)
            if transformed is None:
                return
            if transformed is not chunk:
                custom_after = UNKNOWN_STATE  # the client no longer sees exactly our patch
            chunk = transformed
        self._send_chunk(chunk, custom_after)

    # --- init ----------------------------------------------------------------------------------

    async def open(self) -> Session[Any]:
        """Resolve `init` into the session this invocation works on (misuse raises, as the protocol says)."""
        agent, init, store = self.agent, self.init, self.agent.store
        name = agent.name
        if init.state is not None:
            # Walks only what is new when the state is the one the last turn handed out.
            check_state_text(init.state, "init.state")
        if store is not None:
            check_context(store, self.ctx.context)
        if store is None:
            if init.session_id:
                raise TurnkitError(
                    "FAILED_PRECONDITION",
                    f"Cannot use 'sessionId' with agent {name!r}: it is client-managed (no store); send 'state' instead",
                )
            if init.snapshot_id:
                raise TurnkitError(
                    "FAILED_PRECONDITION",
                    f"Cannot use 'snapshotId' with agent {name!r}: it is client-managed (no store); send 'state' instead",
                )
            state = init.state or SessionState()
            session_id = state.session_id or str(uuid.uuid4())
            self.session = self._new_session(session_id, state)
            return self.session
        if init.state is not None:
            raise TurnkitError(
                "FAILED_PRECONDITION",
                f"Cannot send 'state' to agent {name!r}: it is server-managed; send 'snapshotId' or 'sessionId'",
            )
        context = self.ctx.context
        if init.snapshot_id:
            snap = await store.get_snapshot(snapshot_id=init.snapshot_id, context=context)
            if snap is None:
                raise TurnkitError("NOT_FOUND", f"snapshot {init.snapshot_id!r} not found")
            owner = snap.session_id or (snap.state.session_id if snap.state else None)
            if init.session_id and owner != init.session_id:
                raise TurnkitError(
                    "INVALID_ARGUMENT",
                    f"snapshot {init.snapshot_id!r} does not belong to session {init.session_id!r}",
                )
            if not is_resumable(snap):
                raise TurnkitError(
                    "FAILED_PRECONDITION",
                    f"snapshot {init.snapshot_id!r} is {snap.status}; only completed snapshots can be resumed",
                )
            self.snapshot_id = snap.snapshot_id
            self.session = self._new_session(owner or str(uuid.uuid4()), snap.state or SessionState())
            return self.session
        if init.session_id:
            # Continuing a session by id: hold its lease so concurrent turns line up, never fork.
            await self._take_lease(store, init.session_id)
            snap = await latest_resumable(store, init.session_id, context)
            if snap is not None:
                self.snapshot_id = snap.snapshot_id
                self.session = self._new_session(init.session_id, snap.state or SessionState())
                return self.session
            self.session = self._new_session(init.session_id, SessionState())
            return self.session
        self.session = self._new_session(str(uuid.uuid4()), SessionState())
        return self.session

    async def _take_lease(self, store: SessionStore, session_id: str) -> None:
        wait = 0.0 if self.agent.on_conflict == "reject" else self.agent.lease_wait
        lease = store.session_lease(session_id, context=self.ctx.context, wait=wait)
        if lease is None:  # a store without leases: turns on one session may interleave
            return
        await lease.__aenter__()
        self._lease = lease

    async def release(self) -> None:
        """Release the session lease, if this invocation holds one (after its last snapshot)."""
        lease, self._lease = self._lease, None
        if lease is not None:
            await lease.__aexit__(None, None, None)

    def _new_session(self, session_id: str, state: SessionState) -> Session[Any]:
        state = state.model_copy(update={"session_id": session_id})
        session = Session.from_state(state, state_schema=self.agent.state_type)
        session.subscribe(self._on_session_event)
        return session

    # --- streaming state changes ---------------------------------------------------------------

    def _on_session_event(self, event: Any) -> None:
        turn = self._current_turn
        if turn is None:
            return
        if isinstance(event, CustomChanged):
            # Clients see custom state through the agent's state_transform, so patches do too.
            old, new = self._custom_as_clients_see_it(event.old), self._custom_as_clients_see_it(event.new)
            if not getattr(turn, "_patched", False):
                ops = [JsonPatchOperation(op="replace", path="", value=new)]
                turn._patched = True  # type: ignore[attr-defined]
            else:
                ops = [JsonPatchOperation.model_validate(op) for op in jsonpatch.make_patch(old, new).patch]
                if not ops:
                    return
            self._emit(AgentStreamChunk(custom_patch=ops), new)
        elif isinstance(event, ArtifactAdded):
            self._emit(AgentStreamChunk(artifact=event.artifact))

    def _custom_as_clients_see_it(self, custom: Any) -> Any:
        if self.agent.state_transform is None or self.session is None:
            return custom
        shown = self.agent.client_state(
            SessionState.model_construct(session_id=self.session.id, custom=custom)
        )
        return shown.custom if shown is not None else None

    # --- turns ---------------------------------------------------------------------------------

    async def run_turn(
        self, sess: AgentSession[Any], item: AgentInput, handle_turn: TwoArgumentTurnHandler
    ) -> bool:
        """Run one turn; returns False when the invocation must stop taking inputs (failure, abort, detach)."""
        assert self.session is not None
        store = self.agent.store
        if store is None:  # what a failed turn hands back to a client-managed chat
            self._state_before_turn = self.session.to_state()
        turn = TurnContext(
            snapshot_id=str(uuid.uuid4()) if store is not None else None,
            parent_snapshot_id=self.snapshot_id,
            turn_index=self._turn_count,
            emit=self._emit,
            context=self.ctx.context,
        )
        self._turn_count += 1
        if self._abort_requested:
            self._abort_requested = False
            turn.abort()
        if item.message is not None:
            await self.session.add_messages([item.message])
        self._current_turn = turn
        turn_trace = TurnTrace.start(
            self.agent.name,
            session_id=self.session.id,
            snapshot_id=turn.snapshot_id,
            parent_snapshot_id=turn.parent_snapshot_id,
            turn_index=turn.turn_index,
            turn_input=item,
            detached=self._detach_requested,
        )
        self._turn_trace = turn_trace
        with turn_trace.active():  # the handler's spans nest under the turn's, its usage sums there
            task = asyncio.ensure_future(self._run_handler(handle_turn, item, turn))
        # An abort cancels the handler on the loop's next step (a callback, not a watcher task:
        # one task fewer per turn). A detached turn also watches the store (`_start_detach`).
        loop = asyncio.get_running_loop()

        def cancel_handler() -> None:
            loop.call_soon(task.cancel)

        turn._call_on_abort(cancel_handler)
        if self._detach_requested:
            self._start_detach(turn)
        try:
            # Shielded: the handler stops through its abort signal, so it can record the abort.
            outcome = await asyncio.shield(task)
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if me is None or not me.cancelling():  # the handler's task ended cancelled, not us
                outcome = _AbortedOutcome() if turn.aborted else _stray_cancel()
            else:
                # The invocation itself was cancelled (the client went away): stop the turn too,
                # and let it wind down before the session's lease is given up.
                turn.abort()
                task.cancel()
                await asyncio.wait({task}, timeout=_WIND_DOWN)
                if self._detached and turn.snapshot_id is not None:
                    self.agent.untrack_background(turn.snapshot_id)
                turn_trace.end(finish_reason=None, cancelled=True)
                raise
        finally:
            self._current_turn = self._turn_trace = None
            turn._call_on_abort(None)
            watcher, self._store_abort_watcher = self._store_abort_watcher, None
            if watcher is not None:
                # Awaited, not just cancelled: a watcher left behind can outlive the program's loop.
                await cancel_and_wait(watcher)
        try:
            keep_going = await self._finish_turn(sess, turn, outcome)
        except BaseException as exc:  # saving failed: the turn did not succeed, whatever the handler did
            self.turn_usage = turn_trace.end_with(exc, AgentFinishReason.FAILED)
            raise
        self.turn_usage = turn_trace.end_with(outcome, sess.finish_reason)
        return keep_going

    async def _run_handler(
        self, handle_turn: TwoArgumentTurnHandler, item: AgentInput, turn: TurnContext
    ) -> Any:
        assert self.session is not None
        enter_turn(self.agent, turn)  # this task's own context: middleware sees the turn it serves
        try:
            result = await run_with_session(self.session, handle_turn(item, turn))
        except asyncio.CancelledError:
            if turn.aborted:
                return _AbortedOutcome()
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            # Something the handler awaited was cancelled, not this turn: the turn failed.
            return _stray_cancel()
        except Exception as exc:
            result = as_turnkit_error(exc)
        # However the handler ended, a turn asked to stop counts as aborted (its work is not kept).
        return _AbortedOutcome() if turn.aborted else result

    def _watch_store_for_abort(self, turn: TurnContext) -> None:
        """Start the task that aborts a detached turn once its snapshot is aborted in the store (from
        any process); `run_turn` stops it when the turn is over."""
        store = self.agent.store
        if store is None or turn.snapshot_id is None or self._store_abort_watcher is not None:
            return

        async def on_store_abort(store: SessionStore) -> None:
            if await self._aborted_in_store(store, turn):
                turn.abort()  # models and tools see the signal; its callback cancels the handler

        self._store_abort_watcher = asyncio.ensure_future(on_store_abort(store))

    async def _aborted_in_store(self, store: SessionStore, turn: TurnContext) -> bool:
        """True once the turn's snapshot is aborted in the store; False when it ends any other way."""
        # Only a detached turn has a pending snapshot that an abort (from any process) can flip.
        await self._pending_stored.wait()
        assert turn.snapshot_id is not None
        while True:
            try:
                async for status in store.watch_status(turn.snapshot_id, context=self.ctx.context):
                    if status == SnapshotStatus.ABORTED:
                        return True
                return False  # the watch ends after a terminal status
            except Exception:  # a blip in the store is not an abort: watch again shortly
                log.warning(
                    "watching snapshot %s for aborts failed; retrying", turn.snapshot_id, exc_info=True
                )
            await asyncio.sleep(_REWATCH_AFTER)

    async def _finish_turn(self, sess: AgentSession[Any], turn: TurnContext, outcome: Any) -> bool:
        assert self.session is not None
        try:
            return await self._record_turn(sess, turn, outcome)
        finally:
            if self._pending_write is not None and turn.snapshot_id is not None:
                await self._pending_write
                self.agent.untrack_background(turn.snapshot_id)

    async def _record_turn(self, sess: AgentSession[Any], turn: TurnContext, outcome: Any) -> bool:
        if isinstance(outcome, _AbortedOutcome):
            sess.finish_reason = AgentFinishReason.ABORTED
            await self._save(turn, status=SnapshotStatus.ABORTED, finish_reason=AgentFinishReason.ABORTED)
            self._emit(AgentStreamChunk(turn_end=TurnEnd(finish_reason=AgentFinishReason.ABORTED)))
            return False
        if isinstance(outcome, TurnkitError):
            self.error = outcome
            sess.finish_reason = AgentFinishReason.FAILED
            # With its traceback (and the original exception's, as `__cause__`): clients see at
            # most the public message, so this log is where a server's operator finds what broke.
            log.warning("agent %s turn failed: %s", self.agent.name, outcome, exc_info=outcome)
            await self._save(
                turn, status=SnapshotStatus.FAILED, finish_reason=AgentFinishReason.FAILED, error=outcome
            )
            self._emit(AgentStreamChunk(turn_end=TurnEnd(finish_reason=AgentFinishReason.FAILED)))
            return False
        finish = AgentFinishReason(turn.finish_reason or _finish_reason_of(outcome) or AgentFinishReason.STOP)
        sess.finish_reason = finish
        message = getattr(outcome, "message", None)
        if isinstance(message, Message):
            sess.last_message = message
        await self._save(turn, status=SnapshotStatus.COMPLETED, finish_reason=finish)
        if turn.snapshot_id is not None and not self._detached:
            self.snapshot_id = turn.snapshot_id
        self._emit(AgentStreamChunk(turn_end=TurnEnd(snapshot_id=turn.snapshot_id, finish_reason=finish)))
        return not self._detached

    # --- snapshots -----------------------------------------------------------------------------

    async def _save(
        self,
        turn: TurnContext,
        *,
        status: TurnOutcomeStatus,
        finish_reason: AgentFinishReason,
        error: TurnkitError | None = None,
    ) -> None:
        """Write the turn's snapshot. Attached failures and aborts write nothing: the last good one stands."""
        store = self.agent.store
        if store is None or turn.snapshot_id is None:
            return
        if status != SnapshotStatus.COMPLETED and not self._detached:
            return
        assert self.session is not None
        try:
            await write_outcome(
                store,
                snapshot_id=turn.snapshot_id,
                parent_id=turn.parent_snapshot_id,
                state=self.session.to_state(),
                status=status,
                finish_reason=finish_reason,
                error=error,
                context=self.ctx.context,
            )
        except Exception as exc:
            # The store failed, not the agent: raised to the caller like a store failure before the
            # turn (UNAVAILABLE stays UNAVAILABLE), never turned into a failed output.
            self.store_failure = as_turnkit_error(exc)
            raise

    # --- detach --------------------------------------------------------------------------------

    def _start_detach(self, turn: TurnContext) -> None:
        if self._detached:
            return
        self._detached = True
        if self._turn_trace is not None:
            self._turn_trace.detached()
        self._pending_write = asyncio.ensure_future(self._write_pending_and_answer(turn))
        self._watch_store_for_abort(turn)

    async def _write_pending_and_answer(self, turn: TurnContext) -> None:
        """Store the detaching turn's pending snapshot, then answer the client with its id."""
        store = self.agent.store
        assert store is not None and self.session is not None and turn.snapshot_id is not None
        state = self.session.to_state()
        try:
            await write_pending(
                store,
                snapshot_id=turn.snapshot_id,
                parent_id=turn.parent_snapshot_id,
                state=state,
                context=self.ctx.context,
            )
        except Exception as exc:
            # Without its pending snapshot a detached turn could be neither polled nor aborted: stop it.
            turn.abort()
            if not self._detached_output.done():
                self._detached_output.set_exception(as_turnkit_error(exc))
            return
        if not self._detached_output.done():
            self._detached_output.set_result(
                AgentOutput(
                    session_id=state.session_id,
                    snapshot_id=turn.snapshot_id,
                    finish_reason=AgentFinishReason.DETACHED,
                )
            )
        self._pending_stored.set()
        self.agent.track_background(turn, self.ctx.context, self.session.to_state)

    # --- output --------------------------------------------------------------------------------

    async def output(self, result: AgentResult | None) -> AgentOutput:
        """The invocation's output: snapshot id (server-managed) or state (client-managed)."""
        assert self.session is not None
        session_id = self.session.id
        if self.error is not None:
            return AgentOutput(
                session_id=session_id,
                snapshot_id=self.snapshot_id,
                state=self._client_state(self._state_before_turn) if self.agent.store is None else None,
                finish_reason=AgentFinishReason.FAILED,
                error=ErrorInfo.of(self.error),
                usage=self.turn_usage,
            )
        result = result or AgentResult()
        return AgentOutput(
            session_id=session_id,
            snapshot_id=self.snapshot_id if self.agent.store is not None else None,
            state=self._client_state(self.session.to_state()) if self.agent.store is None else None,
            message=result.message,
            artifacts=result.artifacts,
            finish_reason=result.finish_reason,
            usage=self.turn_usage,
        )

    def _client_state(self, state: SessionState | None) -> SessionState | None:
        """The state a client-managed agent hands out, trusted as valid text: its history holds
        checked inputs and the agent's own messages, so sent back, only what is new is checked."""
        shown = self.agent.client_state(state)
        if shown is not None:
            trust_state_text(shown)
        return shown


def check_context(store: SessionStore, context: dict[str, Any] | None) -> None:
    """Raise now if the store refuses this caller's context (e.g. an empty tenant), as any store call
    would: before the turn, not when its snapshot is saved after it ran."""
    tenant_key = getattr(store, "tenant_key", None)
    if tenant_key is not None:
        tenant_key(context)


class _AbortedOutcome:
    """What a turn's handler task returns when the turn stopped because it was aborted."""


def _stray_cancel() -> TurnkitError:
    return TurnkitError("INTERNAL", "the turn's handler was cancelled from elsewhere", public=False)


def _finish_reason_of(outcome: Any) -> AgentFinishReason | None:
    reason = getattr(outcome, "finish_reason", None)
    return reason if isinstance(reason, str) else None  # type: ignore[return-value]


async def cancel_and_wait(task: asyncio.Future[Any]) -> None:
    """Cancel `task` and return once it has ended, cancelling again if the cancel was swallowed.

    On Python 3.11 `asyncio.wait_for` (used inside stores and drivers) drops a cancellation that
    arrives as its own wait ends; a task left running that way keeps a program from exiting.
    """
    task.cancel()
    await asyncio.sleep(0)  # a task waiting on a plain future ends in this one step (the usual case)
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=_RECANCEL_AFTER)
    if not task.cancelled():
        task.exception()  # retrieved, so an ending error is not reported as never retrieved
