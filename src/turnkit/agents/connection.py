"""AgentConnection: a bidirectional connection to an agent (`await agent.stream_bidi(...)`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from turnkit.agents.runner import AgentResult, AgentSession, Invocation
from turnkit.errors import TurnkitError, as_turnkit_error
from turnkit.types import AgentInput, AgentOutput, AgentStreamChunk, Message, Part

if TYPE_CHECKING:
    from turnkit.agents.agent import Agent
    from turnkit.agents.turn import AgentContext

__all__ = ["AgentConnection"]

_END = object()


class AgentConnection:
    """Send inputs, receive each turn's chunks, then close and read the output.

    `receive()` ends at each turn's end so the caller can send again; `output()` waits for the agent
    to finish (after `close()`), or returns at once with `finishReason: "detached"` after `detach()`.
    """

    def __init__(self, agent: Agent, invocation: Invocation, agent_ctx: AgentContext) -> None:
        self._agent = agent
        self._inv = invocation
        self._chunks: asyncio.Queue[Any] = asyncio.Queue()
        self._closed = False
        self._ended = False
        self._discard = False
        self._task: asyncio.Task[AgentOutput] = asyncio.ensure_future(self._main(agent_ctx))

    @classmethod
    async def open(cls, agent: Agent, invocation: Invocation, agent_ctx: AgentContext) -> AgentConnection:
        """Resolve the invocation's init (raising on misuse) and start the agent."""
        try:
            await invocation.open()
        except BaseException:
            await invocation.release()
            raise
        return cls(agent, invocation, agent_ctx)

    def _emit(self, chunk: AgentStreamChunk) -> None:
        if not self._discard:
            self._chunks.put_nowait(chunk)

    def discard_chunks(self) -> None:
        """Nobody will call `receive()`: drop chunks instead of keeping the whole stream in memory."""
        self._discard = True

    async def _main(self, agent_ctx: AgentContext) -> AgentOutput:
        inv = self._inv
        assert inv.session is not None
        sess = AgentSession(inv, inv.session)
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
            self._chunks.put_nowait(_END)
            await inv.release()
        return await inv.output(result)

    async def send(self, item: AgentInput | dict[str, Any]) -> None:
        """Send one input: a message, interrupt answers (`resume`), and/or `detach`."""
        if self._closed:
            raise TurnkitError("FAILED_PRECONDITION", "the connection is closed")
        self._inv.send(AgentInput.from_wire(item))

    async def send_text(self, text: str) -> None:
        """Send a user message with this text."""
        await self.send(AgentInput(message=Message(role="user", content=[Part(text=text)])))

    async def send_message(self, message: Message) -> None:
        """Send a user message."""
        await self.send(AgentInput(message=message))

    async def receive(self) -> AsyncIterator[AgentStreamChunk]:
        """The chunks of the current turn, up to and including its `turnEnd`."""
        while True:
            if self._task.done() and self._chunks.empty():
                return
            chunk = await self._chunks.get()
            if chunk is _END:
                self._ended = True
                self._chunks.put_nowait(_END)  # later receive() calls end at once too
                return
            yield chunk
            if chunk.turn_end is not None:
                return

    @property
    def error(self) -> TurnkitError | None:
        """The error that failed the invocation, if it failed (with its `public` flag)."""
        return self._inv.error

    @property
    def finished(self) -> bool:
        """Whether the agent has finished and every chunk has been received."""
        return self._ended

    async def close(self) -> None:
        """Signal that no more inputs will come; the agent finishes its queued turns."""
        if not self._closed:
            self._closed = True
            self._inv.close()

    async def output(self) -> AgentOutput:
        """The final output (closing the connection if still open)."""
        await self.close()
        early = self._inv.early_output
        done, _ = await asyncio.wait({self._task, early}, return_when=asyncio.FIRST_COMPLETED)
        if early in done:
            return early.result()
        return self._task.result()

    async def detach(self) -> AgentOutput:
        """Let the running (or next) turn finish in the background; returns the pending snapshot id."""
        await self.send(AgentInput(detach=True))
        return await self.output()

    async def cancel(self) -> None:
        """Stop the connection's running turn (unless detached) and wait for the agent to wind down."""
        if self._inv.detached:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task

    def abort_turn(self) -> None:
        """Abort the running turn; it ends with finish reason `aborted`."""
        self._inv.abort_current()


def _as_result(value: Any) -> AgentResult:
    return AgentResult(
        message=getattr(value, "message", None),
        artifacts=getattr(value, "artifacts", None),
        finish_reason=getattr(value, "finish_reason", None),
    )
