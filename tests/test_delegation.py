"""Delegation (`Agents` middleware): tools per sub-agent, history, memory, abort, limits, failures,
artifacts, concurrency, streaming, and a remote sub-agent served over real HTTP."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

from http_support import serve_async
from turnkit import Turnkit, TurnkitError
from turnkit.agents import AgentResult, AgentSession, TurnContext
from turnkit.http import create_app, remote_agent
from turnkit.middleware import Agents, Artifacts
from turnkit.sessions import InMemorySessionStore
from turnkit.testing import ProgrammableModel, define_programmable_model
from turnkit.types import AgentInput, AgentOutput, Artifact, Message, ModelRequest, Part

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "coordinator.py"


def text(t: str) -> dict[str, Any]:
    return {"message": {"role": "model", "content": [{"text": t}]}, "finishReason": "stop"}


def calls(*requests: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    parts = [
        {"toolRequest": {"name": n, "ref": f"r{i}", "input": inp}} for i, (n, inp) in enumerate(requests)
    ]
    return {"message": {"role": "model", "content": parts}, "finishReason": "stop"}


def tool_outputs(request: ModelRequest) -> list[Any]:
    """The tool outputs in the last (tool) message of a request."""
    last = request.messages[-1]
    assert last.role == "tool"
    return [p.tool_response.output for p in last.content if p.tool_response]


def user_texts(request: ModelRequest) -> list[tuple[str, str]]:
    return [(m.role, m.text) for m in request.messages if m.role != "system"]


def system_text(request: ModelRequest) -> str:
    return "\n".join(m.text for m in request.messages if m.role == "system")


async def run(agent: Any, text_in: str, init: dict[str, Any] | None = None) -> AgentOutput:
    out: AgentOutput = await agent.run(init, [{"message": {"role": "user", "content": [{"text": text_in}]}}])
    return out


@pytest.fixture
def coord(ai: Turnkit) -> ProgrammableModel:
    return define_programmable_model(ai, "coordModel")


@pytest.fixture
def res(ai: Turnkit) -> ProgrammableModel:
    return define_programmable_model(ai, "resModel")


def researcher(ai: Turnkit, **options: Any) -> Any:
    return ai.define_agent(
        "researcher", model="resModel", system="Research.", description="Finds facts.", **options
    )


async def test_a_delegation_runs_the_sub_agent_and_returns_its_answer(
    ai: Turnkit, coord: ProgrammableModel, res: ProgrammableModel
) -> None:
    researcher(ai)
    agent = ai.define_agent("coordinator", model="coordModel", use=[Agents(agents=["researcher"])])
    coord.program([calls(("delegate_to_researcher", {"task": "find pi"})), text("pi is 3.14")])
    res.program([text("3.14159")])
    out = await run(agent, "what is pi?")
    assert out.finish_reason == "stop" and out.message is not None and out.message.text == "pi is 3.14"
    first, second = coord.requests
    tool = next(t for t in first.tools or [] if t.name == "delegate_to_researcher")
    assert tool.description == "Finds facts." and (tool.input_schema or {})["required"] == ["task"]
    assert "<sub-agents>" in system_text(first) and "delegate_to_researcher: Finds facts." in system_text(
        first
    )
    assert tool_outputs(second) == [{"response": "3.14159", "artifacts": []}]
    # history_length=0: the sub-agent sees only its system prompt and the task
    assert user_texts(res.requests[0]) == [("user", "find pi")]
    # the listing is not stored in the coordinator's history
    assert out.state is not None and "<sub-agents>" not in str(out.state.messages)


async def test_tool_names_and_descriptions_follow_the_configuration(
    ai: Turnkit, coord: ProgrammableModel, res: ProgrammableModel
) -> None:
    agent_obj = researcher(ai)
    ai.define_agent("writer", model="resModel")
    agent = ai.define_agent(
        "coordinator",
        model="coordModel",
        use=[Agents(agents=[agent_obj, {"name": "writer", "description": "Writes prose."}], tool_prefix="")],
    )
    coord.program([text("ok")])
    await run(agent, "hi")
    tools = {t.name: t.description for t in coord.requests[0].tools or []}
    assert tools == {"researcher": "Finds facts.", "writer": "Writes prose."}
    ask = ai.define_agent("asker", model="coordModel", use=[Agents(agents=["writer"], tool_prefix="ask")])
    coord.program([text("ok")])
    await run(ask, "hi")
    assert [t.name for t in coord.requests[-1].tools or []] == ["ask_writer"]
    assert coord.requests[-1].tools[0].description == "Delegates a task to the 'writer' agent."  # type: ignore[index]


async def test_an_unknown_sub_agent_fails_the_first_turn_naming_it(
    ai: Turnkit, coord: ProgrammableModel
) -> None:
    agent = ai.define_agent("coordinator", model="coordModel", use=[Agents(agents=["nobody"])])
    coord.program([text("never")])
    out = await run(agent, "hi")
    assert out.finish_reason == "failed" and out.error is not None
    assert out.error.status == "NOT_FOUND" and "'nobody'" in out.error.message
    assert coord.requests == []


@pytest.mark.parametrize("length", [0, 1, 3])
async def test_a_client_managed_sub_agent_gets_the_last_history_length_messages(
    ai: Turnkit, coord: ProgrammableModel, res: ProgrammableModel, length: int
) -> None:
    researcher(ai)
    agent = ai.define_agent(
        "coordinator", model="coordModel", use=[Agents(agents=["researcher"], history_length=length)]
    )
    earlier = [
        Message(role="user", content=[Part(text="one")]),
        Message(role="model", content=[Part(text="two")]),
        Message(role="user", content=[Part(text="three")]),
    ]
    coord.program([calls(("delegate_to_researcher", {"task": "dig"})), text("done")])
    res.program([text("dug")])
    await run(agent, "four", {"state": {"messages": [m.to_wire() for m in earlier]}})
    expected = (
        [("user", "one"), ("model", "two"), ("user", "three"), ("user", "four")][4 - length :]
        if length
        else []
    )
    assert user_texts(res.requests[0]) == [*expected, ("user", "dig")]


async def test_a_server_managed_sub_agent_remembers_across_coordinator_turns(
    ai: Turnkit, coord: ProgrammableModel, res: ProgrammableModel
) -> None:
    child_store = InMemorySessionStore()
    researcher(ai, store=child_store)
    agent = ai.define_agent(
        "coordinator",
        model="coordModel",
        store=InMemorySessionStore(),
        use=[Agents(agents=["researcher"], history_length=5)],  # not forwarded: the child has a store
    )
    coord.program(
        [
            calls(("delegate_to_researcher", {"task": "first"})),
            text("a"),
            calls(("delegate_to_researcher", {"task": "second"})),
            text("b"),
        ]
    )
    res.program([text("answer one"), text("answer two")])
    chat = agent.chat()
    await chat.send("turn one")
    second = await chat.send("turn two")
    assert user_texts(res.requests[0]) == [("user", "first")]
    assert user_texts(res.requests[1]) == [("user", "first"), ("model", "answer one"), ("user", "second")]
    child = await child_store.get_snapshot(session_id=f"{chat.session_id}:researcher")
    assert child is not None and child.state is not None and child.state.messages is not None
    task = child.state.messages[-2]
    assert task.text == "second"
    assert task.metadata == {
        "delegatedBy": {
            "agent": "coordinator",
            "sessionId": chat.session_id,
            "snapshotId": second.snapshot_id,
        }
    }


async def test_aborting_the_coordinator_aborts_a_running_child(
    ai: Turnkit, coord: ProgrammableModel, res: ProgrammableModel
) -> None:
    researcher(ai, store=InMemorySessionStore())
    agent = ai.define_agent(
        "coordinator", model="coordModel", store=InMemorySessionStore(), use=[Agents(agents=["researcher"])]
    )
    coord.program([calls(("delegate_to_researcher", {"task": "forever"})), text("unreachable")])
    child_started = asyncio.Event()
    child_stopped: list[str] = []

    async def block(request: ModelRequest, ctx: Any) -> Any:
        child_started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            child_stopped.append("aborted" if ctx.aborted else "cancelled")
            raise

    res.handler = block
    conn = await agent.stream_bidi()
    await conn.send_text("go")
    await asyncio.wait_for(child_started.wait(), 5)
    conn.abort_turn()
    out = await asyncio.wait_for(conn.output(), 5)
    assert out.finish_reason == "aborted"
    assert child_stopped == ["aborted"]  # the child's turn saw the abort, not a stray cancel


async def test_max_delegations_limits_each_turn(
    ai: Turnkit, coord: ProgrammableModel, res: ProgrammableModel
) -> None:
    researcher(ai)
    agent = ai.define_agent(
        "coordinator", model="coordModel", use=[Agents(agents=["researcher"], max_delegations=1)]
    )
    two = calls(("delegate_to_researcher", {"task": "a"}), ("delegate_to_researcher", {"task": "b"}))
    coord.program([two, text("done"), two, text("done")])
    res.handler = lambda request, ctx: text("found")
    await run(agent, "go")
    outputs = tool_outputs(coord.requests[1])
    assert outputs[0] == {"response": "found", "artifacts": []}
    assert outputs[1]["error"]["status"] == "RESOURCE_EXHAUSTED" and "limit" in outputs[1]["response"]
    assert len(res.requests) == 1
    await run(agent, "again")  # a new turn has its own budget
    assert len(res.requests) == 2


async def test_a_sub_agent_failure_or_interrupt_is_the_tool_output(
    ai: Turnkit, coord: ProgrammableModel, res: ProgrammableModel
) -> None:
    ask = ai.define_interrupt(name="ask_user", description="Ask the user.")
    researcher(ai, tools=[ask])
    agent = ai.define_agent("coordinator", model="coordModel", use=[Agents(agents=["researcher"])])
    coord.program([calls(("delegate_to_researcher", {"task": "x"})), text("coped")])

    def fail(request: ModelRequest, ctx: Any) -> Any:
        from turnkit import TurnkitError

        raise TurnkitError("UNAVAILABLE", "model is down")

    res.handler = fail
    out = await run(agent, "go")
    assert out.finish_reason == "stop"
    [failed] = tool_outputs(coord.requests[1])
    assert failed["error"]["status"] == "UNAVAILABLE" and "model is down" in failed["error"]["message"]
    assert failed["response"].startswith("error: sub-agent 'researcher' failed")

    coord.program([calls(("delegate_to_researcher", {"task": "x"})), text("coped")])
    res.handler = lambda request, ctx: calls(("ask_user", {"q": "which?"}))
    out = await run(agent, "go")
    assert out.finish_reason == "stop"
    [paused] = tool_outputs(coord.requests[-1])
    assert paused["error"]["status"] == "FAILED_PRECONDITION" and "ask_user" in paused["response"]
    assert paused["interrupts"][0]["name"] == "ask_user"


def artifact_writer(ai: Turnkit) -> Any:
    async def fn(sess: AgentSession[Any], ctx: Any) -> AgentResult:
        async def handle(item: AgentInput, turn: TurnContext) -> AgentResult:
            task = item.message.text if item.message else ""
            await sess.add_artifacts(Artifact(name="notes.md", parts=[Part(text=f"notes on {task}")]))
            return AgentResult(message=Message(role="model", content=[Part(text="wrote notes")]))

        await sess.run(handle)
        return await sess.result()

    return ai.define_custom_agent("scribe", fn, description="Writes notes.")


async def test_inline_artifacts_come_back_in_the_tool_output(ai: Turnkit, coord: ProgrammableModel) -> None:
    artifact_writer(ai)
    agent = ai.define_agent("coordinator", model="coordModel", use=[Agents(agents=["scribe"])])
    coord.program([calls(("delegate_to_scribe", {"task": "owls"})), text("done")])
    out = await run(agent, "go")
    assert tool_outputs(coord.requests[1]) == [
        {"response": "wrote notes", "artifacts": [{"name": "notes.md", "content": "notes on owls"}]}
    ]
    assert out.state is not None and not out.state.artifacts


async def test_session_artifacts_are_copied_into_the_coordinator_session(
    ai: Turnkit, coord: ProgrammableModel
) -> None:
    artifact_writer(ai)
    agent = ai.define_agent(
        "coordinator",
        model="coordModel",
        store=InMemorySessionStore(),
        use=[Agents(agents=["scribe"], artifact_strategy="session"), Artifacts(readonly=True)],
    )
    coord.program(
        [
            calls(("delegate_to_scribe", {"task": "owls"}), ("delegate_to_scribe", {"task": "bats"})),
            text("done"),
            calls(("delegate_to_scribe", {"task": "cats"})),
            text("done"),
        ]
    )
    chat = agent.chat()
    await chat.send("go")
    first = tool_outputs(coord.requests[1])
    assert sorted(o["artifacts"][0]["name"] for o in first) == ["scribe_1/notes.md", "scribe_2/notes.md"]
    assert all(set(o["artifacts"][0]) == {"name"} for o in first)  # names only: no content
    await chat.send("more")
    assert tool_outputs(coord.requests[3])[0]["artifacts"] == [{"name": "scribe_3/notes.md"}]
    snap = await agent.get_snapshot(session_id=chat.session_id)
    assert snap is not None and snap.state is not None
    stored = {a.name: (a.parts[0].text, (a.metadata or {}).get("source")) for a in snap.state.artifacts or []}
    assert stored["scribe_3/notes.md"] == ("notes on cats", "scribe")
    assert len(stored) == 3
    # the Artifacts middleware lists them for the coordinator's model
    assert "scribe_1/notes.md" in system_text(coord.requests[2])


async def test_delegations_in_one_response_run_concurrently(ai: Turnkit, coord: ProgrammableModel) -> None:
    both_running = asyncio.Event()
    running: list[str] = []

    def waiter(name: str) -> Any:
        async def answer(request: ModelRequest, ctx: Any) -> Any:
            running.append(name)
            if len(running) == 2:
                both_running.set()
            await asyncio.wait_for(both_running.wait(), 5)  # sequential delegations would time out here
            return text(f"{name} done")

        return answer

    for name in ("alpha", "beta"):
        pm = define_programmable_model(ai, f"{name}Model")
        pm.handler = waiter(name)
        ai.define_agent(name, model=f"{name}Model")
    agent = ai.define_agent("coordinator", model="coordModel", use=[Agents(agents=["alpha", "beta"])])
    coord.program(
        [calls(("delegate_to_alpha", {"task": "a"}), ("delegate_to_beta", {"task": "b"})), text("ok")]
    )
    out = await run(agent, "go")
    assert out.finish_reason == "stop"
    assert [o["response"] for o in tool_outputs(coord.requests[1])] == ["alpha done", "beta done"]


async def test_the_stream_shows_delegation_as_tool_requests_and_responses(
    ai: Turnkit, coord: ProgrammableModel, res: ProgrammableModel
) -> None:
    researcher(ai)
    agent = ai.define_agent("coordinator", model="coordModel", use=[Agents(agents=["researcher"])])
    delegation = calls(("delegate_to_researcher", {"task": "t"}))
    coord.program(
        [delegation, text("ok")], chunks=[[{"role": "model", "content": delegation["message"]["content"]}]]
    )
    res.program([text("found")])
    chunks: list[Any] = []
    await agent.run(
        None, [{"message": {"role": "user", "content": [{"text": "go"}]}}], on_chunk=chunks.append
    )
    parts = [p for c in chunks if c.model_chunk for p in c.model_chunk.content]
    requested = [p.tool_request.name for p in parts if p.tool_request]
    answered = [p.tool_response.output for p in parts if p.tool_response]
    assert requested == ["delegate_to_researcher"]
    assert answered == [{"response": "found", "artifacts": []}]


async def test_a_remote_sub_agent_served_over_http() -> None:
    server_ai = Turnkit()
    remote_model = define_programmable_model(server_ai, "resModel")
    server_ai.define_agent(
        "researcher", model="resModel", store=InMemorySessionStore(), description="Remote facts."
    )
    remote_model.program([text("remote one"), text("remote two")])
    ai = Turnkit()
    local = define_programmable_model(ai, "coordModel")
    async with serve_async(create_app(server_ai)) as base, remote_agent(f"{base}/agents/researcher") as far:
        agent = ai.define_agent(
            "coordinator",
            model="coordModel",
            store=InMemorySessionStore(),
            use=[Agents(agents=[{"agent": far, "description": "Remote facts."}])],
        )
        local.program(
            [
                calls(("delegate_to_researcher", {"task": "one"})),
                text("a"),
                calls(("delegate_to_researcher", {"task": "two"})),
                text("b"),
            ]
        )
        chat = agent.chat()
        await chat.send("first")
        await chat.send("second")
    assert tool_outputs(local.requests[1]) == [{"response": "remote one", "artifacts": []}]
    assert tool_outputs(local.requests[3]) == [{"response": "remote two", "artifacts": []}]
    # the remote sub-agent kept one session for this coordinator session: it saw the first task
    assert user_texts(remote_model.requests[1]) == [("user", "one"), ("model", "remote one"), ("user", "two")]


async def test_the_coordinator_example_delegates_to_both_specialists(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("coordinator_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "coordinator_example", example)
    spec.loader.exec_module(example)
    pm = define_programmable_model(example.ai)
    example.ai.default_model = "programmableModel"

    def script(request: ModelRequest, ctx: Any) -> Any:
        system = system_text(request)
        last = request.messages[-1]
        if system.startswith("You are a researcher."):
            return (
                text("The Moon is 384,400 km away.")
                if last.role == "tool"
                else calls(("almanac", {"topic": "moon"}))
            )
        if system.startswith("You are a writer."):
            if last.role == "tool":
                return text("I wrote moon.md.")
            return calls(("write_artifact", {"name": "moon.md", "content": "Silver and far."}))
        if last.role != "tool":
            return calls(
                ("delegate_to_researcher", {"task": "How far is the Moon?"}),
                ("delegate_to_writer", {"task": "A two-line poem about the Moon."}),
            )
        if not any(p.tool_response and p.tool_response.name == "read_artifact" for p in last.content):
            return calls(("read_artifact", {"name": "writer_1/moon.md"}))
        return text("The Moon is 384,400 km away. Poem: Silver and far.")

    pm.handler = script
    chat = example.coordinator.chat()
    res = await chat.send("Tell me about the Moon, with a poem.")
    assert res.text == "The Moon is 384,400 km away. Poem: Silver and far."
    delegated = next(
        r
        for r in pm.requests
        if r.messages[-1].role == "tool" and "delegate" in str(r.messages[-1].to_wire())
    )
    outputs = tool_outputs(delegated)
    assert outputs[0] == {"response": "The Moon is 384,400 km away.", "artifacts": []}
    assert outputs[1] == {"response": "I wrote moon.md.", "artifacts": [{"name": "writer_1/moon.md"}]}
    read = tool_outputs(pm.requests[-1])
    assert read == [{"name": "writer_1/moon.md", "found": True, "content": "Silver and far."}]


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"agents": []}, "agents"),
        ({"agents": "researcher"}, "agents"),
        ({"agents": [{"description": "no name"}]}, "name"),
        ({"agents": ["a"], "history_length": -1}, "history_length"),
        ({"agents": ["a"], "max_delegations": "5"}, "max_delegations"),
        ({"agents": ["a"], "artifact_strategy": "copy"}, "artifact_strategy"),
        ({"agents": ["a"], "max_depth": 0}, "max_depth"),
        ({"agents": ["a", {"name": "a"}]}, "tool name"),
    ],
)
def test_bad_delegation_options_are_refused_naming_them(options: dict[str, Any], named: str) -> None:
    with pytest.raises(TurnkitError) as err:
        Agents(**options)
    assert err.value.status == "INVALID_ARGUMENT" and named in err.value.message


async def test_delegation_from_a_plain_generate_call(
    ai: Turnkit, coord: ProgrammableModel, res: ProgrammableModel
) -> None:
    researcher(ai, store=InMemorySessionStore())
    coord.program([calls(("delegate_to_researcher", {"task": "t"})), text("ok")])
    res.program([text("found")])
    out = await ai.generate("go", model="coordModel", use=[Agents(agents=["researcher"])])
    assert out.text == "ok" and tool_outputs(coord.requests[1]) == [{"response": "found", "artifacts": []}]
    assert res.requests[0].messages[-1].metadata is None  # no parent turn to record


def always_delegating(to: str | None = None) -> Any:
    """A model handler that delegates (to `to`, else by the agent's own name) until it gets an answer."""

    def handle(req: ModelRequest, _ctx: Any) -> dict[str, Any]:
        if req.messages[-1].role == "tool":
            return text("done: " + str(tool_outputs(req)[0]["response"])[:300])
        return calls((f"delegate_to_{to}", {"task": "again"}))

    return handle


async def test_an_agent_cannot_delegate_to_itself(ai: Turnkit, coord: ProgrammableModel) -> None:
    coord.handler = always_delegating("loop")
    agent = ai.define_agent("loop", model="coordModel", use=[Agents(agents=["loop"])])
    out = await asyncio.wait_for(run(agent, "go"), 10)
    assert out.finish_reason == "stop" and len(coord.requests) == 2
    [answer] = tool_outputs(coord.requests[1])
    assert answer["error"]["status"] == "FAILED_PRECONDITION"
    assert "already running up this chain (loop -> loop)" in answer["error"]["message"]


async def test_two_agents_cannot_delegate_to_each_other_in_a_cycle(ai: Turnkit) -> None:
    ping, pong = define_programmable_model(ai, "pingModel"), define_programmable_model(ai, "pongModel")
    ping.handler, pong.handler = always_delegating("pong"), always_delegating("ping")
    ai.define_agent("pong", model="pongModel", use=[Agents(agents=["ping"])])
    agent = ai.define_agent("ping", model="pingModel", use=[Agents(agents=["pong"])])
    out = await asyncio.wait_for(run(agent, "go"), 10)
    assert out.finish_reason == "stop" and len(ping.requests) == 2 and len(pong.requests) == 2
    [answer] = tool_outputs(pong.requests[1])
    assert "ping -> pong -> ping" in answer["error"]["message"]
    assert out.message is not None and "already running up this chain" in out.message.text


async def test_delegations_nest_at_most_max_depth_levels(ai: Turnkit) -> None:
    models = [define_programmable_model(ai, f"m{i}") for i in range(5)]
    for i, model in enumerate(models):
        model.handler = always_delegating(f"a{i + 1}")
        ai.define_agent(f"a{i}", model=f"m{i}", use=[Agents(agents=[f"a{i + 1}"], max_depth=3)])
    out = await asyncio.wait_for(run(ai.registry.lookup("agent", "a0"), "go"), 10)
    assert out.finish_reason == "stop"
    assert [len(m.requests) for m in models] == [2, 2, 2, 2, 0]  # a3 would be the 4th level
    [answer] = tool_outputs(models[3].requests[1])
    assert answer["error"]["status"] == "RESOURCE_EXHAUSTED" and "level 4, at most 3" in answer["response"]


async def test_one_agents_object_delegates_within_each_app_it_serves() -> None:
    shared = Agents(agents=["researcher"])
    answers = []
    for label in ("first", "second"):
        app = Turnkit(model="coordModel")
        coordinator_model = define_programmable_model(app, "coordModel")
        define_programmable_model(app, "resModel").program([text(f"researcher of the {label} app")])
        researcher(app)
        coordinator_model.program([calls(("delegate_to_researcher", {"task": "t"})), text("ok")])
        await run(app.define_agent("coordinator", use=[shared]), "go")
        answers.append(tool_outputs(coordinator_model.requests[1])[0]["response"])
    assert answers == ["researcher of the first app", "researcher of the second app"]


async def test_a_delegation_run_on_resume_still_gets_the_recent_history(
    ai: Turnkit, coord: ProgrammableModel, res: ProgrammableModel
) -> None:
    from turnkit.middleware import ToolApproval

    researcher(ai)
    res.program([text("found")])
    coord.program([calls(("delegate_to_researcher", {"task": "T1"})), text("done")])
    agent = ai.define_agent(
        "coordinator",
        model="coordModel",
        store=InMemorySessionStore(),
        use=[ToolApproval(), Agents(agents=["researcher"], history_length=2)],
    )
    chat = agent.chat()
    first = await chat.send("please research")
    assert first.finish_reason == "interrupted"
    await chat.resume(restart=[first.interrupts[0].restart()])
    assert user_texts(res.requests[0]) == [("user", "please research"), ("user", "T1")]
