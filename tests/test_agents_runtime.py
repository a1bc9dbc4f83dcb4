"""The agent runtime: sessions under a turn, the three ways to define an agent, the connection,
snapshot semantics (chains, branches, statuses, expiry, walk-back), abort, detach, concurrency."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from turnkit import (
    AgentInit,
    AgentInput,
    AgentStreamChunk,
    Artifact,
    Message,
    ModelRequest,
    ModelResponse,
    ModelResponseChunk,
    Part,
    SessionSnapshot,
    SessionState,
    Turnkit,
    TurnkitError,
)
from turnkit.agents import Agent, AgentConnection, AgentContext, AgentError, AgentSession, TurnContext
from turnkit.models import ModelContext
from turnkit.sessions import InMemorySessionStore, get_current_session
from turnkit.testing import ProgrammableModel


def reply(text: str) -> dict[str, Any]:
    return {"message": {"role": "model", "content": [{"text": text}]}, "finishReason": "stop"}


def calls(*requests: tuple[str, dict[str, Any], str]) -> dict[str, Any]:
    content = [{"toolRequest": {"name": n, "input": i, "ref": r}} for n, i, r in requests]
    return {"message": {"role": "model", "content": content}, "finishReason": "stop"}


def user(text: str) -> AgentInput:
    return AgentInput(message=Message(role="user", content=[Part(text=text)]))


def model(text: str) -> Message:
    return Message(role="model", content=[Part(text=text)])


def texts(messages: list[Message] | None) -> list[str]:
    return [m.text for m in messages or [] if m.text]


async def turn_chunks(conn: AgentConnection) -> list[AgentStreamChunk]:
    return [c async for c in conn.receive()]


async def eventually(check: Any, within: float = 1.0) -> None:
    """Wait (polling the event loop) until `check()` is true; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.002)


async def until_in_flight(pm: ProgrammableModel, n: int = 1) -> None:
    """Wait until the model has been called `n` times (so a turn is held on `pm.gate`)."""
    await eventually(lambda: pm.calls >= n)


def echo_agent(ai: Turnkit, store: InMemorySessionStore | None, name: str = "echo") -> Agent:
    """A custom agent whose turn answers `echo: <text>`, or fails when the text is "fail"."""

    async def fn(sess: AgentSession, ctx: AgentContext) -> Any:
        async def turn(item: AgentInput, tc: TurnContext) -> None:
            said = item.message.text if item.message else ""
            if said == "fail":
                raise TurnkitError("UNAVAILABLE", "scripted failure")
            await sess.add_messages([model(f"echo: {said}")])

        await sess.run(turn)
        return await sess.result()

    return ai.define_custom_agent(name=name, fn=fn, store=store)


class Counter(BaseModel):
    count: int = 0


# --- 1. sessions under a turn --------------------------------------------------------------------


async def test_tool_updates_custom_state_through_the_current_session(
    ai: Turnkit, pm: ProgrammableModel
) -> None:
    seen: list[Any] = []

    @ai.tool()
    async def bump() -> str:
        """Count a visit."""
        session = ai.current_session()
        seen.append((session, get_current_session()))
        new = await session.update_custom(lambda c: {"count": (c or {}).get("count", 0) + 1})
        return f"count is {new['count']}"

    store = InMemorySessionStore()
    agent = ai.define_agent(name="counter", tools=[bump], store=store)
    # Two calls in one model response: the tools run concurrently, both see the turn's session.
    pm.program(
        [calls(("bump", {}, "a"), ("bump", {}, "b")), reply("done"), calls(("bump", {}, "c")), reply("ok")]
    )
    chat = agent.chat()
    turn = chat.send_stream("count")
    patches = [c.raw.custom_patch async for c in turn.stream if c.raw.custom_patch]
    res = await turn.response
    assert res.custom == {"count": 2} and chat.custom == {"count": 2}
    assert len(patches) == 2
    assert [p.to_wire() for p in patches[0]] == [{"op": "replace", "path": "", "value": {"count": 1}}]
    assert [p.to_wire() for p in patches[1]] == [{"op": "replace", "path": "/count", "value": 2}]
    assert len({id(s) for pair in seen for s in pair}) == 1  # one session, by both accessors
    snap = await agent.get_snapshot(res.snapshot_id)
    assert snap is not None and snap.state is not None and snap.state.custom == {"count": 2}
    # The next turn's tool sees the stored state.
    res2 = await chat.send("again")
    assert res2.custom == {"count": 3}
    assert "count is 3" in str(pm.requests[-1].messages[-1].to_wire())
    with pytest.raises(TurnkitError) as err:
        ai.current_session()  # no turn is running here
    assert err.value.status == "FAILED_PRECONDITION"


async def test_custom_agent_sees_its_session_as_current(ai: Turnkit) -> None:
    async def fn(sess: AgentSession, ctx: AgentContext) -> Any:
        async def turn(item: AgentInput, tc: TurnContext) -> None:
            current = get_current_session()
            assert current is sess.session and current.id == sess.id

            async def child() -> Any:
                return get_current_session()

            assert await asyncio.ensure_future(child()) is current  # also in tasks the handler starts
            await current.add_messages([model("seen")])

        await sess.run(turn)
        return await sess.result()

    agent = ai.define_custom_agent(name="current", fn=fn)
    res = await agent.chat().send("hi")
    assert res.finish_reason == "stop" and res.text == "seen"


