"""Seed 000's Python examples on Gemini: `GoogleAI()` and `googleai/gemini-2.0-flash` as the seed
writes them, served by a local Gemini server the environment points the SDK at (no code does).

The complete CLI assistant (tests/seed_gemini/assistant.py, the seed's program with only its imports
changed) runs as a real process reading the user's lines from stdin. The seed's fragments run here,
inside the context the seed implies (an app, an `async def`). The server's replies play Gemini's
part, tool calls included; the requests it records show what the app sent.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from provider_servers import Events, ProviderServer, Reply, serve
from turnkit import AgentInit
from turnkit import Turnkit as Genkit
from turnkit.models.google_genai import GoogleAI
from turnkit.sessions import InMemorySessionStore

ASSISTANT = Path(__file__).parent / "seed_gemini" / "assistant.py"
GEMINI_PATH = "/models/gemini-2.0-flash:"


def candidate(*parts: dict[str, Any], finish: str | None = "STOP") -> dict[str, Any]:
    body: dict[str, Any] = {"content": {"role": "model", "parts": list(parts)}}
    if finish:
        body["finishReason"] = finish
    return {
        "candidates": [body],
        "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 4, "totalTokenCount": 13},
    }


def call(name: str, **args: Any) -> Events:
    """A streamed reply asking for one tool call."""
    return Events([(None, candidate({"functionCall": {"name": name, "args": args}}))])


def say(text: str) -> Events:
    """A streamed text reply, one event per word."""
    words = text.split(" ")
    events: list[tuple[str | None, Any]] = [
        (None, candidate({"text": w if i == 0 else f" {w}"}, finish=None)) for i, w in enumerate(words)
    ]
    events.append((None, candidate({"text": ""})))
    return Events(events)


def function_responses(body: dict[str, Any]) -> list[tuple[str, Any]]:
    return [
        (p["functionResponse"]["name"], p["functionResponse"]["response"])
        for c in body["contents"]
        for p in c["parts"]
        if "functionResponse" in p
    ]


def user_texts(body: dict[str, Any]) -> list[str]:
    return [p["text"] for c in body["contents"] if c["role"] == "user" for p in c["parts"] if "text" in p]


@pytest.fixture(scope="module")
def server() -> Iterator[ProviderServer]:
    yield from serve()


@pytest.fixture
def gemini(server: ProviderServer, monkeypatch: pytest.MonkeyPatch) -> ProviderServer:
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", "seed-key")
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", server.url)
    server.script()
    return server


def test_the_complete_assistant_runs_as_a_program(gemini: ProviderServer) -> None:
    gemini.script(
        call("get_weather", city="Chicago"),
        say("It's partly cloudy and 68°F in Chicago with 55% humidity."),
        call("calculate", expression="68 - 54"),
        say("That's 14."),
    )
    lines = "What's the weather in Chicago?\n\nWhat's 68 - 54?\nquit\n"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    done = subprocess.run(
        [sys.executable, str(ASSISTANT)], input=lines, capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("Session: ") and str(uuid.UUID(out.split()[1])) == out.split()[1]
    assert "Assistant: It's partly cloudy and 68°F in Chicago with 55% humidity.\n" in out
    assert "Assistant: That's 14.\n" in out and out.endswith("Goodbye.\n")
    paths = [r.path for r in gemini.requests]
    assert all(p.endswith(GEMINI_PATH + "streamGenerateContent") for p in paths) and len(paths) == 4
    # The tools ran with Gemini's arguments and their results went back; the history grew by turn.
    assert function_responses(gemini.requests[1].body) == [
        ("get_weather", {"output": "Partly cloudy, 68°F, humidity 55%"})
    ]
    last = gemini.requests[3].body
    assert function_responses(last)[-1] == ("calculate", {"output": "14"})
    assert user_texts(last) == ["What's the weather in Chicago?", "What's 68 - 54?"]
    declared = {d["name"] for d in last["tools"][0]["functionDeclarations"]}
    assert declared == {"get_weather", "calculate"}
    assert "Be concise" in last["systemInstruction"]["parts"][0]["text"]


# --- the fragments, in the context the seed implies ------------------------------------------------


class WeatherInput(BaseModel):
    city: str


class StockInput(BaseModel):
    ticker: str


class SearchInput(BaseModel):
    query: str


def seed_app() -> Genkit:
    ai = Genkit(
        plugins=[GoogleAI()],
        model="googleai/gemini-2.0-flash",
    )
    return ai


async def test_weather_agent_and_pattern_a(
    gemini: ProviderServer, capsys: pytest.CaptureFixture[str]
) -> None:
    ai = seed_app()

    @ai.tool()
    async def get_weather(input: WeatherInput) -> str:
        """Return current weather for a city."""
        # In production, call a real weather API
        return f"Sunny and 72°F in {input.city}"

    gemini.script(call("get_weather", city="Chicago"), say("Sunny and 72°F."), say("Sunny again tomorrow."))
    # Define an agent with persistent memory
    weather_agent = ai.define_agent(
        name="weatherAgent",
        model="googleai/gemini-2.0-flash",
        system="You are a helpful weather assistant. Remember context across our conversation.",
        tools=[get_weather],
        store=InMemorySessionStore(),  # <- persistent session storage
    )
    # Start a session and have a multi-turn conversation
    conn = await weather_agent.stream_bidi()
    await conn.send_text("What's the weather in Chicago?")
    async for chunk in conn.receive():
        if chunk.model_chunk and chunk.model_chunk.text:
            print(chunk.model_chunk.text, end="", flush=True)
    await conn.send_text("How about tomorrow?")  # agent remembers the context
    async for chunk in conn.receive():
        if chunk.model_chunk and chunk.model_chunk.text:
            print(chunk.model_chunk.text, end="", flush=True)
    await conn.close()
    output = await conn.output()

    assert capsys.readouterr().out == "Sunny and 72°F.Sunny again tomorrow."
    assert output.message is not None and output.message.text == "Sunny again tomorrow."
    assert user_texts(gemini.requests[2].body) == ["What's the weather in Chicago?", "How about tomorrow?"]

    gemini.script(
        Reply(candidate({"text": "Paris."})), Reply(candidate({"text": "They speak French in Paris."}))
    )
    # Pattern A: Manual history management
    messages = []
    response = await ai.generate(
        prompt="What is the capital of France?",
        messages=messages,
    )
    messages = response.messages  # save conversation history
    response = await ai.generate(
        prompt="What language do they speak there?",
        messages=messages,  # re-send history on every turn
    )
    messages = response.messages
    print(response.text)  # "They speak French in Paris."
    assert capsys.readouterr().out == "They speak French in Paris.\n"
    assert [c["role"] for c in gemini.requests[1].body["contents"]] == ["user", "model", "user"]


async def test_portfolio_agent_and_session_resume(
    gemini: ProviderServer, capsys: pytest.CaptureFixture[str]
) -> None:
    ai = seed_app()

    @ai.tool()
    async def get_stock_price(input: StockInput) -> str:
        """Get current stock price for a ticker."""
        # Stub — in production call a real API
        prices = {"AAPL": 195.42, "GOOG": 172.81, "MSFT": 421.00}
        price = prices.get(input.ticker.upper(), "unknown")
        return f"{input.ticker.upper()}: ${price}"

    @ai.tool()
    async def search_news(input: SearchInput) -> str:
        """Search recent news for a query."""
        return f'Top result for "{input.query}": Markets steady as tech sector leads gains.'

    portfolio_store = InMemorySessionStore()
    portfolio_agent = ai.define_agent(
        name="portfolioAgent",
        model="googleai/gemini-2.0-flash",
        system="""You are a portfolio assistant.
