"""Prompts: define_prompt, .prompt folders (front matter, partials, variants), history, render, stream."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from turnkit import Turnkit, TurnkitError
from turnkit._prompts import GenerateOptions, define_helper, define_partial, define_schema
from turnkit.middleware import Next
from turnkit.models import ModelContext
from turnkit.testing import ProgrammableModel, define_programmable_model
from turnkit.types import Media, Message, ModelRequest, ModelResponse, Part, ToolDefinition

PROMPTS = Path(__file__).parent / "prompts"


def reply(text: str) -> dict[str, Any]:
    return {"message": {"role": "model", "content": [{"text": text}]}, "finishReason": "stop"}


def roles(request: ModelRequest) -> list[str]:
    return [m.role for m in request.messages]


def texts(request: ModelRequest) -> list[str]:
    """Each message's text, stripped, without the output instruction generate may add."""
    return [
        "".join(p.text or "" for p in m.content if (p.metadata or {}).get("purpose") != "output").strip()
        for m in request.messages
    ]


HISTORY = [
    Message(role="user", content=[Part(text="Hi, I'm Ada.")]),
    Message(role="model", content=[Part(reasoning="She said hi."), Part(text="Hello Ada!")]),
]


@pytest.fixture
def files(ai: Turnkit, pm: ProgrammableModel) -> Turnkit:
    """The app with the fixture folder loaded and a `pantry` tool."""

    @ai.tool
    def pantry(item: str) -> str:
        """Whether an item is in the pantry."""
        return f"{item}: yes"

    ai.load_prompt_folder(str(PROMPTS))
    return ai


# --- define_prompt -------------------------------------------------------------------------------


class Greeting(BaseModel):
    name: str
    style: str = "cheerful"


async def test_string_templates_with_pydantic_input_and_defaults(ai: Turnkit, pm: ProgrammableModel) -> None:
    pm.responses = [reply("Hello, Ada!")]
    p = ai.define_prompt(
        name="greet",
        system="You are a {{style}} assistant.",
        prompt="Greet {{name}}.",
        input_schema=Greeting,
        config={"temperature": 0.5, "topK": 3},
    )
    assert ai.prompt("greet") is p
    response = await p({"name": "Ada"}, config={"temperature": 0.9})
    assert response.text == "Hello, Ada!"
    request = pm.requests[0]
    assert roles(request) == ["system", "user"]
    assert texts(request) == ["You are a cheerful assistant.", "Greet Ada."]
    assert request.config == {"temperature": 0.9, "topK": 3}  # merged, the call's keys win
    assert request.tools is None and request.output is None


async def test_json_schema_input_defaults_and_prompt_level_settings(
    ai: Turnkit, pm: ProgrammableModel
) -> None:
    other = define_programmable_model(ai, name="other")
    other.responses = [reply("ok")]
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "default": "celsius"}},
        "required": ["city"],
    }
    p = ai.define_prompt(
        name="weather", model="other", prompt="Weather in {{city}} in {{unit}}?", input_schema=schema
    )
    await p({"city": "Oslo"})
    assert texts(other.requests[0]) == ["Weather in Oslo in celsius?"]
    assert pm.requests == []  # the prompt's model, not the app default


async def test_callables_receive_the_validated_input(ai: Turnkit, pm: ProgrammableModel) -> None:
    pm.responses = [reply("done")]
    seen: list[Any] = []

    def system(value: Greeting) -> str:
        seen.append(value)
        return f"Style: {value.style}. {{{{not a template}}}}"

    async def prompt(value: Greeting) -> list[Part | str]:
        return [Part(text=f"Hi {value.name}"), Part(media=Media(url="data:image/png;base64,AAAA"))]

    p = ai.define_prompt(name="callables", system=system, prompt=prompt, input_schema=Greeting)
    await p(Greeting(name="Bo", style="dry"))
    assert seen == [Greeting(name="Bo", style="dry")]
    request = pm.requests[0]
    assert request.messages[0].text == "Style: dry. {{not a template}}"  # callables' strings are literal
    assert request.messages[1].content[1].media is not None


async def test_messages_template_with_roles_and_history(ai: Turnkit, pm: ProgrammableModel) -> None:
    pm.responses = [reply("a"), reply("b")]
    p = ai.define_prompt(
        name="fewshot",
        system="Translate to {{lang}}.",
        messages='{{role "user"}}cat{{role "model"}}{{#if (eq lang "fr")}}chat{{else}}Katze{{/if}}',
        prompt="{{word}}",
    )
    define_helper(ai.registry, "eq", lambda params, options: params[0] == params[1])
    await p({"lang": "fr", "word": "dog"})
    assert roles(pm.requests[0]) == ["system", "user", "model", "user"]
    assert texts(pm.requests[0]) == ["Translate to fr.", "cat", "chat", "dog"]
    # History goes after the prompt's own messages and before its user message.
    await p({"lang": "de", "word": "dog"}, messages=HISTORY)
    assert texts(pm.requests[1]) == ["Translate to de.", "cat", "Katze", "Hi, I'm Ada.", "Hello Ada!", "dog"]


