"""Interop with Genkit for Python (PyPI `genkit==0.12.0`, `genkit-fastapi==0.12.0`), both ways.

- Genkit's `remote_agent` (`genkit.exp`) against turnkit's server: `tests/interop/genkit_py_client.py`
  runs every scenario in the peer virtualenv against `turnkit serve tests/interop/app.py`, and
  prints JSON that `tests/interop/checks.py` checks (the same checks as the JS client's).
- turnkit's `remote_agent` against Genkit's server: `tests/interop/genkit_server.py` serves the
  same agents with `genkit_fastapi.serve_agent` in the peer virtualenv, and these tests drive it.

The peer virtualenv (`benchmarks/.venvs/genkit-fastapi-0.12.0`) is created on first use and
reused; Genkit never enters turnkit's environment. Without it the tests skip, except in CI.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from interop import checks
from interop.harness import (
    INTEROP,
    genkit_server,
    outcome,
    peer_env,
    peer_python,
    run_json,
    turnkit_server,
)
from turnkit.agents import AgentError
from turnkit.http import RemoteAgent, remote_agent

# --- Genkit's Python client against turnkit's server -------------------------------------------


@pytest.fixture(scope="module")
def genkit_py() -> dict[str, Any]:
    """Every scenario's outcome, from one run of Genkit's Python client against one turnkit server."""
    python = peer_python()
    with turnkit_server() as base:
        report = run_json([str(python), str(INTEROP / "genkit_py_client.py"), base], env=peer_env())
    assert report["version"] == "0.12.0"
    results: dict[str, Any] = report["results"]
    return results


def test_genkit_client_send(genkit_py: dict[str, Any]) -> None:
    checks.send(outcome(genkit_py, "send"))


def test_genkit_client_send_stream(genkit_py: dict[str, Any]) -> None:
    checks.stream(outcome(genkit_py, "stream"))


def test_genkit_client_custom_state(genkit_py: dict[str, Any]) -> None:
    checks.state(outcome(genkit_py, "state"))


def test_genkit_client_artifacts(genkit_py: dict[str, Any]) -> None:
    checks.artifacts(outcome(genkit_py, "artifacts"))


def test_genkit_client_interrupt_respond(genkit_py: dict[str, Any]) -> None:
    checks.interrupt_respond(outcome(genkit_py, "interrupt_respond"), by="py")


def test_genkit_client_interrupt_restart(genkit_py: dict[str, Any]) -> None:
    checks.interrupt_restart(outcome(genkit_py, "interrupt_restart"))


def test_genkit_client_failure_is_agent_error(genkit_py: dict[str, Any]) -> None:
    checks.failure(outcome(genkit_py, "failure"))


def test_genkit_client_detach_poll_abort(genkit_py: dict[str, Any]) -> None:
    checks.detach(outcome(genkit_py, "detach"))


def test_genkit_client_load_chat(genkit_py: dict[str, Any]) -> None:
    checks.load_chat(outcome(genkit_py, "load_chat"))


def test_genkit_client_get_snapshot(genkit_py: dict[str, Any]) -> None:
    v = outcome(genkit_py, "get_snapshot")
    checks.get_snapshot(v)
    assert v["missing"] == {"value": None}  # the Python client reads a 404 as "no snapshot"


def test_genkit_client_misuse_errors(genkit_py: dict[str, Any]) -> None:
    v = outcome(genkit_py, "errors")
    checks.errors(v)
    checks.error_statuses(v)  # the Python client reads the status of an HTTP error answer


def test_genkit_client_client_managed(genkit_py: dict[str, Any]) -> None:
    checks.client_managed(outcome(genkit_py, "client_managed"))


# --- turnkit's client against Genkit's server ---------------------------------------------------


@pytest.fixture(scope="module")
def genkit_base() -> Iterator[str]:
    """Genkit's FastAPI server for the agents of app.py, in the peer virtualenv."""
    with genkit_server() as base:
        yield base


@pytest.fixture
async def agent(genkit_base: str) -> AsyncIterator[RemoteAgent]:
    """turnkit's client for Genkit's server-managed agent."""
    async with remote_agent(f"{genkit_base}/agents/chat") as remote:
        yield remote


async def test_turnkit_client_send(agent: RemoteAgent) -> None:
    chat = agent.chat()
    first = await chat.send("hello there")
    second = await chat.send("again")
    assert (first.text, first.finish_reason) == ("echo: hello there (turn 1)", "stop")
    assert (second.text, second.finish_reason) == ("echo: again (turn 2)", "stop")
    assert first.snapshot_id and second.snapshot_id and first.snapshot_id != second.snapshot_id
    assert second.session_id == first.session_id == chat.session_id
    assert chat.snapshot_id == second.snapshot_id
    # The whole session, read from Genkit's snapshot as a local chat would have it.
    assert [m.text for m in second.messages] == [
        "hello there",
        "echo: hello there (turn 1)",
        "again",
        "echo: again (turn 2)",
    ]
    assert second.messages == chat.messages


async def test_turnkit_client_send_stream(agent: RemoteAgent) -> None:
    turn = agent.chat().send_stream("please stream these words")
    chunks = [c async for c in turn.stream]
    response = await turn.response
    text = "echo: please stream these words (turn 1)"
    assert response.text == text and response.finish_reason == "stop"
    texts = [c.text for c in chunks if c.text]
    assert len(texts) == len(text.split(" ")) and "".join(texts) == text
    assert [c.accumulated_text for c in chunks if c.text][-1] == text
    assert chunks[-1].turn_end and chunks[-1].raw.turn_end is not None
    assert chunks[-1].raw.turn_end.snapshot_id == response.snapshot_id


