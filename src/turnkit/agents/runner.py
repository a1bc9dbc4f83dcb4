"""The turn runtime: one invocation of an agent, from `init` through its turns to the output.

An invocation resolves `init` into a session (new, by snapshot id, by session id, or from
client-held state), then runs the agent function, which calls `sess.run(handle_turn)` to take the
inputs one turn at a time. Each turn of a store-backed agent ends in a snapshot whose parent is the
previous one. A detached turn first writes a `pending` snapshot with a heartbeat, answers at once,
and finishes in the background; an abort (a store write) stops it wherever it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import jsonpatch

from turnkit.agents.turn import AgentContext, TurnContext
from turnkit.errors import TurnkitError, as_turnkit_error
from turnkit.sessions import ArtifactAdded, CustomChanged, Session, SessionStore, run_with_session
from turnkit.types import (
    AgentFinishReason,
    AgentInit,
    AgentInput,
    AgentOutput,
    AgentStreamChunk,
    Artifact,
    ErrorInfo,
    JsonPatchOperation,
    Message,
    SessionSnapshot,
    SessionState,
    TurnEnd,
)

if TYPE_CHECKING:
    from turnkit.agents.agent import Agent

__all__ = [
    "INTERNAL_MARK",
    "AgentResult",
    "AgentSession",
    "Invocation",
    "TurnHandler",
    "now_iso",
    "stored_error",
]

log = logging.getLogger("turnkit.agents")

TurnHandler = Callable[[AgentInput, TurnContext], Awaitable[Any]]
TERMINAL = frozenset({"completed", "failed", "aborted"})


def now_iso() -> str:
    """The current UTC time as ISO-8601."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class AgentResult:
    """What an agent function returns: the final message, the artifacts, and the finish reason."""

    message: Message | None = None
    artifacts: list[Artifact] | None = None
    finish_reason: AgentFinishReason | None = None


class AgentSession:
    """The session handle an agent function drives: history, state, artifacts, and the turn loop."""

    def __init__(self, invocation: Invocation, session: Session) -> None:
        self._inv = invocation
        self.session = session
        self.last_message: Message | None = None
        self.finish_reason: AgentFinishReason | None = None

    @property
    def id(self) -> str:
        """The session id."""
        return self.session.id

    async def get_messages(self) -> list[Message]:
        """The conversation history."""
        return await self.session.get_messages()

    async def add_messages(self, messages: list[Message]) -> None:
        """Append messages to the history."""
        await self.session.add_messages(messages)

    async def set_messages(self, messages: list[Message]) -> None:
        """Replace the history."""
        await self.session.set_messages(messages)

    async def get_custom(self) -> Any:
        """The custom state."""
        return await self.session.get_custom()

    async def update_custom(self, fn: Callable[[Any], Any]) -> Any:
        """Atomically replace the custom state with `fn(old)`; streamed to the client as a patch."""
        return await self.session.update_custom(fn)

    async def get_artifacts(self) -> list[Artifact]:
        """The artifacts."""
        return await self.session.get_artifacts()

    async def add_artifacts(self, artifacts: list[Artifact]) -> None:
        """Add artifacts (a named one replaces its namesake); each is streamed to the client."""
        await self.session.add_artifacts(artifacts)

    async def run(self, handle_turn: TurnHandler) -> None:
        """Run `handle_turn(input, turn)` for each input until the client closes or detaches."""
        while (item := await self._inv.next_input()) is not None:
            if not await self._inv.run_turn(self, item, handle_turn):
                return

    async def result(self) -> AgentResult:
        """The default result: the last model message and all artifacts."""
        messages = await self.session.get_messages()
        last = next((m for m in reversed(messages) if m.role == "model"), self.last_message)
        return AgentResult(
            message=last, artifacts=await self.session.get_artifacts(), finish_reason=self.finish_reason
        )


