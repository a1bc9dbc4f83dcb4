"""The generate loop: history, tools (concurrent, bad input, failures), max_turns, interrupts, streaming, output."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

from turnkit import Turnkit, TurnkitError
from turnkit._tools import ToolContext
from turnkit.testing import ProgrammableModel
from turnkit.types import Message, ModelResponseChunk, Part


def text_reply(text: str) -> dict[str, Any]:
    return {"message": {"role": "model", "content": [{"text": text}]}, "finishReason": "stop"}


def tool_call(*calls: tuple[str, dict[str, Any], str]) -> dict[str, Any]:
    return {
        "message": {
            "role": "model",
            "content": [{"toolRequest": {"name": n, "input": i, "ref": r}} for n, i, r in calls],
        },
        "finishReason": "stop",
    }


class City(BaseModel):
    city: str


async def test_pattern_a_history_accumulates(ai: Turnkit, pm: ProgrammableModel) -> None:
    pm.responses = [text_reply("Paris."), text_reply("French.")]
    first = await ai.generate("Capital of France?", system="Be brief.")
    second = await ai.generate("Language there?", system="Be brief.", messages=first.messages)
    assert second.text == "French."
    sent = pm.requests[1].messages
    assert [m.role for m in sent] == ["system", "user", "model", "user"]  # system not duplicated
    assert [m.text for m in sent] == ["Be brief.", "Capital of France?", "Paris.", "Language there?"]
    assert [m.text for m in second.messages] == [*[m.text for m in sent], "French."]
    assert second.message is second.messages[-1]
    assert second.finish_reason == "stop"


async def test_unknown_model_lists_registered(ai: Turnkit, pm: ProgrammableModel) -> None:
    with pytest.raises(TurnkitError) as err:
        await ai.generate("hi", model="nope/model")
    assert err.value.status == "NOT_FOUND"
    assert "programmableModel" in err.value.message and "echoModel" in err.value.message


async def test_no_model_and_no_prompt_are_invalid(pm: ProgrammableModel) -> None:
    with pytest.raises(TurnkitError, match="INVALID_ARGUMENT"):
        await Turnkit().generate("hi")
    with pytest.raises(TurnkitError, match="INVALID_ARGUMENT"):
        await Turnkit(model="x").generate()


async def test_tools_described_to_model_and_results_fed_back(ai: Turnkit, pm: ProgrammableModel) -> None:
    @ai.tool()
    async def weather(input: City) -> str:
        """Current weather for a city."""
        return f"sunny in {input.city}"

    @ai.tool(name="adder")
    def add(a: int, b: int = 1) -> int:
        """Add two integers."""
        return a + b

    pm.responses = [
        tool_call(("weather", {"city": "Oslo"}, "r1"), ("adder", {"a": 2, "b": 3}, "r2")),
        text_reply("ok"),
    ]
    res = await ai.generate("go", tools=["weather", add], config={"temperature": 0})
    defs = {t.name: t for t in pm.requests[0].tools or []}
    assert defs["weather"].description == "Current weather for a city."
    assert defs["weather"].input_schema and defs["weather"].input_schema["required"] == ["city"]
    assert defs["adder"].input_schema and defs["adder"].input_schema["properties"]["a"]["type"] == "integer"
    assert pm.requests[0].config == {"temperature": 0}
    tool_msg = pm.requests[1].messages[-1]
    assert tool_msg.role == "tool"
    assert [
        (p.tool_response.name, p.tool_response.ref, p.tool_response.output)
        for p in tool_msg.content
        if p.tool_response
    ] == [
        ("weather", "r1", "sunny in Oslo"),
        ("adder", "r2", 5),
    ]
    assert res.text == "ok" and len(res.messages) == 4


async def test_tools_of_one_response_run_concurrently(ai: Turnkit, pm: ProgrammableModel) -> None:
    a_started, b_started = asyncio.Event(), asyncio.Event()

    @ai.tool()
    async def tool_a() -> str:
        """A waits for B."""
        a_started.set()
        await asyncio.wait_for(b_started.wait(), 5)
        return "a"

    @ai.tool()
    async def tool_b() -> str:
        """B waits for A."""
        b_started.set()
        await asyncio.wait_for(a_started.wait(), 5)
        return "b"

    pm.responses = [tool_call(("tool_a", {}, "1"), ("tool_b", {}, "2")), text_reply("both")]
    res = await ai.generate("go", tools=[tool_a, tool_b])  # deadlocks (times out) if run one by one
    assert res.text == "both"


async def test_bad_tool_input_goes_back_to_model(ai: Turnkit, pm: ProgrammableModel) -> None:
    @ai.tool()
    async def weather(input: City) -> str:
        """Weather."""
        raise AssertionError("must not run with bad input")

    pm.responses = [tool_call(("weather", {"town": 3}, "r1")), text_reply("sorry")]
    res = await ai.generate("go", tools=["weather"])
    out = pm.requests[1].messages[-1].content[0].tool_response
    assert out is not None and "invalid input for tool 'weather'" in out.output and "city" in out.output
    assert res.text == "sorry"


async def test_unknown_tool_request_goes_back_to_model(ai: Turnkit, pm: ProgrammableModel) -> None:
    pm.responses = [tool_call(("ghost", {}, "r1")), text_reply("ok")]
    await ai.generate("go")
    out = pm.requests[1].messages[-1].content[0].tool_response
    assert out is not None and "no tool named 'ghost'" in out.output


async def test_tool_that_raises_ends_call_with_status(ai: Turnkit, pm: ProgrammableModel) -> None:
    @ai.tool()
    async def broken() -> str:
        """Breaks."""
        raise RuntimeError("disk on fire")

    @ai.tool()
    async def denied() -> str:
        """Denies."""
        raise TurnkitError("PERMISSION_DENIED", "not yours")

    pm.responses = [tool_call(("broken", {}, "1"))]
    with pytest.raises(TurnkitError) as err:
        await ai.generate("go", tools=["broken"])
    assert err.value.status == "INTERNAL" and "disk on fire" in err.value.message and not err.value.public
    pm.responses = [tool_call(("denied", {}, "1"))]
    with pytest.raises(TurnkitError) as err:
        await ai.generate("go", tools=["denied"])
    assert err.value.status == "PERMISSION_DENIED"


async def test_max_turns_stops_tool_loop(ai: Turnkit, pm: ProgrammableModel) -> None:
    calls = 0

    @ai.tool()
    async def again() -> str:
        """Loop."""
        nonlocal calls
        calls += 1
        return "more"

    pm.responses = [tool_call(("again", {}, str(i))) for i in range(10)]
    with pytest.raises(TurnkitError) as err:
        await ai.generate("go", tools=["again"], max_turns=2)
    assert err.value.status == "RESOURCE_EXHAUSTED" and "max_turns (2)" in err.value.message
    assert calls == 2 and pm.calls == 3
    with pytest.raises(TurnkitError, match="INVALID_ARGUMENT"):
        await ai.generate("go", max_turns=0)


async def test_return_tool_requests_skips_running_them(ai: Turnkit, pm: ProgrammableModel) -> None:
    @ai.tool()
    async def never() -> str:
        """Never runs."""
        raise AssertionError

    pm.responses = [tool_call(("never", {}, "1"))]
    res = await ai.generate("go", tools=["never"], return_tool_requests=True)
    assert [p.tool_request.name for p in res.tool_requests if p.tool_request] == ["never"]


@pytest.fixture
def approval_tools(ai: Turnkit) -> dict[str, Any]:
    ran: dict[str, Any] = {"transfer": []}
    ai.define_interrupt(name="ask_user", description="Ask the user.", input_schema=City)

    @ai.tool()
    async def lookup(input: City) -> str:
        """Look up."""
        return f"found {input.city}"

    @ai.tool()
    async def transfer(amount: int, ctx: ToolContext) -> str:
        """Move money after approval."""
        if not ctx.resumed:
            ctx.interrupt({"reason": "needs approval"})
        ran["transfer"].append(ctx.resumed)
        return f"moved {amount}"

    return ran


async def interrupted(ai: Turnkit, pm: ProgrammableModel) -> Any:
    pm.responses = [
        tool_call(
            ("ask_user", {"city": "Rome"}, "q1"),
            ("lookup", {"city": "Oslo"}, "l1"),
            ("transfer", {"amount": 5}, "t1"),
        )
    ]
    return await ai.generate("go", tools=["ask_user", "lookup", "transfer"])


async def test_interrupts_pause_with_finish_reason(
    ai: Turnkit, pm: ProgrammableModel, approval_tools: Any
) -> None:
    res = await interrupted(ai, pm)
    assert res.finish_reason == "interrupted"
    marks = [
        (p.tool_request.name, (p.metadata or {}).get("interrupt")) for p in res.interrupts if p.tool_request
    ]
    assert marks == [("ask_user", True), ("transfer", {"reason": "needs approval"})]
    lookup_part = res.message.content[1]
    assert lookup_part.metadata == {"pendingOutput": "found Oslo"}  # finished tool keeps its output
    assert res.messages[-1] is res.message


async def test_resume_with_respond_and_restart(
    ai: Turnkit, pm: ProgrammableModel, approval_tools: Any
) -> None:
    res = await interrupted(ai, pm)
    _ask, transfer = res.interrupts
    pm.responses = [text_reply("all done")]
    final = await ai.generate(
        messages=res.messages,
        tools=["ask_user", "lookup", "transfer"],
        resume={
            "respond": [{"toolResponse": {"name": "ask_user", "ref": "q1", "output": {"answer": "yes"}}}],
            "restart": [{**transfer.to_wire(), "metadata": {"resumed": {"approved": True}}}],
        },
    )
    assert final.text == "all done"
    assert approval_tools["transfer"] == [{"approved": True}]
    sent = pm.requests[-1].messages
    assert sent[-2].role == "model" and all(
        not (p.metadata or {}) for p in sent[-2].content
    )  # bookkeeping cleared
    outputs = [(p.tool_response.name, p.tool_response.output) for p in sent[-1].content if p.tool_response]
    assert outputs == [("ask_user", {"answer": "yes"}), ("lookup", "found Oslo"), ("transfer", "moved 5")]


async def test_resume_validation(ai: Turnkit, pm: ProgrammableModel, approval_tools: Any) -> None:
    res = await interrupted(ai, pm)
    respond_ask = {"toolResponse": {"name": "ask_user", "ref": "q1", "output": {}}}
    cases = [
        (
            {"respond": [respond_ask, {"toolResponse": {"name": "fake", "ref": "x", "output": 1}}]},
            "not found in session history",
        ),
        (
            {
                "respond": [respond_ask],
                "restart": [{"toolRequest": {"name": "transfer", "ref": "t1", "input": {"amount": 500}}}],
            },
            "modified inputs",
        ),
        ({"respond": [respond_ask]}, "has no respond or restart entry"),
        (
            {"respond": [{"toolResponse": {"name": "lookup", "ref": "l1", "output": "forged"}}]},
            "not found in session history",
        ),
    ]
    for resume, message in cases:
        with pytest.raises(TurnkitError) as err:
            await ai.generate(messages=res.messages, tools=["ask_user", "lookup", "transfer"], resume=resume)
        assert err.value.status == "INVALID_ARGUMENT" and message in err.value.message
    with pytest.raises(TurnkitError, match="nothing to resume"):
        await ai.generate(messages=[Message(role="user", content=[Part(text="x")])], resume={"respond": []})
    assert pm.calls == 1 and approval_tools["transfer"] == []  # nothing ran


async def test_streaming_model_and_tool_chunks(ai: Turnkit, pm: ProgrammableModel) -> None:
    @ai.tool()
    async def ping() -> str:
        """Ping."""
        return "pong"

    pm.program(
        [tool_call(("ping", {}, "p")), text_reply("hello world")],
        chunks=[[], [{"content": [{"text": "hello"}]}, {"content": [{"text": " world"}]}]],
    )
    stream, response = ai.generate_stream("go", tools=["ping"])
    chunks: list[ModelResponseChunk] = [c async for c in stream]
    assert [(c.role, c.index, c.text) for c in chunks] == [
        ("tool", 1, ""),
        ("model", 2, "hello"),
        ("model", 2, " world"),
    ]
    assert chunks[0].content[0].tool_response and chunks[0].content[0].tool_response.output == "pong"
    assert (await response).text == "hello world"


async def test_stream_surfaces_errors(ai: Turnkit, pm: ProgrammableModel) -> None:
    pm.responses = []
    s = ai.generate_stream("go")
    with pytest.raises(TurnkitError, match="no response scripted"):
        async for _ in s:
            pass
    with pytest.raises(TurnkitError):
        await s.response


class Answer(BaseModel):
    city: str
    score: int


async def test_structured_output_with_model_class(ai: Turnkit, pm: ProgrammableModel) -> None:
    pm.responses = [text_reply('```json\n{"city": "Oslo", "score": 3}\n```')]
    res = await ai.generate("rate", output=Answer)
    assert res.output == Answer(city="Oslo", score=3)
    req = pm.requests[0]
    assert req.output and req.output.format == "json" and req.output.schema_ == Answer.model_json_schema()
    instruction = req.messages[-1].content[-1]
    assert instruction.metadata == {"purpose": "output"} and '"score"' in (instruction.text or "")


async def test_structured_output_with_json_schema_and_bad_output(ai: Turnkit, pm: ProgrammableModel) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    pm.responses = [text_reply('{"n": 4}'), text_reply('{"n": "four"}'), text_reply("not json")]
    assert (await ai.generate("x", output=schema)).output == {"n": 4}
    for _ in range(2):
        res = await ai.generate("x", output=schema)
        with pytest.raises(TurnkitError, match="INVALID_ARGUMENT"):
            _ = res.output
    with pytest.raises(TurnkitError, match="INVALID_ARGUMENT"):
        await ai.generate("x", output=42)


async def test_usage_is_summed_over_model_calls(ai: Turnkit, pm: ProgrammableModel) -> None:
    @ai.tool()
    async def t() -> str:
        """T."""
        return "x"

    first = {**tool_call(("t", {}, "1")), "usage": {"inputTokens": 3, "outputTokens": 1}}
    second = {**text_reply("ok"), "usage": {"inputTokens": 5, "outputTokens": 2}}
    pm.responses = [first, second]
    res = await ai.generate("go", tools=["t"])
    assert (res.usage.input_tokens, res.usage.output_tokens) == (8, 3)


async def test_sync_model_function_runs_off_the_loop(ai: Turnkit) -> None:
    import threading

    from turnkit.types import ModelResponse

    seen: list[bool] = []

    def blocking(request: Any, ctx: Any) -> ModelResponse:
        seen.append(threading.current_thread() is threading.main_thread())
        ctx.send_chunk(ModelResponseChunk(content=[Part(text="chunk")]))
        return ModelResponse(message=Message(role="model", content=[Part(text="sync")]))

    ai.define_model(name="sync", fn=blocking)
    stream = ai.generate_stream("x", model="sync")
    assert [c.text async for c in stream] == ["chunk"]
    assert (await stream.response).text == "sync" and seen == [False]
