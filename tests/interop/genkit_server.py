"""A Genkit (`genkit==0.12.0` + `genkit-fastapi==0.12.0`) server with the same agents as `app.py`.

Runs in the peer virtualenv, never in turnkit's (see `benchmarks/peers/env.py`):

    benchmarks/.venvs/genkit-fastapi-0.12.0/bin/python tests/interop/genkit_server.py --port 8123

It serves `POST /agents/chat` (in-memory store: server-managed, with `/getSnapshot` and `/abort`)
and `POST /agents/stateless` (no store: client-managed) on 127.0.0.1, through `serve_agent`. The
model answers by the first word of the last user message exactly as the model of `app.py` does,
so the interop clients can run their scenarios against Genkit's own server as a reference, and
turnkit's client can be tested against it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import uvicorn
from fastapi import FastAPI
from genkit import (
    ActionRunContext,
    GenkitError,
    Interrupt,
    Message,
    ModelRequest,
    ModelResponse,
    ModelResponseChunk,
    Part,
    Role,
    ToolRunContext,
)
from genkit.exp import Artifact, Genkit, InMemorySessionStore
from genkit_fastapi import serve_agent
from pydantic import BaseModel

BLOCK_SECONDS = 30.0


def compact(value: Any) -> str:
    """JSON with sorted keys and no spaces (the same as `app.compact`)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def answer(ctx: ActionRunContext, text: str) -> ModelResponse:
    """Stream `text` word by word and return it as the final message."""
    for i, word in enumerate(text.split(" ")):
        ctx.send_chunk(
            ModelResponseChunk(role=Role.MODEL, content=[Part.from_text(word if i == 0 else f" {word}")])
        )
    return ModelResponse(
        message=Message(role=Role.MODEL, content=[Part.from_text(text)]), finish_reason="stop"
    )


def call(ctx: ActionRunContext, tool: str, input: dict[str, Any], ref: str) -> ModelResponse:
    """A model message that requests one tool (also streamed as one chunk)."""
    part = Part.from_tool_request(name=tool, ref=ref, input=input)
    ctx.send_chunk(ModelResponseChunk(role=Role.MODEL, content=[part]))
    return ModelResponse(message=Message(role=Role.MODEL, content=[part]), finish_reason="stop")


def text_of(message: Message) -> str:
    """The concatenated text parts of a message."""
    return "".join(p.text for p in message.content if p.text)


async def scripted(request: ModelRequest, ctx: ActionRunContext) -> ModelResponse:
    """The scripted model of `app.py`, in Genkit."""
    last = request.messages[-1]
    if last.role == Role.TOOL:
        outputs = [p.tool_response.output for p in last.content if p.tool_response is not None]
        return answer(ctx, f"tool said {compact(outputs)}")
    users = [m for m in request.messages if m.role == Role.USER]
    text = text_of(last) if last.role == Role.USER else ""
    word, _, arg = text.partition(" ")
    if word == "fail":
        raise GenkitError(status="UNAVAILABLE", message="scripted failure: the model is down")
    if word == "state":
        return call(ctx, "set_mood", {"mood": arg}, "mood-1")
    if word == "artifact":
        return call(ctx, "write_report", {"name": arg}, "report-1")
    if word == "approve":
        return call(ctx, "approve_action", {"action": arg}, "approve-1")
    if word == "sleep":
        await asyncio.sleep(float(arg))
        return answer(ctx, f"slept {arg}")
    if word == "block":
        for _ in range(int(BLOCK_SECONDS / 0.02)):
            if ctx.abort_signal.is_set():
                break
            await asyncio.sleep(0.02)
        return answer(ctx, "unblocked")
    return answer(ctx, f"echo: {text} (turn {len(users)})")


class MoodInput(BaseModel):
    """Input of set_mood."""

    mood: str


class ReportInput(BaseModel):
    """Input of write_report."""

    name: str


class ApproveInput(BaseModel):
    """Input of approve_action."""

    action: str


def build_app() -> FastAPI:
    """The FastAPI app serving both agents under /agents/."""
    ai = Genkit()
    ai.define_model(name="scripted", fn=scripted)

    @ai.tool()
    async def set_mood(input: MoodInput) -> dict[str, Any]:
        """Set the session's mood (custom state), counting the changes."""
        session = ai.current_session()
        assert session is not None
        await session.update_custom(lambda old: {**(old or {}), "mood": input.mood})
        await session.update_custom(lambda old: {**old, "changes": old.get("changes", 0) + 1})
        return {"mood": input.mood}

    @ai.tool()
    async def write_report(input: ReportInput) -> str:
        """Store a named report artifact; writing the same name again replaces it."""
        session = ai.current_session()
        assert session is not None
        existing = next((a for a in await session.get_artifacts() if a.name == input.name), None)
        version = 1 + (int((existing.metadata or {}).get("version", 0)) if existing else 0)
        await session.add_artifacts(
            [
                Artifact(
                    name=input.name,
                    parts=[Part.from_text(f"report {input.name} v{version}")],
                    metadata={"version": version},
                )
            ]
        )
        return f"saved {input.name} v{version}"

    @ai.tool()
    async def approve_action(input: ApproveInput, ctx: ToolRunContext) -> dict[str, Any]:
        """Ask a human to approve an action: interrupts, and approves when restarted."""
        if not ctx.is_resumed():
            raise Interrupt({"reason": f"approve {input.action}?"})
        return {"action": input.action, "approved": True, "restarted": True}

    tools = ["set_mood", "write_report", "approve_action"]
    chat = ai.define_agent(name="chat", model="scripted", tools=tools, store=InMemorySessionStore())
    stateless = ai.define_agent(name="stateless", model="scripted", tools=tools)
    app = FastAPI()
    app.include_router(serve_agent(chat, base_path="/agents/chat"))
    app.include_router(serve_agent(stateless, base_path="/agents/stateless"))
    return app


def main() -> None:
    """Serve on 127.0.0.1:PORT until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(build_app(), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
