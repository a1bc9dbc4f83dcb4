"""Review fixes to the chat and session surface, each as Genkit Python 0.12 behaves:
`chat(state=)` is the custom state (with `messages=` / `artifacts=`, and `session_state=` for a whole
state); `chat.abort()` aborts the chat's snapshot when no turn of it runs; a store written as seed
000 shows types as `store=`; `Session(store=...)` persists through `run_with_session`; and the nits
(`task.wait(interval)` without a hidden timeout, `resume(metadata=)`, `str(AgentError)`, a turn the
caller stopped waiting for keeps its prompt)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from http_support import serve_async
from turnkit import AgentInput, Artifact, Message, Part, Turnkit, TurnkitError
from turnkit.agents import Agent, AgentContext, AgentError, AgentSession, DetachedTask, TurnContext
from turnkit.http import create_app, remote_agent
from turnkit.sessions import (
    InMemorySessionStore,
    Session,
    SqliteSessionStore,
    get_current_session,
    run_with_session,
)
from turnkit.testing import ProgrammableModel
from turnkit.types import SessionSnapshot, SessionState, SnapshotStatus


def reply(text: str) -> dict[str, Any]:
    return {"message": {"role": "model", "content": [{"text": text}]}, "finishReason": "stop"}


def user(text: str) -> Message:
    return Message(role="user", content=[Part(text=text)])


def texts(messages: list[Message]) -> list[str]:
    return [m.text for m in messages]


class Tally(BaseModel):
    n: int = 0
    seen: list[str] = []


def tally_agent(ai: Turnkit, *, store: InMemorySessionStore | None = None) -> Agent[Tally]:
    """Counts turns in typed state and answers with what it saw: history, state and artifacts."""

    async def fn(sess: AgentSession[Tally], ctx: AgentContext) -> Any:
        async def turn(item: AgentInput, tc: TurnContext) -> None:
            said = item.message.text if item.message else ""
            new = await sess.update_custom(lambda t: Tally(n=t.n + 1, seen=[*t.seen, said]))
            history = texts(await sess.get_messages())
            names = [a.name for a in await sess.get_artifacts()]
            answer = f"n={new.n} history={history} artifacts={names}"
            await sess.add_messages([Message(role="model", content=[Part(text=answer)])])

        await sess.run(turn)
        return await sess.result()

    return ai.define_custom_agent("tally", fn, store=store, state_schema=Tally)


@pytest.fixture
async def served(ai: Turnkit) -> AsyncIterator[str]:
    async with serve_async(create_app(ai)) as url:
        yield url


# --- 1. chat(state=) is the custom state ------------------------------------------------------


@pytest.mark.parametrize("remote", [False, True], ids=["local", "remote"])
async def test_chat_state_is_the_custom_state_beside_messages_and_artifacts(
    ai: Turnkit, remote: bool
) -> None:
    agent = tally_agent(ai)
    async with serve_async(create_app(ai)) as url:
        client = remote_agent(f"{url}/agents/tally", state_management="client", state_schema=Tally)
        async with client:
            target: Any = client if remote else agent
            chat = target.chat(
                messages=[user("earlier"), {"role": "model", "content": [{"text": "noted"}]}],
                artifacts=[Artifact(name="notes", parts=[Part(text="x")])],
                state={"n": 2, "seen": ["before"]},
            )
            assert chat.state == Tally(n=2, seen=["before"])  # dropped before: read as Tally()
            assert texts(chat.messages) == ["earlier", "noted"]
            res = await chat.send("now")
            assert res.state == Tally(n=3, seen=["before", "now"])
            assert res.text == "n=3 history=['earlier', 'noted', 'now'] artifacts=['notes']"
            typed = target.chat(state=Tally(n=7))  # an S instance, as Genkit takes it
            assert (await typed.send("x")).state.n == 8
            # The whole state, as chat.session_state gives it, continues a conversation.
            resumed = target.chat(session_state=chat.session_state)
            assert (await resumed.send("again")).state == Tally(n=4, seen=["before", "now", "again"])


def test_chat_state_is_checked_and_a_whole_state_in_its_place_is_refused(ai: Turnkit) -> None:
    client = tally_agent(ai)
    with pytest.raises(TurnkitError) as err:
        client.chat(state={"n": "many"})
    assert err.value.status == "INVALID_ARGUMENT" and "custom state" in err.value.message
    wholes: list[Any] = [SessionState(custom={"n": 1}), {"custom": {"n": 1}, "messages": []}]
    for whole in wholes:
        with pytest.raises(TurnkitError) as err:
            client.chat(state=whole)
        assert err.value.status == "INVALID_ARGUMENT" and "session_state=" in err.value.message
    with pytest.raises(TurnkitError) as err:
        client.chat(session_state=SessionState(), state={"n": 1})
    assert err.value.status == "INVALID_ARGUMENT"
    with pytest.raises(TurnkitError) as err:
        client.chat(snapshot_id=5)  # type: ignore[arg-type]
    assert err.value.status == "INVALID_ARGUMENT"
    server = ai.define_agent("srv", store=InMemorySessionStore())
    seeds: list[dict[str, Any]] = [
        {"messages": [user("x")]},
        {"artifacts": []},
        {"state": {}},
        {"session_state": {}},
    ]
    for given in seeds:
        with pytest.raises(TurnkitError) as err:
            server.chat(**given)
        assert err.value.status == "FAILED_PRECONDITION" and next(iter(given)) in err.value.message


async def test_untyped_chat_state_is_kept_as_given(ai: Turnkit, pm: ProgrammableModel) -> None:
    agent = ai.define_agent("plain")
    pm.program([reply("ok")])
    chat = agent.chat(state={"messages": "a custom key that happens to share a name"})
    res = await chat.send("hi")
    assert res.state == {"messages": "a custom key that happens to share a name"}


# --- 2. chat.abort() aborts the chat's snapshot ----------------------------------------------


async def _blocked(request: Any, ctx: Any) -> Any:
    await asyncio.Event().wait()


@pytest.mark.parametrize("remote", [False, True], ids=["local", "remote"])
async def test_chat_abort_after_detach_aborts_the_pending_turn(
    ai: Turnkit, pm: ProgrammableModel, served: str, remote: bool
) -> None:
    agent = ai.define_agent("worker", store=InMemorySessionStore())
    client = remote_agent(f"{served}/agents/worker", state_management="server")
    async with client:
        chat: Any = (client if remote else agent).chat()
        pm.program([reply("hello")])
        first = await chat.send("hi")
        pm.handler = _blocked
        task = await chat.detach("a long task")
        await pm.wait_for_calls(2)  # the detached turn is in its model call
        assert await chat.abort() is SnapshotStatus.PENDING  # was a no-op returning None
        final = await task.wait(0.005, timeout=5)
        assert final.status is SnapshotStatus.ABORTED
        assert await chat.abort() is SnapshotStatus.ABORTED  # already over: said, not rewritten
        pm.handler = None
        pm.program([reply("back")])
        res = await chat.send("next")  # continues from the last completed turn
        assert texts(pm.requests[-1].messages) == ["hi", "hello", "next"]
        assert res.snapshot_id not in (first.snapshot_id, task.snapshot_id)


async def test_chat_abort_of_a_completed_snapshot_leaves_it(ai: Turnkit, pm: ProgrammableModel) -> None:
    agent = ai.define_agent("quick", store=InMemorySessionStore())
    chat = agent.chat()
    pm.program([reply("done")])
    res = await chat.send("x")
    assert await chat.abort() is SnapshotStatus.COMPLETED
    snap = await agent.get_snapshot(res.snapshot_id)
    assert snap is not None and snap.status is SnapshotStatus.COMPLETED


async def test_chat_abort_with_nothing_to_abort_says_so(ai: Turnkit, pm: ProgrammableModel) -> None:
    for agent in (ai.define_agent("cm"), ai.define_agent("sm", store=InMemorySessionStore())):
        with pytest.raises(TurnkitError) as err:
            await agent.chat().abort()  # client-managed, or no turn yet: no snapshot
        assert err.value.status == "FAILED_PRECONDITION" and "nothing to abort" in err.value.message


async def test_chat_abort_of_a_running_turn_stops_it_and_returns_none(
    ai: Turnkit, pm: ProgrammableModel
) -> None:
    agent = ai.define_agent("talker", store=InMemorySessionStore())
    pm.handler = _blocked
    chat = agent.chat()
    sending = asyncio.ensure_future(chat.send("work"))
    await pm.wait_for_calls(1)
    assert await chat.abort() is None
    res = await asyncio.wait_for(sending, 5)
    assert res.finish_reason == "aborted"


async def test_abort_before_a_send_starts_is_not_lost(ai: Turnkit, pm: ProgrammableModel) -> None:
    agent = ai.define_agent("talker", store=InMemorySessionStore())
    pm.handler = _blocked
    chat = agent.chat()
    async with chat._lock:  # hold the turn back (as a turn before it would) while abort() comes in
        sending = asyncio.ensure_future(chat.send("work"))
        await asyncio.sleep(0)  # the send has started and waits for the chat's turn lock
        assert await chat.abort() is None
    res = await asyncio.wait_for(sending, 5)
    assert res.finish_reason == "aborted" and pm.calls == 0


async def test_a_streaming_turn_cancelled_before_it_starts_leaves_abort_alone(
    ai: Turnkit, pm: ProgrammableModel
) -> None:
    agent = ai.define_agent("talker", store=InMemorySessionStore())
    chat = agent.chat()
    pm.program([reply("one"), reply("two")])
    await chat.send("first")
    turn = chat.send_stream("never sent")
    turn.response.cancel()  # before its first step: the turn never runs
    with pytest.raises(asyncio.CancelledError):
        await turn
    assert await chat.abort() is SnapshotStatus.COMPLETED  # the snapshot's status, not "a turn waits"
    assert (await chat.send("second")).text == "two"  # and no stale abort stops the next turn


# --- 3./4. a store as seed 000 writes one (its typing: tests/typing_cases/correct_usage.py) ----


class SeedStore:
    """Seed 000's custom store shape (a dict instead of Redis): two methods, no `context`."""

    def __init__(self) -> None:
        self.rows: dict[str, str] = {}

    async def get_snapshot(
        self, *, snapshot_id: str | None = None, session_id: str | None = None
    ) -> SessionSnapshot | None:
        if snapshot_id is not None:
            data = self.rows.get(snapshot_id)
            return None if data is None else SessionSnapshot.model_validate_json(data)
        found = [SessionSnapshot.model_validate_json(d) for d in self.rows.values()]
        mine = [s for s in found if s.session_id == session_id]
        return max(mine, key=lambda s: s.created_at) if mine else None

    async def save_snapshot(
        self, snapshot_id: str | None, fn: Callable[[SessionSnapshot | None], SessionSnapshot | None]
    ) -> SessionSnapshot | None:
        assert snapshot_id is not None
        existing = await self.get_snapshot(snapshot_id=snapshot_id)
        new = fn(existing)
        if new is not None:
            self.rows[snapshot_id] = new.model_dump_json()
        return new


