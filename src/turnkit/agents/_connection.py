"""AgentConnection: a bidirectional connection to an agent (`await agent.stream_bidi(...)`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from turnkit.agents._agent_session import AgentResult, AgentSession
from turnkit.agents._chunk_buffer import UNKNOWN_STATE, ChunkBuffer
from turnkit.agents._runner import Invocation
from turnkit.errors import TurnkitError, as_turnkit_error
from turnkit.sessions import Session
from turnkit.types import AgentInput, AgentOutput, AgentStreamChunk, Message, Part

if TYPE_CHECKING:
    from turnkit.agents._agent import Agent
    from turnkit.agents._turn import AgentContext

__all__ = ["AgentConnection"]


class AgentConnection:
    """Send inputs, receive each turn's chunks, then close and read the output.

    `receive()` ends at each turn's end so the caller can send again; `output()` waits for the agent
    to finish (after `close()`), or returns at once with `finishReason: "detached"` after `detach()`.
    """

    def __init__(self, agent: Agent, invocation: Invocation, agent_ctx: AgentContext) -> None:
        self._agent = agent
        self._invocation = invocation
        # Bounded: a slow reader gets coalesced chunks instead of holding up memory (or the turn).
        self._chunks = ChunkBuffer()
        self._closed = False
        self._ended = False
        self._dropping_chunks = False
        self._task: asyncio.Task[AgentOutput] = asyncio.ensure_future(self._run_agent(agent_ctx))

    @classmethod
    async def open(cls, agent: Agent, invocation: Invocation, agent_ctx: AgentContext) -> AgentConnection:
        """Resolve the invocation's init (raising on misuse) and start the agent."""
        try:
            await invocation.open()
        except BaseException:
            await invocation.release()
            raise
        return cls(agent, invocation, agent_ctx)

    def _emit(self, chunk: AgentStreamChunk, custom_after: Any = UNKNOWN_STATE) -> None:
        if not self._dropping_chunks:
            self._chunks.put(chunk, custom_after)

    def discard_chunks(self) -> None:
        """Nobody will call `receive()`: drop chunks instead of keeping the whole stream in memory."""
        self._dropping_chunks = True

    async def _run_agent(self, agent_ctx: AgentContext) -> AgentOutput:
        inv = self._invocation
        assert inv.session is not None
        sess: AgentSession[Any] = AgentSession(inv, inv.session)
        try:
            result = await self._agent.fn(sess, agent_ctx)
            if not isinstance(result, AgentResult):
                result = await sess.result() if result is None else _as_result(result)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            inv.error = as_turnkit_error(exc)
            result = None
        finally:
            self._chunks.close()
            await inv.release()
        if inv.store_failure is not None and not inv.detached:
            raise inv.store_failure  # raised, as when the store fails before the turn (open)
        return await inv.output(result)

    async def send(self, item: AgentInput | dict[str, Any]) -> None:
        """Send one input: a message, interrupt answers (`resume`), and/or `detach`."""
        if self._closed:
            raise TurnkitError("FAILED_PRECONDITION", "the connection is closed")
        self._invocation.send(AgentInput.from_wire(item))

    async def send_text(self, text: str) -> None:
        """Send a user message with this text."""
        await self.send(AgentInput(message=Message(role="user", content=[Part(text=text)])))

    async def send_message(self, message: Message) -> None:
        """Send a user message."""
        await self.send(AgentInput(message=message))

    async def receive(self) -> AsyncIterator[AgentStreamChunk]:
        """The chunks of the current turn, up to and including its `turnEnd`."""
        while True:
            if self._task.done() and not self._chunks.ready:
                return
            chunk = await self._chunks.get()
            if chunk is None:  # the agent has ended (later receive() calls end at once too)
                self._ended = True
                return
            yield chunk
            if chunk.turn_end is not None:
                return

    @property
    def session(self) -> Session[Any] | None:
        """The session the agent works on (in process only; None before `init` is resolved)."""
        return self._invocation.session

    @property
    def detached(self) -> bool:
        """Whether the client has detached: the running turn goes on in the background."""
        return self._invocation.detached

    @property
    def error(self) -> TurnkitError | None:
        """The error that failed the invocation, if it failed (with its `public` flag)."""
        return self._invocation.error

    @property
    def finished(self) -> bool:
        """Whether the agent has finished and every chunk has been received."""
        return self._ended

    @property
    def chunk_ready(self) -> bool:
        """Whether `receive()` has something queued (a chunk or the end): the next one comes at once."""
        return self._chunks.ready

    async def close(self) -> None:
        """Signal that no more inputs will come; the agent finishes its queued turns."""
        if not self._closed:
            self._closed = True
            self._invocation.close()

    async def output(self) -> AgentOutput:
        """The final output (closing the connection if still open)."""
        await self.close()
        detached = self._invocation.detached_output
        done, _ = await asyncio.wait({self._task, detached}, return_when=asyncio.FIRST_COMPLETED)
        if detached in done:
            return detached.result()
        return self._task.result()

    async def detach(self) -> AgentOutput:
        """Let the running (or next) turn finish in the background; returns the pending snapshot id."""
        await self.send(AgentInput(detach=True))
        return await self.output()

    async def cancel(self) -> None:
        """Stop the connection's running turn (unless detached) and wait for the agent to wind down."""
        if self.detached:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task

    def abort_turn(self) -> None:
        """Abort the running turn; it ends with finish reason `aborted`."""
        self._invocation.abort_current()


def _as_result(value: Any) -> AgentResult:
    return AgentResult(
        message=getattr(value, "message", None),
        artifacts=getattr(value, "artifacts", None),
        finish_reason=getattr(value, "finish_reason", None),
    )
