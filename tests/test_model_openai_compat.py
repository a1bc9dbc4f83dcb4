"""The OpenAI-compatible provider: pure mapping, a scripted client, then a real llama-cpp-python server.

The server (`python -m llama_cpp.server`) serves the bundled SmolLM2-135M GGUF on a free local port
for the whole module. Its default chat format cannot pick tools on its own, but it honours a tool
forced by name, which is what `tool_choice="required"` with one tool becomes. It rejects
`response_format: json_schema`, so the provider sends the schema in its `json_object` form.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from model_checks import check_tool_loop
from provider_servers import Events, ProviderServer, serve
from turnkit import Turnkit, TurnkitError
from turnkit.middleware import retry
from turnkit.models import Model, ModelContext
from turnkit.models.llamacpp import default_model_path
from turnkit.models.openai_compat import (
    MODEL_INFO,
    OpenAICompat,
    config_params,
    finish_reason,
    response_format,
    to_openai_messages,
    to_openai_tools,
    to_turnkit_error,
    tool_choice,
)
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

try:  # the HTTP library the installed SDK builds its errors from
    import httpx2 as sdk_http
except ImportError:  # openai < 3
    sdk_http = httpx  # type: ignore[no-redef]

WEATHER = ToolDefinition(
    name="get_weather",
    description="Get the current weather for a city.",
    input_schema={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
ADD = ToolDefinition(name="add", description="Add two numbers.", input_schema=None)
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}
FAST = {"temperature": 0, "seed": 7, "maxOutputTokens": 24}


def user(text: str) -> Message:
    return Message(role="user", content=[Part(text=text)])


def tool_turn(ref: str = "call_1") -> list[Message]:
    call = Part(tool_request=ToolRequest(name="get_weather", ref=ref, input={"city": "Paris"}))
    result = Part(tool_response=ToolResponse(name="get_weather", ref=ref, output={"temp_c": 21}))
    return [
        user("What's the weather in Paris?"),
        Message(role="model", content=[call]),
        Message(role="tool", content=[result]),
    ]


# --- pure mapping ------------------------------------------------------------------------------


def test_messages_map_to_chat_roles_with_tool_call_ids() -> None:
    msgs = [Message(role="system", content=[Part(text="Be brief.")]), *tool_turn()]
    assert to_openai_messages(msgs) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What's the weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 21}'},
    ]


def test_images_become_content_parts() -> None:
    msg = Message(
        role="user", content=[Part(text="What is this?"), Part(media=Media(url="data:image/png;base64,AA"))]
    )
    assert to_openai_messages([msg])[0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
    ]


def test_tools_become_function_tools() -> None:
    tools = to_openai_tools([WEATHER, ADD])
    assert tools[0] == {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": WEATHER.description,
            "parameters": WEATHER.input_schema,
        },
    }
    assert tools[1]["function"]["parameters"] == {"type": "object", "properties": {}}


def test_tool_choice_mapping() -> None:
    def choice(value: Any, tools: list[ToolDefinition], messages: list[Message] | None = None) -> Any:
        return tool_choice(ModelRequest(messages=messages or [user("x")], tools=tools, tool_choice=value))

    assert choice(None, [WEATHER]) is None
    assert choice("auto", [WEATHER]) == "auto"
    assert choice("none", [WEATHER]) == "none"
    assert choice("required", [WEATHER]) == {"type": "function", "function": {"name": "get_weather"}}
    assert choice("required", [WEATHER, ADD]) == "required"
    assert choice("required", [WEATHER], tool_turn()) == "auto"  # after a tool result: no forced loop


def test_response_format_mapping() -> None:
    assert response_format(None) is None
    assert response_format(OutputConfig(format="text")) is None
    assert response_format(OutputConfig(format="json")) == {"type": "json_object"}
    assert response_format(OutputConfig(format="json", schema=PERSON, constrained=False)) is None
    strict = response_format(OutputConfig(format="json", schema=PERSON))
    assert strict == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": PERSON, "strict": False},
    }
    legacy = response_format(OutputConfig(format="json", schema=PERSON), "json_object")
    assert legacy == {"type": "json_object", "schema": PERSON}


def test_config_maps_common_keys_and_passes_the_rest_through() -> None:
    named, extra = config_params(
        {"temperature": 0.1, "maxOutputTokens": 5, "topP": 0.5, "topK": 3, "stopSequences": ["x"], "seed": 2}
        | {"version": "other-model", "min_p": 0.1, "logit_bias": {"1": -1}, "skip": None}
    )
    assert named == {"temperature": 0.1, "max_tokens": 5, "top_p": 0.5, "stop": ["x"], "seed": 2}
    assert extra == {"top_k": 3, "min_p": 0.1, "logit_bias": {"1": -1}}
    assert config_params(None) == ({}, {})


def test_finish_reason_mapping() -> None:
    assert [finish_reason(r) for r in ("stop", "length", "tool_calls", "content_filter", "weird", None)] == [
        "stop",
        "length",
        "stop",
        "blocked",
        "other",
        "unknown",
    ]


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (400, "INVALID_ARGUMENT"),
        (401, "UNAUTHENTICATED"),
        (403, "PERMISSION_DENIED"),
        (404, "NOT_FOUND"),
        (422, "INVALID_ARGUMENT"),
        (429, "RESOURCE_EXHAUSTED"),
        (500, "UNAVAILABLE"),
        (503, "UNAVAILABLE"),
    ],
)
def test_http_errors_map_to_statuses(code: int, status: str) -> None:
    request = sdk_http.Request("POST", "http://server/v1/chat/completions")
    response = sdk_http.Response(code, request=request, json={"error": {"message": "nope"}})
    exc = openai.APIStatusError("nope", response=response, body=None)
    err = to_turnkit_error(exc)
    assert (err.status, err.details) == (status, {"httpStatus": code})
    assert err.public == (status == "INVALID_ARGUMENT")  # only the caller's own input errors are shown


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"retry-after": "3"}, 3.0),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_rate_limits_carry_the_wait_the_server_asked_for(headers: dict[str, str], wait: float | None) -> None:
    request = sdk_http.Request("POST", "http://server/v1/chat/completions")
    response = sdk_http.Response(429, request=request, headers=headers, json={"error": {"message": "slow"}})
    err = to_turnkit_error(openai.RateLimitError("slow", response=response, body=None))
    assert err.status == "RESOURCE_EXHAUSTED" and err.details.get("retryAfter") == wait


def test_transport_errors_map_to_statuses() -> None:
    request = sdk_http.Request("POST", "http://server/v1/chat/completions")
    assert to_turnkit_error(openai.APITimeoutError(request)).status == "DEADLINE_EXCEEDED"
    assert to_turnkit_error(openai.APIConnectionError(request=request)).status == "UNAVAILABLE"


@pytest.fixture(scope="module")
def provider() -> Iterator[ProviderServer]:
    yield from serve()


@pytest.mark.parametrize(
    ("error", "status"),
    [
        ({"message": "slow down", "type": "rate_limit", "code": 429}, "RESOURCE_EXHAUSTED"),
        ({"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}, "RESOURCE_EXHAUSTED"),
        ({"message": "slow down", "type": "server_error", "code": None}, "UNAVAILABLE"),
        (
            {"message": "slow down", "type": "invalid_request_error", "code": "context_length_exceeded"},
            "INVALID_ARGUMENT",
        ),
        ({"message": "slow down"}, "UNKNOWN"),
    ],
)
async def test_an_error_chunk_inside_the_stream_maps_its_code(
    provider: ProviderServer, error: dict[str, Any], status: str
) -> None:
    provider.script(Events([(None, {"error": error})]))  # after a 200: the SDK raises a plain APIError
    plugin = OpenAICompat("srv", base_url=provider.url + "/v1", api_key="k", max_retries=0)
    with pytest.raises(TurnkitError) as err:
        await plugin.model("m")(ModelRequest(messages=[user("x")]), ModelContext(lambda c: None))
    assert err.value.status == status and "slow down" in err.value.message


# --- a scripted client: request building and stream assembly -------------------------------------


class ScriptedStream:
    """Stands in for the SDK's AsyncStream: yields given chunks, records close()."""

    def __init__(self, chunks: list[dict[str, Any]]) -> None:
        self.chunks = [ChatCompletionChunk.model_validate(c) for c in chunks]
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[ChatCompletionChunk]:
        for chunk in self.chunks:
            yield chunk

    async def close(self) -> None:
        self.closed = True


