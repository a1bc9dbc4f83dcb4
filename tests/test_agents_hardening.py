"""Edge cases found in review: stray cancellation, concurrent sends, detach failures, aborts reaching
tools, redacted stored errors, leases cancelled while taken, closing a file store."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from turnkit import Turnkit, TurnkitError
from turnkit._tools import ToolContext
from turnkit.agents import AgentContext, AgentSession, TurnContext
from turnkit.agents._snapshots import INTERNAL_MARK, stored_error
from turnkit.http._wire import snapshot_to_wire as _snapshot_wire
from turnkit.sessions import FileSessionStore, InMemorySessionStore
from turnkit.testing import ProgrammableModel
from turnkit.types import AgentInput, SessionSnapshot


def reply(text: str) -> dict[str, Any]:
    return {"message": {"role": "model", "content": [{"text": text}]}, "finishReason": "stop"}


def custom_agent(ai: Turnkit, name: str, handle: Any, **options: Any) -> Any:
    async def fn(sess: AgentSession, ctx: AgentContext) -> Any:
        async def turn(item: AgentInput, tc: TurnContext) -> None:
            await handle(sess, tc)

        await sess.run(turn)
        return await sess.result()

    return ai.define_custom_agent(name=name, fn=fn, **options)


async def test_a_stray_cancellation_fails_the_turn_instead_of_escaping(ai: Turnkit) -> None:
    async def handle(sess: AgentSession, tc: TurnContext) -> None:
        doomed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(doomed.cancel)  # cancelled by someone else
        await doomed

    agent = custom_agent(ai, "stray", handle, store=InMemorySessionStore())
    out = await agent.run({}, [{"message": {"role": "user", "content": [{"text": "x"}]}}])
    assert out.finish_reason == "failed" and out.error is not None and out.error.status == "INTERNAL"


async def test_concurrent_sends_on_one_chat_line_up(ai: Turnkit, pm: ProgrammableModel) -> None:
    pm.handler = lambda request, ctx: reply(f"seen {len(request.messages)}")
    chat = ai.define_agent(name="a", store=InMemorySessionStore()).chat()
    first, second = await asyncio.gather(chat.send("a"), chat.send("b"))
    assert (first.text, second.text) == ("seen 1", "seen 3")
    assert [m.text for m in second.messages] == ["a", "seen 1", "b", "seen 3"]


async def test_chat_continues_after_a_failed_detached_turn(ai: Turnkit, pm: ProgrammableModel) -> None:
    pm.program([reply("one")])
    chat = ai.define_agent(name="a", store=InMemorySessionStore()).chat()
    first = await chat.send("one")
    pm.program([])  # the detached turn's model call fails: nothing scripted
    task = await chat.detach("two")
    assert (await task.wait(timeout=5)).status == "failed"
    pm.program([reply("three")])
    third = await chat.send("three")
    assert third.finish_reason == "stop"
    snap = await chat.get_snapshot()
    assert snap is not None and snap.parent_id == first.snapshot_id  # continued from the last good one


async def test_run_with_a_detaching_input_answers_at_once(ai: Turnkit, pm: ProgrammableModel) -> None:
    pm.gate = asyncio.Event()  # the background turn stays blocked in the model
    pm.program([reply("later")])
    agent = ai.define_agent(name="a", store=InMemorySessionStore())
    chunks: list[Any] = []
    out = await asyncio.wait_for(
        agent.run(
            {},
            [{"message": {"role": "user", "content": [{"text": "x"}]}, "detach": True}],
            on_chunk=chunks.append,
        ),
        5,
    )
    assert out.finish_reason == "detached" and chunks == []
    assert out.snapshot_id is not None
    assert await agent.abort(out.snapshot_id) == "pending"


async def test_abort_reaches_running_tools_and_stops_the_loop(ai: Turnkit, pm: ProgrammableModel) -> None:
    started, seen_abort = threading.Event(), threading.Event()

    @ai.tool()
    def slow(ctx: ToolContext) -> str:
        """A sync tool that polls the abort signal."""
        started.set()
        if ctx.abort_signal.wait(5):
            seen_abort.set()
        return "done"

    pm.program(
        [
            {"message": {"role": "model", "content": [{"toolRequest": {"name": "slow", "input": {}}}]}},
            reply("x"),
        ]
    )
    chat = ai.define_agent(name="a", tools=["slow"]).chat()
    turn = chat.send_stream("go")
    await asyncio.to_thread(started.wait, 5)
    response = await turn.abort()
    assert response.finish_reason == "aborted"
    assert await asyncio.to_thread(seen_abort.wait, 5)  # the tool saw the abort
    assert pm.calls == 1  # no further model call after the tools


async def test_non_public_errors_are_marked_when_stored_and_hidden_over_http() -> None:
    secret = TurnkitError("PERMISSION_DENIED", "key sk-SECRET rejected", public=False)
    info = stored_error(secret)
    assert info.message == secret.message and info.details == {INTERNAL_MARK: True}
    snap = SessionSnapshot(snapshot_id="s", created_at="t", status="failed", error=info)
    shown = _snapshot_wire(snap)["error"]
    assert shown["status"] == "INTERNAL" and "SECRET" not in str(shown)
    public = stored_error(TurnkitError("INVALID_ARGUMENT", "bad input"))
    assert _snapshot_wire(snap.model_copy(update={"error": public}))["error"]["message"] == "bad input"


class FailingPendingStore(InMemorySessionStore):
    async def save_snapshot(self, snapshot_id: str, fn: Any, *, context: Any = None) -> Any:
        proposed = fn(None)
        if proposed is not None and proposed.status == "pending":
            raise TurnkitError("UNAVAILABLE", "store down")
        return await super().save_snapshot(snapshot_id, fn, context=context)


async def test_detach_without_its_pending_snapshot_fails_and_stops_the_turn(
    ai: Turnkit, pm: ProgrammableModel
) -> None:
    pm.gate = asyncio.Event()
    pm.program([reply("x")])
    agent = ai.define_agent(name="a", store=FailingPendingStore())
    with pytest.raises(TurnkitError) as err:
        await agent.chat().detach("work")
    assert err.value.status == "UNAVAILABLE"
    assert not agent._background  # nothing left running in the background


class BlippingStore(InMemorySessionStore):
    def __init__(self) -> None:
        super().__init__()
        self.blips = 1
        self.blipped = asyncio.Event()

    async def watch_status(self, snapshot_id: str, *, context: Any = None) -> Any:
        if self.blips:
            self.blips -= 1
            self.blipped.set()
            raise TurnkitError("UNAVAILABLE", "a passing outage")
        async for status in super().watch_status(snapshot_id, context=context):
            yield status


async def test_a_store_blip_while_watching_does_not_abort_a_detached_turn(
    ai: Turnkit, pm: ProgrammableModel
) -> None:
    pm.gate = asyncio.Event()
    pm.program([reply("finished")])
    store = BlippingStore()
    agent = ai.define_agent(name="a", store=store)
    task = await agent.chat().detach("work")
    await asyncio.wait_for(store.blipped.wait(), 5)  # the watcher has hit the outage
    pm.gate.set()
    assert (await task.wait(timeout=5)).status == "completed"


async def test_a_lease_cancelled_while_being_taken_is_released(tmp_path: Path) -> None:
    store = FileSessionStore(tmp_path / "s")
    taking = asyncio.ensure_future(store.session_lease("s", wait=5).__aenter__())
    await asyncio.sleep(0)  # the backend call is under way in the store's thread
    taking.cancel()
    with pytest.raises(asyncio.CancelledError):
        await taking
    async with store.session_lease("s", wait=0):  # free at once, not after the ttl
        pass


async def test_a_closed_file_store_refuses_calls(tmp_path: Path) -> None:
    async with FileSessionStore(tmp_path / "s") as store:
        await store.save_snapshot("a", lambda _: SessionSnapshot(snapshot_id="a", created_at="t", state=None))
    with pytest.raises(TurnkitError) as err:
        await store.get_snapshot(snapshot_id="a")
    assert err.value.status == "FAILED_PRECONDITION"
    reopened = FileSessionStore(tmp_path / "s")
    assert (await reopened.get_snapshot(snapshot_id="a")) is not None
    await reopened.close()
