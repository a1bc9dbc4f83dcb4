"""The Gemini provider through the real `google-genai` SDK, against a scripted local Gemini server.

The plugin is pointed at the server only through the environment (`GOOGLE_GEMINI_BASE_URL`, which
the SDK honours, and `GEMINI_API_KEY`). Replies follow the REST shapes of `generateContent` and
`streamGenerateContent?alt=sse`; the SDK writes nested objects it passes through (blobs, function
declarations, thinking config) with snake_case keys, which the API accepts as well, so requests are
read with `field()` accepting either spelling.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from typing import Any

import pytest

from model_checks import check_tool_loop
from provider_servers import Events, ProviderServer, Reply, closed_url, serve
from turnkit import Turnkit, TurnkitError
from turnkit.middleware import retry
from turnkit.models import Model, ModelContext
from turnkit.models.google_genai import MODEL_INFO, GoogleAI, VertexAI, finish_reason
from turnkit.types import (
    DocumentData,
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

MODEL = "gemini-2.0-flash"
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
SIG = base64.b64encode(b"signature-1").decode()


def user(text: str) -> Message:
    return Message(role="user", content=[Part(text=text)])


def field(obj: dict[str, Any], camel: str) -> Any:
    """A request field by its camelCase name, or its snake_case spelling."""
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)
    return obj.get(camel, obj.get(snake))


def answer(
    *parts: dict[str, Any], finish: str | None = "STOP", usage: dict[str, int] | None = None
) -> dict[str, Any]:
    """A GenerateContentResponse body."""
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": list(parts)}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    body: dict[str, Any] = {"candidates": [candidate], "modelVersion": MODEL}
    if usage:
        body["usageMetadata"] = usage
    return body


USAGE = {"promptTokenCount": 7, "candidatesTokenCount": 3, "totalTokenCount": 10, "thoughtsTokenCount": 2}


@pytest.fixture(scope="module")
def server() -> Iterator[ProviderServer]:
    yield from serve()


@pytest.fixture
def gemini(server: ProviderServer, monkeypatch: pytest.MonkeyPatch) -> ProviderServer:
    """The server, with the environment pointing the SDK at it."""
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", "test-key")
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", server.url)
    server.script()
    return server


@pytest.fixture
def model(gemini: ProviderServer) -> Model:
    return Model(f"googleai/{MODEL}", GoogleAI().model(MODEL), MODEL_INFO)


# --- requests ------------------------------------------------------------------------------------


async def test_text_request_carries_system_history_config_and_key(
    gemini: ProviderServer, model: Model
) -> None:
    gemini.script(Reply(answer({"text": "Ahoy, Ada."}, usage=USAGE)))
    msgs = [
        Message(role="system", content=[Part(text="You are a pirate.")]),
        user("My name is Ada."),
        Message(role="model", content=[Part(text="Ahoy!")]),
        user("What is my name?"),
    ]
    config = {
        "temperature": 0.2,
        "maxOutputTokens": 50,
        "topP": 0.9,
        "topK": 20,
        "stopSequences": ["END"],
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}],
        "thinkingBudget": 128,
        "futureKnob": {"level": 3},  # unknown to the SDK: passed through in generationConfig
    }
    resp = await model(ModelRequest(messages=msgs, config=config), ModelContext())
    [req] = gemini.requests
    assert (
        req.path.endswith(f"/models/{MODEL}:generateContent") and req.headers["x-goog-api-key"] == "test-key"
    )
    body = req.body
    assert [(c["role"], c["parts"][0]["text"]) for c in body["contents"]] == [
        ("user", "My name is Ada."),
        ("model", "Ahoy!"),
        ("user", "What is my name?"),
    ]
    assert body["systemInstruction"]["parts"] == [{"text": "You are a pirate."}]
    gen = body["generationConfig"]
    assert (gen["temperature"], gen["maxOutputTokens"], gen["topP"], gen["topK"]) == (0.2, 50, 0.9, 20)
    assert gen["stopSequences"] == ["END"] and gen["futureKnob"] == {"level": 3}
    assert field(gen["thinkingConfig"], "thinkingBudget") == 128
    assert body["safetySettings"] == [
        {"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}
    ]
    assert "tools" not in body
    assert resp.text == "Ahoy, Ada." and resp.finish_reason == "stop"
    assert resp.usage is not None
    assert (resp.usage.input_tokens, resp.usage.output_tokens, resp.usage.total_tokens) == (7, 3, 10)
    assert resp.usage.thoughts_tokens == 2


@pytest.mark.parametrize(
    ("config", "sent"),
    [
        ({"thinkingConfig": {"thinkingBudget": 10, "includeThoughts": True}, "thinkingBudget": 0}, (0, True)),
        ({"thinkingBudget": 0, "thinkingConfig": {"thinkingBudget": 10, "includeThoughts": True}}, (0, True)),
        ({"thinking_config": {"include_thoughts": True}, "thinking_budget": 64}, (64, True)),
        ({"thinkingConfig": {"thinkingBudget": 10}}, (10, None)),
    ],
)
async def test_thinking_config_and_the_thinking_budget_shortcut_merge(
    gemini: ProviderServer, model: Model, config: dict[str, Any], sent: tuple[int, bool | None]
) -> None:
    gemini.script(Reply(answer({"text": "ok"})))
    await model(ModelRequest(messages=[user("x")], config=config), ModelContext())
    thinking = gemini.requests[-1].body["generationConfig"]["thinkingConfig"]
    assert (field(thinking, "thinkingBudget"), field(thinking, "includeThoughts")) == sent


async def test_a_config_value_of_the_wrong_type_is_invalid(gemini: ProviderServer, model: Model) -> None:
    with pytest.raises(TurnkitError) as err:
        await model(ModelRequest(messages=[user("x")], config={"temperature": "hot"}), ModelContext())
    assert err.value.status == "INVALID_ARGUMENT" and "temperature" in err.value.message
    assert gemini.requests == []


async def test_version_picks_another_model_and_docs_join_the_system(
    gemini: ProviderServer, model: Model
) -> None:
    gemini.script(Reply(answer({"text": "Rome."})))
    req = ModelRequest(
        messages=[user("Where?")],
        docs=[DocumentData(content=[Part(text="It is Rome.")])],
        config={"version": "gemini-pro"},
    )
    await model(req, ModelContext())
    [rec] = gemini.requests
    assert rec.path.endswith("/models/gemini-pro:generateContent")
    assert rec.body["systemInstruction"]["parts"] == [{"text": "Use this context:\nIt is Rome."}]


async def test_tools_and_tool_results_map_to_function_parts(gemini: ProviderServer, model: Model) -> None:
    gemini.script(Reply(answer({"text": "Sunny in Paris."})))
    call = Part(
        tool_request=ToolRequest(name="get_weather", ref="c1", input={"city": "Paris"}),
        metadata={"thoughtSignature": SIG},
    )
    result = Part(tool_response=ToolResponse(name="get_weather", ref="c1", output="sunny"))
    msgs = [user("Weather?"), Message(role="model", content=[call]), Message(role="tool", content=[result])]
    await model(ModelRequest(messages=msgs, tools=[WEATHER], tool_choice="required"), ModelContext())
    body = gemini.requests[0].body
    [decl] = body["tools"][0]["functionDeclarations"]
    assert decl["name"] == "get_weather" and decl["description"] == WEATHER.description
    assert field(decl, "parametersJsonSchema") == WEATHER.input_schema
    # After a tool result, a forced call would loop: the model may answer.
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}
    model_turn, tool_turn = body["contents"][1:]
    assert model_turn["role"] == "model"
    assert model_turn["parts"][0]["functionCall"] == {
        "id": "c1",
        "name": "get_weather",
        "args": {"city": "Paris"},
    }
    assert model_turn["parts"][0]["thoughtSignature"] == SIG  # sent back as the API requires
    assert tool_turn["role"] == "user"
    assert tool_turn["parts"][0]["functionResponse"] == {
        "id": "c1",
        "name": "get_weather",
        "response": {"output": "sunny"},  # non-object results are wrapped
    }


@pytest.mark.parametrize(("choice", "mode"), [("required", "ANY"), ("auto", "AUTO"), ("none", None)])
async def test_tool_choice_sets_the_calling_mode(
    gemini: ProviderServer, model: Model, choice: str, mode: str | None
) -> None:
    gemini.script(Reply(answer({"text": "ok"})))
    await model(ModelRequest(messages=[user("x")], tools=[WEATHER], tool_choice=choice), ModelContext())  # type: ignore[arg-type]
    body = gemini.requests[0].body
    if mode is None:
        assert "tools" not in body
    else:
        assert body["toolConfig"]["functionCallingConfig"]["mode"] == mode


async def test_structured_output_sends_the_schema(gemini: ProviderServer, model: Model) -> None:
    gemini.script(Reply(answer({"text": '{"name": "Ann", "age": 30}'})))
    req = ModelRequest(messages=[user("A person.")], output=OutputConfig(format="json", schema=PERSON))
    resp = await model(req, ModelContext())
    gen = gemini.requests[0].body["generationConfig"]
    assert gen["responseMimeType"] == "application/json" and gen["responseJsonSchema"] == PERSON
    assert resp.text == '{"name": "Ann", "age": 30}'


async def test_media_parts_both_ways(gemini: ProviderServer, model: Model) -> None:
    png = base64.b64encode(b"\x89PNG").decode()
    gemini.script(Reply(answer({"inlineData": {"mimeType": "image/png", "data": png}}, {"text": "a cat"})))
    msg = Message(
        role="user",
        content=[
            Part(text="What are these?"),
            Part(media=Media(url=f"data:image/png;base64,{png}")),
            Part(media=Media(url="gs://bucket/clip.mp4")),
            Part(media=Media(url="https://example.com/doc", content_type="application/pdf")),
        ],
    )
    resp = await model(ModelRequest(messages=[msg]), ModelContext())
    parts = gemini.requests[0].body["contents"][0]["parts"]
    inline = field(parts[1], "inlineData")
    assert (field(inline, "mimeType"), inline["data"]) == ("image/png", png)
    files = [field(p, "fileData") for p in parts[2:]]
    assert [(field(f, "fileUri"), field(f, "mimeType")) for f in files] == [
        ("gs://bucket/clip.mp4", "video/mp4"),
        ("https://example.com/doc", "application/pdf"),
    ]
    assert resp.message is not None
    media = resp.message.content[0].media
    assert media == Media(url=f"data:image/png;base64,{png}", content_type="image/png")


async def test_thoughts_come_back_as_reasoning_with_signatures(gemini: ProviderServer, model: Model) -> None:
    gemini.script(
        Reply(
            answer(
                {"text": "Thinking about weather.", "thought": True},
                {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}, "thoughtSignature": SIG},
            )
        )
    )
    resp = await model(ModelRequest(messages=[user("Oslo?")], tools=[WEATHER]), ModelContext())
    assert resp.message is not None
    thought, call = resp.message.content
    assert thought.reasoning == "Thinking about weather."
    assert call.tool_request == ToolRequest(name="get_weather", input={"city": "Oslo"})
    assert call.metadata == {"thoughtSignature": SIG}


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "blocked"),
        ("RECITATION", "blocked"),
        ("OTHER", "other"),
    ],
)
async def test_finish_reasons(gemini: ProviderServer, model: Model, reason: str, expected: str) -> None:
    gemini.script(Reply(answer({"text": "x"}, finish=reason)))
    resp = await model(ModelRequest(messages=[user("x")]), ModelContext())
    assert resp.finish_reason == expected == finish_reason(reason)


async def test_a_blocked_prompt_is_blocked(gemini: ProviderServer, model: Model) -> None:
    gemini.script(Reply({"promptFeedback": {"blockReason": "SAFETY"}}))
    resp = await model(ModelRequest(messages=[user("x")]), ModelContext())
    assert resp.finish_reason == "blocked" and resp.finish_message and "SAFETY" in resp.finish_message


# --- streaming -----------------------------------------------------------------------------------


async def test_stream_assembles_text_thoughts_and_calls_split_across_events(
    gemini: ProviderServer, model: Model
) -> None:
    gemini.script(
        Events(
            [
                (None, answer({"text": "Hmm, ", "thought": True}, finish=None)),
                (None, answer({"text": "weather.", "thought": True}, finish=None)),
                (None, answer({"text": "Let me "}, finish=None)),
                (None, answer({"text": "check."}, finish=None)),
                (
                    None,
                    answer(
                        {"functionCall": {"id": "a", "name": "get_weather", "args": {"city": "Rome"}}},
                        finish=None,
                    ),
                ),
                (
                    None,
                    answer(
                        {
                            "functionCall": {"id": "b", "name": "get_weather", "args": {"city": "Oslo"}},
                            "thoughtSignature": SIG,
                        },
                        usage=USAGE,
                    ),
                ),
            ]
        )
    )
    chunks: list[ModelResponseChunk] = []
    resp = await model(
        ModelRequest(messages=[user("Rome and Oslo?")], tools=[WEATHER]), ModelContext(chunks.append)
    )
    [req] = gemini.requests
    assert req.path.endswith(f"/models/{MODEL}:streamGenerateContent") and req.query == {"alt": ["sse"]}
    assert [c.content[0].reasoning for c in chunks[:2]] == ["Hmm, ", "weather."]
    assert [c.text for c in chunks[2:4]] == ["Let me ", "check."]
    assert resp.message is not None
    reasoning, text, first, second = resp.message.content
    assert reasoning.reasoning == "Hmm, weather." and text.text == "Let me check."
    assert [first.tool_request, second.tool_request] == [
        ToolRequest(name="get_weather", ref="a", input={"city": "Rome"}),
        ToolRequest(name="get_weather", ref="b", input={"city": "Oslo"}),
    ]
    assert second.metadata == {"thoughtSignature": SIG}
    assert [c.content for c in chunks[4:]] == [[first], [second]]
    assert resp.finish_reason == "stop" and resp.usage is not None and resp.usage.total_tokens == 10


async def test_an_error_inside_the_stream_fails_the_call(gemini: ProviderServer, model: Model) -> None:
    error = {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}
    gemini.script(Events([(None, answer({"text": "par"}, finish=None)), (None, error)]))
    with pytest.raises(TurnkitError) as err:
        await model(ModelRequest(messages=[user("x")]), ModelContext(lambda c: None))
    assert err.value.status == "UNAVAILABLE" and "overloaded" in err.value.message


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status", "google_status"),
    [
        (400, "INVALID_ARGUMENT", "INVALID_ARGUMENT"),
        (401, "UNAUTHENTICATED", "UNAUTHENTICATED"),
        (403, "PERMISSION_DENIED", "PERMISSION_DENIED"),
        (404, "NOT_FOUND", "NOT_FOUND"),
        (429, "RESOURCE_EXHAUSTED", "RESOURCE_EXHAUSTED"),
        (500, "UNAVAILABLE", "INTERNAL"),
        (503, "UNAVAILABLE", "UNAVAILABLE"),
    ],
)
@pytest.mark.parametrize("streaming", [False, True])
async def test_http_errors_map_to_statuses(
    gemini: ProviderServer, model: Model, code: int, status: str, google_status: str, streaming: bool
) -> None:
    gemini.script(Reply({"error": {"code": code, "message": "nope", "status": google_status}}, code))
    with pytest.raises(TurnkitError) as err:
        await model(ModelRequest(messages=[user("x")]), ModelContext(print if streaming else None))
    assert err.value.status == status and err.value.details["httpStatus"] == code
    assert len(gemini.requests) == 1  # the SDK does not retry on its own by default


async def test_quota_errors_carry_the_wait_the_server_asked_for(gemini: ProviderServer, model: Model) -> None:
    retry_info = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2.5s"}
    body = {
        "error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED", "details": [retry_info]}
    }
    gemini.script(Reply(body, 429))
    with pytest.raises(TurnkitError) as err:
        await model(ModelRequest(messages=[user("x")]), ModelContext())
    assert err.value.details == {"httpStatus": 429, "retryAfter": 2.5}
    gemini.script(Reply({"error": {"code": 429, "message": "quota"}}, 429, {"Retry-After": "4"}))
    with pytest.raises(TurnkitError) as err:
        await model(ModelRequest(messages=[user("x")]), ModelContext())
    assert err.value.details == {"httpStatus": 429, "retryAfter": 4.0}


async def test_retry_middleware_honours_retry_after_and_the_sdk_does_not_retry(
    gemini: ProviderServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The plugin asks its SDK for retries; under turnkit's retry middleware it makes one attempt.
    ai = Turnkit(plugins=[GoogleAI(max_retries=3)], model=f"googleai/{MODEL}")
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    busy = Reply({"error": {"code": 429, "message": "quota"}}, 429, {"Retry-After": "1.5"})
    gemini.script(busy, Reply(answer({"text": "finally"})))
    resp = await ai.generate(prompt="x", use=[retry(max_retries=2, sleep=sleep)])
    assert resp.text == "finally" and waits == [1.5] and len(gemini.requests) == 2
    # Without the middleware, the same plugin's SDK retries by itself.
    gemini.script(Reply({"error": {"code": 503, "message": "busy"}}, 503), Reply(answer({"text": "ok"})))
    plain = GoogleAI(max_retries=1)
    monkeypatch.setattr("google.genai._api_client._RETRY_INITIAL_DELAY", 0.0)
    resp2 = await Model("m", plain.model(MODEL))(ModelRequest(messages=[user("x")]), ModelContext())
    assert resp2.text == "ok" and len(gemini.requests) == 2


async def test_timeouts_and_closed_ports(gemini: ProviderServer, monkeypatch: pytest.MonkeyPatch) -> None:
    gemini.script(Reply(answer({"text": "late"}), delay=1.0))
    slow = GoogleAI(timeout=0.1)
    with pytest.raises(TurnkitError) as err:
        await Model("m", slow.model(MODEL))(ModelRequest(messages=[user("x")]), ModelContext())
    assert err.value.status == "DEADLINE_EXCEEDED"
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", closed_url())
    with pytest.raises(TurnkitError) as err:
        await Model("m", GoogleAI().model(MODEL))(ModelRequest(messages=[user("x")]), ModelContext())
    assert err.value.status == "UNAVAILABLE"


async def test_google_api_key_wins_over_gemini_api_key_as_in_the_sdk(
    gemini: ProviderServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from google.genai._api_client import get_env_api_key

    from turnkit.models._discovery import discovered_plugins

    monkeypatch.setenv("GOOGLE_API_KEY", "google-key")
    assert get_env_api_key() == "google-key"  # the SDK's own choice, both being set
    [plugin] = [p for p in discovered_plugins() if p.name == "googleai"]
    for google in (GoogleAI(), plugin):
        gemini.script(Reply(answer({"text": "ok"})))
        assert isinstance(google, GoogleAI)
        await Model("m", google.model(MODEL))(ModelRequest(messages=[user("x")]), ModelContext())
        assert gemini.requests[-1].headers["x-goog-api-key"] == "google-key"


async def test_without_a_key_the_plugin_says_which_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(TurnkitError) as err:
        await Model("m", GoogleAI().model(MODEL))(ModelRequest(messages=[user("x")]), ModelContext())
    assert err.value.status == "FAILED_PRECONDITION" and "GEMINI_API_KEY" in err.value.message


async def test_abort_stops_the_stream(gemini: ProviderServer, model: Model) -> None:
    gemini.script(Events([(None, answer({"text": f"word{i} "}, finish=None)) for i in range(50)]))
    ctx = ModelContext(lambda c: ctx.abort_signal.set())
    resp = await model(ModelRequest(messages=[user("x")]), ctx)
    assert resp.finish_reason == "aborted" and resp.text == "word0 "


# --- through the app and an agent ----------------------------------------------------------------


async def test_any_model_id_resolves(gemini: ProviderServer) -> None:
    ai = Turnkit(plugins=[GoogleAI()])
    gemini.script(Reply(answer({"text": "hi"})))
    resp = await ai.generate(prompt="x", model="googleai/gemini-flash-latest")
    assert resp.text == "hi" and gemini.requests[0].path.endswith(
        "/models/gemini-flash-latest:generateContent"
    )


async def test_vertex_ai_serves_vertexai_names(
    gemini: ProviderServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_VERTEX_BASE_URL", gemini.url)
    ai = Turnkit(plugins=[VertexAI(api_key="express-key")])  # Vertex AI express mode: a key, no project
    gemini.script(Reply(answer({"text": "from Vertex"})))
    resp = await ai.generate(prompt="x", model="vertexai/gemini-2.5-flash")
    [req] = gemini.requests
    assert resp.text == "from Vertex" and req.headers["x-goog-api-key"] == "express-key"
    assert req.path.endswith("/publishers/google/models/gemini-2.5-flash:generateContent")
    assert ai.registry.get("model", "googleai/gemini-2.5-flash") is None  # Gemini API names stay separate


async def test_generate_runs_a_tool_loop(gemini: ProviderServer) -> None:
    call = {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}
    gemini.script(Reply(answer(call)), Reply(answer({"text": "It is sunny in Paris."})))
    ai = Turnkit(plugins=[GoogleAI()], model=f"googleai/{MODEL}")
    await check_tool_loop(ai, {"temperature": 0})
    result = gemini.requests[1].body["contents"][-1]["parts"][0]["functionResponse"]
    assert result["name"] == "get_weather" and result["response"]["city"] == "Paris"


async def test_agent_turn_with_tool_interrupt_and_resume_streams(gemini: ProviderServer) -> None:
    from pydantic import BaseModel

    from turnkit.sessions import InMemorySessionStore

    class Question(BaseModel):
        question: str

    ai = Turnkit(plugins=[GoogleAI()], model=f"googleai/{MODEL}")
    ai.define_interrupt(name="ask", description="Ask the user.", input_schema=Question)

    @ai.tool()
    def get_weather(city: str) -> str:
        """Get the weather."""
        return f"sunny in {city}"

    agent = ai.define_agent(name="helper", tools=["ask", get_weather], store=InMemorySessionStore())
    gemini.script(
        Events(
            [(None, answer({"functionCall": {"id": "w1", "name": "get_weather", "args": {"city": "Rome"}}}))]
        ),
        Events(
            [
                (None, answer({"text": "Sunny. "}, finish=None)),
                (
                    None,
                    answer({"functionCall": {"id": "q1", "name": "ask", "args": {"question": "Umbrella?"}}}),
                ),
            ]
        ),
        Events([(None, answer({"text": "Then take "}, finish=None)), (None, answer({"text": "one."}))]),
    )
    chat = agent.chat()
    turn = chat.send_stream("Weather in Rome?")
    streamed = [c async for c in turn]
    res = await turn.response
    assert res.finish_reason == "interrupted"
    [intr] = res.interrupts
    assert (intr.name, intr.ref, intr.input) == ("ask", "q1", {"question": "Umbrella?"})
    assert "Sunny. " in [c.text for c in streamed]
    second = gemini.requests[1].body["contents"]
    assert second[-1]["parts"][0]["functionResponse"] == {
        "id": "w1",
        "name": "get_weather",
        "response": {"output": "sunny in Rome"},
    }
    done = await chat.resume(respond=[intr.respond({"answer": "yes"})])
    assert done.finish_reason == "stop" and done.text == "Then take one."
    last = gemini.requests[2].body["contents"]
    assert last[-2]["parts"][-1]["functionCall"]["name"] == "ask"
    assert last[-1]["parts"][0]["functionResponse"] == {
        "id": "q1",
        "name": "ask",
        "response": {"answer": "yes"},
    }


# --- the real service, only with a key -----------------------------------------------------------


# Runs only with TURNKIT_LIVE_TESTS=1 (deselected otherwise, see conftest.py) and needs the key.
@pytest.mark.live
async def test_live_generate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOOGLE_GEMINI_BASE_URL", raising=False)
    ai = Turnkit(
        plugins=[GoogleAI(api_key=os.environ["GEMINI_API_KEY"])], model="googleai/gemini-flash-latest"
    )
    resp = await ai.generate(prompt="Say hello in one word.", config={"maxOutputTokens": 20})
    assert resp.text.strip()