Use get_stock_price and search_news to answer questions.
Track which tickers the user asks about across the conversation.""",
        tools=[get_stock_price, search_news],
        store=portfolio_store,
    )
    gemini.script(
        call("get_stock_price", ticker="aapl"),
        say("Apple is at $195.42."),
        call("search_news", query="Apple"),
        say("Markets are steady."),
    )
    conn = await portfolio_agent.stream_bidi()
    await conn.send_text("What's Apple's stock price?")
    async for chunk in conn.receive():
        if chunk.model_chunk and chunk.model_chunk.text:
            print(chunk.model_chunk.text, end="")
    print()
    # Agent remembers Apple
    await conn.send_text("Any news about it?")
    async for chunk in conn.receive():
        if chunk.model_chunk and chunk.model_chunk.text:
            print(chunk.model_chunk.text, end="")
    print()
    await conn.close()
    assert capsys.readouterr().out == "Apple is at $195.42.\nMarkets are steady.\n"
    assert function_responses(gemini.requests[3].body) == [
        ("get_stock_price", {"output": "AAPL: $195.42"}),
        ("search_news", {"output": 'Top result for "Apple": Markets steady as tech sector leads gains.'}),
    ]

    # --- First request (e.g. HTTP POST /chat/start) ---
    gemini.script(say("Seattle is rainy."), say("Portland too."))
    session_id = str(uuid.uuid4())
    conn = await portfolio_agent.stream_bidi(init=AgentInit(session_id=session_id))
    await conn.send_text("What's the weather in Seattle?")
    async for chunk in conn.receive():
        if chunk.model_chunk and chunk.model_chunk.text:
            print(chunk.model_chunk.text, end="")
    await conn.close()
    await conn.output()
    # --- Second request (e.g. HTTP POST /chat/continue) ---
    conn2 = await portfolio_agent.stream_bidi(
        init=AgentInit(session_id=session_id)  # resume same session
    )
    await conn2.send_text("How about Portland?")  # agent still knows context
    async for chunk in conn2.receive():
        if chunk.model_chunk and chunk.model_chunk.text:
            print(chunk.model_chunk.text, end="")
    await conn2.close()
    await asyncio.wait_for(conn2.output(), 10)
    assert capsys.readouterr().out == "Seattle is rainy.Portland too."
    assert user_texts(gemini.requests[1].body) == ["What's the weather in Seattle?", "How about Portland?"]
