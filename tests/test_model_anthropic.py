"""The Anthropic provider through the real `anthropic` SDK, against a scripted local Messages API.

The plugin is pointed at the server through the environment (`ANTHROPIC_BASE_URL`, which the SDK
honours, and `ANTHROPIC_API_KEY`). Replies follow the Messages API: a JSON message, or the SSE
sequence message_start, content_block_start/delta/stop, message_delta, message_stop (with pings
and error events).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from model_checks import check_tool_loop
from provider_servers import Events, ProviderServer, Reply, closed_url, serve
from turnkit import Turnkit, TurnkitError
from turnkit.middleware import retry
from turnkit.models import Model, ModelContext
from turnkit.models.anthropic import MODEL_INFO, OUTPUT_TOOL, Anthropic, finish_reason
from turnkit.types import (
    Media,
    Message,
    ModelRequest,
    ModelResponseChunk,
    OutputConfig,
    Part,
    ToolDefinition,
    ToolRequest,
    ToolResponse,
)

MODEL = "claude-sonnet-4-5"
WEATHER = ToolDefinition(
    name="get_weather",
    description="Get the current weather for a city.",
    input_schema={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


def user(text: str) -> Message:
    return Message(role="user", content=[Part(text=text)])


def message(
    *content: dict[str, Any], stop: str = "end_turn", usage: dict[str, int] | None = None
) -> dict[str, Any]:
    """A Messages API response body."""
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": list(content),
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage or {"input_tokens": 10, "output_tokens": 5},
    }


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def tool_use(block_id: str, name: str, tool_input: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": block_id, "name": name, "input": tool_input}


def stream(*blocks: list[tuple[str, dict[str, Any]]], stop: str = "end_turn") -> Events:
    """An SSE reply: each block is a list of deltas after its start event; indexes are assigned."""
    start = message(usage={"input_tokens": 12, "output_tokens": 1})
    start["content"], start["stop_reason"] = [], None
    events: list[tuple[str | None, Any]] = [("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(blocks):
        (_, first), *deltas = block
        events.append(
            ("content_block_start", {"type": "content_block_start", "index": index, "content_block": first})
        )
        events.append(("ping", {"type": "ping"}))
        for _, delta in deltas:
            events.append(
                ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
            )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": 9},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return Events(events)


def text_block(*pieces: str) -> list[tuple[str, dict[str, Any]]]:
    return [("start", text("")), *[("delta", {"type": "text_delta", "text": p}) for p in pieces]]


def tool_block(block_id: str, name: str, *json_pieces: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("start", tool_use(block_id, name, {})),
        *[("delta", {"type": "input_json_delta", "partial_json": p}) for p in json_pieces],
    ]


@pytest.fixture(scope="module")
def server() -> Iterator[ProviderServer]:
    yield from serve()


@pytest.fixture
def claude(server: ProviderServer, monkeypatch: pytest.MonkeyPatch) -> ProviderServer:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
    server.script()
    return server


@pytest.fixture
def model(claude: ProviderServer) -> Model:
    return Model(f"anthropic/{MODEL}", Anthropic().model(MODEL), MODEL_INFO)


def sent_key(headers: dict[str, str]) -> str | None:
    """The API key a request carried (the SDK sends it as x-api-key or as a bearer token)."""
    return headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ") or None


# --- requests ------------------------------------------------------------------------------------


async def test_request_carries_system_history_config_and_key(claude: ProviderServer, model: Model) -> None:
    claude.script(Reply(message(text("Ahoy, Ada."))))
    msgs = [
        Message(role="system", content=[Part(text="You are a pirate.")]),
        user("My name is Ada."),
        Message(role="model", content=[Part(text="Ahoy!")]),
        user("What is my name?"),
    ]
    config = {"maxOutputTokens": 50, "temperature": 0.2, "topP": 0.9, "topK": 20, "stopSequences": ["END"]}
    resp = await model(
        ModelRequest(messages=msgs, config=config | {"metadata": {"user_id": "u1"}}), ModelContext()
    )
    [req] = claude.requests
    assert req.path == "/v1/messages" and sent_key(req.headers) == "test-key"
    assert req.headers["anthropic-version"]
    body = req.body
    assert body["model"] == MODEL and body["system"] == "You are a pirate."
    assert body["messages"] == [
        {"role": "user", "content": [text("My name is Ada.")]},
        {"role": "assistant", "content": [text("Ahoy!")]},
        {"role": "user", "content": [text("What is my name?")]},
    ]
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["top_k"]) == (50, 0.2, 0.9, 20)
    assert body["stop_sequences"] == ["END"] and body["metadata"] == {"user_id": "u1"}
    assert "stream" not in body and "tools" not in body
    assert resp.text == "Ahoy, Ada." and resp.finish_reason == "stop"
    assert resp.usage is not None and (resp.usage.input_tokens, resp.usage.output_tokens) == (10, 5)


async def test_max_tokens_defaults_and_version_picks_the_model(claude: ProviderServer, model: Model) -> None:
    claude.script(Reply(message(text("ok"))))
    await model(ModelRequest(messages=[user("x")], config={"version": "claude-haiku-4-5"}), ModelContext())
    body = claude.requests[0].body
    assert body["max_tokens"] == 4096 and body["model"] == "claude-haiku-4-5"


async def test_tools_tool_results_and_parallel_calls(claude: ProviderServer, model: Model) -> None:
    claude.script(
        Reply(
            message(
                tool_use("t3", "get_weather", {"city": "Rome"}),
                tool_use("t4", "get_weather", {"city": "Oslo"}),
                stop="tool_use",
            )
        )
    )
    calls = [
        Part(tool_request=ToolRequest(name="get_weather", ref="t1", input={"city": "Paris"})),
        Part(tool_request=ToolRequest(name="get_weather", ref="t2", input={"city": "Lima"})),
    ]
    results = [
        Part(tool_response=ToolResponse(name="get_weather", ref="t1", output={"temp_c": 21})),
        Part(tool_response=ToolResponse(name="get_weather", ref="t2", output="rain")),
    ]
    msgs = [user("Weather?"), Message(role="model", content=calls), Message(role="tool", content=results)]
    resp = await model(ModelRequest(messages=msgs, tools=[WEATHER], tool_choice="required"), ModelContext())
    body = claude.requests[0].body
    assert body["tools"] == [
        {"name": "get_weather", "description": WEATHER.description, "input_schema": WEATHER.input_schema}
    ]
    assert body["tool_choice"] == {"type": "auto"}  # after tool results a forced call would loop
    assert body["messages"][1] == {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "t2", "name": "get_weather", "input": {"city": "Lima"}},
        ],
    }
    assert body["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": '{"temp_c": 21}'},
            {"type": "tool_result", "tool_use_id": "t2", "content": "rain"},
        ],
    }
    assert resp.message is not None and [p.tool_request for p in resp.message.content] == [
        ToolRequest(name="get_weather", ref="t3", input={"city": "Rome"}),
        ToolRequest(name="get_weather", ref="t4", input={"city": "Oslo"}),
    ]
    assert resp.finish_reason == "stop"


@pytest.mark.parametrize(
    ("choice", "sent"), [("required", {"type": "any"}), ("auto", {"type": "auto"}), ("none", None)]
)
async def test_tool_choice(claude: ProviderServer, model: Model, choice: str, sent: Any) -> None:
    claude.script(Reply(message(text("ok"))))
    await model(ModelRequest(messages=[user("x")], tools=[WEATHER], tool_choice=choice), ModelContext())  # type: ignore[arg-type]
    body = claude.requests[0].body
    assert body.get("tool_choice") == sent and ("tools" in body) == (sent is not None)


async def test_structured_output_goes_through_a_forced_tool(claude: ProviderServer, model: Model) -> None:
    claude.script(Reply(message(tool_use("o1", OUTPUT_TOOL, {"name": "Ann", "age": 30}), stop="tool_use")))
    req = ModelRequest(messages=[user("A person.")], output=OutputConfig(format="json", schema=PERSON))
    resp = await model(req, ModelContext())
    body = claude.requests[0].body
    assert body["tools"][0]["name"] == OUTPUT_TOOL and body["tools"][0]["input_schema"] == PERSON
    assert body["tool_choice"] == {"type": "tool", "name": OUTPUT_TOOL}
    assert json.loads(resp.text) == {"name": "Ann", "age": 30} and resp.message is not None
    assert not resp.message.tool_requests


async def test_non_object_schemas_are_wrapped_and_unwrapped(claude: ProviderServer, model: Model) -> None:
    schema = {"type": "array", "items": {"type": "string"}}
    claude.script(Reply(message(tool_use("o1", OUTPUT_TOOL, {"value": ["a", "b"]}), stop="tool_use")))
    resp = await model(
        ModelRequest(messages=[user("x")], output=OutputConfig(format="json", schema=schema)), ModelContext()
    )
    sent = claude.requests[0].body["tools"][0]["input_schema"]
    assert sent == {"type": "object", "properties": {"value": schema}, "required": ["value"]}
    assert json.loads(resp.text) == ["a", "b"]


async def test_images_and_documents(claude: ProviderServer, model: Model) -> None:
    claude.script(Reply(message(text("a cat"))))
    msg = Message(
        role="user",
        content=[
            Part(text="What is this?"),
            Part(media=Media(url="data:image/png;base64,iVBORw==")),
            Part(media=Media(url="https://example.com/cat.jpg")),
            Part(media=Media(url="https://example.com/a.pdf", content_type="application/pdf")),
        ],
    )
    await model(ModelRequest(messages=[msg]), ModelContext())
    assert claude.requests[0].body["messages"][0]["content"][1:] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw=="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}},
    ]


async def test_thinking_is_kept_and_sent_back(claude: ProviderServer, model: Model) -> None:
    claude.script(
        Reply(
            message(
                {"type": "thinking", "thinking": "Need the weather.", "signature": "sig-1"},
                {"type": "redacted_thinking", "data": "opaque"},
                tool_use("t1", "get_weather", {"city": "Rome"}),
                stop="tool_use",
            )
        ),
        Reply(message(text("Sunny."))),
    )
    req = ModelRequest(messages=[user("Rome?")], tools=[WEATHER], config={"thinkingBudget": 2048})
    first = await model(req, ModelContext())
    assert claude.requests[0].body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert first.message is not None
    thought, redacted, _ = first.message.content
    assert (thought.reasoning, thought.metadata) == ("Need the weather.", {"signature": "sig-1"})
    assert redacted.reasoning == "" and redacted.metadata == {"redactedThinking": "opaque"}
    result = Part(tool_response=ToolResponse(name="get_weather", ref="t1", output="sunny"))
    history = [user("Rome?"), first.message, Message(role="tool", content=[result])]
    await model(ModelRequest(messages=history, tools=[WEATHER]), ModelContext())
    assert claude.requests[1].body["messages"][1]["content"] == [
        {"type": "thinking", "thinking": "Need the weather.", "signature": "sig-1"},
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Rome"}},
    ]


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("end_turn", "stop"),
        ("tool_use", "stop"),
        ("max_tokens", "length"),
        ("refusal", "blocked"),
        ("pause_turn", "other"),
    ],
)
async def test_stop_reasons(claude: ProviderServer, model: Model, reason: str, expected: str) -> None:
    claude.script(Reply(message(text("x"), stop=reason)))
    resp = await model(ModelRequest(messages=[user("x")]), ModelContext())
    assert resp.finish_reason == expected == finish_reason(reason)


# --- streaming -----------------------------------------------------------------------------------


async def test_stream_assembles_text_thinking_and_split_tool_input(
    claude: ProviderServer, model: Model
) -> None:
    thinking = [
        ("start", {"type": "thinking", "thinking": "", "signature": ""}),
        ("delta", {"type": "thinking_delta", "thinking": "Two "}),
        ("delta", {"type": "thinking_delta", "thinking": "cities."}),
        ("delta", {"type": "signature_delta", "signature": "sig-9"}),
    ]
    claude.script(
        stream(
            thinking,
            text_block("Let me ", "check."),
            tool_block("a", "get_weather", '{"ci', 'ty": "Ro', 'me"}'),
            tool_block("b", "get_weather", '{"city": "Oslo"}'),
            stop="tool_use",
        )
    )
    chunks: list[ModelResponseChunk] = []
    resp = await model(
        ModelRequest(messages=[user("Rome and Oslo?")], tools=[WEATHER]), ModelContext(chunks.append)
    )
    assert claude.requests[0].body["stream"] is True
    assert [c.content[0].reasoning for c in chunks[:2]] == ["Two ", "cities."]
    assert [c.text for c in chunks[2:4]] == ["Let me ", "check."]
    assert resp.message is not None
    thought, said, first, second = resp.message.content
    assert (thought.reasoning, thought.metadata) == ("Two cities.", {"signature": "sig-9"})
    assert said.text == "Let me check."
    assert [first.tool_request, second.tool_request] == [
        ToolRequest(name="get_weather", ref="a", input={"city": "Rome"}),
        ToolRequest(name="get_weather", ref="b", input={"city": "Oslo"}),
    ]
    assert [c.content for c in chunks[4:]] == [[first], [second]]  # each call streamed once complete
    assert resp.finish_reason == "stop"
    assert resp.usage is not None and (resp.usage.input_tokens, resp.usage.output_tokens) == (12, 9)


async def test_streamed_structured_output(claude: ProviderServer, model: Model) -> None:
    claude.script(stream(tool_block("o", OUTPUT_TOOL, '{"name": "Ann",', ' "age": 30}'), stop="tool_use"))
    chunks: list[ModelResponseChunk] = []
    req = ModelRequest(messages=[user("x")], output=OutputConfig(format="json", schema=PERSON))
    resp = await model(req, ModelContext(chunks.append))
    assert json.loads(resp.text) == {"name": "Ann", "age": 30} and chunks[-1].text == resp.text


@pytest.mark.parametrize(
    ("error_type", "status"),
    [
        ("overloaded_error", "UNAVAILABLE"),
        ("rate_limit_error", "RESOURCE_EXHAUSTED"),
        ("api_error", "UNAVAILABLE"),
    ],
)
async def test_an_error_event_inside_the_stream(
    claude: ProviderServer, model: Model, error_type: str, status: str
) -> None:
    events = stream(text_block("par")).events[:4]
    events.append(("error", {"type": "error", "error": {"type": error_type, "message": "try later"}}))
    claude.script(Events(events))
    with pytest.raises(TurnkitError) as err:
        await model(ModelRequest(messages=[user("x")]), ModelContext(lambda c: None))
    assert err.value.status == status and "try later" in err.value.message


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "error_type", "status"),
    [
        (400, "invalid_request_error", "INVALID_ARGUMENT"),
        (401, "authentication_error", "UNAUTHENTICATED"),
        (403, "permission_error", "PERMISSION_DENIED"),
        (404, "not_found_error", "NOT_FOUND"),
        (429, "rate_limit_error", "RESOURCE_EXHAUSTED"),
        (500, "api_error", "UNAVAILABLE"),
        (529, "overloaded_error", "UNAVAILABLE"),
    ],
)
@pytest.mark.parametrize("streaming", [False, True])
async def test_http_errors_map_to_statuses(
    claude: ProviderServer, code: int, error_type: str, status: str, streaming: bool
) -> None:
    claude.script(Reply({"type": "error", "error": {"type": error_type, "message": "nope"}}, code))
    model = Model("m", Anthropic(max_retries=0).model(MODEL))
    with pytest.raises(TurnkitError) as err:
        await model(ModelRequest(messages=[user("x")]), ModelContext(print if streaming else None))
    assert err.value.status == status and err.value.details["httpStatus"] == code
    assert err.value.public == (code == 400)


async def test_retry_middleware_honours_retry_after_and_the_sdk_does_not_retry(
    claude: ProviderServer,
) -> None:
    # The SDK retries twice by default; under turnkit's retry middleware it makes one attempt.
    ai = Turnkit(plugins=[Anthropic()], model=f"anthropic/{MODEL}")
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    limited = Reply(
        {"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}}, 429, {"retry-after": "2"}
    )
    claude.script(limited, Reply(message(text("finally"))))
    resp = await ai.generate(prompt="x", use=[retry(max_retries=3, sleep=sleep)])
    assert resp.text == "finally" and waits == [2.0] and len(claude.requests) == 2
    assert claude.requests[0].headers["x-stainless-retry-count"] == "0"
    # A wait beyond the middleware's max_delay is not retried: the caller sees the quota error.
    claude.script(Reply(limited.body, 429, {"retry-after": "120"}))
    with pytest.raises(TurnkitError) as err:
        await ai.generate(prompt="x", use=[retry(max_retries=3, max_delay=30, sleep=sleep)])
    assert err.value.status == "RESOURCE_EXHAUSTED" and err.value.details["retryAfter"] == 120
    assert len(claude.requests) == 1 and waits == [2.0]
    # Without the middleware the SDK's own retries apply (it honours retry-after-ms itself).
    claude.script(Reply(limited.body, 429, {"retry-after-ms": "1"}), Reply(message(text("ok"))))
    resp2 = await ai.generate(prompt="x")
    assert resp2.text == "ok" and len(claude.requests) == 2


async def test_timeouts_and_closed_ports(claude: ProviderServer, monkeypatch: pytest.MonkeyPatch) -> None:
    claude.script(Reply(message(text("late")), delay=1.0))
    with pytest.raises(TurnkitError) as err:
        await Model("m", Anthropic(timeout=0.1, max_retries=0).model(MODEL))(
            ModelRequest(messages=[user("x")]), ModelContext()
        )
    assert err.value.status == "DEADLINE_EXCEEDED"
    monkeypatch.setenv("ANTHROPIC_BASE_URL", closed_url())
    with pytest.raises(TurnkitError) as err:
        await Model("m", Anthropic(max_retries=0).model(MODEL))(
            ModelRequest(messages=[user("x")]), ModelContext()
        )
    assert err.value.status == "UNAVAILABLE"


async def test_without_a_key_the_plugin_says_which_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(TurnkitError) as err:
        await Model("m", Anthropic().model(MODEL))(ModelRequest(messages=[user("x")]), ModelContext())
    assert err.value.status == "FAILED_PRECONDITION" and "ANTHROPIC_API_KEY" in err.value.message


async def test_abort_stops_the_stream(claude: ProviderServer, model: Model) -> None:
    claude.script(stream(text_block(*[f"word{i} " for i in range(50)])))
    ctx = ModelContext(lambda c: ctx.abort_signal.set())
    resp = await model(ModelRequest(messages=[user("x")]), ctx)
    assert resp.finish_reason == "aborted" and resp.text == "word0 "


# --- through the app and an agent ----------------------------------------------------------------


async def test_generate_runs_a_tool_loop(claude: ProviderServer) -> None:
    claude.script(
        Reply(message(tool_use("t1", "get_weather", {"city": "Paris"}), stop="tool_use")),
        Reply(message(text("It is sunny in Paris."))),
    )
    ai = Turnkit(plugins=[Anthropic()], model="anthropic/any-claude-id")
    await check_tool_loop(ai, {"temperature": 0})
    assert claude.requests[0].body["model"] == "any-claude-id"
    result = claude.requests[1].body["messages"][-1]["content"][0]
    assert result["type"] == "tool_result" and result["tool_use_id"] == "t1"


async def test_agent_turn_with_tool_interrupt_and_resume_streams(claude: ProviderServer) -> None:
    from pydantic import BaseModel

    from turnkit.sessions import InMemorySessionStore

    class Question(BaseModel):
        question: str

    ai = Turnkit(plugins=[Anthropic()], model=f"anthropic/{MODEL}")
    ai.define_interrupt(name="ask", description="Ask the user.", input_schema=Question)

    @ai.tool()
    def get_weather(city: str) -> str:
        """Get the weather."""
        return f"sunny in {city}"

    agent = ai.define_agent(name="helper", tools=["ask", get_weather], store=InMemorySessionStore())
    claude.script(
        stream(tool_block("w1", "get_weather", '{"city": "Rome"}'), stop="tool_use"),
        stream(text_block("Sunny. "), tool_block("q1", "ask", '{"question": "Umbrella?"}'), stop="tool_use"),
        stream(text_block("Then take ", "one.")),
    )
    chat = agent.chat()
    turn = chat.send_stream("Weather in Rome?")
    streamed = [c async for c in turn]
    res = await turn.response
    assert res.finish_reason == "interrupted"
    [intr] = res.interrupts
    assert (intr.name, intr.ref, intr.input) == ("ask", "q1", {"question": "Umbrella?"})
    assert "Sunny. " in [c.text for c in streamed]
    assert claude.requests[1].body["messages"][-1]["content"] == [
        {"type": "tool_result", "tool_use_id": "w1", "content": "sunny in Rome"}
    ]
    done = await chat.resume(respond=[intr.respond({"answer": "yes"})])
    assert done.finish_reason == "stop" and done.text == "Then take one."
    last = claude.requests[2].body["messages"]
    assert last[-2]["content"][-1] == {
        "type": "tool_use",
        "id": "q1",
        "name": "ask",
        "input": {"question": "Umbrella?"},
    }
    assert last[-1]["content"] == [
        {"type": "tool_result", "tool_use_id": "q1", "content": '{"answer": "yes"}'}
    ]


# --- the real service, only with a key -----------------------------------------------------------


# Runs only with TURNKIT_LIVE_TESTS=1 (deselected otherwise, see conftest.py) and needs the key.
@pytest.mark.live
async def test_live_generate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    ai = Turnkit(
        plugins=[Anthropic(api_key=os.environ["ANTHROPIC_API_KEY"])], model="anthropic/claude-haiku-4-5"
    )
    resp = await ai.generate(prompt="Say hello in one word.", config={"maxOutputTokens": 20})
    assert resp.text.strip()
