"""Seed 000 ("Building Agents and Sessions in Genkit Python"): every Python example, run as written.

Only the import lines differ (turnkit's names for Genkit's), and the model: `googleai/gemini-2.0-flash`
becomes the programmable test model, and `plugins=[GoogleAI()]` a plugin registering it. Where the
seed shows a fragment (no `ai`, no `async def main`), the test supplies that context around it.
Printed output is captured and checked. The seed's examples, in order:

1. the weather agent on one connection, two turns           test_weather_agent_two_turns_remembers_context
2. "Pattern A": manual history with `ai.generate`             test_manual_history_with_generate
3. `Session(store=...)` + `run_with_session`                  test_run_with_session_binds_the_current_session
4. the full sessions API: app, tool, store, agent             test_full_sessions_api_and_the_agent_connection
5. the AgentConnection walkthrough (Chicago, then Miami)      (same test as 4)
6. the portfolio agent with two tools                          test_portfolio_agent_with_two_tools
7. resuming a session by id across two connections             test_session_persists_across_two_connections_by_session_id
8. the custom `RedisSessionStore` (no `context` parameter)     test_custom_redis_session_store_as_written
9. the complete CLI assistant, run with `ai.run_main`          test_assistant_chat_loop_new_session_gets_new_id
10. typed session state in a one-argument `handle_turn(inp)`   test_update_custom_in_a_one_argument_turn_handler
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any, TypedDict

import pytest
from pydantic import BaseModel

from conftest import require_service
from turnkit import AgentInit, Message, ModelRequest, Part, Turnkit, TurnkitError
from turnkit.agents import AgentContext, AgentSession
from turnkit.sessions import InMemorySessionStore, Session, get_current_session, run_with_session
from turnkit.testing import ProgrammableModel, define_programmable_model
from turnkit.types import SessionSnapshot

MODEL = "programmableModel"


def reply(text: str) -> dict[str, Any]:
    return {"message": {"role": "model", "content": [{"text": text}]}, "finishReason": "stop"}


def calls(*requests: tuple[str, dict[str, Any], str]) -> dict[str, Any]:
    """A model response asking for tools: (name, input, ref) each."""
    content = [{"toolRequest": {"name": n, "input": i, "ref": r}} for n, i, r in requests]
    return {"message": {"role": "model", "content": content}, "finishReason": "stop"}


def words(text: str) -> list[dict[str, Any]]:
    """`text` as stream chunks, one per word."""
    parts = text.split(" ")
    return [{"content": [{"text": w if i == 0 else f" {w}"}]} for i, w in enumerate(parts)]


def transcript(request: ModelRequest) -> list[tuple[str, str]]:
    """(role, text-or-tool summary) of each message the model was sent."""
    out = []
    for m in request.messages:
        bits = [p.text or "" for p in m.content if p.text]
        bits += [f"call {p.tool_request.name}" for p in m.content if p.tool_request]
        bits += [f"{p.tool_response.name} -> {p.tool_response.output}" for p in m.content if p.tool_response]
        out.append((m.role, " | ".join(bits)))
    return out


# --- the weather agent ---------------------------------------------------------------------------


class WeatherInput(BaseModel):
    city: str


def weather_app(ai: Turnkit) -> Any:
    @ai.tool()
    async def get_weather(input: WeatherInput) -> str:
        """Return current weather for a city."""
        # In production, call a real weather API
        return f"Sunny and 72°F in {input.city}"

    # Define the agent
    weather_agent = ai.define_agent(
        name="weatherAgent",
        model=MODEL,
        system="You are a helpful weather assistant. Remember context across our conversation.",
        tools=[get_weather],
        store=InMemorySessionStore(),  # <- persistent session storage
    )
    return weather_agent


async def test_weather_agent_two_turns_remembers_context(
    ai: Turnkit, pm: ProgrammableModel, capsys: pytest.CaptureFixture[str]
) -> None:
    weather_agent = weather_app(ai)
    first, second = "It is sunny and 72°F in Chicago.", "Tomorrow Chicago stays sunny."
    pm.program(
        [calls(("get_weather", {"city": "Chicago"}, "w1")), reply(first), reply(second)],
        [[], words(first), words(second)],
    )

    # Start a session and have a multi-turn conversation
    conn = await weather_agent.stream_bidi()
    await conn.send_text("What's the weather in Chicago?")
    async for chunk in conn.receive():
        if chunk.model_chunk and chunk.model_chunk.text:
            print(chunk.model_chunk.text, end="", flush=True)
    print()
    await conn.send_text("How about tomorrow?")  # agent remembers the context
    async for chunk in conn.receive():
        if chunk.model_chunk and chunk.model_chunk.text:
            print(chunk.model_chunk.text, end="", flush=True)
    print()
    await conn.close()
    output = await conn.output()

    assert capsys.readouterr().out == f"{first}\n{second}\n"
    assert output.finish_reason == "stop"
    assert output.message is not None and output.message.text == second
    # The system prompt reached the model, and the tool ran with the model's input.
    assert transcript(pm.requests[1]) == [
        ("system", "You are a helpful weather assistant. Remember context across our conversation."),
        ("user", "What's the weather in Chicago?"),
        ("model", "call get_weather"),
        ("tool", "get_weather -> Sunny and 72°F in Chicago"),
    ]
    # The second turn's request carries the whole first exchange: the agent "remembers Chicago".
    assert transcript(pm.requests[2]) == [
        *transcript(pm.requests[1]),
        ("model", first),
        ("user", "How about tomorrow?"),
    ]
    snap = await weather_agent.get_snapshot(output.snapshot_id)
    assert snap is not None and snap.status == "completed"
    assert snap.state is not None and [m.role for m in snap.state.messages or []] == [
        "user",
        "model",
        "tool",
        "model",
        "user",
        "model",
    ]
    parent = await weather_agent.get_snapshot(snap.parent_id)
    assert parent is not None and parent.parent_id is None
    assert parent.state is not None and len(parent.state.messages or []) == 4


# --- pattern A: manual history management --------------------------------------------------------


async def test_manual_history_with_generate(
    ai: Turnkit, pm: ProgrammableModel, capsys: pytest.CaptureFixture[str]
) -> None:
    pm.program([reply("The capital of France is Paris."), reply("They speak French in Paris.")])

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
    # The second call carried the first exchange: "there" could only be resolved from it.
    assert transcript(pm.requests[1]) == [
        ("user", "What is the capital of France?"),
        ("model", "The capital of France is Paris."),
        ("user", "What language do they speak there?"),
    ]
    assert [m.role for m in messages] == ["user", "model", "user", "model"]


# --- the full sessions API and the AgentConnection walkthrough -----------------------------------


class ProgrammableModels:
    """Stands in for `GoogleAI()`: a plugin registering the programmable test model."""

    name = "testModels"

    def __init__(self) -> None:
        self.pm: ProgrammableModel | None = None

    def initialize(self, ai: Turnkit) -> None:
        self.pm = define_programmable_model(ai)


async def test_full_sessions_api_and_the_agent_connection(capsys: pytest.CaptureFixture[str]) -> None:
    models = ProgrammableModels()
    ai = Turnkit(
        plugins=[models],
        model=MODEL,
    )

    class WeatherInput(BaseModel):
        city: str

    @ai.tool()
    async def get_weather(input: WeatherInput) -> str:
        """Return current weather for a city."""
        # In production, call a real weather API
        return f"Sunny and 72°F in {input.city}"

    # Create a persistent session store
    weather_store = InMemorySessionStore()

    # Define the agent
    weather_agent = ai.define_agent(
        name="weatherAgent",
        model=MODEL,
        system="You are a weather assistant. Use get_weather for all weather queries.",
        tools=[get_weather],
        store=weather_store,  # sessions persist here
    )

    pm = models.pm
    assert pm is not None
    chicago, miami = "Sunny and 72°F in Chicago.", "Miami is sunny and 72°F too, so no warmer."
    pm.program(
        [
            calls(("get_weather", {"city": "Chicago"}, "c")),
            reply(chicago),
            calls(("get_weather", {"city": "Miami"}, "m")),
            reply(miami),
        ],
        [[], words(chicago), [], words(miami)],
    )

    # Start a new session
    conn = await weather_agent.stream_bidi()

    # Send a user message
    await conn.send_text("What's the weather in Chicago?")

    # Stream the response
    async for chunk in conn.receive():
        if chunk.model_chunk and chunk.model_chunk.text:
            print(chunk.model_chunk.text, end="", flush=True)
    print()  # newline after streaming

    # Continue the conversation — agent remembers Chicago
    await conn.send_text("Is it warmer in Miami right now?")
    async for chunk in conn.receive():
        if chunk.model_chunk and chunk.model_chunk.text:
            print(chunk.model_chunk.text, end="", flush=True)
    print()

    # Close and get the final output
    await conn.close()
    output = await conn.output()

    assert capsys.readouterr().out == f"{chicago}\n{miami}\n"
    assert output.message is not None and output.message.text == miami
    # The Miami question went out with the Chicago exchange (tool call and answer) before it.
    assert transcript(pm.requests[2]) == [
        ("system", "You are a weather assistant. Use get_weather for all weather queries."),
        ("user", "What's the weather in Chicago?"),
        ("model", "call get_weather"),
        ("tool", "get_weather -> Sunny and 72°F in Chicago"),
        ("model", chicago),
        ("user", "Is it warmer in Miami right now?"),
    ]
    stored = await weather_store.get_snapshot(snapshot_id=output.snapshot_id)
    assert stored is not None and stored.status == "completed"


# --- the portfolio agent -------------------------------------------------------------------------


class StockInput(BaseModel):
    ticker: str


class SearchInput(BaseModel):
    query: str


async def test_portfolio_agent_with_two_tools(
    ai: Turnkit, pm: ProgrammableModel, capsys: pytest.CaptureFixture[str]
) -> None:
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
        model=MODEL,
        system="""You are a portfolio assistant.