class Invocation:
    """One invocation of an agent (a bidi connection): resolves init, runs turns, produces the output."""

    def __init__(
        self, agent: Agent, init: AgentInit, *, ctx: AgentContext, emit: Callable[[AgentStreamChunk], None]
    ) -> None:
        self.agent = agent
        self.init = init
        self.ctx = ctx
        self._emit_raw = emit
        self._inputs: asyncio.Queue[AgentInput | None] = asyncio.Queue()
        self._detach_requested = False
        self._detached = False
        self._detached_event = asyncio.Event()
        self._turn_count = 0
        self._lease: Any = None
        self._abort_requested = False
        self._current_turn: TurnContext | None = None
        self._current_task: asyncio.Task[Any] | None = None
        self.session: Session | None = None
        self.snapshot_id: str | None = None  # the last completed snapshot of this invocation
        self._good_state: SessionState | None = None  # client state before a failed turn
        self.error: TurnkitError | None = None
        self._early: asyncio.Future[AgentOutput] = asyncio.get_running_loop().create_future()

    # --- inputs --------------------------------------------------------------------------------

    def send(self, item: AgentInput) -> None:
        """Queue an input; a detach request applies to the running or next turn at once."""
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
    def early_output(self) -> asyncio.Future[AgentOutput]:
        """Resolved with the detached answer when the client detaches."""
        return self._early

    def _emit(self, chunk: AgentStreamChunk) -> None:
        if self._detached:
            return
        transform = self.agent.chunk_transform
        if transform is not None:
            transformed = transform(chunk)
            if transformed is None:
                return
            chunk = transformed
        self._emit_raw(chunk)

    # --- init ----------------------------------------------------------------------------------

    async def open(self) -> Session:
        """Resolve `init` into the session this invocation works on (misuse raises, as the protocol says)."""
        agent, init, store = self.agent, self.init, self.agent.store
        name = agent.name
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
            if snap.status not in (None, "completed"):
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
            snap = await self._latest_completed(store, init.session_id, context)
            if snap is not None:
                self.snapshot_id = snap.snapshot_id
                self.session = self._new_session(init.session_id, snap.state or SessionState())
                return self.session
            self.session = self._new_session(init.session_id, SessionState())
            return self.session
        self.session = self._new_session(str(uuid.uuid4()), SessionState())
        return self.session

    async def _take_lease(self, store: SessionStore, session_id: str) -> None:
        lease_of = getattr(store, "session_lease", None)
        if lease_of is None:  # a store without leases: turns on one session may interleave
            return
        wait = 0.0 if self.agent.on_conflict == "reject" else self.agent.lease_wait
        lease = lease_of(session_id, context=self.ctx.context, wait=wait)
        await lease.__aenter__()
        self._lease = lease

    async def release(self) -> None:
        """Release the session lease, if this invocation holds one (after its last snapshot)."""
        lease, self._lease = self._lease, None
        if lease is not None:
            await lease.__aexit__(None, None, None)

    async def _latest_completed(
        self, store: SessionStore, session_id: str, context: Mapping[str, Any]
    ) -> SessionSnapshot | None:
        """The session's head, walking back through parents past pending, failed or aborted turns."""
        snap = await store.get_snapshot(session_id=session_id, context=context)
        while snap is not None and snap.status not in (None, "completed"):
            if not snap.parent_id:
                return None
            snap = await store.get_snapshot(snapshot_id=snap.parent_id, context=context)
        return snap

    def _new_session(self, session_id: str, state: SessionState) -> Session:
        state = state.model_copy(update={"session_id": session_id})
        session = Session.from_state(state, state_schema=self.agent.state_schema)
        session.subscribe(self._on_session_event)
        return session

    # --- streaming state changes ---------------------------------------------------------------

    def _on_session_event(self, event: Any) -> None:
        turn = self._current_turn
        if turn is None:
            return
        if isinstance(event, CustomChanged):
            # Clients see custom state through the agent's state_transform, so patches do too.
            old, new = self._client_custom(event.old), self._client_custom(event.new)
            if not getattr(turn, "_patched", False):
                ops = [JsonPatchOperation(op="replace", path="", value=new)]
                turn._patched = True  # type: ignore[attr-defined]
            else:
                ops = [JsonPatchOperation.model_validate(op) for op in jsonpatch.make_patch(old, new).patch]
                if not ops:
                    return
            self._emit(AgentStreamChunk(custom_patch=ops))
        elif isinstance(event, ArtifactAdded):
            self._emit(AgentStreamChunk(artifact=event.artifact))

    def _client_custom(self, custom: Any) -> Any:
        if self.agent.state_transform is None or self.session is None:
            return custom
        shown = self.agent.client_state(
            SessionState.model_construct(session_id=self.session.id, custom=custom)
        )
        return shown.custom if shown is not None else None

    # --- turns ---------------------------------------------------------------------------------

    async def run_turn(self, sess: AgentSession, item: AgentInput, handle_turn: TurnHandler) -> bool:
        """Run one turn; returns False when the invocation must stop taking inputs (failure, abort, detach)."""
        assert self.session is not None
        store = self.agent.store
        self._good_state = self.session.to_state()
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
        task = asyncio.ensure_future(self._guarded(handle_turn, item, turn))
        self._current_task = task
        if self._detach_requested:
            self._start_detach(turn)
        watcher = asyncio.ensure_future(self._watch_abort(turn, task))
        try:
            # Shielded: the handler stops through its abort signal, so it can record the abort.
            outcome = await asyncio.shield(task)
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if me is None or not me.cancelling():  # the handler's task ended cancelled, not us
                outcome = _Aborted() if turn.aborted else _stray_cancel()
            else:
                # The invocation itself was cancelled (the client went away): stop the turn too,
                # and let it wind down before the session's lease is given up.
                turn.abort()
                task.cancel()
                await asyncio.wait({task}, timeout=_WIND_DOWN)
                if self._detached and turn.snapshot_id is not None:
                    self.agent.untrack_background(turn.snapshot_id)
                raise
        finally:
            watcher.cancel()
            self._current_turn = None
            self._current_task = None
        return await self._finish_turn(sess, turn, outcome)

    async def _guarded(self, handle_turn: TurnHandler, item: AgentInput, turn: TurnContext) -> Any:
        assert self.session is not None
        try:
            result = await run_with_session(self.session, handle_turn(item, turn))
        except asyncio.CancelledError:
            if turn.aborted:
                return _Aborted()
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            # Something the handler awaited was cancelled, not this turn: the turn failed.
            return _stray_cancel()
        except Exception as exc:
            result = as_turnkit_error(exc)
        # However the handler ended, a turn asked to stop counts as aborted (its work is not kept).
        return _Aborted() if turn.aborted else result

    async def _watch_abort(self, turn: TurnContext, task: asyncio.Task[Any]) -> None:
        """Cancel the handler once the turn is aborted, locally or (detached) through the store."""
        waits = [asyncio.ensure_future(turn.wait_aborted())]
        store = self.agent.store
        if store is not None and turn.snapshot_id is not None:
            waits.append(asyncio.ensure_future(self._store_abort(store, turn)))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            turn.abort()
            task.cancel()
        finally:
            for w in waits:
                w.cancel()

    async def _store_abort(self, store: SessionStore, turn: TurnContext) -> None:
        # Only a detached turn has a pending snapshot that an abort (from any process) can flip.
        await self._detached_event.wait()
        assert turn.snapshot_id is not None
        watch = getattr(store, "watch_status", None)
        if watch is None:
            await asyncio.Event().wait()  # a store without notifications: local aborts only
            return
        while True:
            try:
                async for status in watch(turn.snapshot_id, context=self.ctx.context):
                    if status == "aborted":
                        return
            except Exception:  # a blip in the store is not an abort: watch again shortly
                log.warning(
                    "watching snapshot %s for aborts failed; retrying", turn.snapshot_id, exc_info=True
                )
            await asyncio.sleep(1.0)  # (a watch that ended on another terminal status just idles)

    async def _finish_turn(self, sess: AgentSession, turn: TurnContext, outcome: Any) -> bool:
        assert self.session is not None
        try:
            return await self._record_turn(sess, turn, outcome)
        finally:
            if self._detached and turn.snapshot_id is not None:
                await self._detach_task
                self.agent.untrack_background(turn.snapshot_id)

    async def _record_turn(self, sess: AgentSession, turn: TurnContext, outcome: Any) -> bool:
        if isinstance(outcome, _Aborted):
            sess.finish_reason = "aborted"
            await self._save(turn, status="aborted", finish_reason="aborted")
            self._emit(AgentStreamChunk(turn_end=TurnEnd(finish_reason="aborted")))
            return False
        if isinstance(outcome, TurnkitError):
            self.error = outcome
            sess.finish_reason = "failed"
            log.info("agent %s turn failed: %s", self.agent.name, outcome)
            await self._save(turn, status="failed", finish_reason="failed", error=outcome)
            self._emit(AgentStreamChunk(turn_end=TurnEnd(finish_reason="failed")))
            return False
        finish: AgentFinishReason = turn.finish_reason or _finish_of(outcome) or "stop"
        sess.finish_reason = finish
        message = getattr(outcome, "message", None)
        if isinstance(message, Message):
            sess.last_message = message
        await self._save(turn, status="completed", finish_reason=finish)
        if turn.snapshot_id is not None and not self._detached:
            self.snapshot_id = turn.snapshot_id
        self._emit(AgentStreamChunk(turn_end=TurnEnd(snapshot_id=turn.snapshot_id, finish_reason=finish)))
        return not self._detached

    # --- snapshots -----------------------------------------------------------------------------

    async def _save(
        self,
        turn: TurnContext,
        *,
        status: str,
        finish_reason: AgentFinishReason,
        error: TurnkitError | None = None,
    ) -> None:
        """Write the turn's snapshot. Attached failures and aborts write nothing: the last good one stands."""
        store = self.agent.store
        if store is None or turn.snapshot_id is None:
            return
        if status != "completed" and not self._detached:
            return
        assert self.session is not None
        state = self.session.to_state()
        stamp = now_iso()

        def write(existing: SessionSnapshot | None) -> SessionSnapshot | None:
            if existing is not None and existing.status in TERMINAL:
                return None  # an abort got there first: terminal statuses are absorbing
            return SessionSnapshot(
                snapshot_id=turn.snapshot_id or "",
                session_id=state.session_id,
                parent_id=turn.parent_snapshot_id,
                created_at=existing.created_at if existing else stamp,
                updated_at=stamp,
                status=status,  # type: ignore[arg-type]
                finish_reason=finish_reason,
                error=stored_error(error) if error else None,
                state=state,
            )

        await store.save_snapshot(turn.snapshot_id, write, context=self.ctx.context)

    # --- detach --------------------------------------------------------------------------------

    def _start_detach(self, turn: TurnContext) -> None:
        if self._detached:
            return
        self._detached = True
        self._detach_task = asyncio.ensure_future(self._detach(turn))

    async def _detach(self, turn: TurnContext) -> None:
        store = self.agent.store
        assert store is not None and self.session is not None and turn.snapshot_id is not None
        state = self.session.to_state()
        stamp = now_iso()
        pending = SessionSnapshot(
            snapshot_id=turn.snapshot_id,
            session_id=state.session_id,
            parent_id=turn.parent_snapshot_id,
            created_at=stamp,
            updated_at=stamp,
            heartbeat_at=stamp,
            status="pending",
            state=state,
        )
        try:
            await store.save_snapshot(
                turn.snapshot_id,
                lambda existing: pending if existing is None else None,
                context=self.ctx.context,
            )
        except Exception as exc:
            # Without its pending snapshot a detached turn could be neither polled nor aborted: stop it.
            turn.abort()
            if not self._early.done():
                self._early.set_exception(as_turnkit_error(exc))
            return
        if not self._early.done():
            self._early.set_result(
                AgentOutput(
                    session_id=state.session_id, snapshot_id=turn.snapshot_id, finish_reason="detached"
                )
            )
        self._detached_event.set()
        self.agent.track_background(turn, self.ctx.context)

    # --- output --------------------------------------------------------------------------------

    async def output(self, result: AgentResult | None) -> AgentOutput:
        """The invocation's output: snapshot id (server-managed) or state (client-managed)."""
        assert self.session is not None
        session_id = self.session.id
        if self.error is not None:
            return AgentOutput(
                session_id=session_id,
                snapshot_id=self.snapshot_id,
                state=self.agent.client_state(self._good_state) if self.agent.store is None else None,
                finish_reason="failed",
                error=ErrorInfo.of(self.error),
            )
        result = result or AgentResult()
        return AgentOutput(
            session_id=session_id,
            snapshot_id=self.snapshot_id if self.agent.store is not None else None,
            state=self.agent.client_state(self.session.to_state()) if self.agent.store is None else None,
            message=result.message,
            artifacts=result.artifacts,
            finish_reason=result.finish_reason,
        )


