"""Local and remote chats return the same fields: the same turns (send, stream, custom state,
artifacts, interrupts, a failure) through `agent.chat()` and through `remote_agent` against a real server."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from pydantic import BaseModel

from http_support import DemoApp, demo_app, serve_async, text_reply, tool_call
from turnkit.agents import AgentChat, AgentError
from turnkit.http import create_app, remote_agent
from turnkit.testing import ProgrammableModel

Scenario = Callable[[AgentChat, ProgrammableModel], Awaitable[list[Any]]]


def observed(response: Any) -> dict[str, Any]:
    """What a caller reads from a response, in JSON form."""
    return {
        "text": response.text,
        "messages": [m.to_wire() for m in response.messages],
        "custom": response.custom,
        "artifacts": [a.to_wire() for a in response.artifacts],
        "finish_reason": response.finish_reason,
        "session_id": response.session_id,
        "snapshot_id": response.snapshot_id,
    }


class Ids:
    """Replaces ids (generated, so different in each run) by their order of first appearance:
    runs match when their ids repeat and change at the same places."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}

    def __call__(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: self.name(v) if k in ("session_id", "snapshot_id", "snapshotId") else self(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self(v) for v in value]
        return value

    def name(self, value: Any) -> Any:
        if value is None:
            return None
        return self.seen.setdefault(value, f"id{len(self.seen)}")


async def talk(chat: AgentChat, pm: ProgrammableModel) -> list[Any]:
    """A prompt agent: a plain turn, a streamed one, an interrupt answered, one restarted, a failed
    turn (its `AgentError`) and one after it."""
    seen: list[Any] = []
    pm.program([text_reply("hello")])
    seen.append(observed(await chat.send("hi")))
    pm.program([text_reply("streamed reply")])
    turn = chat.send_stream("stream please")
    seen.append([c.raw.to_wire() async for c in turn.stream])
    seen.append(observed(await turn.response))
    pm.program([tool_call("ask", {"query": "sure?"}, ref="q1"), text_reply("answered")])
    paused = await chat.send("ask me")
    seen.append(observed(paused))
    seen.append(observed(await chat.resume(respond=[paused.interrupts[0].respond({"answer": "yes"})])))
    pm.program([tool_call("confirm", {"action": "delete"}, ref="c1"), text_reply("deleted")])
    paused = await chat.send("delete it")
    seen.append(observed(paused))
    seen.append(observed(await chat.resume(restart=[paused.interrupts[0].restart()])))
    pm.program([tool_call("explode")])
    with pytest.raises(AgentError) as failure:
        await chat.send("boom")
    error = failure.value
    seen.append(
        {"response": observed(error.response), "state": error.state, "snapshot_id": error.snapshot_id}
    )
    pm.program([text_reply("recovered")])
    seen.append(observed(await chat.send("after the failure")))
    return seen


async def count(chat: AgentChat, pm: ProgrammableModel) -> list[Any]:
    """A custom agent: custom state and artifacts, sent and streamed."""
    seen: list[Any] = [observed(await chat.send("one"))]
    turn = chat.send_stream("two")
    seen.append([(c.raw.to_wire(), c.custom, c.accumulated_text) async for c in turn.stream])
    seen.append(observed(await turn.response))
    seen.append(observed(await chat.send("three")))
    seen.append(chat.custom)
    return seen


@pytest.fixture
async def served() -> AsyncIterator[tuple[DemoApp, str]]:
    demo = demo_app()
    async with serve_async(create_app(demo.ai)) as url:
        yield demo, url


@pytest.mark.parametrize(
    ("agent", "scenario"),
    [("chat", talk), ("stateless", talk), ("counter", count), ("statelessCounter", count)],
)
async def test_local_and_remote_chats_return_the_same_fields(
    served: tuple[DemoApp, str], agent: str, scenario: Scenario
) -> None:
    demo, url = served
    local = await scenario(demo.ai.agent(agent).chat(), demo.pm)
    async with remote_agent(f"{url}/agents/{agent}") as remote_agent_:
        remote = await scenario(remote_agent_.chat(), demo.pm)
    assert Ids()(remote) == Ids()(local)
    assert local[0]["messages"]  # the comparison is not vacuous: state is there
    if agent in ("counter", "statelessCounter"):
        assert local[-2]["custom"] == {"count": 3} and local[-2]["artifacts"]


async def test_a_chat_continuing_a_snapshot_sees_the_whole_history(served: tuple[DemoApp, str]) -> None:
    """State comes from the snapshot, not from this chat's own chunks: earlier turns are in it."""
    _, url = served
    async with remote_agent(f"{url}/agents/counter") as counter:
        first = await counter.chat().send("one")
        later = await counter.chat(snapshot_id=first.snapshot_id).send("two")
    assert [m.text for m in later.messages] == ["one", "count 1", "two", "count 2"]
    assert later.custom == {"count": 2}


async def test_a_state_read_that_fails_leaves_the_turn_result(
    served: tuple[DemoApp, str], caplog: pytest.LogCaptureFixture
) -> None:
    """The turn happened: a failed read of its state is logged, not raised (a retry would repeat it)."""
    demo, url = served
    unreachable = "http://127.0.0.1:9/getSnapshot"
    with caplog.at_level(logging.WARNING, logger="turnkit.http"):
        async with remote_agent(f"{url}/agents/counter", get_snapshot_url=unreachable) as counter:
            response = await counter.chat().send("one")
    assert response.text == "count 1" and response.snapshot_id
    # The chat's own view instead, from what streamed.
    assert [m.text for m in response.messages] == ["one", "count 1"] and response.custom == {"count": 1}
    assert "could not read the state" in caplog.text
    snap = await demo.store.get_snapshot(snapshot_id=response.snapshot_id)
    assert snap is not None and snap.status == "completed"


class Tally(BaseModel):
    count: int = 0


async def test_state_schema_types_the_remote_custom_state(served: tuple[DemoApp, str]) -> None:
    """`remote_agent(url, state_schema=...)` hands back the custom state as that type, as a local
    agent with `state_schema=` does: chunks, responses, the chat, detached snapshots."""
    _, url = served
    async with remote_agent(f"{url}/agents/counter", state_schema=Tally) as counter:
        assert counter.transport().state_type.json_schema == Tally.model_json_schema()
        chat = counter.chat()
        turn = chat.send_stream("one")
        assert [c.custom async for c in turn if c.raw.custom_patch] == [Tally(count=1)]
        response = await turn
        assert response.state == Tally(count=1) and chat.state == Tally(count=1)
        assert response.session_state.custom == {"count": 1}  # the JSON form stays reachable
        task = await chat.detach("two")
        final = await task.wait(timeout=5)
        assert final.state is not None and final.state.custom == Tally(count=2)
    async with remote_agent(f"{url}/agents/counter") as untyped:
        plain = await untyped.chat().send("one")
        assert plain.state == {"count": 1}
