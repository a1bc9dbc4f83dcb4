"""Session: messages, custom state, artifacts, listeners, schema validation, and the current session."""

from __future__ import annotations

import asyncio
import functools
from typing import Any, NotRequired, TypedDict

import pytest
from pydantic import BaseModel, Field

from turnkit.errors import TurnkitError
from turnkit.sessions import (
    ArtifactAdded,
    CustomChanged,
    InMemorySessionStore,
    MessagesAdded,
    MessagesSet,
    Session,
    SessionEvent,
    get_current_session,
    run_with_session,
)
from turnkit.types import Artifact, Message, Part, SessionState


def msg(role: str, text: str) -> Message:
    return Message.model_validate({"role": role, "content": [{"text": text}]})


def art(name: str | None, text: str) -> Artifact:
    return Artifact(name=name, parts=[Part(text=text)])


async def test_messages_are_shared_but_lists_are_new() -> None:
    first = msg("user", "hi")
    session = Session()
    await session.add_messages(first)  # a single message, as in `add_messages(new_message)`
    wire: Any = {"role": "user", "content": [{"text": "wire"}]}  # the wire form is accepted too
    await session.add_messages([msg("model", "hello"), wire])
    got = await session.get_messages()
    assert [m.text for m in got] == ["hi", "hello", "wire"]
    assert got[0] is first
    got.clear()
    assert len(await session.get_messages()) == 3
    await session.set_messages([msg("system", "summary")])
    assert [m.text for m in await session.get_messages()] == ["summary"]


async def test_ids_and_state_round_trip() -> None:
    assert Session().id != Session().id
    with pytest.raises(TurnkitError) as err:
        Session("bad\x00id")
    assert err.value.status == "INVALID_ARGUMENT"
    history = [msg("user", "a"), msg("model", "b")]
    state = SessionState(session_id="s1", messages=history, custom={"k": [1]}, artifacts=[art("r", "x")])
    session = Session.from_state(state)
    assert session.id == "s1"
    state.custom["k"].append(2)  # the session took a copy of custom state
    out = session.to_state()
    assert out.to_wire() == {
        "sessionId": "s1",
        "messages": [m.to_wire() for m in history],
        "custom": {"k": [1]},
        "artifacts": [art("r", "x").to_wire()],
    }
    assert out.messages is not None and out.messages[0] is history[0]  # shallow: messages shared
    out.custom["k"].append(3)
    out.messages.append(msg("user", "not in the session"))
    assert await session.get_custom() == {"k": [1]}
    assert len(await session.get_messages()) == 2
    store = InMemorySessionStore()
    assert Session(store=store).store is store


async def test_custom_state_is_copied_in_and_out() -> None:
    session = Session(custom={"items": []})
    got = await session.get_custom()
    got["items"].append("sneaky")
    assert await session.get_custom() == {"items": []}

    def mutate_in_place(old: dict[str, Any]) -> dict[str, Any]:
        old["items"].append("x")
        raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError):
        await session.update_custom(mutate_in_place)
    assert await session.get_custom() == {"items": []}


async def test_update_custom_is_atomic_across_tasks() -> None:
    session = Session(custom={"n": 0})

    async def slow_increment(old: dict[str, int]) -> dict[str, int]:
        await asyncio.sleep(0)  # every other task gets to run here: without the lock, updates are lost
        return {"n": old["n"] + 1}

    await asyncio.gather(*(session.update_custom(slow_increment) for _ in range(50)))
    assert await session.get_custom() == {"n": 50}
    # Sync functions work too, and the new value comes back.
    assert await session.update_custom(lambda old: {"n": old["n"] * 2}) == {"n": 100}


async def test_update_custom_from_inside_itself_fails_instead_of_hanging() -> None:
    session = Session(custom=0)

    async def nested(old: int) -> int:
        await session.update_custom(lambda v: v + 1)
        return old

    with pytest.raises(TurnkitError) as err:
        await asyncio.wait_for(session.update_custom(nested), 2)
    assert err.value.status == "FAILED_PRECONDITION"
    assert await session.get_custom() == 0


class Todo(BaseModel):
    title: str
    done: bool = False


class TodoState(BaseModel):
    todos: list[Todo] = Field(default_factory=list)
    next_id: int = Field(default=1, alias="nextId")


async def test_pydantic_schema_types_the_state_and_keeps_its_json_form() -> None:
    session = Session(state_schema=TodoState)
    assert await session.get_custom() == TodoState()  # unset reads as the defaults
    assert session.to_state().custom is None
    new = await session.update_custom(lambda old: {"todos": [{"title": "milk"}], "nextId": 2})
    assert new == TodoState(todos=[Todo(title="milk")], nextId=2)
    assert session.to_state().custom == {"todos": [{"title": "milk", "done": False}], "nextId": 2}
    seen: list[TodoState | None] = []

    def bump(old: TodoState | None) -> TodoState:
        seen.append(old)
        assert old is not None
        return old.model_copy(update={"next_id": 3})

    await session.update_custom(bump)
    assert isinstance(seen[0], TodoState) and seen[0].next_id == 2  # fn gets a TodoState
    got = await session.get_custom()
    assert isinstance(got, TodoState) and got.next_id == 3
    bad_values: list[Any] = [{"todos": [{"done": True}]}, {"nextId": "three"}, None, 5]
    for bad in bad_values:
        with pytest.raises(TurnkitError) as err:
            await session.update_custom(functools.partial(lambda value, _old: value, bad))
        assert err.value.status == "INVALID_ARGUMENT"
    assert session.to_state().custom == {"todos": [{"title": "milk", "done": False}], "nextId": 3}
    with pytest.raises(TurnkitError):
        Session(custom={"nextId": "x"}, state_schema=TodoState)