async def test_messages_callable_gets_history_before_its_last_user_message(ai: Turnkit) -> None:
    def examples(value: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"role": "user", "content": [{"text": f"about {value['topic']}"}]}]

    p = ai.define_prompt(name="cb", system="sys", messages=examples)
    rendered = await p.render({"topic": "owls"}, messages=HISTORY)
    assert [m.text for m in rendered.messages] == ["sys", "Hi, I'm Ada.", "Hello Ada!", "about owls"]


async def test_history_is_placed_between_system_and_user_and_kept_intact(
    ai: Turnkit, pm: ProgrammableModel
) -> None:
    pm.responses = [reply("Nice to see you again.")]
    p = ai.define_prompt(name="turn", system="Be kind to {{name}}.", prompt="{{question}}")
    response = await p({"name": "Ada", "question": "Remember me?"}, messages=HISTORY)
    sent = pm.requests[0].messages
    assert roles(pm.requests[0]) == ["system", "user", "model", "user"]
    assert sent[1:3] == HISTORY  # unchanged: no metadata added, reasoning parts kept
    assert sent[3].text == "Remember me?"
    assert [m.role for m in response.messages] == ["system", "user", "model", "user", "model"]


async def test_system_only_prompt_appends_history_last(ai: Turnkit) -> None:
    p = ai.define_prompt(name="agentish", system="You are {{persona}}.")
    rendered = await p.render({"persona": "a pirate"}, messages=HISTORY)
    assert [m.role for m in rendered.messages] == ["system", "user", "model"]


async def test_prompt_middleware_wraps_every_call(ai: Turnkit, pm: ProgrammableModel) -> None:
    pm.responses = [reply("x")]
    calls: list[str] = []

    def tag(name: str) -> Any:
        async def mw(request: ModelRequest, ctx: ModelContext, nxt: Next) -> ModelResponse:
            calls.append(name)
            return await nxt(request, ctx)

        return mw

    p = ai.define_prompt(name="mw", prompt="hi", use=[tag("prompt")])
    await p(use=[tag("call")])
    assert calls == ["call", "prompt"]


async def test_unnamed_prompts_are_not_registered(ai: Turnkit, pm: ProgrammableModel) -> None:
    pm.responses = [reply("x")]
    p = ai.define_prompt(prompt="hi")
    assert (await p()).text == "x"
    assert ai.registry.names("prompt") == []


# --- .prompt files ------------------------------------------------------------------------------


async def test_front_matter_model_config_and_input_defaults(files: Turnkit, pm: ProgrammableModel) -> None:
    pm.responses = [reply("Hello!")]
    greeting = files.prompt("greeting")
    assert greeting.description == "Greets a user by name."
    await greeting({"name": "Ada"}, config={"topK": 5})
    request = pm.requests[0]
    assert roles(request) == ["system", "user"]
    assert texts(request) == ["You are a friendly greeter.", "Say hello to Ada."]
    assert request.config == {"temperature": 0.3, "topK": 5}


async def test_variant(files: Turnkit, pm: ProgrammableModel) -> None:
    pm.responses = [reply("Good day.")]
    formal = files.prompt("greeting", variant="formal")
    assert (formal.name, formal.variant) == ("greeting", "formal")
    await formal({"name": "Ada"})
    assert roles(pm.requests[0]) == ["user"]
    assert texts(pm.requests[0]) == ["Good day. Please greet Ada formally."]
    assert pm.requests[0].config == {"temperature": 0.1}


async def test_tools_by_name_and_json_output(files: Turnkit, pm: ProgrammableModel) -> None:
    pm.responses = [
        {
            "message": {
                "role": "model",
                "content": [{"toolRequest": {"name": "pantry", "input": {"item": "eggs"}, "ref": "1"}}],
            }
        },
        reply('```json\n{"title": "Omelette", "ingredients": ["eggs"]}\n```'),
    ]
    response = await files.prompt("recipe")({"dish": "omelette"})
    assert response.output == {"title": "Omelette", "ingredients": ["eggs"]}
    first = pm.requests[0]
    assert texts(first) == ["Write a recipe for omelette serving 2. Check the pantry first."]
    assert first.tools == [
        ToolDefinition(
            name="pantry",
            description="Whether an item is in the pantry.",
            input_schema=files.registry.lookup("tool", "pantry").input_schema,
        )
    ]
    assert first.output is not None and first.output.format == "json"
    assert first.output.schema_ == {
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "ingredients": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["title", "ingredients"],
        "additionalProperties": False,
    }
    assert pm.requests[1].messages[-1].content[0].tool_response.output == "eggs: yes"  # type: ignore[union-attr]
    rendered = await files.prompt("recipe").render({"dish": "omelette"})
    assert rendered.max_turns == 2 and rendered.tools == ["pantry"]