# --- 2a. define_agent ----------------------------------------------------------------------------


async def test_define_agent_sends_system_config_and_tools(ai: Turnkit, pm: ProgrammableModel) -> None:
    @ai.tool()
    async def noop() -> str:
        """Do nothing."""
        return "nothing"

    agent = ai.define_agent(
        name="configured",
        model="programmableModel",
        system="Be brief.",
        tools=[noop],
        config={"temperature": 0.1},
        description="A configured agent.",
    )
    assert agent.description == "A configured agent." and ai.agent("configured") is agent
    assert agent.metadata == {
        "stateManagement": "client",
        "abortable": False,
        "description": "A configured agent.",
    }
    pm.program([reply("a"), reply("b")])
    chat = agent.chat()
    await chat.send("one")
    res = await chat.send("two")
    for request in pm.requests:
        assert request.messages[0] == Message(role="system", content=[Part(text="Be brief.")])
        assert request.config == {"temperature": 0.1}
        assert [t.name for t in request.tools or []] == ["noop"]
    # The system prompt is sent every turn but never stored in the history.
    assert [m.role for m in res.messages] == ["user", "model", "user", "model"]


async def test_define_agent_max_turns_bounds_the_tool_loop(ai: Turnkit, pm: ProgrammableModel) -> None:
    @ai.tool()
    async def again() -> str:
        """Loop."""
        return "more"

    agent = ai.define_agent(name="loop", tools=[again], max_turns=2, store=InMemorySessionStore())
    pm.handler = lambda request, ctx: calls(("again", {}, f"r{len(request.messages)}"))
    with pytest.raises(AgentError) as failed:
        await agent.chat().send("go")
    assert failed.value.response.finish_reason == "failed"
    assert failed.value.status == "RESOURCE_EXHAUSTED" and "max_turns" in failed.value.message
    assert pm.calls == 3  # two tool rounds allowed, the third request is refused


async def test_state_schema_rejects_invalid_update_during_a_turn(ai: Turnkit, pm: ProgrammableModel) -> None:
    @ai.tool()
    async def set_count(value: str) -> str:
        """Set the counter."""
        await ai.current_session().update_custom(lambda c: {"count": value})
        return "set"

    agent = ai.define_agent(
        name="typed", tools=[set_count], state_schema=Counter, store=InMemorySessionStore()
    )
    assert agent.metadata["stateSchema"]["properties"]["count"]["type"] == "integer"
    pm.program(
        [calls(("set_count", {"value": "7"}, "a")), reply("ok"), calls(("set_count", {"value": "x"}, "b"))]
    )
    chat = agent.chat()
    good = await chat.send("seven")
    assert good.session_state.custom == {"count": 7}  # coerced and stored in JSON form
    with pytest.raises(AgentError) as bad:
        await chat.send("bad")
    assert bad.value.response.finish_reason == "failed"
    assert bad.value.status == "INVALID_ARGUMENT" and "invalid custom state" in bad.value.message
    assert bad.value.snapshot_id == good.snapshot_id
    snap = await agent.get_snapshot(session_id=good.session_id)
    assert snap is not None and snap.state is not None and snap.state.custom == {"count": 7}


async def test_state_schema_rejects_invalid_client_state(ai: Turnkit, pm: ProgrammableModel) -> None:
    json_schema = {"type": "object", "properties": {"count": {"type": "integer"}}, "required": ["count"]}
    for name, schema in (("pydantic", Counter), ("jsonschema", json_schema)):
        agent = ai.define_agent(name=name, state_schema=schema)
        with pytest.raises(TurnkitError) as err:
            await agent.chat(state={"count": "many"}).send("hi")
        assert err.value.status == "INVALID_ARGUMENT", name
        with pytest.raises(TurnkitError) as err:
            await agent.stream_bidi({"state": {"custom": {"count": []}}})
        assert err.value.status == "INVALID_ARGUMENT", name
    assert pm.calls == 0
    pm.program([reply("fine")])
    res = await ai.agent("jsonschema").chat(state={"count": 1}).send("hi")
    assert res.finish_reason == "stop" and res.custom == {"count": 1}


def redact(state: Any) -> Any:
    """A state transform hiding `secret` from clients."""
    custom = {k: v for k, v in (state.custom or {}).items() if k != "secret"}
    return state.model_copy(update={"custom": custom})


def secret_agent(ai: Turnkit, store: InMemorySessionStore | None, name: str) -> Agent:
    async def fn(sess: AgentSession, ctx: AgentContext) -> Any:
        async def turn(item: AgentInput, tc: TurnContext) -> None:
            await sess.update_custom(lambda c: {"visible": 1, "secret": "s3cr3t"})
            await sess.add_messages([model("done")])

        await sess.run(turn)
        return await sess.result()

    return ai.define_custom_agent(name=name, fn=fn, store=store, state_transform=redact)


async def test_state_transform_shapes_output_state_and_snapshots(ai: Turnkit) -> None:
    client = secret_agent(ai, None, "client")
    res = await client.chat().send("hi")
    assert res.output.state is not None and res.output.state.custom == {"visible": 1}

    store = InMemorySessionStore()
    server = secret_agent(ai, store, "server")
    res = await server.chat().send("hi")
    assert res.custom == {"visible": 1}
    for snap in (
        await server.get_snapshot(res.snapshot_id),
        await server.get_snapshot(session_id=res.session_id),
    ):
        assert snap is not None and snap.state is not None and snap.state.custom == {"visible": 1}
    # The store keeps the real state; only what clients see is transformed.
    raw = await store.get_snapshot(snapshot_id=res.snapshot_id)
    assert (
        raw is not None and raw.state is not None and raw.state.custom == {"visible": 1, "secret": "s3cr3t"}
    )


