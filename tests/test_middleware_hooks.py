"""The middleware interface: the four hooks, their order, `use=` everywhere, names, front matter."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from turnkit import Turnkit, TurnkitError
from turnkit._tools import Interrupt, Tool, tool_from_function
from turnkit.agents import AgentResult, AgentSession, TurnContext
from turnkit.middleware import (
    BaseMiddleware,
    GenerateHookParams,
    GenerateMiddlewareContext,
    ModelHookParams,
    NextGenerate,
    NextModel,
    NextTool,
    Retry,
    ToolHookParams,
    define_middleware,
)
from turnkit.testing import ProgrammableModel
from turnkit.types import AgentInput, Message, ModelResponse, Part


def text(t: str) -> dict[str, Any]:
    return {"message": {"role": "model", "content": [{"text": t}]}, "finishReason": "stop"}


def call(name: str, inp: Any = None) -> dict[str, Any]:
    return {
        "message": {"role": "model", "content": [{"toolRequest": {"name": name, "ref": "1", "input": inp}}]}
    }


class Recorder(BaseMiddleware):
    """Records when each of its hooks is entered and left."""

    def __init__(self, label: str, log: list[str]) -> None:
        self.label, self.log = label, log

    async def wrap_generate(
        self, params: GenerateHookParams, ctx: GenerateMiddlewareContext, next_fn: NextGenerate
    ) -> ModelResponse:
        self.log.append(f"{self.label}:generate{params.iteration}")
        try:
            return await next_fn(params, ctx)
        finally:
            self.log.append(f"/{self.label}:generate")

    async def wrap_model(
        self, params: ModelHookParams, ctx: GenerateMiddlewareContext, next_fn: NextModel
    ) -> ModelResponse:
        self.log.append(f"{self.label}:model")
        try:
            return await next_fn(params, ctx)
        finally:
            self.log.append(f"/{self.label}:model")

    async def wrap_tool(
        self, params: ToolHookParams, ctx: GenerateMiddlewareContext, next_fn: NextTool
    ) -> Any:
        self.log.append(f"{self.label}:tool:{params.name}")
        try:
            return await next_fn(params, ctx)
        finally:
            self.log.append(f"/{self.label}:tool")


async def test_hooks_compose_in_list_order_first_outermost(ai: Turnkit, pm: ProgrammableModel) -> None:
    log: list[str] = []

    @ai.tool
    def ping() -> str:
        """Ping."""
        log.append("ping")
        return "pong"

    pm.program([call("ping"), text("done")])
    res = await ai.generate("x", tools=["ping"], use=[Recorder("a", log), Recorder("b", log)])
    assert res.text == "done"
    assert log == [
        "a:generate0", "b:generate0", "a:model", "b:model", "/b:model", "/a:model", "/b:generate", "/a:generate",
        "a:tool:ping", "b:tool:ping", "ping", "/b:tool", "/a:tool",
        "a:generate1", "b:generate1", "a:model", "b:model", "/b:model", "/a:model", "/b:generate", "/a:generate",
    ]  # fmt: skip


class Adds(BaseMiddleware):
    """Adds a `shout` tool and a system note; counts the calls it sees."""

    def __init__(self) -> None:
        def shout(word: str) -> str:
            """Shout a word."""
            return word.upper()

        self.tool = tool_from_function(shout)

    def tools(self, ctx: GenerateMiddlewareContext) -> Sequence[Tool]:
        return [self.tool]

    async def wrap_generate(
        self, params: GenerateHookParams, ctx: GenerateMiddlewareContext, next_fn: NextGenerate
    ) -> ModelResponse:
        request = params.request
        params.request = request.model_copy(
            update={
                "messages": [
                    Message(role="system", content=[Part(text=f"note {params.iteration}")]),
                    *request.messages,
                ]
            }
        )
        return await next_fn(params, ctx)


async def test_tools_and_wrap_generate_shape_what_the_model_sees_not_the_history(
    ai: Turnkit, pm: ProgrammableModel
) -> None:
    pm.program([call("shout", {"word": "hey"}), text("done")])
    res = await ai.generate("x", use=[Adds()])
    assert [t.name for t in pm.requests[0].tools or []] == ["shout"]
    assert pm.requests[0].messages[0].text == "note 0" and pm.requests[1].messages[0].text == "note 1"
    assert pm.requests[1].messages[-1].content[0].tool_response.output == "HEY"  # type: ignore[union-attr]
    assert all(m.role != "system" for m in res.messages)  # the note was for the model only


class Guard(BaseMiddleware):
    """Denies `rm`, interrupts `ask`, times `slow` out."""

    async def wrap_tool(
        self, params: ToolHookParams, ctx: GenerateMiddlewareContext, next_fn: NextTool
    ) -> Any:
        if params.name == "rm":
            return "denied"
        if params.name == "ask" and not params.tool_context.resumed:
            raise Interrupt({"why": "confirm"})
        try:
            return await asyncio.wait_for(next_fn(params, ctx), 0.05)
        except TimeoutError:
            return "timed out"


async def test_wrap_tool_can_deny_interrupt_and_time_out(ai: Turnkit, pm: ProgrammableModel) -> None:
    ran: list[str] = []

    @ai.tool
    def rm() -> str:
        """Remove."""
        ran.append("rm")
        return "removed"

    @ai.tool
    async def slow() -> str:
        """Slow."""
        await asyncio.Event().wait()
        return "never"

    @ai.tool
    def ask() -> str:
        """Ask."""
        ran.append("ask")
        return "asked"

    both = {"message": {"role": "model", "content": [
        {"toolRequest": {"name": "rm", "ref": "1"}}, {"toolRequest": {"name": "slow", "ref": "2"}},
    ]}}  # fmt: skip
    pm.program([both, text("done")])
    await ai.generate("x", tools=["rm", "slow"], use=[Guard()])
    outputs = [p.tool_response.output for p in pm.requests[1].messages[-1].content if p.tool_response]
    assert outputs == ["denied", "timed out"] and ran == []

    pm.program([call("ask"), text("done")])
    paused = await ai.generate("x", tools=["ask"], use=[Guard()])
    assert paused.finish_reason == "interrupted"
    assert (paused.interrupts[0].metadata or {})["interrupt"] == {"why": "confirm"}
    restart = paused.interrupts[0].model_copy(update={"metadata": {"resumed": True}})
    done = await ai.generate(
        messages=paused.messages, tools=["ask"], use=[Guard()], resume={"restart": [restart]}
    )
    assert done.text == "done" and ran == ["ask"]


class Tag(BaseMiddleware):
    """Prefixes the model's text answers with `label`."""

    def __init__(self, *, label: str = "tag") -> None:
        self.label = label

    async def wrap_model(
        self, params: ModelHookParams, ctx: GenerateMiddlewareContext, next_fn: NextModel
    ) -> ModelResponse:
        res = await next_fn(params, ctx)
        msg = res.message
        assert msg is not None
        if msg.tool_requests:
            return res
        return res.model_copy(
            update={"message": Message(role="model", content=[Part(text=f"[{self.label}] {msg.text}")])}
        )