async def test_turnkit_client_get_snapshot(agent: RemoteAgent) -> None:
    chat = agent.chat()
    one = await chat.send("one")
    two = await chat.send("state calm")
    snap = await agent.get_snapshot(two.snapshot_id)
    assert snap is not None and snap.snapshot_id == two.snapshot_id
    assert snap.status == "completed" and snap.parent_id == one.snapshot_id
    assert snap.session_id == one.session_id and snap.created_at
    assert snap.state is not None and snap.state.custom == {"mood": "calm", "changes": 1}
    assert [m.role for m in snap.state.messages or []] == ["user", "model", "user", "model", "tool", "model"]
    latest = await agent.get_snapshot(session_id=chat.session_id)
    assert latest is not None and latest.snapshot_id == two.snapshot_id
    mine = await chat.get_snapshot()
    assert mine is not None and mine.snapshot_id == two.snapshot_id
    assert await agent.get_snapshot("no-such-snapshot") is None


async def test_turnkit_client_custom_state_and_artifacts(agent: RemoteAgent) -> None:
    chat = agent.chat()
    turn = chat.send_stream("state calm")
    customs = [c.custom for c in [c async for c in turn.stream] if c.raw.custom_patch]
    await turn.response
    assert customs == [{"mood": "calm"}, {"mood": "calm", "changes": 1}]
    assert chat.custom == {"mood": "calm", "changes": 1}
    await chat.send("state excited")
    assert chat.custom == {"mood": "excited", "changes": 2}
    first = await chat.send("artifact summary")
    second = await chat.send("artifact summary")
    assert [a.to_wire() for a in first.artifacts] == [
        {"name": "summary", "parts": [{"text": "report summary v1"}], "metadata": {"version": 1}}
    ]
    assert [a.to_wire() for a in second.artifacts] == [
        {"name": "summary", "parts": [{"text": "report summary v2"}], "metadata": {"version": 2}}
    ]


async def test_turnkit_client_interrupts(agent: RemoteAgent) -> None:
    chat = agent.chat()
    paused = await chat.send("approve deploy")
    assert paused.finish_reason == "interrupted"
    [interrupt] = paused.interrupts
    assert (interrupt.name, interrupt.ref, interrupt.input) == (
        "approve_action",
        "approve-1",
        {"action": "deploy"},
    )
    assert interrupt.data == {"reason": "approve deploy?"}
    answered = await chat.resume(respond=[interrupt.respond({"approved": True, "by": "turnkit"})])
    assert answered.text == 'tool said [{"approved":true,"by":"turnkit"}]'
    paused = await chat.send("approve rollback")
    # turnkit's restart carries metadata.resumed, so Genkit's tool sees is_resumed() and approves.
    restarted = await chat.resume(restart=[paused.interrupts[0].restart()])
    assert restarted.text == 'tool said [{"action":"rollback","approved":true,"restarted":true}]'


async def test_turnkit_client_failed_turn(agent: RemoteAgent) -> None:
    chat = agent.chat()
    ok = await chat.send("hello")
    with pytest.raises(AgentError) as failure:
        await chat.send("fail now")
    assert failure.value.response.finish_reason == "failed" and failure.value.status == "UNAVAILABLE"
    assert "scripted failure: the model is down" in failure.value.message
    assert chat.snapshot_id == failure.value.snapshot_id == ok.snapshot_id  # still at the last good one
    assert [m.text for m in failure.value.response.messages] == ["hello", "echo: hello (turn 1)"]
    recovered = await chat.send("recover")
    assert recovered.text == "echo: recover (turn 2)"


async def test_turnkit_client_detach_poll_abort(agent: RemoteAgent) -> None:
    chat = agent.chat()
    await chat.send("hello")
    task = await chat.detach("sleep 0.3")
    assert task.snapshot_id
    done = await task.wait(timeout=20, interval=0.05)
    assert done.status == "completed" and done.state is not None
    assert (done.state.messages or [])[-1].text == "slept 0.3"
    blocked = await chat.detach("block")
    pending = await blocked.poll()
    assert pending is not None and pending.status == "pending"
    assert await blocked.abort() == "pending"
    final = await blocked.wait(timeout=20, interval=0.05)
    assert final.status == "aborted"
    assert await blocked.abort() == "aborted"


async def test_turnkit_client_load_chat(agent: RemoteAgent) -> None:
    chat = agent.chat()
    one = await chat.send("one")
    two = await chat.send("two")
    by_session = await agent.load_chat(session_id=chat.session_id)
    assert by_session.snapshot_id == two.snapshot_id
    assert (await by_session.send("three")).text == "echo: three (turn 3)"
    by_snapshot = await agent.load_chat(snapshot_id=one.snapshot_id)
    branch = await by_snapshot.send("branch")
    assert branch.text == "echo: branch (turn 2)"
    snap = await agent.get_snapshot(branch.snapshot_id)
    assert snap is not None and snap.parent_id == one.snapshot_id


async def test_turnkit_client_client_managed(genkit_base: str) -> None:
    async with remote_agent(f"{genkit_base}/agents/stateless", state_management="client") as stateless:
        chat = stateless.chat()
        first = await chat.send("state calm")
        assert first.text == 'tool said [{"mood":"calm"}]'
        assert chat.custom == {"mood": "calm", "changes": 1}
        assert len(chat.messages) == 4
        second = await chat.send("hello")
        assert second.text == "echo: hello (turn 2)"  # Genkit's server saw the history we sent
        assert second.snapshot_id is None and chat.session_id == first.session_id
