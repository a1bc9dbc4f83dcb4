"""Store options every store shares: the state size limit, and opening stores by URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from test_store_contract import StoreCase, case, msg, snap  # noqa: F401 - `case` is the store fixture
from turnkit import Turnkit, TurnkitError
from turnkit.agents import AgentContext, AgentError, AgentSession, TurnContext
from turnkit.sessions import FileSessionStore, InMemorySessionStore
from turnkit.sessions._url import store_from_url
from turnkit.types import AgentInput


async def test_state_over_the_limit_is_refused_and_nothing_written(case: StoreCase) -> None:  # noqa: F811
    store = case.open(max_state_bytes=1000)
    await store.save_snapshot("ok", lambda _: snap("ok", session="s", custom={"x": "a" * 500}))
    with pytest.raises(TurnkitError) as err:
        await store.save_snapshot("big", lambda _: snap("big", session="s", custom={"x": "a" * 2000}))
    assert err.value.status == "INVALID_ARGUMENT" and "max_state_bytes" in err.value.message
    assert await store.get_snapshot(snapshot_id="big") is None
    with pytest.raises(TurnkitError, match="new messages"):
        await store.save_snapshot(
            "chatty", lambda _: snap("chatty", session="s", parent="ok", messages=[msg("user", "b" * 2000)])
        )
    head = await store.get_snapshot(session_id="s")
    assert head is not None and head.snapshot_id == "ok"


async def test_turn_growing_state_past_the_limit_fails_gracefully(ai: Turnkit) -> None:
    async def fn(sess: AgentSession, ctx: AgentContext) -> object:
        async def turn(item: AgentInput, tc: TurnContext) -> None:
            size = len(await sess.get_messages()) * 600
            await sess.update_custom(lambda _: {"blob": "z" * size})

        await sess.run(turn)
        return await sess.result()

    agent = ai.define_custom_agent(name="grow", fn=fn, store=InMemorySessionStore(max_state_bytes=1000))
    chat = agent.chat()
    first = await chat.send("one")
    assert first.finish_reason == "stop"
    with pytest.raises(AgentError) as failed:
        await chat.send("two")  # 1200 bytes of custom state: over the limit
    assert failed.value.status == "INVALID_ARGUMENT" and "max_state_bytes" in failed.value.message
    assert failed.value.response.finish_reason == "failed"
    assert failed.value.snapshot_id == first.snapshot_id  # the last good snapshot stands


async def test_store_from_url(tmp_path: Path) -> None:
    memory = store_from_url("memory:?checkpoint_every=4&expire_after=0.5")
    assert isinstance(memory, InMemorySessionStore)
    assert (memory.checkpoint_every, memory.expire_after) == (4, 0.5)
    files = store_from_url(f"file:{tmp_path}/s?lease_ttl=2&max_state_bytes=10", checkpoint_every=3)
    assert isinstance(files, FileSessionStore) and files.directory == tmp_path / "s"
    assert (files.lease_ttl, files.max_state_bytes, files.checkpoint_every) == (2.0, 10, 3)
    with pytest.raises(TurnkitError, match="unknown store URL scheme 'mongo'"):
        store_from_url("mongo://x")
    with pytest.raises(TurnkitError, match="not a number"):
        store_from_url("memory:?expire_after=soon")
