"""Fixes from review: a custom agent's `ctx.send_chunk`, checks at definition time (agent functions,
prompt options, agent names), Genkit's spellings of tools and interrupts, and FastAPI's include_router."""

from __future__ import annotations

import functools
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from turnkit import AgentError, Turnkit, TurnkitError
from turnkit.agents import AgentContext, AgentSession, TurnContext
from turnkit.http import serve_agent
from turnkit.sessions import InMemorySessionStore
from turnkit.testing import ProgrammableModel
from turnkit.types import AgentInput, AgentStreamChunk, Message, ModelResponseChunk, Part


def model_says(text: str) -> Message:
    return Message(role="model", content=[Part(text=text)])


def tool_call(name: str, data: Any) -> dict[str, Any]:
    return {
        "message": {"role": "model", "content": [{"toolRequest": {"name": name, "input": data, "ref": "r"}}]}
    }


def reply(text: str) -> dict[str, Any]:
    return {"message": {"role": "model", "content": [{"text": text}]}}


# --- 1. the agent function's context streams ----------------------------------------------------


async def test_a_custom_agent_streams_through_its_context_as_in_genkit(ai: Turnkit) -> None:
    async def fn(sess: AgentSession[Any], ctx: AgentContext) -> Any:
        async def turn(item: AgentInput, tc: TurnContext) -> None:
            # Genkit's idiom: wrap the model chunk in an AgentStreamChunk; a bare one works too.
            ctx.send_chunk(
                AgentStreamChunk(model_chunk=ModelResponseChunk(role="model", content=[Part(text="Hel")]))
            )
            ctx.send_chunk(ModelResponseChunk(role="model", content=[Part(text="lo")]))
            await sess.add_messages([model_says("Hello")])

        await sess.run(turn)
        return await sess.result()

    agent = ai.define_custom_agent("coder", fn, store=InMemorySessionStore())
    turn = agent.chat().send_stream("hi")
    chunks = [c async for c in turn]
    assert [c.accumulated_text for c in chunks if c.text] == ["Hel", "Hello"]
    assert chunks[-1].turn_end and (await turn).text == "Hello"


async def test_send_chunk_refuses_what_is_not_a_chunk(ai: Turnkit) -> None:
    async def fn(sess: AgentSession[Any], ctx: AgentContext) -> Any:
        async def turn(item: AgentInput) -> None:
            ctx.send_chunk("text")  # type: ignore[arg-type]

        await sess.run(turn)
        return await sess.result()

    chat = ai.define_custom_agent("wrong", fn).chat()
    with pytest.raises(AgentError) as failed:
        await chat.send("hi")
    assert failed.value.status == "INVALID_ARGUMENT" and "AgentStreamChunk" in failed.value.message


def test_a_context_outside_an_agent_has_nowhere_to_stream() -> None:
    with pytest.raises(TurnkitError) as failed:
        AgentContext().send_chunk(ModelResponseChunk(role="model", content=[Part(text="x")]))
    assert failed.value.status == "FAILED_PRECONDITION"


# --- 2. FastAPI's include_router -----------------------------------------------------------------


async def test_include_router_says_to_mount_and_mounting_serves_the_agent(ai: Turnkit) -> None:
    agent = ai.define_agent("weatherAgent", model="echoModel")
    app = FastAPI()
    with pytest.raises(TurnkitError, match=r"app\.mount\('/api', serve_agent\(agent\)\)") as failed:
        app.include_router(serve_agent(agent), prefix="/api")  # type: ignore[arg-type]
    assert failed.value.status == "INVALID_ARGUMENT"
    app.mount("/api", serve_agent(agent))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        body = {"init": {}, "data": {"message": {"role": "user", "content": [{"text": "hi"}]}}}
        answer = await client.post("/api/weatherAgent", json=body)
    assert answer.status_code == 200
    assert answer.json()["result"]["message"]["content"][0]["text"] == "Echo: hi"


# --- 3. agent functions are checked when defined --------------------------------------------------


async def no_turns(sess: AgentSession[Any], ctx: AgentContext) -> Any:
    return await sess.result()