async def test_state_transform_also_shapes_streamed_custom_patches(ai: Turnkit) -> None:
    agent = secret_agent(ai, InMemorySessionStore(), "server")
    turn = agent.chat().send_stream("hi")
    streamed = [c.raw.to_wire() async for c in turn.stream]
    await turn.response
    assert "s3cr3t" not in str(streamed)


async def test_chunk_transform_modifies_and_drops_chunks(ai: Turnkit, pm: ProgrammableModel) -> None:
    def transform(chunk: AgentStreamChunk) -> AgentStreamChunk | None:
        if chunk.model_chunk is not None:
            if "internal" in chunk.model_chunk.text:
                return None
            content = [Part(text=chunk.model_chunk.text.upper())]
            return chunk.model_copy(
                update={"model_chunk": chunk.model_chunk.model_copy(update={"content": content})}
            )
        return chunk

    agent = ai.define_agent(name="loud", chunk_transform=transform, store=InMemorySessionStore())
    pm.program(
        [reply("hello world")],
        [
            [
                {"content": [{"text": "hello"}]},
                {"content": [{"text": "(internal note)"}]},
                {"content": [{"text": " world"}]},
            ]
        ],
    )
    conn = await agent.stream_bidi()
    await conn.send(user("hi"))
    chunks = await turn_chunks(conn)
    assert [c.model_chunk.text for c in chunks if c.model_chunk] == ["HELLO", " WORLD"]
    assert chunks[-1].turn_end is not None
    out = await conn.output()
    assert out.message is not None and out.message.text == "hello world"  # the output is untouched


# --- 2b. define_prompt_agent ---------------------------------------------------------------------


async def test_prompt_agent_looks_its_prompt_up_when_a_turn_runs(ai: Turnkit, pm: ProgrammableModel) -> None:
    agent = ai.define_prompt_agent(name="pirate", prompt="persona", prompt_input={"who": "a pirate"})
    ai.define_prompt(name="persona", system="You are {{who}}.", config={"temperature": 0.5})  # defined after
    pm.program([reply("Arr."), reply("Aye.")])
    chat = agent.chat()
    await chat.send("hello")
    res = await chat.send("again")
    assert [(m.role, m.text) for m in pm.requests[1].messages] == [
        ("system", "You are a pirate."),
        ("user", "hello"),
        ("model", "Arr."),
        ("user", "again"),
    ]
    assert pm.requests[1].config == {"temperature": 0.5}
    assert [m.role for m in res.messages] == ["user", "model", "user", "model"]


async def test_prompt_agent_with_missing_prompt_fails_the_turn_naming_it(
    ai: Turnkit, pm: ProgrammableModel
) -> None:
    agent = ai.define_prompt_agent(name="lost", prompt="nowhere", store=InMemorySessionStore())
    with pytest.raises(AgentError) as failed:
        await agent.chat().send("hi")
    assert failed.value.response.finish_reason == "failed"
    assert failed.value.status == "NOT_FOUND" and "nowhere" in failed.value.message
    assert pm.calls == 0


async def test_prompt_agent_chat_prompt_input_overrides_the_agents(
    ai: Turnkit, pm: ProgrammableModel
) -> None:
    ai.define_prompt(name="persona", system="You are {{who}}.")
    agent = ai.define_prompt_agent(
        name="persona", prompt_input={"who": "a pirate"}
    )  # prompt defaults to name
    pm.program([reply("Beep."), reply("Arr.")])
    await agent.chat(prompt_input={"who": "a robot"}).send("hi")
    await agent.chat().send("hi")
    assert pm.requests[0].messages[0].text == "You are a robot."
    assert pm.requests[1].messages[0].text == "You are a pirate."


# --- 2c. define_custom_agent ---------------------------------------------------------------------


async def test_custom_agent_turn_context_chains_snapshots(ai: Turnkit) -> None:
    seen: list[tuple[str | None, str | None, int]] = []

    async def fn(sess: AgentSession, ctx: AgentContext) -> Any:
        async def turn(item: AgentInput, tc: TurnContext) -> None:
            seen.append((tc.snapshot_id, tc.parent_snapshot_id, tc.turn_index))
            tc.send_chunk(ModelResponseChunk(role="model", content=[Part(text=f"turn {tc.turn_index}")]))
            tc.send_artifact(Artifact(name="progress", parts=[Part(text=str(tc.turn_index))]))
            await sess.add_messages([model(f"answer {tc.turn_index}")])

        await sess.run(turn)
        return await sess.result()

    agent = ai.define_custom_agent(name="custom", fn=fn, store=InMemorySessionStore())
    conn = await agent.stream_bidi()
    ends = []
    for word in ("a", "b", "c"):
        await conn.send(user(word))
        chunks = await turn_chunks(conn)
        assert [c.model_chunk.text for c in chunks if c.model_chunk] == [f"turn {len(ends)}"]
        assert [c.artifact.parts[0].text for c in chunks if c.artifact] == [str(len(ends))]
        assert chunks[-1].turn_end is not None
        ends.append(chunks[-1].turn_end.snapshot_id)
    out = await conn.output()
    assert [s[2] for s in seen] == [0, 1, 2]
    assert [s[0] for s in seen] == ends and out.snapshot_id == ends[-1]
    assert [s[1] for s in seen] == [None, ends[0], ends[1]]
    for snapshot_id, parent in zip(ends, [None, *ends[:2]], strict=True):
        snap = await agent.get_snapshot(snapshot_id)
        assert snap is not None and snap.parent_id == parent and snap.status == "completed"
    # send_artifact streams without storing; the output lists the stored ones.
    assert out.artifacts == []
    # A later connection's first turn continues the chain.
    conn2 = await agent.stream_bidi({"sessionId": out.session_id})
    await conn2.send(user("d"))
    await conn2.close()
    await conn2.output()
    assert seen[-1][1] == ends[-1] and seen[-1][2] == 0


