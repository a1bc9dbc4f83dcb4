"""The chat API: `agent.chat()`, send / send_stream / resume / detach, load_chat, snapshots, abort."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

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
from turnkit.sessions import InMemorySessionStore
from turnkit.testing import ProgrammableModel


def reply(text: str) -> dict[str, Any]:
    return {"message": {"role": "model", "content": [{"text": text}]}, "finishReason": "stop"}


def calls(*requests: tuple[str, dict[str, Any], str]) -> dict[str, Any]:
    content = [{"toolRequest": {"name": n, "input": i, "ref": r}} for n, i, r in requests]
    return {"message": {"role": "model", "content": content}, "finishReason": "stop"}


def texts(messages: list[Message]) -> list[str]:
    return [m.text for m in messages if m.text]


def model(text: str) -> Message:
    return Message(role="model", content=[Part(text=text)])


class Question(BaseModel):
    question: str


class Action(BaseModel):
    action: str


# --- a custom agent whose turns do what the test scripts -----------------------------------------


def scripted_agent(ai: Turnkit, *, store: InMemorySessionStore | None, name: str = "scripted") -> Agent:
    """A custom agent: each turn counts in custom state, streams two chunks, stores an artifact,
    and answers `echo: <input>`; an input of "fail" raises instead."""

    async def fn(sess: AgentSession, ctx: AgentContext) -> Any:
        async def turn(item: AgentInput, tc: TurnContext) -> None:
            said = item.message.text if item.message else ""
            await sess.update_custom(lambda c: {"turns": (c or {}).get("turns", 0) + 1, "last": said})
            tc.send_chunk(ModelResponseChunk(role="model", content=[Part(text="echo: ")]))
            if said == "fail":
                raise RuntimeError("scripted failure")
            tc.send_chunk(ModelResponseChunk(role="model", content=[Part(text=said)]))
            await sess.add_artifacts([Artifact(name="log", parts=[Part(text=said)])])
            await sess.add_messages([model(f"echo: {said}")])

        await sess.run(turn)
        return await sess.result()

    return ai.define_custom_agent(name=name, fn=fn, store=store)


# --- send ----------------------------------------------------------------------------------------


async def test_send_returns_every_response_field(ai: Turnkit) -> None:
    agent = scripted_agent(ai, store=InMemorySessionStore())
    chat = agent.chat()
    res = await chat.send("hello")
    assert res.finish_reason == "stop"
    assert res.text == "echo: hello" and res.message == model("echo: hello")
    assert texts(res.messages) == ["hello", "echo: hello"]
    assert res.state == res.custom == {"turns": 1, "last": "hello"}  # no state_schema: plain JSON
    assert res.session_state.custom == {"turns": 1, "last": "hello"}
    assert chat.state == {"turns": 1, "last": "hello"} and chat.messages == res.messages
    assert res.artifacts == [Artifact(name="log", parts=[Part(text="hello")])]
    assert res.snapshot_id and res.session_id
    assert res.interrupts == [] and res.error is None
    assert res.assert_valid() is res
    assert (chat.session_id, chat.snapshot_id) == (res.session_id, res.snapshot_id)


async def test_send_accepts_text_message_input_and_wire_dict(ai: Turnkit, pm: ProgrammableModel) -> None:
    agent = ai.define_agent(name="plain")
    pm.program([reply("a"), reply("b"), reply("c")])
    chat = agent.chat()
    await chat.send("one")
    await chat.send(Message(role="user", content=[Part(text="two")]))
    await chat.send(AgentInput(message=Message(role="user", content=[Part(text="three")])))
    assert texts(pm.requests[2].messages) == ["one", "a", "two", "b", "three"]
    with pytest.raises(AgentError) as err:  # no fourth response scripted: the turn fails ...
        await agent.chat(session_state=chat.session_state).send(
            {"message": {"role": "user", "content": [{"text": "4"}]}}
        )
    assert err.value.status == "FAILED_PRECONDITION" and err.value.response.finish_reason == "failed"
    assert texts(pm.requests[3].messages)[-1] == "4"  # ... but the dict input reached the model


async def test_server_managed_chat_chains_snapshot_ids(ai: Turnkit) -> None:
    agent = scripted_agent(ai, store=InMemorySessionStore())
    chat = agent.chat()
    ids = [(await chat.send(word)).snapshot_id for word in ("a", "b", "c")]
    assert len(set(ids)) == 3 and chat.snapshot_id == ids[-1]
    parents = [(await agent.get_snapshot(i)).parent_id for i in ids]  # type: ignore[union-attr]
    assert parents == [None, ids[0], ids[1]]
    last = await agent.get_snapshot(ids[-1])
    assert last is not None and last.state is not None
    assert texts(last.state.messages or []) == ["a", "echo: a", "b", "echo: b", "c", "echo: c"]
    assert last.state.custom == {"turns": 3, "last": "c"}
    # The server-managed output carries the snapshot id, never the state.
    assert chat.last is not None and chat.last.output.state is None


async def test_client_managed_chat_carries_state_between_sends(ai: Turnkit) -> None:
    agent = scripted_agent(ai, store=None)
    chat = agent.chat()
    first = await chat.send("a")
    assert first.snapshot_id is None and first.output.state is not None
    second = await chat.send("b")
    assert texts(second.messages) == ["a", "echo: a", "b", "echo: b"]
    assert second.custom == {"turns": 2, "last": "b"} and chat.session_state == second.output.state
    assert second.session_id == first.session_id
    # The state is all a client needs: a new chat from it goes on where this one stopped.
    resumed = agent.chat(session_state=second.output.state.to_wire())  # type: ignore[union-attr]
    third = await resumed.send("c")
    assert third.custom == {"turns": 3, "last": "c"} and third.session_id == first.session_id
    assert texts(third.messages)[-2:] == ["c", "echo: c"]
    assert [a.parts[0].text for a in third.artifacts] == ["c"]  # the named artifact was replaced


# --- streaming -----------------------------------------------------------------------------------


async def test_send_stream_chunks_accumulate_text_and_track_custom_state(ai: Turnkit) -> None:
    async def fn(sess: AgentSession, ctx: AgentContext) -> Any:
        async def turn(item: AgentInput, tc: TurnContext) -> None:
            await sess.update_custom(lambda c: {"step": "plan", "n": 1})
            tc.send_chunk(ModelResponseChunk(role="model", content=[Part(text="Hel")]))
            await sess.update_custom(lambda c: {**c, "n": 2})
            tc.send_chunk(ModelResponseChunk(role="model", content=[Part(text="lo")]))
            await sess.add_artifacts([Artifact(name="report", parts=[Part(text="r1")])])
            await sess.update_custom(lambda c: {**c, "step": "done"})
            await sess.add_messages([model("Hello")])

        await sess.run(turn)
        return await sess.result()

    agent = ai.define_custom_agent(name="streamer", fn=fn, store=InMemorySessionStore())
    chat = agent.chat()
    turn = chat.send_stream("hi")
    seen = [(c.text, c.accumulated_text, c.custom, c.artifact, c.turn_end) async for c in turn.stream]
    res = await turn.response
    report = Artifact(name="report", parts=[Part(text="r1")])
    assert seen == [
        ("", "", {"step": "plan", "n": 1}, None, False),
        ("Hel", "Hel", {"step": "plan", "n": 1}, None, False),
        ("", "Hel", {"step": "plan", "n": 2}, None, False),
        ("lo", "Hello", {"step": "plan", "n": 2}, None, False),
        ("", "Hello", {"step": "plan", "n": 2}, report, False),
        ("", "Hello", {"step": "done", "n": 2}, None, False),
        ("", "Hello", {"step": "done", "n": 2}, None, True),
    ]
    assert res.text == "Hello" and res.custom == {"step": "done", "n": 2}
    assert chat.custom == {"step": "done", "n": 2}
    # The next turn streams a whole-document replace first again, from the stored state.
    turn2 = chat.send_stream("again")
    streamed = [c async for c in turn2.stream]
    first = streamed[0]
    assert first.raw.custom_patch is not None
    assert [op.to_wire() for op in first.raw.custom_patch] == [
        {"op": "replace", "path": "", "value": {"step": "plan", "n": 1}}
    ]
    await turn2.response


async def test_send_stream_delivers_model_chunks_of_a_prompt_agent(
    ai: Turnkit, pm: ProgrammableModel
) -> None:
    agent = ai.define_agent(name="talker", store=InMemorySessionStore())
    pm.program([reply("Hi there")], [[{"content": [{"text": "Hi"}]}, {"content": [{"text": " there"}]}]])
    turn = agent.chat().send_stream("hi")
    chunks = [c async for c in turn.stream]
    assert [c.accumulated_text for c in chunks if c.text] == ["Hi", "Hi there"]
    assert chunks[-1].turn_end and (await turn.response).text == "Hi there"


# --- failures ------------------------------------------------------------------------------------


async def test_failed_turn_raises_with_last_good_snapshot(ai: Turnkit) -> None:
    agent = scripted_agent(ai, store=InMemorySessionStore())
    chat = agent.chat()
    good = await chat.send("a")
    with pytest.raises(AgentError) as raised:
        await chat.send("fail")
    failure = raised.value
    assert isinstance(failure, TurnkitError) and failure.status == "INTERNAL"
    assert failure.snapshot_id == good.snapshot_id and chat.snapshot_id == good.snapshot_id
    assert failure.state == {"turns": 1, "last": "a"} == chat.state  # the failed update is not kept
    bad = failure.response
    assert bad.finish_reason == "failed" and bad.snapshot_id == good.snapshot_id
    assert bad.error is not None and "scripted failure" in bad.error.message
    assert texts(chat.messages) == ["a", "echo: a"]
    with pytest.raises(TurnkitError) as err:
        bad.assert_valid()
    assert err.value.status == bad.error.status == "INTERNAL"
    # The chat goes on from the last good snapshot: the failed turn left no trace.
    after = await chat.send("b")
    assert texts(after.messages) == ["a", "echo: a", "b", "echo: b"]
    assert after.custom == {"turns": 2, "last": "b"}
    snap = await agent.get_snapshot(after.snapshot_id)
    assert snap is not None and snap.parent_id == good.snapshot_id


async def test_failed_turn_raises_with_last_good_client_state(ai: Turnkit) -> None:
    agent = scripted_agent(ai, store=None)
    chat = agent.chat()
    good = await chat.send("a")
    with pytest.raises(AgentError) as raised:
        await chat.send("fail")
    bad = raised.value.response
    assert bad.finish_reason == "failed" and bad.snapshot_id is None and raised.value.snapshot_id is None
    assert bad.output.state == good.output.state  # custom still turns=1: the failed update is gone
    assert bad.custom == raised.value.state == {"turns": 1, "last": "a"}
    after = await chat.send("b")
    assert texts(after.messages) == ["a", "echo: a", "b", "echo: b"]


# --- interrupts ----------------------------------------------------------------------------------


@pytest.fixture
def approvals(ai: Turnkit) -> tuple[Agent, list[Any]]:
    """An agent with an interrupt-only tool `ask` and a tool `danger` that wants a restart."""
    ai.define_interrupt(name="ask", description="Ask the user.", input_schema=Question)
    runs: list[Any] = []

    @ai.tool()
    async def danger(input: Action, ctx: ToolContext) -> str:
        """Act, after confirmation."""
        runs.append(ctx.resumed)
        if not ctx.resumed:
            ctx.interrupt({"why": "confirm"})
        return f"did {input.action}"

    return ai.define_agent(name="approvals", tools=["ask", danger], store=InMemorySessionStore()), runs


async def test_interrupt_respond_through_chat(
    approvals: tuple[Agent, list[Any]], pm: ProgrammableModel
) -> None:
    agent, _ = approvals
    pm.program([calls(("ask", {"question": "color?"}, "q1")), reply("Blue it is.")])
    chat = agent.chat()
    res = await chat.send("pick a color")
    assert res.finish_reason == "interrupted"
    [intr] = res.interrupts
    assert (intr.name, intr.ref, intr.input, intr.data) == ("ask", "q1", {"question": "color?"}, True)
    answer = intr.respond({"answer": "blue"})
    assert answer.tool_response is not None and answer.tool_response.ref == "q1"
    done = await chat.resume(respond=[answer])
    assert done.finish_reason == "stop" and done.text == "Blue it is."
    assert pm.requests[-1].messages[-1].content == [answer]
    snap = await agent.get_snapshot(done.snapshot_id)
    assert snap is not None and snap.parent_id == res.snapshot_id


async def test_interrupt_restart_through_chat_runs_the_tool_again(
    approvals: tuple[Agent, list[Any]], pm: ProgrammableModel
) -> None:
    agent, runs = approvals
    pm.program([calls(("danger", {"action": "deploy"}, "d1")), reply("Deployed.")])
    chat = agent.chat()
    res = await chat.send("deploy")
    assert res.finish_reason == "interrupted" and runs == [None]
    [intr] = res.interrupts
    assert intr.data == {"why": "confirm"}
    done = await chat.resume(restart=[intr.restart({"approved": True})])
    assert done.finish_reason == "stop" and runs == [None, {"approved": True}]
    tool_msg = pm.requests[-1].messages[-1]
    assert tool_msg.role == "tool" and tool_msg.content[0].tool_response is not None
    assert tool_msg.content[0].tool_response.output == "did deploy"


async def test_resume_validation_errors_fail_the_turn_and_keep_the_interrupt(
    approvals: tuple[Agent, list[Any]], pm: ProgrammableModel
) -> None:
    agent, runs = approvals
    pm.program([calls(("ask", {"question": "q?"}, "q1"), ("danger", {"action": "rm"}, "d1")), reply("ok")])
    chat = agent.chat()
    res = await chat.send("go")
    assert {i.name for i in res.interrupts} == {"ask", "danger"}
    ask, danger = sorted(res.interrupts, key=lambda i: i.name)
    forged = danger.restart().model_copy(
        update={"tool_request": danger.restart().tool_request.model_copy(update={"input": {"action": "x"}})}  # type: ignore[union-attr]
    )
    wrong_ref = Part.from_wire({"toolResponse": {"name": "ask", "ref": "nope", "output": {}}})
    bad_inputs = [
        ({"respond": [wrong_ref], "restart": [danger.restart()]}, "not found"),
        ({"respond": [ask.respond("a")], "restart": [forged]}, "modified inputs"),
        ({"respond": [ask.respond("a")]}, "no respond or restart entry"),
    ]
    for kwargs, message in bad_inputs:
        with pytest.raises(AgentError) as err:
            await chat.resume(**kwargs)
        assert err.value.response.finish_reason == "failed", kwargs
        assert err.value.status == "INVALID_ARGUMENT" and message in err.value.message
        assert err.value.snapshot_id == res.snapshot_id == chat.snapshot_id
    assert runs == [None]  # no forged restart ran the tool
    done = await chat.resume(respond=[ask.respond("a")], restart=[danger.restart()])
    assert done.finish_reason == "stop" and runs == [None, True]


async def test_resume_with_nothing_pending_is_rejected(ai: Turnkit, pm: ProgrammableModel) -> None:
    agent = ai.define_agent(name="plain", store=InMemorySessionStore())
    pm.program([reply("hi")])
    chat = agent.chat()
    await chat.send("hi")
    with pytest.raises(AgentError) as err:
        await chat.resume(respond=[Part.from_wire({"toolResponse": {"name": "x", "output": 1}})])
    assert err.value.response.finish_reason == "failed" and err.value.status == "INVALID_ARGUMENT"


# --- detach --------------------------------------------------------------------------------------


async def test_detach_poll_wait(ai: Turnkit, pm: ProgrammableModel) -> None:
    agent = ai.define_agent(name="bg", store=InMemorySessionStore())
    pm.program([reply("first"), reply("background answer")])
    chat = agent.chat()
    first = await chat.send("one")
    pm.gate = asyncio.Event()
    task = await chat.detach("two")
    assert task.session_id == first.session_id and chat.snapshot_id == task.snapshot_id
    pending = await task.poll()
    assert pending is not None and pending.status == "pending" and pending.parent_id == first.snapshot_id
    assert pending.heartbeat_at is not None
    pm.gate.set()
    done = await task.wait(timeout=5, interval=0.005)
    assert done.status == "completed" and done.snapshot_id == task.snapshot_id
    assert done.state is not None and texts(done.state.messages or []) == [
        "one",
        "first",
        "two",
        "background answer",
    ]
    output = await task.output(timeout=5, interval=0.005)
    assert output.finish_reason == "stop" and output.message is not None
    assert output.message.text == "background answer" and output.snapshot_id == task.snapshot_id
    assert await task.abort() == "completed"  # too late: terminal statuses are absorbing
    assert (await task.poll()).status == "completed"  # type: ignore[union-attr]


async def test_detach_then_abort_stops_the_background_turn(ai: Turnkit, pm: ProgrammableModel) -> None:
    stopped = asyncio.Event()

    async def blocked(request: Any, ctx: Any) -> Any:
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()

    pm.handler = blocked
    agent = ai.define_agent(name="bg", store=InMemorySessionStore())
    chat = agent.chat()
    task = await chat.detach("work forever")
    assert (await task.poll()).status == "pending"  # type: ignore[union-attr]
    assert await task.abort() == "pending"
    await asyncio.wait_for(stopped.wait(), 1)  # the model call was cancelled
    snap = await task.wait(timeout=1, interval=0.005)
    assert snap.status == "aborted" and snap.finish_reason == "aborted"
    assert await agent.abort(task.snapshot_id) == "aborted"  # again: nothing changes
    assert (await task.poll()).status == "aborted"  # type: ignore[union-attr]
    await asyncio.wait_for(_background_drained(agent), 1)


async def _background_drained(agent: Agent) -> None:
    """Wait until the agent has no detached turn running here (bounded by the caller's wait_for)."""
    while True:
        if not agent._background:
            return
        await asyncio.sleep(0.005)


async def test_detach_on_client_managed_agent_is_refused(ai: Turnkit, pm: ProgrammableModel) -> None:
    agent = ai.define_agent(name="nostore")
    with pytest.raises(TurnkitError) as err:
        await agent.chat().detach("x")
    assert err.value.status == "FAILED_PRECONDITION"
    assert pm.requests == []


# --- load_chat, get_snapshot, abort --------------------------------------------------------------


async def test_load_chat_continues_a_session_or_snapshot(ai: Turnkit) -> None:
    agent = scripted_agent(ai, store=InMemorySessionStore())
    chat = agent.chat()
    a = await chat.send("a")
    b = await chat.send("b")

    by_session = await agent.load_chat(session_id=a.session_id)
    assert by_session.loaded is not None and by_session.loaded.snapshot_id == b.snapshot_id
    c = await by_session.send("c")
    assert texts(c.messages) == ["a", "echo: a", "b", "echo: b", "c", "echo: c"]
    assert (await agent.get_snapshot(c.snapshot_id)).parent_id == b.snapshot_id  # type: ignore[union-attr]

    by_snapshot = await agent.load_chat(snapshot_id=a.snapshot_id)
    branch = await by_snapshot.send("x")
    assert texts(branch.messages) == ["a", "echo: a", "x", "echo: x"]
    assert branch.session_id == a.session_id and branch.custom == {"turns": 2, "last": "x"}


async def test_load_chat_of_missing_session_or_snapshot_is_not_found(ai: Turnkit) -> None:
    agent = scripted_agent(ai, store=InMemorySessionStore())
    for kwargs in ({"session_id": "no-such-session"}, {"snapshot_id": "no-such-snapshot"}):
        with pytest.raises(TurnkitError) as err:
            await agent.load_chat(**kwargs)
        assert err.value.status == "NOT_FOUND", kwargs


async def test_load_chat_hydrates_custom_state(ai: Turnkit) -> None:
    agent = scripted_agent(ai, store=InMemorySessionStore())
    res = await agent.chat().send("a")
    loaded = await agent.load_chat(session_id=res.session_id)
    assert loaded.custom == {"turns": 1, "last": "a"}


async def test_get_snapshot_by_id_and_by_session_and_abort_by_id(ai: Turnkit) -> None:
    agent = scripted_agent(ai, store=InMemorySessionStore())
    chat = agent.chat()
    res = await chat.send("a")
    by_id = await agent.get_snapshot(res.snapshot_id)
    by_session = await agent.get_snapshot(session_id=res.session_id)
    assert by_id == by_session and by_id is not None and by_id.status == "completed"
    assert await chat.get_snapshot() == by_id
    assert await agent.get_snapshot("missing") is None
    assert await agent.abort(res.snapshot_id) == "completed"
    assert await agent.abort("missing") is None
    assert (await agent.get_snapshot(res.snapshot_id)).status == "completed"  # type: ignore[union-attr]
    with pytest.raises(TurnkitError) as err:
        await agent.get_snapshot()
    assert err.value.status == "INVALID_ARGUMENT"


# --- misuse --------------------------------------------------------------------------------------


async def test_chat_misuse_is_thrown(ai: Turnkit) -> None:
    server = scripted_agent(ai, store=InMemorySessionStore(), name="server")
    client = scripted_agent(ai, store=None, name="client")
    with pytest.raises(TurnkitError) as err:
        server.chat(state={"custom": {}})
    assert err.value.status == "FAILED_PRECONDITION"
    for kwargs in ({"session_id": "s"}, {"snapshot_id": "x"}):
        with pytest.raises(TurnkitError) as err:
            client.chat(**kwargs)
        assert err.value.status == "FAILED_PRECONDITION"
    for call in (client.get_snapshot("x"), client.abort("x"), client.load_chat(session_id="s")):
        with pytest.raises(TurnkitError) as err:
            await call
        assert err.value.status == "FAILED_PRECONDITION"
    with pytest.raises(TurnkitError) as err:
        await server.chat(snapshot_id="no-such-snapshot").send("x")
    assert err.value.status == "NOT_FOUND"


async def test_chat_with_snapshot_of_another_session_is_rejected(ai: Turnkit) -> None:
    agent = scripted_agent(ai, store=InMemorySessionStore())
    mine = await agent.chat().send("mine")
    theirs = await agent.chat().send("theirs")
    chat = agent.chat(session_id=mine.session_id, snapshot_id=theirs.snapshot_id)
    with pytest.raises(TurnkitError) as err:
        await chat.send("x")
    assert err.value.status == "INVALID_ARGUMENT"
