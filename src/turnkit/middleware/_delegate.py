"""Running one sub-agent turn for a delegation: in process, or over HTTP for a remote agent.

The turn is a child of the caller's task: when that task is cancelled (the coordinator's turn was
aborted), the child's turn is aborted and given a moment to wind down before the cancellation goes
on. A remote child's stream is closed, which aborts its turn on the server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from turnkit.errors import TurnkitError
from turnkit.types import AgentInit, AgentInput, AgentOutput, AgentStreamChunk, Artifact

__all__ = ["run_child"]

# How long an aborted child may take to record its end before it is cancelled outright (seconds).
WIND_DOWN = 5.0


async def run_child(
    agent: Any,
    init: AgentInit,
    item: AgentInput,
    on_artifact: Callable[[Artifact], None],
    context: Mapping[str, Any],
    server_managed: bool,
) -> AgentOutput:
    """Run one turn of `agent` (local, or remote with a `transport()`); artifacts it streams go to
    `on_artifact`. Errors opening the turn are raised; the turn's own failure is in the output."""
    if hasattr(agent, "stream_bidi"):
        return await _run_local(agent, init, item, on_artifact, context)
    transport = getattr(agent, "transport", None)
    if not callable(transport):
        raise TurnkitError("INVALID_ARGUMENT", f"{agent!r} is neither an agent nor a remote agent")

    def on_chunk(chunk: AgentStreamChunk) -> None:
        if chunk.artifact is not None:
            on_artifact(chunk.artifact)

    output: AgentOutput = await transport("server" if server_managed else "client").run_turn(
        init, item, on_chunk
    )
    return output


async def _run_local(
    agent: Any,
    init: AgentInit,
    item: AgentInput,
    on_artifact: Callable[[Artifact], None],
    context: Mapping[str, Any],
) -> AgentOutput:
    conn = await agent.stream_bidi(init, context=context)
    try:
        await conn.send(item)
        await conn.close()
        async for chunk in conn.receive():
            if chunk.artifact is not None:
                on_artifact(chunk.artifact)
        output: AgentOutput = await conn.output()
        return output
    except asyncio.CancelledError:
        conn.abort_turn()
        ending = asyncio.ensure_future(conn.output())
        await asyncio.wait({ending}, timeout=WIND_DOWN)
        if not ending.done():
            ending.cancel()
            await conn.cancel()
        raise