async def test_custom_agent_handler_sees_the_abort_signal(ai: Turnkit) -> None:
    in_thread, may_return = threading.Event(), threading.Event()
    observed: list[str] = []

    def blocking_work(tc: TurnContext) -> None:
        in_thread.set()
        if tc.abort_signal.wait(5):
            observed.append("thread saw abort")
        may_return.wait(5)  # held until the test has the response: the handler cannot win the race

    async def fn(sess: AgentSession, ctx: AgentContext) -> Any:
        async def turn(item: AgentInput, tc: TurnContext) -> None:
            try:
                await asyncio.to_thread(blocking_work, tc)
            except asyncio.CancelledError:
                observed.append(f"cancelled, aborted={tc.aborted}")
                raise

        await sess.run(turn)
        return await sess.result()

    agent = ai.define_custom_agent(name="abortable", fn=fn, store=InMemorySessionStore())
    chat = agent.chat()
    sending = asyncio.ensure_future(chat.send("work"))
    assert await asyncio.to_thread(in_thread.wait, 2)
    await chat.abort()
    try:
        res = await asyncio.wait_for(sending, 1)
    finally:
        may_return.set()
    assert res.finish_reason == "aborted" and res.snapshot_id is None
    await eventually(lambda: len(observed) == 2)
    assert sorted(observed) == ["cancelled, aborted=True", "thread saw abort"]
    assert await agent.get_snapshot(session_id=res.session_id) is None  # the aborted turn saved nothing


async def test_handler_returning_after_abort_finishes_aborted(ai: Turnkit) -> None:
    async def fn(sess: AgentSession, ctx: AgentContext) -> Any:
        async def turn(item: AgentInput, tc: TurnContext) -> None:
            waiting.set()
            await tc.wait_aborted()  # cooperative: stop when asked, keeping partial work
            await sess.add_messages([model("partial")])

        await sess.run(turn)
        return await sess.result()

    waiting = asyncio.Event()
    agent = ai.define_custom_agent(name="cooperative", fn=fn, store=InMemorySessionStore())
    chat = agent.chat()
    sending = asyncio.ensure_future(chat.send("work"))
    await waiting.wait()
    await chat.abort()  # the handler is woken before the runtime's watcher can cancel it
    res = await asyncio.wait_for(sending, 1)
    assert res.finish_reason == "aborted"
    assert await agent.get_snapshot(session_id=res.session_id) is None  # no completed snapshot of it


# --- 3. the connection ---------------------------------------------------------------------------


async def test_connection_turns_end_at_turn_end_and_close_ends_the_agent(
    ai: Turnkit, pm: ProgrammableModel
) -> None:
    agent = ai.define_agent(name="conn", store=InMemorySessionStore())
    pm.program(
        [reply("one"), reply("two")], [[{"content": [{"text": "one"}]}], [{"content": [{"text": "two"}]}]]
    )
    conn = await agent.stream_bidi(init=AgentInit())
    await conn.send_text("first")
    first = await turn_chunks(conn)
    await conn.send(AgentInput(message=Message(role="user", content=[Part(text="second")])))
    second = await turn_chunks(conn)
    assert [c.model_chunk.text for c in first if c.model_chunk] == ["one"]
    assert [c.model_chunk.text for c in second if c.model_chunk] == ["two"]
    assert first[-1].turn_end is not None and second[-1].turn_end is not None
    await conn.close()
    with pytest.raises(TurnkitError) as err:
        await conn.send_text("too late")
    assert err.value.status == "FAILED_PRECONDITION"
    out = await conn.output()
    assert out.finish_reason == "stop" and out.snapshot_id == second[-1].turn_end.snapshot_id
    assert await turn_chunks(conn) == [] and conn.finished


