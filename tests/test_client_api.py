"""The chat client's Genkit-shaped surface: AgentError, typed state, StrEnums, awaitable and iterable
turns, chat.messages / artifacts, resume_stream, Message(data), restart(resumed_metadata=),
DetachedTask.poll / output / abort, and interrupts streamed as they happen."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

import turnkit
import turnkit.agents
from http_support import serve_async
from turnkit import (
    AgentInput,
    Artifact,
    Message,
    ModelResponseChunk,
    Part,
    ToolContext,
    Turnkit,
    TurnkitError,
)
from turnkit.agents import Agent, AgentContext, AgentError, AgentSession, TurnContext
from turnkit.http import create_app, remote_agent
from turnkit.sessions import InMemorySessionStore
from turnkit.testing import ProgrammableModel
from turnkit.types import AgentFinishReason, FinishReason, SnapshotStatus


def reply(text: str) -> dict[str, Any]:
    return {"message": {"role": "model", "content": [{"text": text}]}, "finishReason": "stop"}


def calls(*requests: tuple[str, dict[str, Any], str]) -> dict[str, Any]:
    content = [{"toolRequest": {"name": n, "input": i, "ref": r}} for n, i, r in requests]
    return {"message": {"role": "model", "content": content}, "finishReason": "stop"}


class Notes(BaseModel):
    """A typed custom state; every field has a default, so a fresh session reads as `Notes()`."""

    count: int = 0
    last: str = ""


def notes_agent(ai: Turnkit, *, store: InMemorySessionStore | None, name: str = "notes") -> Agent[Notes]:
    """A custom agent: counts turns in typed state, streams a chunk, stores an artifact, echoes;
    "fail" raises after updating the state (the update must not survive)."""

    async def fn(sess: AgentSession[Notes], ctx: AgentContext) -> Any:
        async def turn(item: AgentInput, tc: TurnContext) -> None:
            said = item.message.text if item.message else ""
            await sess.update_custom(lambda n: Notes(count=(n or Notes()).count + 1, last=said))
            tc.send_chunk(ModelResponseChunk(role="model", content=[Part(text=f"echo: {said}")]))
            if said == "fail":
                raise TurnkitError("RESOURCE_EXHAUSTED", "out of notes", details={"said": said})
            await sess.add_artifacts([Artifact(name="log", parts=[Part(text=said)])])
            await sess.add_messages([Message(role="model", content=[Part(text=f"echo: {said}")])])

        await sess.run(turn)
        return await sess.result()

    return ai.define_custom_agent(name=name, fn=fn, store=store, state_schema=Notes)


# --- AgentError --------------------------------------------------------------------------------


def test_agent_error_is_exported_and_a_turnkit_error() -> None:
    assert turnkit.AgentError is turnkit.agents.AgentError is AgentError
    assert issubclass(AgentError, TurnkitError)


@pytest.mark.parametrize("store", [InMemorySessionStore, None], ids=["server", "client"])
async def test_failed_send_raises_agent_error_with_last_good_state(ai: Turnkit, store: Any) -> None:
    agent = notes_agent(ai, store=store() if store else None)
    chat = agent.chat()
    good = await chat.send("a")
    with pytest.raises(AgentError) as raised:
        await chat.send("fail")
    err = raised.value
    assert (err.status, err.message, err.details) == ("RESOURCE_EXHAUSTED", "out of notes", {"said": "fail"})
    assert err.state == Notes(count=1, last="a") == chat.state  # the failed turn's update is gone
    assert err.snapshot_id == good.snapshot_id == chat.snapshot_id
    assert err.response.finish_reason == AgentFinishReason.FAILED and err.response.error is not None
    assert [m.text for m in chat.messages] == ["a", "echo: a"]
    after = await chat.send("b")  # the chat goes on from the last good turn
    assert after.state == Notes(count=2, last="b")


async def test_streamed_failure_raises_from_response_and_stream(ai: Turnkit) -> None:
    agent = notes_agent(ai, store=InMemorySessionStore())
    chat = agent.chat()
    turn = chat.send_stream("fail")
    seen: list[str] = []
    with pytest.raises(AgentError) as from_stream:
        async for chunk in turn:
            seen.append(chunk.text)
    assert "echo: fail" in seen  # the chunks came first, then the failure
    with pytest.raises(AgentError) as from_response:
        await turn
    assert from_stream.value is from_response.value and from_response.value.status == "RESOURCE_EXHAUSTED"


async def test_failed_resume_raises_agent_error(ai: Turnkit, pm: ProgrammableModel) -> None:
    ai.define_interrupt(name="ask", description="Ask the user.")
    agent = ai.define_agent(name="asker", tools=["ask"], store=InMemorySessionStore())
    pm.program([calls(("ask", {}, "q1"))])
    chat = agent.chat()
    paused = await chat.send("go")
    with pytest.raises(AgentError) as err:
        await chat.resume(respond=[Part.from_wire({"toolResponse": {"name": "ask", "ref": "nope"}})])
    assert err.value.status == "INVALID_ARGUMENT" and err.value.snapshot_id == paused.snapshot_id


async def test_transport_errors_raise_agent_error(ai: Turnkit) -> None:
    agent = notes_agent(ai, store=InMemorySessionStore())
    with pytest.raises(AgentError) as err:
        await agent.chat(snapshot_id="no-such-snapshot").send("x")
    assert err.value.status == "NOT_FOUND" and err.value.response.finish_reason == "failed"


async def test_errors_rule_agent_error_for_a_sent_turn_turnkit_error_before_one(ai: Turnkit) -> None:
    # As Genkit: whatever stops a turn once it is sent (here: no server) is an AgentError carrying a
    # failed response; a mistake before any turn is sent is a plain TurnkitError.
    remote = remote_agent("http://127.0.0.1:9/agent", state_management="server", state_schema=Notes)
    async with remote:
        with pytest.raises(AgentError) as unreachable:
            await remote.chat().send("x")
    assert unreachable.value.status == "UNAVAILABLE"
    assert unreachable.value.response.finish_reason == AgentFinishReason.FAILED
    assert unreachable.value.state == Notes()  # the last good state, typed
    agent = notes_agent(ai, store=InMemorySessionStore())
    with pytest.raises(TurnkitError) as misuse:
        agent.chat(state={"custom": {}})
    assert not isinstance(misuse.value, AgentError) and misuse.value.status == "FAILED_PRECONDITION"
    with pytest.raises(TurnkitError) as missing:
        await agent.load_chat(session_id="nobody")
    assert not isinstance(missing.value, AgentError) and missing.value.status == "NOT_FOUND"


async def test_run_and_stream_bidi_still_return_failed_outputs(ai: Turnkit) -> None:
    agent = notes_agent(ai, store=InMemorySessionStore())
    out = await agent.run(None, [{"message": {"role": "user", "content": [{"text": "fail"}]}}])
    assert (
        out.finish_reason == "failed" and out.error is not None and out.error.status == "RESOURCE_EXHAUSTED"
    )
    assert out.to_wire()["finishReason"] == "failed"


# --- typed state and the session state ---------------------------------------------------------


async def test_state_is_typed_on_chat_response_chunk_and_error(ai: Turnkit) -> None:
    agent = notes_agent(ai, store=InMemorySessionStore())
    chat = agent.chat()
    assert chat.state == Notes()  # defaults before any turn
    turn = chat.send_stream("hi")
    chunks = [c async for c in turn]
    customs = [c.custom for c in chunks]
    res = await turn
    assert all(isinstance(c, Notes) for c in customs) and customs[-1] == Notes(count=1, last="hi")
    assert [c.state for c in chunks] == customs  # `state` and `custom` name one thing everywhere
    assert isinstance(res.state, Notes) and res.state == Notes(count=1, last="hi") == chat.state
    assert res.custom == res.state and chat.custom == chat.state
    # The whole session stays reachable as wire data: the JSON form is session_state.custom.
    assert chat.session_state.custom == {"count": 1, "last": "hi"} == res.session_state.custom
    assert chat.session_state.session_id == res.session_id
    loaded = await agent.load_chat(session_id=res.session_id)
    assert loaded.state == Notes(count=1, last="hi")
    # Snapshots hold the state as stored (JSON), as Genkit's get_snapshot does; state_type types it.
    snap = await agent.get_snapshot(session_id=res.session_id)
    assert snap is not None and snap.state is not None and snap.state.custom == {"count": 1, "last": "hi"}
    assert loaded.loaded == snap and agent.state_type.load(snap.state.custom) == Notes(count=1, last="hi")


async def test_chat_messages_and_artifacts(ai: Turnkit) -> None:
    agent = notes_agent(ai, store=InMemorySessionStore())
    chat = agent.chat()
    await chat.send("a")
    res = await chat.send("b")
    assert (
        [m.text for m in chat.messages] == ["a", "echo: a", "b", "echo: b"] == [m.text for m in res.messages]
    )
    assert chat.artifacts == [Artifact(name="log", parts=[Part(text="b")])] == res.artifacts


async def test_the_user_message_shows_in_chat_messages_while_the_turn_runs(
    ai: Turnkit, pm: ProgrammableModel
) -> None:
    agent = ai.define_agent(name="talker", store=InMemorySessionStore())
    pm.program([reply("one"), reply("two")])
    pm.gate = asyncio.Event()
    chat = agent.chat()
    turn = chat.send_stream("first")
    await pm.wait_for_calls(1)
    assert [m.text for m in chat.messages] == ["first"]  # the model is still thinking
    pm.gate.set()
    await turn
    pm.handler = _fail
    with pytest.raises(AgentError):
        await chat.send("second")
    assert [m.text for m in chat.messages] == ["first", "one"]  # taken back: the turn left no trace


async def _fail(request: Any, ctx: Any) -> Any:
    raise TurnkitError("UNAVAILABLE", "down")


# --- Genkit spellings --------------------------------------------------------------------------


def test_finish_reasons_and_statuses_are_str_enums_equal_to_wire_strings() -> None:
    members: list[str] = [AgentFinishReason.INTERRUPTED, FinishReason.LENGTH, SnapshotStatus.PENDING]
    assert members == ["interrupted", "length", "pending"]
    out = turnkit.AgentOutput.from_wire({"finishReason": "detached"})
    assert out.finish_reason is AgentFinishReason.DETACHED
    assert out.to_wire() == {"finishReason": "detached"}
    built = turnkit.AgentOutput(finish_reason="stop")  # the wire string is still accepted
    assert built.finish_reason is AgentFinishReason.STOP
    snap = turnkit.SessionSnapshot(snapshot_id="s", created_at="t", status="failed")
    assert snap.status is SnapshotStatus.FAILED and snap.to_json() == (
        '{"snapshotId":"s","createdAt":"t","status":"failed"}'
    )
    with pytest.raises(TurnkitError):
        turnkit.AgentOutput.from_wire({"finishReason": "exploded"})


def test_message_from_a_wire_dict_or_message_positionally() -> None:
    wire = {"role": "user", "content": [{"text": "hi"}], "metadata": {"k": 1}}
    msg = Message(wire)
    assert msg == Message(role="user", content=[Part(text="hi")], metadata={"k": 1})
    assert Message(msg) == msg and Message(msg) is not msg
    with pytest.raises(TypeError):
        Message(wire, role="user")  # type: ignore[call-overload]
    with pytest.raises(ValueError):
        Message({"role": "user"})


async def test_streaming_turn_is_async_iterable_and_awaitable(ai: Turnkit, pm: ProgrammableModel) -> None:
    agent = ai.define_agent(name="talker", store=InMemorySessionStore())
    pm.program([reply("Hi there")], [[{"content": [{"text": "Hi"}]}, {"content": [{"text": " there"}]}]])
    turn = agent.chat().send_stream("hi")
    texts = [c.accumulated_text async for c in turn if c.text]
    res = await turn
    assert texts == ["Hi", "Hi there"] and res.text == "Hi there"
    assert res.raw is res.output and res.finish_reason is AgentFinishReason.STOP


async def test_resume_stream_and_restart_with_resumed_metadata(ai: Turnkit, pm: ProgrammableModel) -> None:
    seen: list[Any] = []

    @ai.tool()
    async def deploy(target: str, ctx: ToolContext) -> str:
        """Deploy, after approval."""
        seen.append(ctx.resumed)
        if not ctx.resumed:
            ctx.interrupt({"confirm": target})
        return f"deployed {target}"

    agent = ai.define_agent(name="deployer", tools=[deploy], store=InMemorySessionStore())
    pm.program([calls(("deploy", {"target": "prod"}, "d1")), reply("Done.")])
    chat = agent.chat()
    paused = await chat.send("ship it")
    assert paused.finish_reason == AgentFinishReason.INTERRUPTED
    [intr] = paused.interrupts
    turn = chat.resume_stream(restart=intr.restart(resumed_metadata={"tool_approved": True}))  # one part
    chunks = [c async for c in turn]
    done = await turn
    assert seen == [None, {"tool_approved": True}] and done.text == "Done."
    tool_chunk = next(c for c in chunks if c.raw.model_chunk and c.raw.model_chunk.role == "tool")
    assert tool_chunk.raw.model_chunk is not None
    assert tool_chunk.raw.model_chunk.content[0].tool_response.output == "deployed prod"  # type: ignore[union-attr]


# --- DetachedTask ------------------------------------------------------------------------------


async def test_detached_task_poll_iterates_changes_output_and_abort(
    ai: Turnkit, pm: ProgrammableModel
) -> None:
    agent = ai.define_agent(name="bg", store=InMemorySessionStore(), state_schema=Notes)
    pm.program([reply("background answer")])
    pm.gate = asyncio.Event()
    chat = agent.chat()
    task = await chat.detach("work")
    now = await task.poll()  # awaitable: the snapshot as it is now
    assert now is not None and now.status is SnapshotStatus.PENDING
    statuses: list[Any] = []
    async for snap in task.poll(interval=0.005):  # iterable: each change, until the turn ends
        statuses.append(snap.status)
        if snap.status == "pending":
            pm.gate.set()
    assert statuses == [SnapshotStatus.PENDING, SnapshotStatus.COMPLETED]
    assert snap.state is not None and snap.state.custom == Notes()  # typed like chat.state
    output = await task.output(timeout=5, interval=0.005)  # a method, as AgentConnection.output()
    assert output.finish_reason == "stop" and output.message is not None
    assert output.message.text == "background answer" and output.snapshot_id == task.snapshot_id
    before = await task.abort()
    assert before is SnapshotStatus.COMPLETED  # too late, and said with the enum
    assert await agent.abort(task.snapshot_id) is SnapshotStatus.COMPLETED  # the same from the agent
    assert await agent.abort("no-such-snapshot") is None


async def test_detached_task_abort_returns_pending_as_enum(ai: Turnkit, pm: ProgrammableModel) -> None:
    async def blocked(request: Any, ctx: Any) -> Any:
        await asyncio.Event().wait()

    pm.handler = blocked
    agent = ai.define_agent(name="bg", store=InMemorySessionStore())
    task = await agent.chat().detach("forever")
    assert await task.abort() is SnapshotStatus.PENDING
    final = await task.output(timeout=5, interval=0.005)
    assert final.finish_reason == "aborted" and final.message is None


# --- interrupts streamed as they happen --------------------------------------------------------


@pytest.fixture
def slow_and_ask(ai: Turnkit) -> asyncio.Event:
    """Tools `ask` (interrupts at once) and `slow` (finishes when the returned event is set)."""
    release = asyncio.Event()
    ai.define_interrupt(name="ask", description="Ask the user.")

    @ai.tool()
    async def slow() -> str:
        """Takes its time."""
        await release.wait()
        return "slow done"

    return release


async def test_generate_stream_shows_an_interrupt_before_the_call_ends(
    ai: Turnkit, pm: ProgrammableModel, slow_and_ask: asyncio.Event
) -> None:
    pm.program([calls(("ask", {"q": "ok?"}, "a1"), ("slow", {}, "s1"))])
    stream = ai.generate_stream("go", tools=["ask", "slow"])
    async for chunk in stream:
        if any(p.is_interrupt for p in chunk.content):
            break
    else:
        pytest.fail("no interrupt chunk")
    assert not stream.response.done() and not slow_and_ask.is_set()  # `slow` is still running
    [part] = chunk.content
    assert part.tool_request is not None and part.tool_request.ref == "a1" and chunk.role == "model"
    slow_and_ask.set()
    res = await stream  # awaitable, as an agent's streamed turn is (and `stream.response` still works)
    assert res is await stream.response
    assert res.finish_reason == FinishReason.INTERRUPTED
    assert [p.tool_request.ref for p in res.interrupts if p.tool_request] == ["a1"]


async def test_agent_stream_shows_an_interrupt_before_the_turn_ends(
    ai: Turnkit, pm: ProgrammableModel, slow_and_ask: asyncio.Event
) -> None:
    agent = ai.define_agent(name="asker", tools=["ask", "slow"], store=InMemorySessionStore())
    pm.program([calls(("ask", {"q": "ok?"}, "a1"), ("slow", {}, "s1"))])
    turn = agent.chat().send_stream("go")
    async for chunk in turn:
        if chunk.interrupts:
            break
    assert not turn.response.done() and not slow_and_ask.is_set()
    [intr] = chunk.interrupts
    assert (intr.name, intr.ref, intr.data) == ("ask", "a1", True)
    slow_and_ask.set()
    res = await turn
    assert res.finish_reason == "interrupted" and [i.ref for i in res.interrupts] == ["a1"]


async def test_interrupt_streams_over_http(
    ai: Turnkit, pm: ProgrammableModel, slow_and_ask: asyncio.Event
) -> None:
    ai.define_agent(name="asker", tools=["ask", "slow"], store=InMemorySessionStore())
    pm.program([calls(("ask", {"q": "ok?"}, "a1"), ("slow", {}, "s1"))])
    async with serve_async(create_app(ai)) as url, httpx.AsyncClient(timeout=10) as client:
        turn = remote_agent(f"{url}/agents/asker", client=client).chat().send_stream("go")
        async for chunk in turn:
            if chunk.interrupts:
                break
        assert not turn.response.done() and not slow_and_ask.is_set()
        assert [i.ref for i in chunk.interrupts] == ["a1"]
        slow_and_ask.set()
        res = await turn
        assert res.finish_reason == "interrupted" and [i.ref for i in res.interrupts] == ["a1"]


# --- one set of terminal statuses, and the lease contract --------------------------------------


def test_terminal_statuses_are_enum_members_found_by_their_strings() -> None:
    from turnkit.sessions import TERMINAL_STATUSES

    assert all(isinstance(s, SnapshotStatus) for s in TERMINAL_STATUSES)
    assert {"completed", "failed", "aborted"} == TERMINAL_STATUSES  # StrEnum: strings match too
    assert "completed" in TERMINAL_STATUSES and "expired" not in TERMINAL_STATUSES


async def test_remote_abort_returns_the_status_enum(ai: Turnkit, pm: ProgrammableModel) -> None:
    agent = ai.define_agent(name="bg", store=InMemorySessionStore())
    pm.program([reply("done")])
    async with serve_async(create_app(ai)) as url:
        remote = remote_agent(f"{url}/agents/bg", state_management="server")
        async with remote:
            task = await remote.chat().detach("work")
            await task.wait(timeout=5, interval=0.005)
            assert await remote.abort(task.snapshot_id) is SnapshotStatus.COMPLETED
    assert await agent.abort(task.snapshot_id) is SnapshotStatus.COMPLETED


async def test_a_store_without_leases_says_so_and_one_with_its_own_lease_is_used(ai: Turnkit) -> None:
    from turnkit.sessions import SessionStoreBase, as_session_store

    class Plain:  # a user-written store, as Genkit's docs show one: two methods, no leases
        def __init__(self) -> None:
            self.rows: dict[str, Any] = {}

        async def get_snapshot(self, *, snapshot_id: str | None = None, session_id: str | None = None) -> Any:
            if snapshot_id is not None:
                return self.rows.get(snapshot_id)
            mine = [r for r in self.rows.values() if r.session_id == session_id]
            return max(mine, key=lambda r: r.created_at) if mine else None

        async def save_snapshot(self, snapshot_id: str, fn: Any) -> Any:
            new = fn(self.rows.get(snapshot_id))
            if new is not None:
                self.rows[snapshot_id] = new.model_copy(update={"snapshot_id": snapshot_id})
            return self.rows.get(snapshot_id)

    plain = as_session_store(Plain())
    assert isinstance(plain, SessionStoreBase) and plain.session_lease("s1") is None

    taken: list[tuple[str, float]] = []
    memory = InMemorySessionStore()

    class Leased(Plain):  # ... and one that brings its own lease
        def session_lease(self, session_id: str, *, context: Any = None, wait: float = 30.0) -> Any:
            taken.append((session_id, wait))
            return memory.session_lease(session_id, context=context, wait=wait)

    agent = notes_agent(ai, store=Leased(), name="leased")  # type: ignore[arg-type]
    await agent.chat(session_id="s-1").send("a")  # a turn on a session by id holds its lease
    res = await agent.chat(session_id="s-1").send("b")
    assert taken == [("s-1", 30.0), ("s-1", 30.0)] and res.state == Notes(count=2, last="b")