Use get_stock_price and search_news to answer questions.
Track which tickers the user asks about across the conversation.""",
        tools=[get_stock_price, search_news],
        store=portfolio_store,
    )
    pm.program(
        [
            calls(("get_stock_price", {"ticker": "aapl"}, "p1")),
            reply("Apple trades at $195.42."),
            calls(("search_news", {"query": "Apple"}, "n1"), ("get_stock_price", {"ticker": "AAPL"}, "p2")),
            reply("Markets are steady; Apple is still $195.42."),
        ],
        [[], words("Apple trades at $195.42."), [], words("Markets are steady; Apple is still $195.42.")],
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
    output = await conn.output()

    assert capsys.readouterr().out == (
        "Apple trades at $195.42.\nMarkets are steady; Apple is still $195.42.\n"
    )
    assert len(pm.requests) == 4
    assert [t.name for t in pm.requests[0].tools or []] == ["get_stock_price", "search_news"]
    # Both tools ran in one tool message, answers matched to their requests by ref.
    tool_msg = pm.requests[3].messages[-1]
    assert tool_msg.role == "tool"
    assert {(p.tool_response.ref, p.tool_response.output) for p in tool_msg.content if p.tool_response} == {
        ("n1", 'Top result for "Apple": Markets steady as tech sector leads gains.'),
        ("p2", "AAPL: $195.42"),
    }
    # The second turn saw the first one (Apple and its price) without the client re-sending it.
    assert ("tool", "get_stock_price -> AAPL: $195.42") in transcript(pm.requests[2])
    assert ("model", "Apple trades at $195.42.") in transcript(pm.requests[2])
    assert output.message is not None and output.message.text.startswith("Markets are steady")
    assert (await portfolio_store.get_snapshot(snapshot_id=output.snapshot_id)) is not None


# --- session persistence across requests ---------------------------------------------------------


async def test_session_persists_across_two_connections_by_session_id(
    ai: Turnkit, pm: ProgrammableModel, capsys: pytest.CaptureFixture[str]
) -> None:
    weather_agent = weather_app(ai)
    pm.program(
        [reply("Rainy in Seattle."), reply("Portland is rainy too.")],
        [words("Rainy in Seattle."), words("Portland is rainy too.")],
    )

    # --- First request (e.g. HTTP POST /chat/start) ---
    session_id = str(uuid.uuid4())
    conn = await weather_agent.stream_bidi(init=AgentInit(session_id=session_id))
    await conn.send_text("What's the weather in Seattle?")
    async for chunk in conn.receive():
        if chunk.model_chunk and chunk.model_chunk.text:
            print(chunk.model_chunk.text, end="")
    await conn.close()
    first = await conn.output()

    # --- Second request (e.g. HTTP POST /chat/continue) ---
    # Process may have restarted; session_id is all you need
    conn2 = await weather_agent.stream_bidi(
        init=AgentInit(session_id=session_id)  # resume same session
    )
    await conn2.send_text("How about Portland?")  # agent still knows context
    async for chunk in conn2.receive():
        if chunk.model_chunk and chunk.model_chunk.text:
            print(chunk.model_chunk.text, end="")
    await conn2.close()
    second = await conn2.output()

    assert capsys.readouterr().out == "Rainy in Seattle.Portland is rainy too."
    assert first.session_id == second.session_id == session_id
    assert transcript(pm.requests[1])[1:] == [
        ("user", "What's the weather in Seattle?"),
        ("model", "Rainy in Seattle."),
        ("user", "How about Portland?"),
    ]
    latest = await weather_agent.get_snapshot(session_id=session_id)
    assert latest is not None and latest.snapshot_id == second.snapshot_id
    assert latest.parent_id == first.snapshot_id


# --- a custom session store, written as the seed writes it -------------------------------------


class RedisSessionStore:
    """Production session store backed by Redis."""

    def __init__(self, redis_client):
        self.redis = redis_client

    async def get_snapshot(
        self,
        *,
        snapshot_id: str | None = None,
        session_id: str | None = None,
    ) -> SessionSnapshot | None:
        key = f"genkit:snapshot:{snapshot_id or session_id}"
        data = await self.redis.get(key)
        if data is None:
            return None
        return SessionSnapshot.model_validate_json(data)

    async def save_snapshot(
        self,
        snapshot_id: str | None,
        fn: Callable[[SessionSnapshot | None], SessionSnapshot | None],
    ) -> SessionSnapshot | None:
        # Read-modify-write — fn receives existing snapshot, returns new one
        key = f"genkit:snapshot:{snapshot_id}"
        existing_data = await self.redis.get(key)
        existing = SessionSnapshot.model_validate_json(existing_data) if existing_data else None
        new_snapshot = fn(existing)
        if new_snapshot is None:
            return None
        await self.redis.set(key, new_snapshot.model_dump_json())
        return new_snapshot


async def test_custom_redis_session_store_as_written(ai: Turnkit, pm: ProgrammableModel) -> None:
    require_service("Redis", "127.0.0.1", 6379)
    from redis.asyncio import Redis

    client = Redis(host="127.0.0.1", port=6379)
    sessions: set[str] = set()
    try:
        store = RedisSessionStore(client)
        agent = ai.define_agent(name="redisWeather", model=MODEL, system="Weather.", store=store)
        pm.program([reply("Rainy in Seattle."), reply("Still rainy."), reply("Portland: rain.")])

        # Two turns on one connection: each ends in a snapshot the store keeps in Redis.
        conn = await agent.stream_bidi()
        await conn.send_text("What's the weather in Seattle?")
        [c async for c in conn.receive()]
        await conn.send_text("And tomorrow?")
        [c async for c in conn.receive()]
        await conn.close()
        first = await conn.output()
        sessions.add(first.session_id)
        assert first.finish_reason == "stop" and first.snapshot_id is not None
        raw = await client.get(f"genkit:snapshot:{first.snapshot_id}")
        assert raw is not None
        stored = SessionSnapshot.model_validate_json(raw)
        assert stored.status == "completed" and stored.parent_id is not None
        assert [m.text for m in stored.state.messages or []] == [  # type: ignore[union-attr]
            "What's the weather in Seattle?",
            "Rainy in Seattle.",
            "And tomorrow?",
            "Still rainy.",
        ]

        # A later request continues from the snapshot (the store is keyed by snapshot id; looking a
        # session up by id would need a key per session, which this store does not write).
        conn2 = await agent.stream_bidi(init=AgentInit(snapshot_id=first.snapshot_id))
        await conn2.send_text("How about Portland?")
        [c async for c in conn2.receive()]
        await conn2.close()
        second = await conn2.output()
        assert second.session_id == first.session_id and second.finish_reason == "stop"
        assert transcript(pm.requests[2])[-2:] == [("model", "Still rainy."), ("user", "How about Portland?")]

        # A detached turn too: its pending snapshot, heartbeat and completion go through this store.
        chat = agent.chat(snapshot_id=second.snapshot_id)
        pm.program([reply("Detached answer.")])
        task = await chat.detach("Summarise.")
        done = await task.wait()
        assert done.status == "completed" and done.parent_id == second.snapshot_id
        assert done.state is not None and (done.state.messages or [])[-1].text == "Detached answer."
    finally:
        async for key in client.scan_iter(match="genkit:snapshot:*"):
            data = await client.get(key)
            if data is not None and SessionSnapshot.model_validate_json(data).session_id in sessions:
                await client.delete(key)
        await client.aclose()


# --- run_with_session / get_current_session ------------------------------------------------------


async def test_run_with_session_binds_the_current_session() -> None:
    # Create a session store (in-memory for dev; replace with a DB-backed store in prod)
    store = InMemorySessionStore()
    # Create a session
    session = Session(store=store)
    new_message = Message(role="user", content=[Part(text="remember me")])
    seen: list[Session[Any]] = []

    async def deeper() -> None:  # "or its children": a nested coroutine and a task it starts
        seen.append(get_current_session())

    # Run code with the session bound to async context
    async def my_flow():
        # Access the session anywhere in this coroutine or its children
        from turnkit.sessions import get_current_session

        sess = get_current_session()  # returns the bound Session
        messages = await sess.get_messages()
        seen.append(sess)
        assert messages == []
        await deeper()
        await asyncio.create_task(deeper())
        # ... do work ...
        await sess.add_messages(new_message)

    await run_with_session(session, my_flow())

    assert seen == [session, session, session] and session.store is store
    assert await session.get_messages() == [new_message]
    with pytest.raises(TurnkitError) as err:
        get_current_session()  # unbound again outside run_with_session
    assert err.value.status == "FAILED_PRECONDITION"


# --- custom state beyond messages ----------------------------------------------------------------


class AssistantState(TypedDict):
    cities_asked: list[str]
    calculation_count: int


async def test_update_custom_in_a_one_argument_turn_handler(
    ai: Turnkit, capsys: pytest.CaptureFixture[str]
) -> None:
    store = InMemorySessionStore()

    async def agent_fn(sess: AgentSession[AssistantState], ctx: AgentContext) -> Any:
        # Inside a custom agent turn handler:
        async def handle_turn(inp):
            await sess.update_custom(
                lambda s: {
                    "cities_asked": (s or {}).get("cities_asked", []) + ["Chicago"],  # noqa: RUF005 - as in the seed
                    "calculation_count": (s or {}).get("calculation_count", 0),
                }
            )
            current = await sess.get_custom()
            print(f"Cities asked so far: {current['cities_asked']}")

        await sess.run(handle_turn)
        return await sess.result()

    agent = ai.define_custom_agent(name="assistantState", fn=agent_fn, store=store)
    chat = agent.chat()
    await chat.send("Weather in Chicago?")
    res = await chat.send("And again Chicago?")

    assert capsys.readouterr().out == (
        "Cities asked so far: ['Chicago']\nCities asked so far: ['Chicago', 'Chicago']\n"
    )
    snap = await agent.get_snapshot(res.snapshot_id)
    assert snap is not None and snap.state is not None
    assert snap.state.custom == {"cities_asked": ["Chicago", "Chicago"], "calculation_count": 0}
    # Each turn's input reached the session before the one-argument handler ran.
    assert [m.text for m in snap.state.messages or []] == ["Weather in Chicago?", "And again Chicago?"]


# --- the complete assistant: the CLI chat loop ---------------------------------------------------


class CalcInput(BaseModel):
    expression: str


def test_assistant_chat_loop_new_session_gets_new_id(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    models = ProgrammableModels()
    ai = Turnkit(
        plugins=[models],
        model=MODEL,
    )

    # ── Tools ───────────────────────────────────────────────────────────────────

    @ai.tool()
    async def get_weather(input: WeatherInput) -> str:
        """Get current weather for a city."""
        data = {
            "chicago": "Partly cloudy, 68°F, humidity 55%",
            "seattle": "Overcast and rainy, 54°F",
            "miami": "Sunny, 87°F, humidity 78%",
        }
        return data.get(input.city.lower(), f"Weather data unavailable for {input.city}")

    @ai.tool()
    async def calculate(input: CalcInput) -> str:
        """Evaluate a simple math expression."""
        try:
            # In production: use a safe evaluator
            result = eval(input.expression, {"__builtins__": {}}, {})
            return str(result)
        except Exception as e:
            return f"Error: {e}"

    session_store = InMemorySessionStore()
    assistant = ai.define_agent(
        name="personalAssistant",
        model=MODEL,
        system="""You are a helpful personal assistant.