@pytest.mark.parametrize(
    ("fn", "problem"),
    [
        (lambda sess, ctx: None, "must be an async function"),
        (lambda: None, "must be an async function"),
        (functools.partial(no_turns, None, None), "must take 2 positional arguments"),  # type: ignore[arg-type]
        (functools.partial(no_turns, None), "must take 2 positional arguments"),  # type: ignore[arg-type]
    ],
)
def test_an_agent_function_must_be_async_and_take_sess_and_ctx(ai: Turnkit, fn: Any, problem: str) -> None:
    with pytest.raises(TurnkitError, match=rf"define_custom_agent\(fn=\.\.\.\): {problem}") as failed:
        ai.define_custom_agent("c", fn)
    assert failed.value.status == "INVALID_ARGUMENT"
    assert ai.registry.get("agent", "c") is None


def test_wrong_arity_async_functions_are_refused(ai: Turnkit) -> None:
    async def three(a: Any, b: Any, c: Any) -> Any: ...

    async def one(a: Any) -> Any: ...

    async def keyword_needed(a: Any, b: Any, *, c: Any) -> Any: ...

    for fn in (three, one, keyword_needed):
        with pytest.raises(TurnkitError, match=r"fn=\.\.\.\): must take 2 positional arguments"):
            ai.define_custom_agent("c", fn)  # type: ignore[arg-type]


async def test_async_callables_of_other_shapes_are_accepted(ai: Turnkit) -> None:
    class Loop:
        """An object with an async __call__ is an agent function too."""

        async def __call__(self, sess: AgentSession[Any], ctx: AgentContext) -> Any:
            async def turn(item: AgentInput) -> None:
                await sess.add_messages([model_says("from an object")])

            await sess.run(turn)
            return await sess.result()

    async def with_extras(sess: AgentSession[Any], ctx: AgentContext, *rest: Any, flag: bool = True) -> Any:
        return await sess.result()

    ai.define_custom_agent("extras", with_extras)
    ai.define_custom_agent("partial", functools.partial(with_extras, flag=False))
    res = await ai.define_custom_agent("object", Loop()).chat().send("hi")
    assert res.text == "from an object"


async def test_a_handle_turn_needing_three_arguments_fails_the_turn_naming_it(ai: Turnkit) -> None:
    async def fn(sess: AgentSession[Any], ctx: AgentContext) -> Any:
        async def needs_three(a: Any, b: Any, c: Any) -> None: ...

        await sess.run(needs_three)  # type: ignore[arg-type]
        return await sess.result()

    with pytest.raises(AgentError) as failed:
        await ai.define_custom_agent("three", fn).chat().send("hi")
    assert failed.value.status == "INVALID_ARGUMENT"
    assert "handle_turn 'needs_three'" in failed.value.message


# --- 4. prompt options are checked when defined --------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("system", 5),
        ("prompt", 5),
        ("prompt", [1]),
        ("messages", 5),
        ("messages", b"x"),
        ("description", 5),
        ("variant", 5),
    ],
)
def test_define_prompt_checks_its_text_options(ai: Turnkit, option: str, value: Any) -> None:
    with pytest.raises(TurnkitError, match=rf"define_prompt\({option}=\.\.\.\)") as failed:
        ai.define_prompt("p", model="echoModel", **{option: value})
    assert failed.value.status == "INVALID_ARGUMENT"
    assert ai.registry.get("prompt", "p") is None


async def test_define_prompt_takes_what_it_documents(ai: Turnkit) -> None:
    p = ai.define_prompt(
        "p",
        model="echoModel",
        system=[Part(text="be brief"), {"text": "and kind"}],  # type: ignore[list-item]
        messages=[{"role": "user", "content": [{"text": "earlier"}]}],
        prompt=lambda value: f"hi {value['who']}",
    )
    rendered = await p.render({"who": "Ann"})
    texts = [[part.text for part in m.content] for m in rendered.messages]
    assert texts == [["be brief", "and kind"], ["earlier"], ["hi Ann"]]


async def test_a_prompt_function_returning_a_number_is_an_invalid_argument(ai: Turnkit) -> None:
    p = ai.define_prompt("p", model="echoModel", system=lambda value: 5, prompt="hi")
    with pytest.raises(
        TurnkitError, match=r"prompt 'p''s system must be a string, a Part, or a list of parts"
    ) as failed:
        await p()
    assert failed.value.status == "INVALID_ARGUMENT"