class Counter(TypedDict):
    count: int
    tags: NotRequired[list[str]]


async def test_typeddict_schema_validates_and_reads_as_a_dict() -> None:
    session = Session(custom={"count": 1}, state_schema=Counter)
    assert await session.get_custom() == {"count": 1}
    await session.update_custom(lambda old: {"count": (old or {"count": 0})["count"] + 1, "tags": ["a"]})
    assert await session.get_custom() == {"count": 2, "tags": ["a"]}
    with pytest.raises(TurnkitError) as err:
        await session.update_custom(lambda old: {"count": "many"})
    assert err.value.status == "INVALID_ARGUMENT"
    assert await Session(state_schema=Counter).get_custom() is None  # `count` has no default


async def test_a_schema_that_is_not_one_fails_clearly() -> None:
    with pytest.raises(TurnkitError) as err:
        Session(state_schema=int)
    assert err.value.status == "INVALID_ARGUMENT" and "state_schema" in err.value.message
    with pytest.raises(TurnkitError) as err:
        Session(state_schema={"type": "no-such-type"})
    assert err.value.status == "INVALID_ARGUMENT"


async def test_stored_state_that_no_longer_fits_the_schema_says_so() -> None:
    state = SessionState(session_id="s1", custom={"nextId": "not a number"})
    untyped = Session.from_state(state)
    typed: Session[TodoState] = Session(state_schema=TodoState)
    typed._custom = untyped.to_state().custom  # as a store would hand back state of an old schema
    with pytest.raises(TurnkitError) as err:
        await typed.get_custom()
    assert err.value.status == "FAILED_PRECONDITION" and "schema" in err.value.message


async def test_json_schema_validates_when_jsonschema_is_installed() -> None:
    pytest.importorskip("jsonschema")
    schema = {"type": "object", "properties": {"count": {"type": "integer"}}, "required": ["count"]}
    session = Session(custom={"count": 1}, state_schema=schema)
    events: list[SessionEvent] = []
    session.subscribe(events.append)
    with pytest.raises(TurnkitError) as err:
        await session.update_custom(lambda old: {"count": "many"})
    assert err.value.status == "INVALID_ARGUMENT"
    assert await session.get_custom() == {"count": 1} and events == []
    await session.update_custom(lambda old: {"count": old["count"] + 1})
    assert await session.get_custom() == {"count": 2}


async def test_named_artifacts_replace_in_place_unnamed_append() -> None:
    session = Session(artifacts=[art("plan", "v1"), art(None, "note")])
    await session.add_artifacts([art("report", "r1"), art(None, "note 2")])
    await session.add_artifacts(art("plan", "v2"))
    got = await session.get_artifacts()
    assert [(a.name, a.parts[0].text) for a in got] == [
        ("plan", "v2"),
        (None, "note"),
        ("report", "r1"),
        (None, "note 2"),
    ]
    got.clear()
    assert len(await session.get_artifacts()) == 4


async def test_listeners_see_every_change_until_unsubscribed() -> None:
    session = Session(custom={"n": 0}, artifacts=[art("plan", "v1")])
    events: list[SessionEvent] = []
    unsubscribe = session.subscribe(events.append)

    def broken(event: SessionEvent) -> None:
        raise ValueError("listener bug")

    session.subscribe(broken)  # a failing listener is logged, not propagated
    hello = msg("model", "hello")
    await session.add_messages([hello])
    await session.set_messages([hello])
    await session.update_custom(lambda old: {"n": old["n"] + 1})
    await session.add_artifacts([art("plan", "v2"), art(None, "x")])
    assert events == [
        MessagesAdded((hello,)),
        MessagesSet((hello,)),
        CustomChanged({"n": 0}, {"n": 1}),
        ArtifactAdded(art("plan", "v2"), replaced=True),
        ArtifactAdded(art(None, "x"), replaced=False),
    ]
    unsubscribe()
    unsubscribe()  # twice is harmless
    await session.add_messages(msg("user", "unseen"))
    assert len(events) == 5


async def test_current_session_follows_the_task_tree() -> None:
    outer, inner = Session("outer"), Session("inner")

    async def child() -> str:
        await asyncio.sleep(0)
        return get_current_session().id

    async def flow() -> list[str]:
        seen = [get_current_session().id]
        seen += await asyncio.gather(child(), asyncio.create_task(child()))
        seen.append(await run_with_session(inner, child()))
        seen.append(get_current_session().id)  # restored after the nested binding
        return seen

    assert await run_with_session(outer, flow()) == ["outer", "outer", "outer", "inner", "outer"]
    # Two concurrent flows each see their own session.
    a, b = await asyncio.gather(run_with_session(outer, child()), run_with_session(inner, child()))
    assert (a, b) == ("outer", "inner")


async def test_no_current_session_is_an_error() -> None:
    with pytest.raises(TurnkitError) as err:
        get_current_session()
    assert err.value.status == "FAILED_PRECONDITION"

    async def boom() -> None:
        raise ValueError("inside")

    with pytest.raises(ValueError):
        await run_with_session(Session(), boom())
    with pytest.raises(TurnkitError):
        get_current_session()  # unbound again after an exception
