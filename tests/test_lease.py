"""Session leases: one writer per session head, for every store and through the agent runtime."""

from __future__ import annotations

import asyncio
import time

import pytest

from test_store_contract import StoreCase, case  # noqa: F401 - `case` is the parametrized store fixture
from turnkit import Turnkit, TurnkitError
from turnkit.sessions import InMemorySessionStore
from turnkit.testing import ProgrammableModel


async def test_lease_is_exclusive_and_released(case: StoreCase) -> None:  # noqa: F811
    store = case.open()
    other = case.open()  # another instance over the same data, as another process would be
    async with store.session_lease("s1", wait=0):
        with pytest.raises(TurnkitError) as err:
            async with other.session_lease("s1", wait=0):
                pass
        assert err.value.status == "ABORTED" and "busy" in err.value.message
        async with other.session_lease("s2", wait=0):  # other sessions are free
            pass
    async with other.session_lease("s1", wait=0):
        pass


async def test_waiter_gets_the_lease_when_released(case: StoreCase) -> None:  # noqa: F811
    store, other = case.open(), case.open()
    order: list[str] = []
    first = store.session_lease("s", wait=0)
    await first.__aenter__()

    async def second() -> None:
        async with other.session_lease("s", wait=10):
            order.append("second")

    waiting = asyncio.ensure_future(second())
    await asyncio.sleep(0.05)  # let the second try and start waiting (it cannot get in yet)
    assert order == [] and not waiting.done()
    order.append("first done")
    await first.__aexit__(None, None, None)
    await asyncio.wait_for(waiting, 5)
    assert order == ["first done", "second"]


async def test_leases_are_per_tenant(case: StoreCase) -> None:  # noqa: F811
    store = case.open()
    async with (
        store.session_lease("s", context={"tenant": "a"}, wait=0),
        store.session_lease("s", context={"tenant": "b"}, wait=0),
    ):
        pass


async def test_lease_of_a_dead_holder_runs_out(case: StoreCase) -> None:  # noqa: F811
    store, other = case.open(lease_ttl=0.3), case.open(lease_ttl=0.3)
    dead = store.session_lease("s", wait=0)
    await dead.__aenter__()
    assert dead._renewer is not None
    dead._renewer.cancel()  # the holder "dies": nobody renews or releases
    with pytest.raises(TurnkitError, match="ABORTED"):
        async with other.session_lease("s", wait=0):
            pass
    start = time.monotonic()
    async with other.session_lease("s", wait=5):
        assert time.monotonic() - start < 2


async def test_held_lease_is_renewed_past_its_ttl(case: StoreCase) -> None:  # noqa: F811
    store, other = case.open(lease_ttl=0.2), case.open(lease_ttl=0.2)
    async with store.session_lease("s", wait=0):
        await asyncio.sleep(0.5)  # more than two ttl: only renewal keeps it
        with pytest.raises(TurnkitError, match="ABORTED"):
            async with other.session_lease("s", wait=0):
                pass


def reply(text: str) -> dict[str, object]:
    return {"message": {"role": "model", "content": [{"text": text}]}, "finishReason": "stop"}


async def test_concurrent_turns_on_one_session_line_up(ai: Turnkit, pm: ProgrammableModel) -> None:
    store = InMemorySessionStore()
    agent = ai.define_agent(name="a", store=store)
    pm.gate = asyncio.Event()
    pm.handler = lambda request, ctx: reply(f"seen {len(request.messages)}")
    one = asyncio.ensure_future(agent.chat(session_id="shared").send("first"))
    await pm.wait_for_calls(1)  # the first turn holds the lease and waits in the model
    two = asyncio.ensure_future(agent.chat(session_id="shared").send("second"))
    await asyncio.sleep(0.05)
    assert len(pm.requests) == 1  # the second turn waits for the lease, not the model
    pm.gate.set()
    first, second = await asyncio.gather(one, two)
    assert (first.text, second.text) == ("seen 1", "seen 3")  # the second saw the first exchange
    head = await agent.get_snapshot(session_id="shared")
    assert head is not None and head.snapshot_id == second.snapshot_id
    assert head.parent_id == first.snapshot_id
    assert [m.text for m in head.state.messages or []] == ["first", "seen 1", "second", "seen 3"]


async def test_reject_policy_fails_fast_with_aborted(ai: Turnkit, pm: ProgrammableModel) -> None:
    agent = ai.define_agent(name="a", store=InMemorySessionStore(), on_conflict="reject")
    pm.gate = asyncio.Event()
    pm.handler = lambda request, ctx: reply("ok")
    one = asyncio.ensure_future(agent.chat(session_id="s").send("first"))
    await pm.wait_for_calls(1)
    with pytest.raises(TurnkitError) as err:
        await agent.chat(session_id="s").send("second")
    assert err.value.status == "ABORTED"
    pm.gate.set()
    assert (await one).text == "ok"
    assert (await agent.chat(session_id="s").send("third")).text == "ok"  # free again


async def test_explicit_snapshot_branches_without_waiting(ai: Turnkit, pm: ProgrammableModel) -> None:
    agent = ai.define_agent(name="a", store=InMemorySessionStore(), on_conflict="reject")
    pm.handler = lambda request, ctx: reply("ok")
    root = await agent.chat(session_id="s").send("root")
    pm.gate = asyncio.Event()
    held = asyncio.ensure_future(agent.chat(session_id="s").send("on head"))
    await pm.wait_for_calls(2)  # the head turn now holds the lease, waiting in the model
    gate, pm.gate = pm.gate, None  # later calls answer at once; the held one keeps waiting
    branch = await agent.chat(snapshot_id=root.snapshot_id).send("branch")  # reject policy: no lease taken
    assert branch.finish_reason == "stop" and not held.done()
    snap = await agent.get_snapshot(branch.snapshot_id)
    assert snap is not None and snap.parent_id == root.snapshot_id
    gate.set()
    assert (await held).finish_reason == "stop"