class DishRequest(BaseModel):
    name: str


class Dish(BaseModel):
    name: str
    calories: int


async def test_named_schemas_give_pydantic_output(files: Turnkit, pm: ProgrammableModel) -> None:
    define_schema(files.registry, "DishRequest", DishRequest)
    define_schema(files.registry, "Dish", Dish)
    pm.responses = [reply('{"name": "Pho", "calories": 450}')]
    response = await files.prompt("dish")({"name": "pho"})
    assert response.output == Dish(name="Pho", calories=450)
    assert pm.requests[0].output.schema_ == Dish.model_json_schema()  # type: ignore[union-attr]
    with pytest.raises(TurnkitError) as err:
        await files.prompt("dish")({"title": "pho"})
    assert err.value.status == "INVALID_ARGUMENT"


async def test_unknown_schema_name_is_a_clear_error(files: Turnkit) -> None:
    with pytest.raises(TurnkitError) as err:
        await files.prompt("dish").render({"name": "pho"})
    assert err.value.status == "INVALID_ARGUMENT"
    assert "dish.prompt" in err.value.message and "DishRequest" in err.value.message


async def test_partials(files: Turnkit) -> None:
    rendered = await files.prompt("letter").render({"recipient": "Bo", "sender": "Ada"})
    assert [m.text.strip() for m in rendered.messages] == ["Dear Bo, thank you.\nBest regards,\nAda"]
    define_partial(files.registry, "signature", "-- {{sender}}")  # a redefinition takes effect
    rendered = await files.prompt("letter").render({"recipient": "Bo", "sender": "Ada"})
    assert rendered.messages[0].text.strip() == "Dear Bo, thank you.\n-- Ada"
    assert files.registry.get("partial", "signature") == "-- {{sender}}"


async def test_history_marker_and_context(files: Turnkit, pm: ProgrammableModel) -> None:
    pm.responses = [reply("More about owls.")]
    await files.prompt("chat")({"topic": "owls"}, messages=HISTORY, context={"state": {"user": "Ada"}})
    request = pm.requests[0]
    assert roles(request) == ["system", "user", "model", "user"]
    assert texts(request)[0] == "You talk about owls with Ada."
    assert request.messages[1:3] == HISTORY
    assert texts(request)[3] == "Keep going."


async def test_history_without_marker_goes_before_the_user_message(files: Turnkit) -> None:
    rendered = await files.prompt("greeting").render({"name": "Ada"}, messages=HISTORY)
    assert [m.role for m in rendered.messages] == ["system", "user", "model", "user"]
    assert rendered.messages[1:3] == HISTORY
    assert rendered.messages[3].text.strip() == "Say hello to Ada."


async def test_media_and_json_helpers(files: Turnkit) -> None:
    rendered = await files.prompt("photo").render({"url": "https://example.com/a.png"})
    [message] = rendered.messages
    media = [p.media for p in message.content if p.media]
    assert media[0] is not None and media[0].url == "https://example.com/a.png"
    assert media[0].content_type == "image/png"
    assert message.content[-1].text == ' Answer with {"url":"https://example.com/a.png"}.'


async def test_nested_folders_and_prompt_dir(pm: ProgrammableModel) -> None:
    app = Turnkit(model="programmableModel", prompt_dir=str(PROMPTS))
    rendered = await app.prompt("support/triage").render({"ticket": "printer on fire"})
    assert rendered.messages[0].text.strip() == "Triage this ticket: printer on fire"
    assert rendered.model == "programmableModel"  # the app default, as no front matter names one


# --- render and stream ---------------------------------------------------------------------------


async def test_render_returns_generate_options(files: Turnkit, pm: ProgrammableModel) -> None:
    rendered = await files.prompt("recipe").render({"dish": "soup", "servings": 4}, config={"temperature": 0})
    assert isinstance(rendered, GenerateOptions)
    assert rendered.model == "programmableModel"
    assert rendered.config == {"temperature": 0}
    assert rendered.output is not None and rendered.output.schema is not None
    assert [m.text for m in rendered.messages] == [
        "Write a recipe for soup serving 4. Check the pantry first."
    ]
    pm.responses = [reply('{"title": "Soup", "ingredients": []}')]
    response = await files.generate(**rendered.to_generate_kwargs())
    assert response.output == {"title": "Soup", "ingredients": []}
    assert pm.requests[0].tools is not None and pm.requests[0].tools[0].name == "pantry"


