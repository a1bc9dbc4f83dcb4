"""Defining agents: options checked at definition, store URLs, typed state end to end (Pydantic,
TypedDict, JSON schema), and define_agent's prompt options (prompt_input, messages, description)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, NotRequired, TypedDict

import pytest
from pydantic import BaseModel

from turnkit import Message, Part, SessionSnapshot, SessionState, Turnkit, TurnkitError
from turnkit.agents import Agent, AgentContext, AgentSession
from turnkit.sessions import (
    InMemorySessionStore,
    Session,
    SessionStore,
    SqliteSessionStore,
    run_with_session,
)
from turnkit.sessions._state_type import StateType
from turnkit.testing import ProgrammableModel


def reply(text: str) -> dict[str, Any]:
    return {"message": {"role": "model", "content": [{"text": text}]}, "finishReason": "stop"}


def call(name: str, ref: str = "1") -> dict[str, Any]:
    content = [{"toolRequest": {"name": name, "input": {}, "ref": ref}}]
    return {"message": {"role": "model", "content": content}, "finishReason": "stop"}


def texts(messages: list[Message] | None) -> list[str]:
    return [m.text for m in messages or []]


async def no_turns(sess: AgentSession[Any], ctx: AgentContext) -> None:
    await sess.run(lambda item, turn: _nothing())


async def _nothing() -> None:
    return None


# --- options are checked when the agent is defined ---------------------------------------------


BAD_OPTIONS: list[tuple[str, dict[str, Any], str]] = [
    ("max_turns", {"max_turns": "five"}, "must be an int"),
    ("max_turns", {"max_turns": 0}, "at least 1"),
    ("max_turns", {"max_turns": True}, "must be an int"),
    ("model", {"model": 3}, "model name"),
    ("system", {"system": 42}, "string"),
    ("messages", {"messages": "hello"}, "list of Messages"),
    ("messages", {"messages": [{"role": "wizard", "content": []}]}, "invalid message"),
    ("prompt_input", {"prompt_input": ["a"]}, "dict"),
    ("tools", {"tools": "search"}, "list of tool names"),
    ("tools", {"tools": [3]}, "tool names or Tools"),
    ("config", {"config": 0.5}, "dict or a Pydantic model"),
    ("output", {"output": int}, "Pydantic model class or a JSON schema"),
    ("use", {"use": [1]}, "middleware functions"),
    ("store", {"store": 42}, "store"),
    ("store", {"store": "nosuch://x"}, ""),
    ("state_schema", {"state_schema": int}, "state_schema"),
    ("state_transform", {"state_transform": "redact"}, "function"),
    ("chunk_transform", {"chunk_transform": 1}, "function"),
    ("description", {"description": 1}, "string"),
    ("metadata", {"metadata": [1]}, "dict"),
    ("heartbeat_interval", {"heartbeat_interval": 0}, "greater than 0"),
    ("heartbeat_interval", {"heartbeat_interval": "5"}, "seconds"),
    ("on_conflict", {"on_conflict": "wait"}, "'queue', 'reject'"),
    ("lease_wait", {"lease_wait": -1}, "0 or more"),
]


@pytest.mark.parametrize(
    ("option", "kwargs", "problem"), BAD_OPTIONS, ids=[f"{o}={k[o]!r}" for o, k, _ in BAD_OPTIONS]
)
def test_a_bad_option_fails_at_definition_naming_it(
    ai: Turnkit, option: str, kwargs: dict[str, Any], problem: str
) -> None:
    with pytest.raises(TurnkitError) as err:
        ai.define_agent("checked", **kwargs)
    assert err.value.status == "INVALID_ARGUMENT"
    assert err.value.message.startswith(f"define_agent({option}=...): "), err.value.message
    assert problem in err.value.message
    assert ai.registry.get("agent", "checked") is None  # nothing half-defined is left behind


def test_the_other_definers_check_their_options_too(ai: Turnkit) -> None:
    with pytest.raises(TurnkitError, match=r"define_custom_agent\(fn=\.\.\.\): must be a function"):
        ai.define_custom_agent("c", "not a function")  # type: ignore[arg-type]
    with pytest.raises(TurnkitError, match=r"define_custom_agent\(lease_wait=\.\.\.\)"):
        ai.define_custom_agent("c", no_turns, lease_wait=float("nan"))
    with pytest.raises(
        TurnkitError, match=r"define_prompt_agent\(prompt=\.\.\.\): must be a non-empty string"
    ):
        ai.define_prompt_agent("p", prompt="")
    with pytest.raises(TurnkitError, match=r"define_prompt_agent\(name=\.\.\.\)"):
        ai.define_prompt_agent("")
    with pytest.raises(TypeError):
        ai.define_agent("a", max_turn=3)  # type: ignore[call-arg]  # a misspelled option


def test_name_may_be_positional_as_in_genkit(ai: Turnkit) -> None:
    by_position = ai.define_custom_agent("pos", no_turns)
    by_keyword = ai.define_custom_agent(name="kw", fn=no_turns)
    assert ai.agent("pos") is by_position and ai.agent("kw") is by_keyword


# --- store URLs and stores written as seed 000 shows ---------------------------------------------


async def test_store_takes_a_url(ai: Turnkit, pm: ProgrammableModel, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'chats.db'}"
    agent = ai.define_agent("stored", store=url)
    assert isinstance(agent.store, SqliteSessionStore) and agent.state_management == "server"
    pm.program([reply("hi there")])
    res = await agent.chat().send("hi")
    assert res.text == "hi there"
    with sqlite3.connect(tmp_path / "chats.db") as db:  # the turn reached the file
        assert db.execute("select count(*) from sqlite_master").fetchone()[0] > 0


async def test_the_documented_sqlite_url_is_relative_to_the_working_directory(
    ai: Turnkit, pm: ProgrammableModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert '"sqlite:chats.db"' in (Turnkit.define_agent.__doc__ or "")  # the example it gives
    monkeypatch.chdir(tmp_path)
    agent = ai.define_agent("relative", store="sqlite:chats.db")
    pm.program([reply("hi there")])
    await agent.chat().send("hi")
    assert isinstance(agent.store, SqliteSessionStore)
    await agent.store.aclose()
    with sqlite3.connect(tmp_path / "chats.db") as db:  # here, not /chats.db
        assert db.execute("select count(*) from sqlite_master").fetchone()[0] > 0


class SeedStore:
    """A custom store written exactly as seed 000 shows: no `context` parameter anywhere."""

    def __init__(self) -> None:
        self.snapshots: dict[str, SessionSnapshot] = {}

    async def get_snapshot(
        self, *, snapshot_id: str | None = None, session_id: str | None = None
    ) -> SessionSnapshot | None:
        if snapshot_id is not None:
            return self.snapshots.get(snapshot_id)
        mine = [s for s in self.snapshots.values() if s.session_id == session_id]
        return max(mine, key=lambda s: s.created_at, default=None)

    async def save_snapshot(
        self, snapshot_id: str, fn: Callable[[SessionSnapshot | None], SessionSnapshot | None]
    ) -> None:
        new = fn(self.snapshots.get(snapshot_id))
        if new is not None:
            self.snapshots[snapshot_id] = new


async def test_a_seed_style_store_is_adapted(ai: Turnkit, pm: ProgrammableModel) -> None:
    seed = SeedStore()
    agent = ai.define_agent("seeded", store=seed)  # type: ignore[arg-type]  # not the full protocol
    pm.program([reply("one"), reply("two")])
    chat = agent.chat()
    first = await chat.send("a")
    second = await chat.send("b")
    assert (first.text, second.text) == ("one", "two")
    assert second.snapshot_id in seed.snapshots


# --- typed state, end to end --------------------------------------------------------------------


class Visits(BaseModel):
    count: int = 0
    last: str | None = None


class VisitsDict(TypedDict):
    count: int
    note: NotRequired[str]


VISITS_JSON = {"type": "object", "properties": {"count": {"type": "integer"}}, "required": ["count"]}


def visit_tool(ai: Turnkit, seen: list[Any]) -> None:
    @ai.tool(name="visit")
    async def visit() -> str:
        """Count a visit."""
        session = ai.current_session()
        seen.append(await session.get_custom())

        def bump(old: Any) -> Any:
            if isinstance(old, Visits):
                return old.model_copy(update={"count": old.count + 1, "last": "visit"})
            return {"count": (old or {"count": 0})["count"] + 1}

        await session.update_custom(bump)
        return "counted"


@pytest.mark.parametrize("schema", [Visits, VisitsDict, VISITS_JSON], ids=["pydantic", "typeddict", "json"])
async def test_typed_state_works_through_real_turns(ai: Turnkit, pm: ProgrammableModel, schema: Any) -> None:
    seen: list[Any] = []
    visit_tool(ai, seen)
    store = InMemorySessionStore()
    agent = ai.define_agent("visits", tools=["visit"], state_schema=schema, store=store)
    assert agent.state_type.schema is schema
    assert agent.metadata["stateSchema"]["properties"]["count"]["type"] == "integer"
    pm.program([call("visit"), reply("one"), call("visit", "2"), reply("two")])
    chat = agent.chat()
    first = await chat.send("visit")
    assert first.finish_reason == "stop", first
    second = await chat.send("again")
    assert second.finish_reason == "stop", second
    snap = await agent.get_snapshot(session_id=second.session_id)
    assert snap is not None and snap.state is not None
    if schema is Visits:
        assert seen == [Visits(), Visits(count=1, last="visit")]  # defaults applied, typed in tools
        assert snap.state.custom == {"count": 2, "last": "visit"}  # stored as JSON
    else:
        assert seen == [None, {"count": 1}]
        assert snap.state.custom == {"count": 2}


async def test_typeddict_state_rejects_a_bad_update_in_a_turn(ai: Turnkit, pm: ProgrammableModel) -> None:
    @ai.tool(name="spoil")
    async def spoil() -> str:
        """Store a bad count."""
        await ai.current_session().update_custom(lambda old: {"count": "many"})
        return "spoiled"

    agent = ai.define_agent("strict", tools=["spoil"], state_schema=VisitsDict, store=InMemorySessionStore())
    pm.program([call("spoil")])
    with pytest.raises(TurnkitError) as err:  # the chat raises the turn's failure (an AgentError)
        await agent.chat().send("go")
    assert err.value.status == "INVALID_ARGUMENT" and "invalid custom state" in err.value.message


async def test_a_custom_agent_gets_typed_state(ai: Turnkit) -> None:
    got: list[Any] = []

    async def fn(sess: AgentSession[Visits], ctx: AgentContext) -> None:
        async def turn(item: Any, tc: Any) -> None:
            got.append(await sess.get_custom())
            new = await sess.update_custom(lambda v: Visits(count=(v.count if v else 0) + 5))
            got.append(new)

        await sess.run(turn)

    agent: Agent[Visits] = ai.define_custom_agent(
        "typed", fn, state_schema=Visits, store=InMemorySessionStore()
    )
    await agent.chat().send("x")
    assert got == [Visits(), Visits(count=5)]


async def test_current_session_checks_the_schema_it_is_given(ai: Turnkit) -> None:
    session = Session(state_schema=Visits)

    async def inside() -> None:
        typed = ai.current_session(Visits)
        assert typed is session
        with pytest.raises(TurnkitError) as err:
            ai.current_session(VisitsDict)
        assert err.value.status == "FAILED_PRECONDITION"

    await run_with_session(session, inside())


def test_state_type_is_shared_with_the_runtime(ai: Turnkit) -> None:
    agent = ai.define_custom_agent("shared", no_turns, state_schema=Visits)
    assert isinstance(agent.state_type, StateType)
    state = SessionState(session_id="s", custom={"count": 3})
    session = Session.from_state(state, state_schema=agent.state_type)
    assert session.state_type is agent.state_type  # no schema is rebuilt per session


# --- define_agent's prompt options ---------------------------------------------------------------


async def test_prompt_input_renders_the_system_template(ai: Turnkit, pm: ProgrammableModel) -> None:
    agent = ai.define_agent(
        "pirate",
        system="You are {{persona}}; answer in {{lang}}.",
        prompt_input={"persona": "a pirate", "lang": "en"},
    )
    pm.program([reply("arr"), reply("oui")])
    await agent.chat().send("hi")
    assert texts(pm.requests[0].messages)[0] == "You are a pirate; answer in en."
    # A chat's own prompt input wins over the agent's.
    await agent.chat(prompt_input={"persona": "a poet", "lang": "fr"}).send("salut")
    assert texts(pm.requests[1].messages)[0] == "You are a poet; answer in fr."


async def test_system_template_sees_a_pydantic_prompt_input(ai: Turnkit, pm: ProgrammableModel) -> None:
    class Persona(BaseModel):
        persona: str

    agent = ai.define_agent("typed-input", system="Be {{persona}}.", prompt_input=Persona(persona="brief"))
    pm.program([reply("ok")])
    await agent.chat().send("hi")
    assert texts(pm.requests[0].messages)[0] == "Be brief."


async def test_messages_are_a_preamble_never_stored(ai: Turnkit, pm: ProgrammableModel) -> None:
    examples: list[Message | dict[str, Any]] = [
        Message(role="user", content=[Part(text="2+2?")]),
        {"role": "model", "content": [{"text": "4"}]},
    ]
    agent = ai.define_agent("fewshot", system="Do sums.", messages=examples, store=InMemorySessionStore())
    pm.program([reply("6"), reply("9")])
    chat = agent.chat()
    await chat.send("3+3?")
    second = await chat.send("4+5?")
    assert texts(pm.requests[1].messages) == ["Do sums.", "2+2?", "4", "3+3?", "6", "4+5?"]
    snap = await agent.get_snapshot(session_id=second.session_id)
    assert snap is not None and snap.state is not None
    assert texts(snap.state.messages) == ["3+3?", "6", "4+5?", "9"]


async def test_a_literal_system_prompt_is_sent_as_is(ai: Turnkit, pm: ProgrammableModel) -> None:
    agent = ai.define_agent("plain", system='Use JSON like {"a": 1}.')
    pm.program([reply("ok")])
    await agent.chat().send("hi")
    assert texts(pm.requests[0].messages) == ['Use JSON like {"a": 1}.', "hi"]


def test_description_and_metadata_are_in_the_agent_metadata(ai: Turnkit) -> None:
    agent = ai.define_agent(
        "described", description="Answers weather questions.", metadata={"team": "wx", "abortable": "mine"}
    )
    assert agent.metadata == {
        "team": "wx",
        "stateManagement": "client",
        "abortable": False,  # the runtime's keys win over the caller's
        "description": "Answers weather questions.",
    }
    assert "description" not in ai.define_agent("plain").metadata


def test_store_protocol_objects_pass_through(ai: Turnkit) -> None:
    store: SessionStore = InMemorySessionStore()
    assert ai.define_agent("kept", store=store).store is store


# --- the registry carries what agents and prompts need from the app ------------------------------


async def test_agents_and_prompts_see_the_default_model_set_later(ai: Turnkit, pm: ProgrammableModel) -> None:
    agent = ai.define_agent("late")  # no model of its own
    greet = ai.define_prompt("hello", prompt="hi")
    ai.default_model = "echoModel"  # e.g. the REPL's --model, after the app was built
    assert ai.registry.default_model == "echoModel"
    res = await agent.chat().send("ping")
    said = await greet()
    assert pm.calls == 0 and "ping" in res.text and "hi" in said.text  # the echo model answered


def test_an_app_over_an_existing_registry_shares_its_definitions(ai: Turnkit) -> None:
    agent = ai.define_custom_agent("shared-reg", no_turns)
    view = Turnkit(registry=agent.registry)
    assert view.agent("shared-reg") is agent and view.default_model == ai.default_model


def test_define_prompt_checks_its_options(ai: Turnkit) -> None:
    bad: list[tuple[str, dict[str, Any]]] = [
        ("max_turns", {"max_turns": "2"}),
        ("tools", {"tools": "pantry"}),
        ("input_schema", {"input_schema": str}),
        ("output", {"output": 3}),
        ("use", {"use": "retry"}),
        ("return_tool_requests", {"return_tool_requests": "yes"}),
    ]
    for option, kwargs in bad:
        with pytest.raises(TurnkitError) as err:
            ai.define_prompt("p", prompt="hi", **kwargs)
        assert err.value.status == "INVALID_ARGUMENT"
        assert err.value.message.startswith(f"define_prompt({option}=...)"), err.value.message