async def test_connection_detach_mid_turn_answers_at_once_and_streams_no_more(
    ai: Turnkit, pm: ProgrammableModel
) -> None:
    release = asyncio.Event()

    async def fn(sess: AgentSession, ctx: AgentContext) -> Any:
        async def turn(item: AgentInput, tc: TurnContext) -> None:
            tc.send_chunk(ModelResponseChunk(role="model", content=[Part(text="before")]))
            await release.wait()
            tc.send_chunk(ModelResponseChunk(role="model", content=[Part(text="after")]))
            await sess.update_custom(lambda c: {"done": True})
            await sess.add_artifacts([Artifact(name="report", parts=[Part(text="r")])])
            await sess.add_messages([model("finished")])

        await sess.run(turn)
        return await sess.result()

    agent = ai.define_custom_agent(name="bg", fn=fn, store=InMemorySessionStore())
    conn = await agent.stream_bidi()
    await conn.send_text("go")
    received: list[AgentStreamChunk] = []
    reading = asyncio.ensure_future(_read_all(conn, received))
    await eventually(lambda: len(received) == 1)
    out = await conn.detach()
    assert out.finish_reason == "detached" and out.snapshot_id and out.session_id
    assert (await agent.get_snapshot(out.snapshot_id)).status == "pending"  # type: ignore[union-attr]
    release.set()
    await eventually(lambda: not agent._background)
    await asyncio.wait_for(reading, 1)
    assert [c.model_chunk.text for c in received if c.model_chunk] == ["before"]
    assert len(received) == 1  # no patch, artifact, text or turn end after the detach
    snap = await agent.get_snapshot(out.snapshot_id)
    assert snap is not None and snap.status == "completed" and snap.state is not None
    assert snap.state.custom == {"done": True} and texts(snap.state.messages) == ["go", "finished"]


async def _read_all(conn: AgentConnection, into: list[AgentStreamChunk]) -> None:
    while not conn.finished:
        async for chunk in conn.receive():
            into.append(chunk)


async def test_detached_turn_keeps_its_heartbeat_fresh(ai: Turnkit, pm: ProgrammableModel) -> None:
    agent = ai.define_agent(name="beat", store=InMemorySessionStore(), heartbeat_interval=0.01)
    pm.gate = asyncio.Event()
    pm.program([reply("done")])
    task = await agent.chat().detach("work")
    first = (await task.poll()).heartbeat_at  # type: ignore[union-attr]
    beats: list[str | None] = []

    async def beat_changed() -> None:
        while True:
            snap = await task.poll()
            beats.append(snap.heartbeat_at if snap else None)
            if beats[-1] != first:
                return
            await asyncio.sleep(0.005)

    await asyncio.wait_for(beat_changed(), 1)
    assert beats[-1] is not None and first is not None
    assert datetime.fromisoformat(beats[-1]) > datetime.fromisoformat(first)
    pm.gate.set()
    assert (await task.wait(timeout=1, interval=0.005)).status == "completed"


# --- 5. snapshot semantics -----------------------------------------------------------------------


async def test_branching_from_an_older_snapshot(ai: Turnkit) -> None:
    agent = echo_agent(ai, InMemorySessionStore())
    chat = agent.chat()
    a = await chat.send("a")
    b = await chat.send("b")
    branch = await agent.chat(snapshot_id=a.snapshot_id).send("x")
    assert texts(branch.messages) == ["a", "echo: a", "x", "echo: x"]
    assert (await agent.get_snapshot(branch.snapshot_id)).parent_id == a.snapshot_id  # type: ignore[union-attr]
    # Both children of `a` stay; the original line is untouched; the session's latest is the branch.
    kept = await agent.get_snapshot(b.snapshot_id)
    assert (
        kept is not None and kept.parent_id == a.snapshot_id and texts(kept.state.messages)[-1] == "echo: b"
    )  # type: ignore[union-attr]
    latest = await agent.get_snapshot(session_id=a.session_id)
    assert latest is not None and latest.snapshot_id == branch.snapshot_id


async def test_terminal_statuses_are_absorbing(ai: Turnkit, pm: ProgrammableModel) -> None:
    agent = echo_agent(ai, InMemorySessionStore())
    chat = agent.chat()
    done = await chat.send("a")
    failed = await chat.detach("fail")
    assert (await failed.wait(timeout=1, interval=0.005)).status == "failed"
    for snapshot_id, status in ((done.snapshot_id, "completed"), (failed.snapshot_id, "failed")):
        assert await agent.abort(snapshot_id) == status  # type: ignore[arg-type]
        snap = await agent.get_snapshot(snapshot_id)
        assert snap is not None and snap.status == status
    # A turn that finishes after being aborted does not bring its snapshot back.
    slow = ai.define_agent(name="slow", store=InMemorySessionStore())
    pm.gate = asyncio.Event()
    pm.program([reply("late")])
    task = await slow.chat().detach("go")
    await until_in_flight(pm)
    assert await task.abort() == "pending"
    pm.gate.set()
    await eventually(lambda: not slow._background)
    snap = await task.poll()
    assert snap is not None and snap.status == "aborted" and snap.finish_reason == "aborted"


async def test_pending_snapshot_reads_expired_once_its_heartbeat_is_stale(
    ai: Turnkit, pm: ProgrammableModel
) -> None:
    skew = [timedelta(0)]
    store = InMemorySessionStore(expire_after=0.5, clock=lambda: datetime.now(UTC) + skew[0])
    agent = ai.define_agent(name="stale", store=store, heartbeat_interval=60)
    pm.program([reply("base"), reply("never")])
    chat = agent.chat()
    base = await chat.send("base")
    pm.gate = asyncio.Event()
    task = await chat.detach("work")
    await until_in_flight(pm, 2)
    assert (await task.poll()).status == "pending"  # type: ignore[union-attr]
    skew[0] = timedelta(seconds=5)  # the store's clock moves past the window; no heartbeat came
    assert (await task.poll()).status == "expired"  # type: ignore[union-attr]
    assert (await agent.get_snapshot(session_id=base.session_id)).status == "expired"  # type: ignore[union-attr]
    raw = await store.backend.get_record("", task.snapshot_id)
    assert raw is not None and '"status":"pending"' in raw.data  # expired is computed, never stored
    # An expired snapshot is no resume point: the session continues from the last completed one.
    pm.gate = None
    pm.program([reply("continued")])
    res = await agent.chat(session_id=base.session_id).send("next")
    assert texts(res.messages) == ["base", "base", "next", "continued"]
    assert await agent.abort(task.snapshot_id) == "expired"
    await eventually(lambda: not agent._background)