async def test_generate_with_a_number_for_a_prompt_is_an_invalid_argument(ai: Turnkit) -> None:
    with pytest.raises(TurnkitError, match=r"prompt must be a string, a Part, or a list of parts") as failed:
        await ai.generate(model="echoModel", prompt=5)  # type: ignore[arg-type]
    assert failed.value.status == "INVALID_ARGUMENT"
    with pytest.raises(TurnkitError, match=r"system must be a string"):
        await ai.generate(model="echoModel", prompt="hi", system=5)  # type: ignore[arg-type]
    res = await ai.generate(model="echoModel", prompt={"text": "one part"})  # type: ignore[arg-type]
    assert res.text == "Echo: one part"


# --- 5. Genkit's spellings of tools and interrupts -------------------------------------------------


def test_a_tool_named_by_position_as_in_genkit(ai: Turnkit) -> None:
    @ai.tool("lookUp")
    async def look_up(city: str) -> str:
        """Find a city."""
        return city

    @ai.tool("described", "Says what it does.")
    async def other(city: str) -> str:
        return city

    assert ai.registry.get("tool", "lookUp") is look_up and look_up.description == "Find a city."
    assert other.name == "described" and other.description == "Says what it does."
    with pytest.raises(TurnkitError, match="name given both by position and as name="):
        ai.tool("a", name="b")


def test_an_interrupt_named_by_position_needs_no_description(ai: Turnkit) -> None:
    ask = ai.define_interrupt("ask")
    assert ai.registry.get("tool", "ask") is ask and ask.description == ""
    confirm = ai.define_interrupt(name="confirm", description="Asks first.")
    assert confirm.definition.description == "Asks first."


async def test_an_unannotated_second_parameter_is_the_tool_context(
    ai: Turnkit, pm: ProgrammableModel
) -> None:
    @ai.tool()
    async def unannotated(inp, c):  # type: ignore[no-untyped-def]  # Genkit's shape, any names
        """Reports what it got."""
        return {"input": inp, "context": type(c).__name__, "tenant": c.context.get("tenant")}

    agent = ai.define_agent("a", tools=["unannotated"])
    pm.program([tool_call("unannotated", {"x": 1}), reply("ok")])
    chat = agent.chat()
    await chat.send("go")
    outputs = [
        p.tool_response.output
        for m in chat.messages
        if m.role == "tool"
        for p in m.content
        if p.tool_response
    ]
    assert outputs == [{"input": {"x": 1}, "context": "ToolContext", "tenant": None}]
    assert unannotated.input_schema == {"type": "object", "properties": {}}


def test_annotated_second_parameters_are_still_input(ai: Turnkit) -> None:
    @ai.tool()
    async def add(a: int, b: int) -> int:
        """Adds."""
        return a + b

    @ai.tool()
    async def with_default(a, b=2):  # type: ignore[no-untyped-def]
        """A default makes it input."""
        return a

    for tool in (add, with_default):
        assert tool.input_schema is not None and set(tool.input_schema["properties"]) == {"a", "b"}


# --- 6. agent names ----------------------------------------------------------------------------


def test_a_second_agent_with_a_taken_name_is_refused(ai: Turnkit) -> None:
    first = ai.define_agent("helper", model="echoModel")
    with pytest.raises(TurnkitError, match=r"agent named 'helper' is already defined") as failed:
        ai.define_custom_agent("helper", no_turns)
    assert failed.value.status == "ALREADY_EXISTS"
    assert ai.agent("helper") is first
    Turnkit().define_agent("helper", model="echoModel")  # another app has its own names


@pytest.mark.parametrize("name", ["two words", "a/b", "..", "q?x", "50%", "tab\there"])
def test_an_agent_name_must_fit_in_a_url_path(ai: Turnkit, name: str) -> None:
    with pytest.raises(
        TurnkitError, match=r"define_agent\(name=\.\.\.\): must be usable in a URL path"
    ) as failed:
        ai.define_agent(name, model="echoModel")
    assert failed.value.status == "INVALID_ARGUMENT"


def test_url_safe_agent_names_are_accepted(ai: Turnkit) -> None:
    for name in ("weatherAgent", "weather-agent_2", "v1.2", "ns:agent", "助手"):
        assert ai.define_agent(name, model="echoModel").name == name
