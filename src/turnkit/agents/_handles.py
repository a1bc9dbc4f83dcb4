"""Handles on turns that are still running: a streaming turn (`AgentTurn`) and a detached one
(`DetachedTask`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any, Generic

from turnkit.agents._response import AgentChunk, AgentResponse
from turnkit.errors import TurnkitError
from turnkit.sessions._state_type import S
from turnkit.sessions._store import FINISHED_STATUSES
from turnkit.types import AgentOutput, SessionSnapshot, SnapshotStatus

if TYPE_CHECKING:
    from turnkit.agents._client import AgentTransport

__all__ = ["AgentTurn", "DetachedTask", "SnapshotPoll"]


class AgentTurn(Generic[S]):
    """A streaming turn: iterate it (or `stream`) for chunks, await it (or `response`), or `abort()`.

    The turn runs whether or not its chunks are read. A failed turn raises `AgentError` from the
    response and at the end of the stream.
    """

    def __init__(
        self,
        run: Callable[[Callable[[AgentChunk[S]], None]], Awaitable[AgentResponse[S]]],
        abort: Callable[[], Awaitable[object]],
    ) -> None:
        self._queue: asyncio.Queue[AgentChunk[S] | None] = asyncio.Queue()
        self._abort = abort
        self._task: asyncio.Task[AgentResponse[S]] = asyncio.ensure_future(run(self._queue.put_nowait))
        self._task.add_done_callback(lambda _: self._queue.put_nowait(None))

    @property
    def stream(self) -> AsyncIterator[AgentChunk[S]]:
        """The turn's chunks, in order; raises the turn's failure once they are all read."""
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[AgentChunk[S]]:
        while (item := await self._queue.get()) is not None:
            yield item
        if self._task.done() and not self._task.cancelled() and (exc := self._task.exception()) is not None:
            raise exc

    def __aiter__(self) -> AsyncIterator[AgentChunk[S]]:
        return self._iterate()

    @property
    def response(self) -> asyncio.Task[AgentResponse[S]]:
        """An awaitable of the turn's response (raises `AgentError` when the turn failed)."""
        return self._task

    def __await__(self) -> Generator[Any, None, AgentResponse[S]]:
        return self._task.__await__()

    async def abort(self) -> AgentResponse[S]:
        """Stop this turn (model call and tools included); returns its response (finish reason `aborted`,
        or the turn's own when it had already ended)."""
        if not self._task.done():
            await self._abort()
        return await self._task


class SnapshotPoll(Generic[S]):
    """`task.poll()`: await it for the snapshot as it is now, or iterate it for each change (status
    or content; heartbeats aside) until the turn ends."""

    def __init__(self, task: DetachedTask[S], interval: float) -> None:
        self._task = task
        self._interval = interval

    def __await__(self) -> Generator[Any, None, SessionSnapshot | None]:
        return self._task._read().__await__()

    async def __aiter__(self) -> AsyncIterator[SessionSnapshot]:
        last: tuple[Any, ...] | None = None
        while True:
            snap = await self._task._read()
            if snap is not None:
                seen = (snap.status, snap.updated_at, snap.finish_reason)
                if seen != last:
                    last = seen
                    yield snap
                if snap.status in FINISHED_STATUSES:
                    return
            await asyncio.sleep(self._interval)


class DetachedTask(Generic[S]):
    """A turn running in the background: poll it, wait for it, read its output, or abort it.

    Snapshots it returns carry the custom state as the agent's state type `S`.
    """

    def __init__(self, transport: AgentTransport[S], detached: AgentOutput) -> None:
        self._transport = transport
        self.snapshot_id = detached.snapshot_id or ""
        self.session_id = detached.session_id

    async def _read(self) -> SessionSnapshot | None:
        snap = await self._transport.get_snapshot(snapshot_id=self.snapshot_id)
        if snap is None:
            return None
        # Stores may hold the status as its wire string: hand out the enum, and the typed state.
        update: dict[str, Any] = {"status": None if snap.status is None else SnapshotStatus(snap.status)}
        if snap.state is not None:
            custom = self._transport.state_type.load(snap.state.custom)
            update["state"] = snap.state.model_copy(update={"custom": custom})
        return snap.model_copy(update=update)

    def poll(self, interval: float = 0.5) -> SnapshotPoll[S]:
        """`await task.poll()`: the snapshot as it is now (status pending, completed, failed, aborted
        or expired). `async for snap in task.poll(interval)`: each change until the turn ends."""
        return SnapshotPoll(self, interval)

    async def wait(self, interval: float = 0.05, *, timeout: float | None = None) -> SessionSnapshot:  # noqa: ASYNC109 - a polling deadline, not a cancel scope
        """The snapshot once the turn has ended, read every `interval` seconds (positional, as in
        Genkit); waits as long as it takes unless `timeout` is given (DEADLINE_EXCEEDED after it)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            snap = await self._read()
            if snap is not None and snap.status in FINISHED_STATUSES:
                return snap
            if deadline is not None and time.monotonic() >= deadline:
                raise TurnkitError(
                    "DEADLINE_EXCEEDED", f"snapshot {self.snapshot_id!r} still pending after {timeout}s"
                )
            await asyncio.sleep(interval)

    async def output(self, interval: float = 0.05, *, timeout: float | None = None) -> AgentOutput:  # noqa: ASYNC109 - see wait
        """The turn's final output once it has ended (as `AgentConnection.output()` waits for its own);
        `interval` and `timeout` as in `wait`."""
        snap = await self.wait(interval, timeout=timeout)
        messages = snap.state.messages or [] if snap.state is not None else []
        last = messages[-1] if messages and messages[-1].role == "model" else None
        return AgentOutput(
            session_id=snap.session_id or self.session_id,
            snapshot_id=snap.snapshot_id,
            message=last if snap.status == SnapshotStatus.COMPLETED else None,
            artifacts=snap.state.artifacts if snap.state is not None else None,
            finish_reason=snap.finish_reason,
            error=snap.error,
        )

    async def abort(self) -> SnapshotStatus | None:
        """Abort the background turn; returns its status before (`SnapshotStatus.PENDING` when this
        call stopped it, a terminal status when it had already ended, None when there is none)."""
        before = await self._transport.abort(self.snapshot_id)
        return None if before is None else SnapshotStatus(before)

    def __repr__(self) -> str:
        return f"DetachedTask({self.snapshot_id!r})"