async def test_resume_by_session_walks_back_past_failed_aborted_and_pending_heads(
    ai: Turnkit, pm: ProgrammableModel
) -> None:
    agent = echo_agent(ai, InMemorySessionStore())
    chat = agent.chat()
    good = await chat.send("good")
    sid = good.session_id

    failed = await agent.chat(session_id=sid).detach("fail")  # a failed head
    assert (await failed.wait(timeout=1, interval=0.005)).status == "failed"
    assert (await agent.get_snapshot(session_id=sid)).snapshot_id == failed.snapshot_id  # type: ignore[union-attr]
    after_failed = await agent.chat(session_id=sid).send("one")
    assert (await agent.get_snapshot(after_failed.snapshot_id)).parent_id == good.snapshot_id  # type: ignore[union-attr]

    # A pending head left by a process that died mid-turn (its lease ran out with it).
    crashed = SessionSnapshot(
        snapshot_id="crashed-turn",
        session_id=sid,
        parent_id=after_failed.snapshot_id,
        created_at="2026-01-01T00:00:00Z",
        heartbeat_at="2026-01-01T00:00:00Z",
        status="pending",
        state=SessionState(session_id=sid, messages=[]),
    )
    assert agent.store is not None
    await agent.store.save_snapshot("crashed-turn", lambda _: crashed)
    assert (await agent.get_snapshot(session_id=sid)).status == "expired"  # type: ignore[union-attr]
    after_pending = await agent.chat(session_id=sid).send("two")
    assert (await agent.get_snapshot(after_pending.snapshot_id)).parent_id == after_failed.snapshot_id  # type: ignore[union-attr]

    blocker = asyncio.Event()

    async def fn(sess: AgentSession, ctx: AgentContext) -> Any:
        async def turn(item: AgentInput, tc: TurnContext) -> None:
            await blocker.wait()

        await sess.run(turn)
        return await sess.result()

    # Same store, another agent: a live detached turn holds the session, so the next turn on it
    # waits for that one (one writer per session head) and then continues past its aborted head.
    blocked = ai.define_custom_agent(name="blocked", fn=fn, store=agent.store)
    aborted = await blocked.chat(session_id=sid).detach("aborted")
    assert (await agent.get_snapshot(session_id=sid)).status == "pending"  # type: ignore[union-attr]
    waiting = asyncio.ensure_future(agent.chat(session_id=sid).send("three"))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # queued behind the live turn
    assert await blocked.abort(aborted.snapshot_id) == "pending"
    res = await asyncio.wait_for(waiting, 5)
    assert (await agent.get_snapshot(aborted.snapshot_id)).status == "aborted"  # type: ignore[union-attr]
    assert (await agent.get_snapshot(res.snapshot_id)).parent_id == after_pending.snapshot_id  # type: ignore[union-attr]
    assert texts(res.messages) == [
        "good",
        "echo: good",
        "one",
        "echo: one",
        "two",
        "echo: two",
        "three",
        "echo: three",
    ]
    await eventually(lambda: not blocked._background)


async def test_resuming_from_a_snapshot_that_is_not_completed_is_refused(
    ai: Turnkit, pm: ProgrammableModel
) -> None:
    agent = ai.define_agent(name="bg", store=InMemorySessionStore())
    pm.gate = asyncio.Event()
    pm.program([reply("x")])
    task = await agent.chat().detach("work")
    with pytest.raises(TurnkitError) as err:
        await agent.chat(snapshot_id=task.snapshot_id).send("next")
    assert err.value.status == "FAILED_PRECONDITION" and "pending" in err.value.message
    await task.abort()
    with pytest.raises(TurnkitError) as err:
        await agent.stream_bidi({"snapshotId": task.snapshot_id})
    assert err.value.status == "FAILED_PRECONDITION" and "aborted" in err.value.message


async def test_init_misuse_is_thrown_before_any_turn(ai: Turnkit, pm: ProgrammableModel) -> None:
    server = echo_agent(ai, InMemorySessionStore(), "server")
    client = echo_agent(ai, None, "client")
    mine = await server.chat().send("mine")
    theirs = await server.chat().send("theirs")
    cases: list[tuple[Agent, dict[str, Any], str]] = [
        (client, {"sessionId": "s1"}, "FAILED_PRECONDITION"),
        (client, {"snapshotId": "x"}, "FAILED_PRECONDITION"),
        (server, {"state": {"messages": []}}, "FAILED_PRECONDITION"),
        (server, {"snapshotId": "missing"}, "NOT_FOUND"),
        (server, {"sessionId": mine.session_id, "snapshotId": theirs.snapshot_id}, "INVALID_ARGUMENT"),
    ]
    for agent, init, status in cases:
        with pytest.raises(TurnkitError) as err:
            await agent.stream_bidi(init)
        assert err.value.status == status, init
    conn = await client.stream_bidi()
    with pytest.raises(TurnkitError) as err:
        await conn.send(AgentInput(message=Message(role="user", content=[Part(text="x")]), detach=True))
    assert err.value.status == "FAILED_PRECONDITION"
    await conn.close()
    # The same pair, session and its own snapshot, is accepted.
    ok = await server.stream_bidi({"sessionId": mine.session_id, "snapshotId": mine.snapshot_id})
    await ok.send(user("again"))
    await ok.close()
    assert (await ok.output()).finish_reason == "stop"