class _Aborted:
    """Marks a turn that stopped because it was aborted."""


# Marks, in a stored error's details, an error whose text is for the server's eyes only.
INTERNAL_MARK = "turnkitInternal"


def stored_error(err: TurnkitError) -> ErrorInfo:
    """A failed turn's error as its snapshot keeps it: text intact, non-public ones marked so."""
    info = ErrorInfo.of(err)
    if err.public:
        return info
    details = (
        info.details
        if isinstance(info.details, dict)
        else {"details": info.details}
        if info.details is not None
        else {}
    )
    return info.model_copy(update={"details": {**details, INTERNAL_MARK: True}})


# How long a cancelled invocation waits for its turn's handler to stop before giving up the session.
_WIND_DOWN = 5.0


def _stray_cancel() -> TurnkitError:
    return TurnkitError("INTERNAL", "the turn's handler was cancelled from elsewhere", public=False)


def _finish_of(outcome: Any) -> AgentFinishReason | None:
    reason = getattr(outcome, "finish_reason", None)
    return reason if isinstance(reason, str) else None  # type: ignore[return-value]


async def heartbeat(
    store: SessionStore, snapshot_id: str, interval: float, context: Mapping[str, Any]
) -> None:
    """Refresh a pending snapshot's heartbeat every `interval` seconds until cancelled or terminal."""

    def beat(existing: SessionSnapshot | None) -> SessionSnapshot | None:
        if existing is None or existing.status != "pending":
            return None
        return existing.model_copy(update={"heartbeat_at": now_iso()})

    while True:
        await asyncio.sleep(interval)
        with contextlib.suppress(Exception):
            saved = await store.save_snapshot(snapshot_id, beat, context=context)
            if saved is None or saved.status != "pending":
                return