async def test_overrides_replace_prompt_settings(files: Turnkit, pm: ProgrammableModel) -> None:
    pm.responses = [reply('{"name": "x"}')]
    response = await files.prompt("greeting")(
        {"name": "Ada"},
        output={"type": "object", "properties": {"name": {"type": "string"}}},
        tools=["pantry"],
    )
    assert response.output == {"name": "x"}
    assert pm.requests[0].tools is not None and [t.name for t in pm.requests[0].tools] == ["pantry"]


async def test_stream(files: Turnkit, pm: ProgrammableModel) -> None:
    pm.responses = [reply("Hello Ada")]
    pm.chunks = [[{"content": [{"text": "Hello"}]}, {"content": [{"text": " Ada"}]}]]
    stream = files.prompt("greeting").stream({"name": "Ada"})
    chunks = [chunk.text async for chunk in stream]
    response = await stream.response
    assert chunks == ["Hello", " Ada"]
    assert response.text == "Hello Ada"
    assert texts(pm.requests[0])[1] == "Say hello to Ada."
    with pytest.raises(TypeError):
        files.prompt("greeting").stream({"name": "Ada"}, on_chunk=print)  # type: ignore[call-arg]


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "bad", "fragment"),
    [
        ("greeting", {"style": "grumpy"}, "'name' is a required property"),
        ("greeting", {"name": 42}, "name: 42 is not of type 'string'"),
        ("greeting", {"name": "Ada", "mood": "x"}, "Additional properties"),
        ("greeting", "Ada", "expected an object"),
        ("recipe", {"dish": "soup", "servings": "four"}, "servings"),
    ],
)
async def test_bad_file_input_is_invalid_argument(files: Turnkit, name: str, bad: Any, fragment: str) -> None:
    with pytest.raises(TurnkitError) as err:
        await files.prompt(name)(bad)
    assert err.value.status == "INVALID_ARGUMENT"
    assert fragment in err.value.message and repr(name) in err.value.message


async def test_bad_pydantic_input_is_invalid_argument(ai: Turnkit, pm: ProgrammableModel) -> None:
    p = ai.define_prompt(name="greet", prompt="Hi {{name}}", input_schema=Greeting)
    for bad in ({}, {"name": ["not", "a", "string"]}):
        with pytest.raises(TurnkitError) as err:
            await p(bad)
        assert err.value.status == "INVALID_ARGUMENT" and "'greet'" in err.value.message
        assert "name" in err.value.message
    assert pm.requests == []


async def test_unknown_prompt_and_variant_are_not_found(files: Turnkit) -> None:
    with pytest.raises(TurnkitError) as err:
        files.prompt("nope")
    assert err.value.status == "NOT_FOUND" and "'nope'" in err.value.message
    with pytest.raises(TurnkitError) as err:
        files.prompt("greeting", variant="casual")
    assert err.value.status == "NOT_FOUND" and "'greeting.casual'" in err.value.message


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("---\nmodel: [unclosed\n---\nHi", "invalid YAML"),
        ("---\nconfig: 3\n---\nHi", "invalid recognized field type"),
        ("---\nmodel: x\nHi", "missing closing delimiter"),
        ("---\nmaxTurns: many\n---\nHi", "'maxTurns' must be of type int"),
    ],
)
def test_malformed_front_matter_names_the_file(
    ai: Turnkit, tmp_path: Path, source: str, fragment: str
) -> None:
    (tmp_path / "fine.prompt").write_text("Hello")
    (tmp_path / "broken.prompt").write_text(source)
    with pytest.raises(TurnkitError) as err:
        ai.load_prompt_folder(str(tmp_path))
    assert err.value.status == "INVALID_ARGUMENT"
    assert str(tmp_path / "broken.prompt") in err.value.message and fragment in err.value.message


def test_missing_prompt_folder(ai: Turnkit, tmp_path: Path) -> None:
    with pytest.raises(TurnkitError) as err:
        ai.load_prompt_folder(str(tmp_path / "absent"))
    assert err.value.status == "NOT_FOUND"


async def test_template_errors_name_the_prompt(ai: Turnkit, tmp_path: Path) -> None:
    (tmp_path / "card.prompt").write_text("{{> missing}}")
    ai.load_prompt_folder(str(tmp_path))
    with pytest.raises(TurnkitError) as err:
        await ai.prompt("card").render()
    assert err.value.status == "INVALID_ARGUMENT"
    assert "'card'" in err.value.message and "missing" in err.value.message


def test_unsupported_output_format_fails_at_load(ai: Turnkit, tmp_path: Path) -> None:
    (tmp_path / "odd.prompt").write_text("---\noutput:\n  format: csv\n---\nHi")
    with pytest.raises(TurnkitError) as err:
        ai.load_prompt_folder(str(tmp_path))
    assert (
        err.value.status == "UNIMPLEMENTED"
        and "'csv'" in err.value.message
        and "odd.prompt" in err.value.message
    )