async def test_middleware_by_registered_name(ai: Turnkit, pm: ProgrammableModel) -> None:
    ai.define_middleware("tag", Tag)
    pm.program([text("a"), text("b")])
    assert (await ai.generate("x", use=["tag"])).text == "[tag] a"
    assert (await ai.generate("x", use=[{"name": "tag", "config": {"label": "L"}}])).text == "[L] b"
    with pytest.raises(TurnkitError) as err:
        await ai.generate("x", use=["nope"])
    assert err.value.status == "NOT_FOUND" and "'nope'" in err.value.message and "retry" in err.value.message
    with pytest.raises(TurnkitError) as err:
        await ai.generate("x", use=[{"name": "tag", "config": {"colour": "red"}}])
    assert err.value.status == "INVALID_ARGUMENT" and "'tag'" in err.value.message
    with pytest.raises(TurnkitError, match="INVALID_ARGUMENT"):
        define_middleware(ai, " bad name", Tag)


async def test_define_prompt_and_prompt_files_take_use_by_name(
    ai: Turnkit, pm: ProgrammableModel, tmp_path: Path
) -> None:
    ai.define_middleware("tag", Tag)
    pm.program([text("a"), text("b")])
    coded = ai.define_prompt("coded", prompt="hi", use=["tag"])
    assert (await coded()).text == "[tag] a"
    (tmp_path / "filed.prompt").write_text(
        "---\nuse:\n  - name: tag\n    config: {label: file}\n---\nhello\n"
    )
    ai.load_prompt_folder(tmp_path)
    assert (await ai.prompt("filed")()).text == "[file] b"
    (tmp_path / "bad.prompt").write_text("---\nuse: tag\n---\nhello\n")
    with pytest.raises(TurnkitError, match="front matter 'use'"):
        ai.load_prompt_folder(tmp_path)


