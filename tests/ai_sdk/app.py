"""The turnkit app the front-end tests talk to: the AI SDK client (`chat_client.mjs`) and the
playground in Chromium (`tests/test_playground.py`).

A browser or a Node script cannot script a model, so the model here answers deterministically
from the last user message; its first word picks the behaviour:

| user text        | what the turn does                                                           |
| ---------------- | ---------------------------------------------------------------------------- |
| `think TOPIC`    | streams reasoning about TOPIC, then answers `thought about TOPIC`            |
| `state MOOD`     | calls `set_mood`: custom state `{mood, changes}` in two updates              |
| `artifact NAME`  | calls `write_report`: stores the artifact NAME (v1, v2, ...)                 |
| `approve ACTION` | calls `approve_action`, which interrupts until approved (restarted) or denied |
| `fail`           | the model fails with FAILED_PRECONDITION "scripted failure"                  |
| `block`          | waits up to 30 s for the turn to be aborted or cancelled                     |
| `slow TEXT`      | answers like anything else, a word every 50 ms (to watch it stream)          |
| anything else    | answers `echo: TEXT (turn N)`, N = user messages in the history              |

After a tool runs, the model answers `tool said <outputs as compact sorted JSON>`. Answers stream
word by word. `chat` keeps its sessions in the store named by `$TURNKIT_TEST_STORE` (a store URL;
in memory by default): server-managed; `stateless` has no store: client-managed.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from turnkit import ToolContext, Turnkit
from turnkit.errors import TurnkitError
from turnkit.models import ModelContext, ModelInfo
from turnkit.sessions import InMemorySessionStore, SessionStore, store_from_url
from turnkit.types import (
    Artifact,
    Message,
    ModelRequest,
    ModelResponse,
    ModelResponseChunk,
    Part,
    ToolRequest,
)

MODEL = "frontends/scripted"


def compact(value: Any) -> str:
    """JSON with sorted keys and no spaces, so clients can compare answers exactly."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


async def _stream(ctx: ModelContext, text: str, kind: str = "text", pause: float = 0.0) -> None:
    for i, word in enumerate(text.split(" ")):
        piece = word if i == 0 else f" {word}"
        part = Part(reasoning=piece) if kind == "reasoning" else Part(text=piece)
        ctx.send_chunk(ModelResponseChunk(role="model", content=[part]))
        if pause:
            await asyncio.sleep(pause)


async def _answer(
    ctx: ModelContext, text: str, reasoning: str | None = None, pause: float = 0.0
) -> ModelResponse:
    content = []
    if reasoning is not None:
        await _stream(ctx, reasoning, "reasoning")
        content.append(Part(reasoning=reasoning))
    await _stream(ctx, text, pause=pause)
    content.append(Part(text=text))
    return ModelResponse(message=Message(role="model", content=content), finish_reason="stop")


def _call(ctx: ModelContext, tool: str, input: dict[str, Any], ref: str) -> ModelResponse:
    part = Part(tool_request=ToolRequest(name=tool, ref=ref, input=input))
    ctx.send_chunk(ModelResponseChunk(role="model", content=[part]))
    return ModelResponse(message=Message(role="model", content=[part]), finish_reason="stop")


async def scripted(request: ModelRequest, ctx: ModelContext) -> ModelResponse:
    """The scripted model: the first word of the last user message picks the behaviour."""
    last = request.messages[-1]
    if last.role == "tool":
        outputs = [p.tool_response.output for p in last.content if p.tool_response is not None]
        return await _answer(ctx, f"tool said {compact(outputs)}")
    users = [m for m in request.messages if m.role == "user"]
    text = last.text if last.role == "user" else ""
    word, _, arg = text.partition(" ")
    calls = len([m for m in request.messages if m.role == "model"])  # distinct refs per call
    if word == "think":
        return await _answer(ctx, f"thought about {arg}", reasoning=f"considering {arg} carefully")
    if word == "fail":
        raise TurnkitError("FAILED_PRECONDITION", "scripted failure")
    if word == "state":
        return _call(ctx, "set_mood", {"mood": arg}, f"mood-{calls}")
    if word == "artifact":
        return _call(ctx, "write_report", {"name": arg}, f"report-{calls}")
    if word == "approve":
        return _call(ctx, "approve_action", {"action": arg}, f"approve-{calls}")
    if word == "block":
        for _ in range(1500):
            if ctx.aborted:
                break
            await asyncio.sleep(0.02)
        return await _answer(ctx, "unblocked")
    return await _answer(ctx, f"echo: {text} (turn {len(users)})", pause=0.05 if word == "slow" else 0.0)


ai = Turnkit(model=MODEL)
ai.define_model(name=MODEL, fn=scripted, info=ModelInfo(label="Front-end tests' scripted model"))


@ai.tool()
async def set_mood(mood: str) -> dict[str, Any]:
    """Set the session's mood (custom state), counting the changes."""
    session = ai.current_session()
    await session.update_custom(lambda old: {**(old or {}), "mood": mood})
    await session.update_custom(lambda old: {**old, "changes": old.get("changes", 0) + 1})
    return {"mood": mood}


@ai.tool()
async def write_report(name: str) -> str:
    """Store a named report artifact; the same name again replaces it with a new version."""
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
    return {"action": action, "approved": True}


def _store() -> SessionStore:
    url = os.environ.get("TURNKIT_TEST_STORE")
    return store_from_url(url) if url else InMemorySessionStore()


TOOLS = ["set_mood", "write_report", "approve_action"]
chat = ai.define_agent(name="chat", tools=TOOLS, store=_store(), description="Keeps sessions on the server")
stateless = ai.define_agent(name="stateless", tools=TOOLS, description="Client-managed: no store")