class ScriptedClient:
    """Stands in for AsyncOpenAI: records each create() call and returns the scripted result."""

    def __init__(self, result: Any) -> None:
        self.result = result
        self.calls: list[dict[str, Any]] = []
        self.options: list[dict[str, Any]] = []
        self.chat = SimpleNamespace(completions=self)

    def with_options(self, **options: Any) -> ScriptedClient:
        self.options.append(options)
        return self

    async def create(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        return self.result


def chunk(
    delta: dict[str, Any], finish: str | None = None, usage: dict[str, int] | None = None
) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": choices,
        "usage": usage,
    }


def scripted_model(result: Any, **options: Any) -> tuple[Model, ScriptedClient]:
    client = ScriptedClient(result)
    plugin = OpenAICompat("test", client=client, **options)
    return Model("test/m", plugin.model("m"), MODEL_INFO), client


async def test_request_carries_tools_choice_format_and_config() -> None:
    completion = ChatCompletion.model_validate(
        {
            "id": "c",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "tool_calls",
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "call_9",
                                "type": "function",
                                "function": {"name": "add", "arguments": '{"a": 1}'},
                            }
                        ],
                    },
                }
            ],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
        }
    )
    model, client = scripted_model(completion, structured_output="json_object")
    req = ModelRequest(
        messages=[user("1+1?")],
        tools=[ADD],
        tool_choice="required",
        output=OutputConfig(format="json", schema=PERSON),
        config={"temperature": 0, "maxOutputTokens": 9, "topK": 4, "version": "m-v2"},
    )
    resp = await model(req, ModelContext())
    sent = client.calls[0]
    assert sent["model"] == "m-v2" and sent["temperature"] == 0 and sent["max_tokens"] == 9
    assert sent["extra_body"] == {"top_k": 4}
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "add"}}
    assert sent["response_format"] == {"type": "json_object", "schema": PERSON}
    assert "stream" not in sent
    assert resp.message is not None and resp.message.content[0].tool_request == ToolRequest(
        name="add", ref="call_9", input={"a": 1}
    )
    assert resp.finish_reason == "stop"
    assert resp.usage is not None and (resp.usage.input_tokens, resp.usage.output_tokens) == (7, 3)