# --- 5. aborting an attached turn ----------------------------------------------------------------


async def test_turn_abort_cancels_a_tool_blocked_forever(ai: Turnkit, pm: ProgrammableModel) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    @ai.tool()
    async def wait_forever() -> str:
        """Never returns."""
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()
        return "unreachable"

    agent = ai.define_agent(name="stuck", tools=[wait_forever], store=InMemorySessionStore())
    pm.program([reply("before"), calls(("wait_forever", {}, "w")), reply("never")])
    chat = agent.chat()
    before = await chat.send("warm up")
    turn = chat.send_stream("block")
    await asyncio.wait_for(started.wait(), 1)
    res = await asyncio.wait_for(turn.abort(), 1)
    assert cancelled.is_set()
    assert res.finish_reason == "aborted" and res.snapshot_id == before.snapshot_id
    assert pm.calls == 2  # the model was not called again after the abort
    # Nothing of the aborted turn was stored; the chat goes on from the last good snapshot.
    assert (await agent.get_snapshot(session_id=before.session_id)).snapshot_id == before.snapshot_id  # type: ignore[union-attr]
    pm.program([reply("fresh")])
    after = await chat.send("again")
    assert texts(after.messages) == ["warm up", "before", "again", "fresh"]


async def test_chat_abort_stops_a_sync_model_polling_its_abort_signal(ai: Turnkit) -> None:
    entered, noticed, may_return = threading.Event(), threading.Event(), threading.Event()

    def slow_model(request: ModelRequest, ctx: ModelContext) -> ModelResponse:
        entered.set()
        while not ctx.abort_signal.wait(0.005):
            pass
        noticed.set()
        may_return.wait(5)  # held until the test has the response (see the abort-ordering test below)
        return ModelResponse.from_wire(reply("stopped early"))

    ai.define_model(name="slow", fn=slow_model)
    agent = ai.define_agent(name="slowpoke", model="slow")
    chat = agent.chat()
    sending = asyncio.ensure_future(chat.send("think hard"))
    assert await asyncio.to_thread(entered.wait, 2)
    await chat.abort()
    try:
        res = await asyncio.wait_for(sending, 1)
    finally:
        may_return.set()
    assert res.finish_reason == "aborted"
    assert await asyncio.to_thread(noticed.wait, 1)  # the model thread saw the abort and stopped


async def test_turn_abort_right_after_send_stream_stops_the_turn(ai: Turnkit, pm: ProgrammableModel) -> None:
    async def blocked(request: ModelRequest, ctx: ModelContext) -> Any:
        await asyncio.Event().wait()

    pm.handler = blocked
    agent = ai.define_agent(name="blocked", store=InMemorySessionStore())
    turn = agent.chat().send_stream("x")
    aborting = asyncio.ensure_future(turn.abort())  # before the turn's task has had a chance to run
    done, _ = await asyncio.wait({aborting}, timeout=1)
    if not done:
        turn.response.cancel()  # stop the turn that the abort missed
        with contextlib.suppress(asyncio.CancelledError):
            await aborting
        pytest.fail("turn.abort() did not stop the turn")
    assert aborting.result().finish_reason == "aborted"


async def test_abort_noticed_between_model_calls_finishes_aborted(ai: Turnkit, pm: ProgrammableModel) -> None:
    @ai.tool()
    async def quick() -> str:
        """Returns at once."""
        return "ok"

    agent = ai.define_agent(name="quick", tools=[quick], store=InMemorySessionStore())
    pm.program([calls(("quick", {}, "q")), reply("never")])
    pm.gate = asyncio.Event()
    chat = agent.chat()
    sending = asyncio.ensure_future(chat.send("go"))
    await until_in_flight(pm)
    # Release the model and abort in the same step: the tool loop reaches its abort check before
    # the runtime cancels the handler.
    pm.gate.set()
    await chat.abort()
    res = await asyncio.wait_for(sending, 1)
    assert pm.calls == 1
    assert res.finish_reason == "aborted", res.output.error


# --- 6. concurrency in one process ---------------------------------------------------------------