# --- 4. Session(store=...) persists through run_with_session ---------------------------------


async def remember(word: str) -> list[str]:
    """A flow as seed 000 writes one: read the bound session, do work, write to it."""
    sess: Session[Tally] = get_current_session()
    before = texts(await sess.get_messages())
    await sess.add_messages(user(word))
    await sess.update_custom(lambda t: Tally(n=t.n + 1, seen=[*t.seen, word]))
    await sess.add_artifacts(Artifact(name="last", parts=[Part(text=word)]))
    return before


async def test_session_with_a_store_persists_across_calls(
    tmp_path: Path, ai: Turnkit, pm: ProgrammableModel
) -> None:
    path = tmp_path / "sessions.db"
    first_store = SqliteSessionStore(path)
    session: Session[Tally] = Session(store=first_store, state_schema=Tally)
    assert await run_with_session(session, remember("one")) == []
    await first_store.close()

    # Another call (a new Session object, a new store on the same database): the history is there.
    store = SqliteSessionStore(path)
    again: Session[Tally] = Session(session.id, store=store, state_schema=Tally)
    assert await run_with_session(session=again, coro=remember("two")) == ["one"]
    assert await again.get_custom() == Tally(n=2, seen=["one", "two"])
    head = await store.get_snapshot(session_id=session.id)
    assert head is not None and head.status is SnapshotStatus.COMPLETED and head.parent_id is not None
    assert head.state is not None and texts(head.state.messages or []) == ["one", "two"]
    assert [a.parts[0].text for a in head.state.artifacts or []] == ["two"]

    # An agent on the same store continues the session.
    agent = ai.define_agent("continues", store=store, state_schema=Tally)
    pm.program([reply("three")])
    res = await agent.chat(session_id=session.id).send("and then")
    assert texts(pm.requests[0].messages) == ["one", "two", "and then"] and res.state.n == 2
    await store.close()


