"""Tools built from functions: where the ToolContext goes, and parameters the model sees by odd names."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from turnkit import ToolContext, Turnkit, TurnkitError
from turnkit._tools import tool_from_function
from turnkit.testing import ProgrammableModel


class City(BaseModel):
    city: str


def calls(*requests: tuple[str, dict[str, Any], str]) -> dict[str, Any]:
    content = [{"toolRequest": {"name": n, "input": i, "ref": r}} for n, i, r in requests]
    return {"message": {"role": "model", "content": content}, "finishReason": "stop"}


def done() -> dict[str, Any]:
    return {"message": {"role": "model", "content": [{"text": "done"}]}, "finishReason": "stop"}


def tool_outputs(pm: ProgrammableModel) -> dict[str, Any]:
    """The tool outputs the model got back in its last request, by ref."""
    tool_msg = pm.requests[-1].messages[-1]
    assert tool_msg.role == "tool"
    return {str(p.tool_response.ref): p.tool_response.output for p in tool_msg.content if p.tool_response}


async def test_tool_context_is_found_by_annotation_under_any_name(ai: Turnkit, pm: ProgrammableModel) -> None:
    @ai.tool()
    def weather(input: City, context: ToolContext) -> str:
        """Weather, for the caller's tenant."""
        return f"{context.context['tenant']}: sunny in {input.city}"

    @ai.tool()
    async def first(tc: ToolContext, input: City) -> str:
        """The context comes first."""
        return f"{tc.context['tenant']} {input.city}"

    @ai.tool()
    def spread(city: str, _: ToolContext) -> str:
        """Plain parameters and a context named `_`."""
        return f"{_.context['tenant']} {city}"

    @ai.tool()
    def plain(city: str, ctx) -> str:  # type: ignore[no-untyped-def]
        """An unannotated parameter named ctx is still the context."""
        return f"{ctx.context['tenant']} {city}"

    for tool in (weather, first, spread, plain):  # the model is never told about the context
        assert tool.input_schema is not None and set(tool.input_schema["properties"]) == {"city"}, tool
    pm.program(
        [
            calls(
                ("weather", {"city": "Oslo"}, "w"),
                ("first", {"city": "Rome"}, "f"),
                ("spread", {"city": "Lima"}, "s"),
                ("plain", {"city": "Pune"}, "p"),
            ),
            done(),
        ]
    )
    res = await ai.generate("go", tools=[weather, first, spread, plain], context={"tenant": "acme"})
    assert res.text == "done"
    assert tool_outputs(pm) == {
        "w": "acme: sunny in Oslo",
        "f": "acme Rome",
        "s": "acme Lima",
        "p": "acme Pune",
    }


async def test_a_parameter_named_underscore_reaches_the_tool(ai: Turnkit, pm: ProgrammableModel) -> None:
    @ai.tool()
    def pick(_: int, label: str = "n") -> str:
        """A parameter named `_`, as the model sees it."""
        return f"{label}={_}"

    @ai.tool()
    def only(_: str) -> str:
        """A lone `_` parameter."""
        return _.upper()

    assert pick.input_schema is not None and pick.input_schema["required"] == ["_"]
    assert set(pick.input_schema["properties"]) == {"_", "label"}
    pm.program(
        [
            calls(("pick", {"_": 7}, "a"), ("pick", {"_": 1, "label": "x"}, "b"), ("only", {"_": "hi"}, "c")),
            done(),
        ]
    )
    await ai.generate("go", tools=[pick, only])
    assert tool_outputs(pm) == {"a": "n=7", "b": "x=1", "c": "HI"}
    assert await pick(3) == "n=3"  # still callable as the plain function


async def test_a_lone_dict_parameter_takes_the_whole_input(ai: Turnkit, pm: ProgrammableModel) -> None:
    seen: list[Any] = []

    @ai.tool()
    async def slow_work(_: dict[str, Any], ctx: ToolContext) -> dict[str, bool]:
        """Genkit's shape: the whole input object, then the context."""
        seen.append((_, ctx.context.get("tenant")))
        return {"done": True}

    assert slow_work.input_schema == {"type": "object", "properties": {}}
    pm.program([calls(("slow_work", {}, "a"), ("slow_work", {"steps": 3}, "b")), done()])
    await ai.generate("go", tools=[slow_work], context={"tenant": "acme"})
    assert tool_outputs(pm) == {"a": {"done": True}, "b": {"done": True}}
    assert sorted(seen, key=str) == [({"steps": 3}, "acme"), ({}, "acme")]
    pm.program([calls(("slow_work", [1, 2], "c")), done()])  # not an object: the model is told
    await ai.generate("go", tools=[slow_work])
    assert (
        tool_outputs(pm)["c"]
        == "error: invalid input for tool 'slow_work': input: expected an object, got list"
    )


async def test_bad_input_for_an_underscore_parameter_is_reported_to_the_model(
    ai: Turnkit, pm: ProgrammableModel
) -> None:
    @ai.tool()
    def pick(_: int) -> str:
        """Needs an integer."""
        return str(_)

    pm.program([calls(("pick", {"_": "seven"}, "a")), done()])
    await ai.generate("go", tools=[pick])
    out = tool_outputs(pm)["a"]
    assert out.startswith("error: invalid input for tool 'pick'") and "_" in out


def test_two_context_parameters_are_refused() -> None:
    def twice(a: ToolContext, b: ToolContext) -> str:
        return ""

    with pytest.raises(TurnkitError) as err:
        tool_from_function(twice)
    assert err.value.status == "INVALID_ARGUMENT" and "twice" in err.value.message