You have access to weather and calculator tools.
Remember context across our conversation.
Be concise — 1-2 sentences per response unless asked for more.""",
        tools=[get_weather, calculate],
        store=session_store,
    )

    # The model: call the tool the question needs, then answer with the tool's result.
    def model(request: ModelRequest, _ctx: Any) -> dict[str, Any]:
        last = request.messages[-1]
        if last.role == "tool":
            return reply(str(last.content[0].tool_response.output))  # type: ignore[union-attr]
        if "weather" in last.text.lower():
            return calls(("get_weather", {"city": "Chicago"}, "w"))
        if "-" in last.text:
            return calls(("calculate", {"expression": last.text.split("What's ")[1].rstrip("?")}, "c"))
        return reply(f"{len(request.messages)} messages so far.")

    pm = models.pm
    assert pm is not None
    pm.handler = model
    typed = iter(["What's the weather in Chicago?", "", "new", "What's 68 - 54?", "How long?", "quit"])
    monkeypatch.setattr("builtins.input", lambda _prompt="": next(typed))
    ids: list[str] = []

    async def chat() -> None:
        session_id = str(uuid.uuid4())
        ids.append(session_id)
        print(f"Session: {session_id}")
        print('Type "quit" to exit, "new" to start a fresh session.\n')
        conn = await assistant.stream_bidi(init=AgentInit(session_id=session_id))
        while True:
            try:
                user_input = input("You: ").strip()  # noqa: ASYNC250 - the seed's loop; input is patched
            except (EOFError, KeyboardInterrupt):
                break
            if not user_input:
                continue
            if user_input.lower() == "quit":
                break
            if user_input.lower() == "new":
                await conn.close()
                await conn.output()
                session_id = str(uuid.uuid4())
                ids.append(session_id)
                conn = await assistant.stream_bidi(init=AgentInit(session_id=session_id))
                print(f"New session: {session_id}")
                continue
            await conn.send_text(user_input)
            print("Assistant: ", end="", flush=True)
            async for chunk in conn.receive():
                if chunk.model_chunk and chunk.model_chunk.text:
                    print(chunk.model_chunk.text, end="", flush=True)
            print()  # newline
        await conn.close()
        await conn.output()
        print("Goodbye.")

    ai.run_main(chat())  # the seed runs this under `if __name__ == '__main__':`

    # The programmable model does not stream, so "Assistant: " lines are empty; the answers are in
    # the snapshots.
    out = capsys.readouterr().out
    assert out.startswith(f"Session: {ids[0]}\n") and f"New session: {ids[1]}\n" in out
    assert out.endswith("Goodbye.\n") and out.count("Assistant: ") == 3
    assert len(set(ids)) == 2
    old = ai.run_main(assistant.get_snapshot(session_id=ids[0]))
    new = ai.run_main(assistant.get_snapshot(session_id=ids[1]))
    assert old is not None and old.state is not None and new is not None and new.state is not None
    assert [m.text for m in old.state.messages or [] if m.text] == [
        "What's the weather in Chicago?",
        "Partly cloudy, 68°F, humidity 55%",
    ]
    # The fresh session starts empty: nothing about Chicago, and the calculator worked.
    assert [m.text for m in new.state.messages or [] if m.text] == [
        "What's 68 - 54?",
        "14",
        "How long?",
        "6 messages so far.",  # system, the calculation (4 messages), this question
    ]
    assert all("Chicago" not in str(r.messages) for r in pm.requests[2:])
