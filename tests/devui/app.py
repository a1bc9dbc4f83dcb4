"""The app the Developer UI tests serve with `turnkit dev`: a scripted model, a tool, an agent."""

from __future__ import annotations

import asyncio
from typing import Any

from turnkit import Turnkit
from turnkit.models import ModelContext
from turnkit.sessions import InMemorySessionStore
from turnkit.types import ModelRequest, ModelResponse, ModelResponseChunk

ai = Turnkit(model="dev/echo")


async def echo(request: ModelRequest, ctx: ModelContext) -> ModelResponse:
    """Calls `get_weather` once when tools are offered, then echoes the last user text, streamed."""
    last = request.messages[-1]
    if request.tools and last.role == "user":
        call = {"toolRequest": {"name": "get_weather", "input": {"city": last.text}, "ref": "w1"}}
        content: list[dict[str, Any]] = [call]
    else:
        text = f"echo: {next(m.text for m in reversed(request.messages) if m.role == 'user')}"
        for word in text.split(" "):
            ctx.send_chunk(ModelResponseChunk.from_wire({"content": [{"text": word + " "}]}))
        content = [{"text": text}]
    return ModelResponse.from_wire(
        {
            "message": {"role": "model", "content": content},
            "finishReason": "stop",
            "usage": {"inputTokens": 5, "outputTokens": 2, "totalTokens": 7},
        }
    )


ai.define_model(name="dev/echo", fn=echo)


@ai.tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


@ai.tool
async def wait_forever(reason: str) -> str:
    """Never answers: the Developer UI tests cancel it."""
    await asyncio.sleep(3600)
    return reason


greet = ai.define_prompt(
    "greet", description="Greets someone.", prompt="Say hello to {{name}}.", input_schema={"type": "object"}
)

weather = ai.define_agent(
    "weather",
    system="You report the weather.",
    tools=["get_weather"],
    store=InMemorySessionStore(),
    description="Answers with the weather.",
)