async def test_every_kind_of_agent_takes_use(ai: Turnkit, pm: ProgrammableModel) -> None:
    ai.define_prompt("p", prompt="{{question}}")
    prompt_agent = ai.define_prompt_agent(
        "pa", prompt="p", prompt_input={"question": "q"}, use=[Tag(label="pa")]
    )
    inline = ai.define_agent("ia", use=[Tag(label="ia")])

    async def fn(sess: AgentSession[Any], ctx: Any) -> AgentResult:
        async def handle(item: AgentInput, turn: TurnContext) -> AgentResult:
            res = await ai.generate(messages=await sess.get_messages())
            return AgentResult(message=res.message)

        await sess.run(handle)
        return await sess.result()

    custom = ai.define_custom_agent("ca", fn, use=[Tag(label="ca")])
    for agent, label in ((prompt_agent, "pa"), (inline, "ia"), (custom, "ca")):
        pm.program([text("x")])
        out = await agent.run(None, [{"message": {"role": "user", "content": [{"text": "hi"}]}}])
        assert out.message is not None and out.message.text == f"[{label}] x"


async def test_an_agents_middleware_stays_out_of_generate_calls_its_tools_make(
    ai: Turnkit, pm: ProgrammableModel
) -> None:
    inner: list[str] = []

    @ai.tool
    async def summarise() -> str:
        """Summarise with another model call."""
        res = await ai.generate("inner")
        inner.append(res.text)
        return res.text

    agent = ai.define_agent("a", tools=["summarise"], use=[Tag(label="agent")])
    pm.program([call("summarise"), text("sum"), text("final")])
    out = await agent.run(None, [{"message": {"role": "user", "content": [{"text": "hi"}]}}])
    assert inner == ["sum"]  # untagged: the tool's own call had no middleware
    assert out.message is not None and out.message.text == "[agent] final"


async def test_bad_middleware_is_refused_clearly(ai: Turnkit, pm: ProgrammableModel) -> None:
    with pytest.raises(TurnkitError, match=r"define_agent\(use=...\)"):
        ai.define_agent("a", use=[42])  # type: ignore[list-item]

    class Clash(BaseMiddleware):
        def tools(self, ctx: GenerateMiddlewareContext) -> Sequence[Tool]:
            return [ai.registry.lookup("tool", "echo")]

    @ai.tool
    def echo() -> str:
        """Echo."""
        return "e"

    with pytest.raises(TurnkitError, match="clashes"):
        await ai.generate("x", tools=["echo"], use=[Clash()])


@pytest.mark.parametrize("use", ["retry", {"name": "retry"}, Retry()])
async def test_use_that_is_not_a_list_is_refused(ai: Turnkit, pm: ProgrammableModel, use: Any) -> None:
    pm.program([text("ok")])
    with pytest.raises(TurnkitError, match="use must be a list") as caught:
        await ai.generate("x", use=use)
    assert caught.value.status == "INVALID_ARGUMENT"