async def test_session_is_not_saved_when_the_flow_raises_or_changes_nothing(tmp_path: Path) -> None:
    store = SqliteSessionStore(tmp_path / "s.db")
    session: Session[Any] = Session("s1", store=store, messages=[user("start")])

    async def reads() -> int:
        return len(await get_current_session().get_messages())

    assert await run_with_session(session, reads()) == 1
    assert await store.get_snapshot(session_id="s1") is None  # nothing changed: nothing written

    async def fails() -> None:
        await get_current_session().add_messages(user("half done"))
        raise ValueError("boom")

    with pytest.raises(ValueError):
        await run_with_session(session, fails())
    assert await store.get_snapshot(session_id="s1") is None
    await store.close()


async def test_explicit_save_and_load(tmp_path: Path) -> None:
    store = SqliteSessionStore(tmp_path / "s.db")
    session: Session[Any] = Session("s2", store=store, custom={"k": 1})
    await session.add_messages(user("hello"))
    first = await session.save()
    await session.update_custom(lambda c: {"k": 2})
    second = await session.save()
    snap = await store.get_snapshot(snapshot_id=second)
    assert snap is not None and snap.parent_id == first and snap.state is not None
    assert snap.state.custom == {"k": 2}
    other: Session[Any] = Session("s2", store=store)
    assert await other.load() is True
    assert await other.get_custom() == {"k": 2} and texts(await other.get_messages()) == ["hello"]
    assert await Session("nobody", store=store).load() is False
    with pytest.raises(TurnkitError) as err:
        await Session().save()
    assert err.value.status == "FAILED_PRECONDITION"
    await store.close()