async def test_two_chats_continuing_one_session_concurrently_line_up(
    ai: Turnkit, pm: ProgrammableModel
) -> None:
    """The session lease makes the second turn wait for the first and run on its snapshot: no fork."""
    agent = ai.define_agent(name="shared", store=InMemorySessionStore())
    pm.program([reply("base")])
    base = await agent.chat().send("base")
    pm.handler = lambda request, ctx: reply(f"re: {request.messages[-1].text}")
    pm.gate = asyncio.Event()
    one = asyncio.ensure_future(agent.chat(session_id=base.session_id).send("one"))
    await pm.wait_for_calls(2)  # the first turn holds the session and waits in the model
    two = asyncio.ensure_future(agent.chat(session_id=base.session_id).send("two"))
    await asyncio.sleep(0.05)
    assert len(pm.requests) == 2 and not two.done()  # the second waits for the lease
    pm.gate.set()
    r1, r2 = await asyncio.gather(one, two)
    assert r1.finish_reason == r2.finish_reason == "stop"
    first = await agent.get_snapshot(r1.snapshot_id)
    second = await agent.get_snapshot(r2.snapshot_id)
    assert first is not None and first.parent_id == base.snapshot_id
    assert second is not None and second.parent_id == r1.snapshot_id
    assert texts(second.state.messages) == ["base", "base", "one", "re: one", "two", "re: two"]  # type: ignore[union-attr]
    latest = await agent.get_snapshot(session_id=base.session_id)
    assert latest is not None and latest.snapshot_id == r2.snapshot_id


# --- turn handlers taking one argument or two -----------------------------------------------------


async def test_handle_turn_may_take_only_the_input(ai: Turnkit) -> None:
    seen: list[tuple[str, Any]] = []

    async def fn(sess: AgentSession[Any], ctx: AgentContext) -> Any:
        async def one(inp: AgentInput) -> None:
            seen.append(("one", inp.message.text if inp.message else None))
            await sess.add_messages(model("from one"))

        async def with_default(inp: AgentInput, turn: TurnContext | None = None) -> None:
            seen.append(("default", turn.turn_index if turn else None))
            await sess.add_messages(model("from default"))

        await sess.run(one if ctx.context.get("which") == "one" else with_default)
        return await sess.result()

    agent = ai.define_custom_agent(name="handlers", fn=fn, store=InMemorySessionStore())
    first = await agent.run({}, [user("hi")], context={"which": "one"})
    second = await agent.run({"snapshotId": first.snapshot_id}, [user("again")], context={"which": "two"})

    # One parameter: called with the input alone. A second parameter (even with a default): the turn.
    assert seen == [("one", "hi"), ("default", 0)]
    assert first.message is not None and first.message.text == "from one"
    assert second.message is not None and second.message.text == "from default"


async def test_handle_turn_taking_no_input_fails_naming_the_handler(ai: Turnkit) -> None:
    async def fn(sess: AgentSession[Any], ctx: AgentContext) -> Any:
        async def nothing() -> None:
            raise AssertionError("never called")

        await sess.run(nothing)  # type: ignore[arg-type]
        return None

    agent = ai.define_custom_agent(name="noInput", fn=fn)
    out = await agent.run({}, [user("hi")])
    assert out.finish_reason == "failed" and out.error is not None
    assert out.error.status == "INVALID_ARGUMENT" and "'nothing'" in out.error.message


# --- leaving no task behind -----------------------------------------------------------------------


async def test_cancel_and_wait_outlasts_a_task_that_swallows_its_cancel() -> None:
    from turnkit.agents._runner import cancel_and_wait

    swallowed = asyncio.Event()
    ended = asyncio.Event()

    async def stubborn() -> None:
        # As `asyncio.wait_for` does on Python 3.11 when its wait ends as the cancel arrives.
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            swallowed.set()
        try:
            await asyncio.Event().wait()  # goes on waiting, as the abort watcher used to idle
        finally:
            ended.set()

    task = asyncio.ensure_future(stubborn())
    await asyncio.sleep(0)  # let it reach its first wait
    await cancel_and_wait(task)
    assert swallowed.is_set() and ended.is_set() and task.cancelled()


async def test_detached_turn_leaves_no_runtime_task_behind(ai: Turnkit) -> None:
    agent = echo_agent(ai, InMemorySessionStore())
    before = asyncio.all_tasks()
    conn = await agent.stream_bidi()
    await conn.send(user("hi").model_copy(update={"detach": True}))
    out = await conn.output()
    assert out.finish_reason == "detached"
    main = conn._task  # the invocation: it ends once the background turn is recorded
    await asyncio.wait_for(main, 5)
    left = {t for t in asyncio.all_tasks() - before if t is not asyncio.current_task() and not t.done()}
    assert not left, left
    snap = await agent.get_snapshot(out.snapshot_id)
    assert snap is not None and snap.status == "completed"


async def test_heartbeat_stops_when_the_store_swallows_its_cancel() -> None:
    from turnkit.agents._snapshots import heartbeat, write_pending

    entered = asyncio.Event()

    class SwallowingStore(InMemorySessionStore):
        """Drops one cancellation inside `save_snapshot`, as `asyncio.wait_for` can on Python 3.11."""

        async def save_snapshot(self, snapshot_id: str, fn: Any, *, context: Any = None) -> Any:
            if entered.is_set():  # the beat after the swallowed cancel would wait forever
                await asyncio.Event().wait()
            entered.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()
            return await super().save_snapshot(snapshot_id, fn, context=context)

    store = SwallowingStore()
    await write_pending(
        InMemorySessionStore(backend=store.backend),
        snapshot_id="s1",
        parent_id=None,
        state=SessionState(session_id="x"),
        context={},
    )
    beat = asyncio.ensure_future(heartbeat(store, "s1", 0, {}))
    await entered.wait()
    beat.cancel()
    await asyncio.wait_for(beat, 2)  # it returns instead of beating on
    assert beat.done() and not beat.cancelled()
