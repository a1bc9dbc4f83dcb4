"""The turnkit app that the interop clients (Genkit's JS and Python `remoteAgent`) talk to.

Serve it with `turnkit serve tests/interop/app.py:ai --port 8123` (what the interop tests do).
A client cannot script a model, so the model here answers deterministically by the last user
message; its first word picks the behaviour:

| user text          | what the turn does                                                         |
| ------------------ | -------------------------------------------------------------------------- |
| `state MOOD`       | calls `set_mood`, which sets custom state `{mood, changes}` in two updates |
| `artifact NAME`    | calls `write_report`, which stores the artifact `NAME` (v1, v2, ...)       |
| `approve ACTION`   | calls `approve_action`, which interrupts until restarted or answered       |
| `fail ...`         | the model raises `UNAVAILABLE` (the turn fails)                            |
| `sleep SECONDS`    | waits, then answers (for detached turns that complete)                     |
| `block`            | waits up to 30 s for the turn to be aborted (for detach + abort)           |
| anything else      | answers `echo: TEXT (turn N)`, N = user messages in the history            |

After a tool runs, the model answers `tool said <outputs as compact sorted JSON>`. Every answer
streams word by word. Two agents share this model and these tools: `chat` keeps sessions in an
in-memory store (server-managed), `stateless` has no store (client-managed).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from turnkit import Turnkit
from turnkit._tools import ToolContext
from turnkit.errors import TurnkitError
from turnkit.models import ModelContext, ModelInfo
from turnkit.sessions import InMemorySessionStore
from turnkit.types import (
    Artifact,
    GenerationUsage,
    Message,
    ModelRequest,
    ModelResponse,
    ModelResponseChunk,
    Part,
    ToolRequest,
)

MODEL = "interop/scripted"
BLOCK_SECONDS = 30.0
# What every model call reports using (a turn sums its calls' usage).
USAGE = GenerationUsage(input_tokens=3, output_tokens=2)


def compact(value: Any) -> str:
    """JSON with sorted keys and no spaces, so clients can compare answers byte for byte."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _answer(ctx: ModelContext, text: str) -> ModelResponse:
    """Stream `text` word by word (when the caller streams) and return it as the final message."""
    for i, word in enumerate(text.split(" ")):
        ctx.send_chunk(ModelResponseChunk(role="model", content=[Part(text=word if i == 0 else f" {word}")]))
    return ModelResponse(
        message=Message(role="model", content=[Part(text=text)]),
        finish_reason="stop",
        usage=USAGE,  # every turn then carries usage, so the clients' tests see it on the wire
    )


def _call(ctx: ModelContext, tool: str, input: dict[str, Any], ref: str) -> ModelResponse:
    """A model message that requests one tool (streamed as one chunk, as real models do)."""
    part = Part(tool_request=ToolRequest(name=tool, ref=ref, input=input))
    ctx.send_chunk(ModelResponseChunk(role="model", content=[part]))
    return ModelResponse(message=Message(role="model", content=[part]), finish_reason="stop", usage=USAGE)


async def scripted(request: ModelRequest, ctx: ModelContext) -> ModelResponse:
    """The scripted model: the behaviour is chosen by the first word of the last user message."""
    last = request.messages[-1]
    if last.role == "tool":
        outputs = [p.tool_response.output for p in last.content if p.tool_response is not None]
        return _answer(ctx, f"tool said {compact(outputs)}")
    users = [m for m in request.messages if m.role == "user"]
    text = last.text if last.role == "user" else ""
    word, _, arg = text.partition(" ")
    if word == "fail":
        raise TurnkitError("UNAVAILABLE", "scripted failure: the model is down")
    if word == "state":
        return _call(ctx, "set_mood", {"mood": arg}, "mood-1")
    if word == "artifact":
        return _call(ctx, "write_report", {"name": arg}, "report-1")
    if word == "approve":
        return _call(ctx, "approve_action", {"action": arg}, "approve-1")
    if word == "sleep":
        await asyncio.sleep(float(arg))
        return _answer(ctx, f"slept {arg}")
    if word == "block":
        for _ in range(int(BLOCK_SECONDS / 0.02)):
            if ctx.aborted:
                break
            await asyncio.sleep(0.02)
        return _answer(ctx, "unblocked")
    return _answer(ctx, f"echo: {text} (turn {len(users)})")


ai = Turnkit(model=MODEL)
ai.define_model(name=MODEL, fn=scripted, info=ModelInfo(label="Interop scripted model"))


@ai.tool()
async def set_mood(mood: str) -> dict[str, Any]:
    """Set the session's mood (custom state), counting the changes."""
    session = ai.current_session()
    await session.update_custom(lambda old: {**(old or {}), "mood": mood})
    await session.update_custom(lambda old: {**old, "changes": old.get("changes", 0) + 1})
    return {"mood": mood}


@ai.tool()
async def write_report(name: str) -> str:
    """Store a named report artifact; writing the same name again replaces it with a new version."""
    session = ai.current_session()
    existing = next((a for a in await session.get_artifacts() if a.name == name), None)
    version = 1 + (int((existing.metadata or {}).get("version", 0)) if existing else 0)
    artifact = Artifact(
        name=name, parts=[Part(text=f"report {name} v{version}")], metadata={"version": version}
    )
    await session.add_artifacts([artifact])
    return f"saved {name} v{version}"


@ai.tool()
async def approve_action(action: str, ctx: ToolContext) -> dict[str, Any]:
    """Ask a human to approve an action: interrupts, and approves when restarted."""
    if not ctx.resumed:
        ctx.interrupt({"reason": f"approve {action}?"})
    return {"action": action, "approved": True, "restarted": True}


TOOLS = ["set_mood", "write_report", "approve_action"]
chat = ai.define_agent(name="chat", tools=TOOLS, store=InMemorySessionStore())
stateless = ai.define_agent(name="stateless", tools=TOOLS)