async def test_changes_made_before_binding_a_stored_session_are_not_silently_lost(tmp_path: Path) -> None:
    store = SqliteSessionStore(tmp_path / "s.db")
    await Session("s3", store=store, custom={"k": 1}).save()
    stale: Session[Any] = Session("s3", store=store)
    await stale.add_messages(user("written before loading"))
    with pytest.raises(TurnkitError) as err:
        await run_with_session(stale, remember("x"))
    assert err.value.status == "FAILED_PRECONDITION"
    fresh: Session[Any] = Session("new-one", store=store)
    await fresh.add_messages(user("first"))  # nothing stored yet: kept, and saved on the way out
    await run_with_session(fresh, asyncio.sleep(0))
    snap = await store.get_snapshot(session_id="new-one")
    assert snap is not None and snap.state is not None and texts(snap.state.messages or []) == ["first"]
    await store.close()


async def test_a_seed_style_store_backs_a_session() -> None:
    store = SeedStore()
    session: Session[Any] = Session(store=store)
    await run_with_session(session, _add("hi"))
    again: Session[Any] = Session(session.id, store=store)
    await run_with_session(again, _add("there"))
    assert texts(await again.get_messages()) == ["hi", "there"] and len(store.rows) == 2


async def _add(word: str) -> None:
    await get_current_session().add_messages(user(word))


# --- 5. nits ----------------------------------------------------------------------------------


async def test_detached_wait_takes_interval_positionally_and_has_no_hidden_timeout(
    ai: Turnkit, pm: ProgrammableModel
) -> None:
    for method in (DetachedTask.wait, DetachedTask.output):
        params = inspect.signature(method).parameters
        assert params["timeout"].default is None and params["timeout"].kind is inspect.Parameter.KEYWORD_ONLY
        assert params["interval"].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    agent = ai.define_agent("bg", store=InMemorySessionStore())
    pm.program([reply("done")])
    task = await agent.chat().detach("x")
    assert (await task.wait(0.005)).status is SnapshotStatus.COMPLETED
    assert (await task.output(0.005)).message is not None


async def test_resume_takes_genkits_metadata_keyword(ai: Turnkit, pm: ProgrammableModel) -> None:
    ai.define_interrupt(name="ask", description="Ask the user.")
    agent = ai.define_agent("asker", tools=["ask"], store=InMemorySessionStore())
    call = {"toolRequest": {"name": "ask", "input": {}, "ref": "r1"}}
    pm.program([{"message": {"role": "model", "content": [call]}}, reply("thanks")])
    chat = agent.chat()
    res = await chat.send("go")
    with pytest.raises(TurnkitError) as err:
        await chat.resume(respond=[res.interrupts[0].respond("yes")], metadata={"by": "ada"})
    assert err.value.status == "UNIMPLEMENTED" and "resumed_metadata" in err.value.message
    done = await chat.resume(respond=[res.interrupts[0].respond("yes")], metadata=None)
    assert done.text == "thanks"


async def test_str_of_an_agent_error_is_its_message(ai: Turnkit, pm: ProgrammableModel) -> None:
    async def down(request: Any, ctx: Any) -> Any:
        raise TurnkitError("UNAVAILABLE", "the model is down")

    pm.handler = down
    with pytest.raises(AgentError) as err:
        await ai.define_agent("x").chat().send("hi")
    assert str(err.value) == "the model is down" and err.value.status == "UNAVAILABLE"
    assert str(TurnkitError("UNAVAILABLE", "m")) == "UNAVAILABLE: m"  # plain errors keep their form


@pytest.mark.parametrize("store", [True, False], ids=["server", "client"])
async def test_a_turn_the_caller_stopped_waiting_for_keeps_its_prompt(
    ai: Turnkit, pm: ProgrammableModel, store: bool
) -> None:
    agent = ai.define_agent("talker", store=InMemorySessionStore() if store else None)
    chat = agent.chat()
    pm.program([reply("one")])
    await chat.send("my name is Ada")
    pm.gate = asyncio.Event()  # the model never answers while we wait
    turn = chat.send_stream("write a long essay")
    await pm.wait_for_calls(2)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(turn.response, 0.01)
    assert texts(chat.messages) == ["my name is Ada", "one", "write a long essay"]
    pm.gate = None
    pm.program([reply("Ada")])
    res = await chat.send("what is my name")
    expected = ["my name is Ada", "one", "write a long essay", "what is my name", "Ada"]
    assert texts(chat.messages) == expected == texts(res.messages)