async def test_stream_assembles_text_and_fragmented_tool_calls() -> None:
    stream = ScriptedStream(
        [
            chunk({"role": "assistant", "content": "Let me "}),
            chunk({"content": "check."}),
            chunk(
                {
                    "tool_calls": [
                        {"index": 0, "id": "a", "type": "function", "function": {"name": "get_weather"}}
                    ]
                }
            ),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}),
            chunk({"tool_calls": [{"index": 1, "id": "b", "function": {"name": "add", "arguments": "{}"}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Rome"}'}}]}),
            chunk({}, finish="tool_calls"),
            chunk(None, usage={"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}),  # type: ignore[arg-type]
        ]
    )
    model, client = scripted_model(stream)
    chunks: list[ModelResponseChunk] = []
    resp = await model(ModelRequest(messages=[user("hi")], tools=[WEATHER, ADD]), ModelContext(chunks.append))
    assert client.calls[0]["stream"] is True and stream.closed
    assert [c.text for c in chunks[:2]] == ["Let me ", "check."]
    assert resp.message is not None
    assert resp.text == "Let me check."
    calls = [p.tool_request for p in resp.message.tool_requests]
    assert calls == [
        ToolRequest(name="get_weather", ref="a", input={"city": "Rome"}),
        ToolRequest(name="add", ref="b", input={}),
    ]
    assert chunks[-1].content == resp.message.tool_requests  # tool calls are streamed once complete
    assert resp.finish_reason == "stop"
    assert resp.usage is not None and resp.usage.total_tokens == 11


async def test_sdk_retries_are_off_under_the_retry_middleware() -> None:
    completion = ChatCompletion.model_validate(
        {
            "id": "c",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [
                {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}
            ],
        }
    )
    model, client = scripted_model(completion)
    await model(ModelRequest(messages=[user("hi")]), ModelContext())
    assert client.options == []  # no middleware: the SDK's own retries apply
    ai = Turnkit(model="test/m")
    ai.define_model(name="test/m", fn=model.fn, info=MODEL_INFO)
    await ai.generate(prompt="hi", use=[retry()])
    assert client.options == [{"max_retries": 0}]


def test_any_model_id_resolves_under_the_plugins_name() -> None:
    ai = Turnkit(plugins=[OpenAICompat("ollama", client=ScriptedClient(None), models=["llama3.2"])])
    assert ai.registry.get("model", "ollama/llama3.2") is not None  # listed: registered up front
    assert "ollama/qwen3" not in ai.registry.names("model")
    found = ai.registry.get("model", "ollama/qwen3")  # any other id: created on first lookup
    assert found is not None and found.fn.model_id == "qwen3"
    assert ai.registry.get("model", "other/qwen3") is None


async def test_docs_join_the_system_message() -> None:
    completion = ChatCompletion.model_validate(
        {
            "id": "c",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [
                {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}
            ],
        }
    )
    model, client = scripted_model(completion)
    msgs = [Message(role="system", content=[Part(text="Be brief.")]), user("Where?")]
    resp = await model(
        ModelRequest(messages=msgs, docs=[DocumentData(content=[Part(text="Rome.")])]), ModelContext()
    )
    assert client.calls[0]["messages"][0] == {
        "role": "system",
        "content": "Be brief.\n\nUse this context:\nRome.",
    }
    assert resp.text == "ok" and resp.usage is None


async def test_without_key_or_base_url_the_client_cannot_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(TurnkitError) as err:
        OpenAICompat().client()
    assert err.value.status == "FAILED_PRECONDITION"


# --- a real llama-cpp-python server ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a llama_cpp.server serving SmolLM2, started once for the module."""
    port = free_port()
    log_path: Path = tmp_path_factory.mktemp("llama-server") / "server.log"
    cmd = [
        sys.executable,
        str(Path(__file__).parent / "llama_server.py"),
        "--model",
        str(default_model_path()),
    ]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"llama_cpp.server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}"
                )
            try:
                if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server not ready in 60 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def plugin(server: str) -> OpenAICompat:
    # llama-cpp-python's server only understands schemas in the json_object form.
    return OpenAICompat(
        "local", base_url=server, models=["smollm2"], max_retries=0, structured_output="json_object"
    )


@pytest.fixture
def model(plugin: OpenAICompat) -> Model:
    return Model("local/smollm2", plugin.model("smollm2"), MODEL_INFO)


async def test_text_with_usage(model: Model) -> None:
    resp = await model(ModelRequest(messages=[user("Say hello.")], config=FAST), ModelContext())
    assert resp.text.strip()
    assert resp.finish_reason in ("stop", "length")
    assert resp.usage is not None and resp.usage.input_tokens and resp.usage.output_tokens


async def test_streamed_chunks_add_up_to_the_text(model: Model) -> None:
    chunks: list[ModelResponseChunk] = []
    resp = await model(
        ModelRequest(messages=[user("Name three colors.")], config=FAST), ModelContext(chunks.append)
    )
    assert len(chunks) > 1 and all(c.role == "model" for c in chunks)
    assert "".join(c.text for c in chunks) == resp.text != ""
    assert resp.finish_reason in ("stop", "length")


async def test_system_prompt_and_multi_turn_history(model: Model) -> None:
    msgs = [
        Message(role="system", content=[Part(text="You are a pirate.")]),
        user("My name is Ada."),
        Message(role="model", content=[Part(text="Ahoy, Ada!")]),
        user("What is my name?"),
    ]
    resp = await model(ModelRequest(messages=msgs, config=FAST), ModelContext())
    assert resp.text.strip()


@pytest.mark.parametrize("streaming", [False, True])
async def test_required_tool_is_called_with_valid_arguments(model: Model, streaming: bool) -> None:
    chunks: list[ModelResponseChunk] = []
    req = ModelRequest(
        messages=[user("What's the weather in Paris?")], tools=[WEATHER], tool_choice="required", config=FAST
    )
    resp = await model(req, ModelContext(chunks.append if streaming else None))
    assert resp.message is not None and len(resp.message.tool_requests) == 1
    call = resp.message.tool_requests[0].tool_request
    assert call is not None and call.name == "get_weather" and call.ref
    assert isinstance(call.input, dict)
    jsonschema.validate(call.input, WEATHER.input_schema or {})
    assert resp.finish_reason == "stop"
    if streaming:
        assert chunks[-1].content == resp.message.tool_requests


async def test_tool_results_go_back_as_tool_messages(model: Model) -> None:
    req = ModelRequest(messages=tool_turn(), tools=[WEATHER], tool_choice="required", config=FAST)
    resp = await model(req, ModelContext())
    assert resp.message is not None and not resp.message.tool_requests
    assert resp.text.strip()


async def test_structured_output_matches_the_schema(model: Model) -> None:
    req = ModelRequest(
        messages=[user("Give me a person named Ann who is 30, as JSON.")],
        output=OutputConfig(format="json", schema=PERSON),
        config={**FAST, "maxOutputTokens": 64},
    )
    resp = await model(req, ModelContext())
    jsonschema.validate(json.loads(resp.text), PERSON)


async def test_abort_stops_the_stream_early(model: Model) -> None:
    chunks: list[ModelResponseChunk] = []
    abort = threading.Event()

    def on_chunk(chunk: ModelResponseChunk) -> None:
        chunks.append(chunk)
        abort.set()

    req = ModelRequest(
        messages=[user("Write a long story about a dragon.")], config={**FAST, "maxOutputTokens": 300}
    )
    resp = await model(req, ModelContext(on_chunk, abort_signal=abort))
    assert resp.finish_reason == "aborted" and len(chunks) == 1


async def test_abort_cancels_a_pending_call(model: Model) -> None:
    ctx = ModelContext()
    asyncio.get_running_loop().call_later(0.1, ctx.abort_signal.set)
    start = time.monotonic()
    # Enough tokens to outlast the abort, few enough not to keep the (serial) server busy for long.
    story = {**FAST, "maxOutputTokens": 120}
    resp = await model(ModelRequest(messages=[user("Write a long story about a dragon.")], config=story), ctx)
    assert resp.finish_reason == "aborted" and time.monotonic() - start < 1.0


async def test_unknown_path_is_not_found(server: str) -> None:
    plugin = OpenAICompat("x", base_url=server.removesuffix("/v1") + "/nope/v1", max_retries=0)
    with pytest.raises(TurnkitError) as err:
        await Model("x/m", plugin.model("m"))(ModelRequest(messages=[user("hi")]), ModelContext())
    assert err.value.status == "NOT_FOUND"


async def test_closed_port_is_unavailable() -> None:
    plugin = OpenAICompat("x", base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=0)
    with pytest.raises(TurnkitError) as err:
        await Model("x/m", plugin.model("m"))(ModelRequest(messages=[user("hi")]), ModelContext())
    assert err.value.status == "UNAVAILABLE"


async def test_slow_reply_is_deadline_exceeded(server: str) -> None:
    plugin = OpenAICompat("x", base_url=server, max_retries=0, timeout=0.05)
    req = ModelRequest(messages=[user("Write a long story.")], config={**FAST, "maxOutputTokens": 40})
    with pytest.raises(TurnkitError) as err:
        await Model("x/m", plugin.model("m"))(req, ModelContext())
    assert err.value.status == "DEADLINE_EXCEEDED"


async def test_generate_runs_a_tool_loop_through_the_server(plugin: OpenAICompat) -> None:
    ai = Turnkit(plugins=[plugin], model="local/smollm2")
    await check_tool_loop(ai, FAST)
