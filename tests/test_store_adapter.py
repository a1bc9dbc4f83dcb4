"""`as_session_store`: stores as given, store URLs, and user stores written as Genkit's docs (seed 000)
show them, with two methods and no `context` parameter, adapted so the agent runtime can use them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from turnkit import AgentInput, Turnkit, TurnkitError
from turnkit.agents import AgentContext, AgentSession, TurnContext
from turnkit.sessions import (
    InMemorySessionStore,
    SessionStore,
    SqliteSessionStore,
    as_session_store,
)
from turnkit.testing import ProgrammableModel
from turnkit.types import SessionSnapshot


class SeedStyleStore:
    """An in-memory store written exactly as seed 000's RedisSessionStore (a dict instead of Redis)."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def get_snapshot(
        self,
        *,
        snapshot_id: str | None = None,
        session_id: str | None = None,
    ) -> SessionSnapshot | None:
        self.calls.append(("get", {"snapshot_id": snapshot_id, "session_id": session_id}))
        key = f"genkit:snapshot:{snapshot_id or session_id}"
        data = self.data.get(key)
        if data is None:
            return None
        return SessionSnapshot.model_validate_json(data)

    async def save_snapshot(
        self,
        snapshot_id: str | None,
        fn: Callable[[SessionSnapshot | None], SessionSnapshot | None],
    ) -> SessionSnapshot | None:
        self.calls.append(("save", {"snapshot_id": snapshot_id}))
        key = f"genkit:snapshot:{snapshot_id}"
        existing_data = self.data.get(key)
        existing = SessionSnapshot.model_validate_json(existing_data) if existing_data else None
        new_snapshot = fn(existing)
        if new_snapshot is None:
            return None
        self.data[key] = new_snapshot.model_dump_json()
        return new_snapshot


def reply(text: str) -> dict[str, Any]:
    return {"message": {"role": "model", "content": [{"text": text}]}, "finishReason": "stop"}


def snapshot(snapshot_id: str, status: str = "completed", **fields: Any) -> SessionSnapshot:
    return SessionSnapshot.model_validate(
        {"snapshotId": snapshot_id, "createdAt": datetime.now(UTC).isoformat(), "status": status, **fields}
    )


# --- what as_session_store accepts -------------------------------------------------------------


def test_a_store_is_returned_as_is() -> None:
    store = InMemorySessionStore()
    assert as_session_store(store) is store


def test_a_store_url_opens_that_store(tmp_path: Path) -> None:
    store = as_session_store(f"sqlite:{tmp_path / 's.db'}?expire_after=7")
    assert isinstance(store, SqliteSessionStore) and store.expire_after == 7.0


def test_an_unknown_store_url_names_the_scheme() -> None:
    with pytest.raises(TurnkitError) as err:
        as_session_store("nosuch://x")
    assert err.value.status == "INVALID_ARGUMENT" and "nosuch" in str(err.value)


@pytest.mark.parametrize("value", [None, 42, object(), SeedStyleStore, {"get_snapshot": 1}])
def test_anything_else_is_invalid_and_names_store(value: object) -> None:
    with pytest.raises(TurnkitError) as err:
        as_session_store(value)
    assert err.value.status == "INVALID_ARGUMENT" and "store" in str(err.value)


def test_a_seed_style_store_is_wrapped_into_the_whole_contract() -> None:
    seed = SeedStyleStore()
    store = as_session_store(seed)
    assert store is not seed  # type: ignore[comparison-overlap]  # (a seed store is no SessionStore)
    assert isinstance(store, SessionStore)


def test_a_store_with_context_and_watch_status_is_not_wrapped() -> None:
    class FullStore(SeedStyleStore):
        async def get_snapshot(self, *, context: Any = None, **kw: Any) -> SessionSnapshot | None:
            return await super().get_snapshot(**kw)

        async def save_snapshot(self, snapshot_id: str | None, fn: Any, *, context: Any = None) -> Any:
            return await super().save_snapshot(snapshot_id, fn)

        async def watch_status(self, snapshot_id: str, *, context: Any = None) -> Any:
            yield "completed"

    class LeasedStore(FullStore):
        def session_lease(self, session_id: str, *, context: Any = None, wait: float = 30.0) -> None:
            return None  # the whole contract: this store has no leases, and says so

    full = LeasedStore()
    assert as_session_store(full) is full
    without_lease = as_session_store(FullStore())  # wrapped: the adapter answers "no leases"
    assert without_lease.session_lease("s1") is None


# --- the adapter drives a seed-style store ------------------------------------------------------


async def test_get_and_save_reach_the_seed_store_without_context() -> None:
    seed = SeedStyleStore()
    store = as_session_store(seed)
    ctx = {"tenant": "t1"}
    saved = await store.save_snapshot("s1", lambda old: snapshot("s1"), context=ctx)
    assert saved is not None and saved.snapshot_id == "s1"
    got = await store.get_snapshot(snapshot_id="s1", context=ctx)
    assert got == saved
    assert await store.get_snapshot(snapshot_id="absent", context=ctx) is None
    # fn sees what is stored, and returning None writes nothing
    seen: list[SessionSnapshot | None] = []
    assert await store.save_snapshot("s1", lambda old: seen.append(old), context=ctx) is None
    assert seen == [saved] and await store.get_snapshot(snapshot_id="s1") == saved
    assert [name for name, _ in seed.calls] == ["save", "get", "get", "save", "get"]


async def test_watch_status_polls_a_seed_store_until_terminal() -> None:
    seed = SeedStyleStore()
    store = as_session_store(seed)
    seen: list[str] = []
    changed = asyncio.Event()

    async def watch() -> None:
        async for status in store.watch_status("w1", context={"tenant": "t"}):
            seen.append(status)
            changed.set()

    watching = asyncio.ensure_future(watch())
    await asyncio.sleep(0)  # the watcher waits for a snapshot that does not exist yet
    await store.save_snapshot("w1", lambda old: snapshot("w1", "pending"))
    await asyncio.wait_for(changed.wait(), 5)
    await store.save_snapshot("w1", lambda old: snapshot("w1", "aborted"))
    await asyncio.wait_for(watching, 5)
    assert seen == ["pending", "aborted"]


async def test_a_stale_pending_snapshot_reads_as_expired_as_with_every_store() -> None:
    seed = SeedStyleStore()
    store = as_session_store(seed)
    stale = "2020-01-01T00:00:00+00:00"
    await store.save_snapshot("p", lambda _: snapshot("p", "pending", heartbeatAt=stale))
    got = await store.get_snapshot(snapshot_id="p")
    assert got is not None and got.status == "expired"
    seen: list[SessionSnapshot | None] = []
    await store.save_snapshot("p", lambda old: seen.append(old))
    assert seen[0] is not None and seen[0].status == "expired"  # what save's fn sees, too
    assert SessionSnapshot.model_validate_json(seed.data["genkit:snapshot:p"]).status == "pending"


async def test_a_seed_store_returning_a_wrong_type_is_reported() -> None:
    class Broken(SeedStyleStore):
        async def get_snapshot(self, **kw: Any) -> Any:
            return "not a snapshot"

    with pytest.raises(TurnkitError) as err:
        await as_session_store(Broken()).get_snapshot(snapshot_id="x")
    assert "get_snapshot" in str(err.value) and "str" in str(err.value)


# --- and serves as an agent's store ------------------------------------------------------------


async def test_a_seed_store_serves_an_agent_turns_and_branches(ai: Turnkit, pm: ProgrammableModel) -> None:
    seed = SeedStyleStore()
    agent = ai.define_agent(name="seeded", store=as_session_store(seed))
    pm.program([reply("one"), reply("two"), reply("branch")])
    chat = agent.chat()
    first = await chat.send("hi")
    second = await chat.send("again")
    assert first.snapshot_id and second.snapshot_id and first.snapshot_id != second.snapshot_id
    stored = SessionSnapshot.model_validate_json(seed.data[f"genkit:snapshot:{second.snapshot_id}"])
    assert stored.parent_id == first.snapshot_id and stored.status == "completed"
    # a new chat from the first snapshot branches: its parent is the first turn, not the second
    branch = await agent.chat(snapshot_id=first.snapshot_id).send("other way")
    branched = SessionSnapshot.model_validate_json(seed.data[f"genkit:snapshot:{branch.snapshot_id}"])
    assert branched.parent_id == first.snapshot_id
    assert branched.state is not None and branched.state.messages is not None
    assert [m.text for m in branched.state.messages if m.text] == ["hi", "one", "other way", "branch"]


async def test_a_detached_turn_on_a_seed_store_is_aborted_through_polling(ai: Turnkit) -> None:
    started, stopped = asyncio.Event(), asyncio.Event()

    async def fn(sess: AgentSession[Any], ctx: AgentContext) -> Any:
        async def turn(item: AgentInput, tc: TurnContext) -> None:
            started.set()
            try:
                await asyncio.Event().wait()  # works until aborted
            except asyncio.CancelledError:
                stopped.set()
                raise

        await sess.run(turn)
        return await sess.result()

    seed = SeedStyleStore()
    agent = ai.define_custom_agent(name="detached", fn=fn, store=as_session_store(seed))
    task = await agent.chat().detach("work")
    await asyncio.wait_for(started.wait(), 5)
    # Aborted from elsewhere (another app on the same data), so only the store can tell the turn.
    other = Turnkit(model="programmableModel")
    elsewhere = other.define_custom_agent(name="detached", fn=fn, store=as_session_store(seed))
    assert await elsewhere.abort(task.snapshot_id) == "pending"
    await asyncio.wait_for(stopped.wait(), 5)  # the running turn learned of it by polling
    assert (await task.wait(timeout=5)).status == "aborted"


async def test_retention_and_listing_reach_a_wrapped_store_that_has_them() -> None:
    """A user-written store's own delete_session / prune / list_sessions are used through the
    adapter (with `context` only where they take it); without them, UNIMPLEMENTED as for any store."""
    from turnkit.sessions import Pruned, SessionListing, SessionPage

    calls: list[tuple[str, object]] = []

    class Full(SeedStyleStore):
        async def delete_session(self, session_id: str, *, context: object = None) -> int:
            calls.append(("delete", (session_id, context)))
            return 3

        def prune(self, *, older_than: object = None, max_snapshots_per_session: object = None) -> Pruned:
            calls.append(("prune", (older_than, max_snapshots_per_session)))
            return Pruned(sessions_deleted=1, snapshots_deleted=2)

        async def list_sessions(self, *, limit: int = 100, cursor: str | None = None) -> SessionPage:
            calls.append(("list", (limit, cursor)))
            return SessionPage(sessions=[SessionListing(session_id="s", snapshot_id="x")], next_cursor=None)

    store = as_session_store(Full())
    assert await store.delete_session("s1", context={"tenant": "t"}) == 3
    assert (await store.prune(older_than=60.0)).snapshots_deleted == 2
    page = await store.list_sessions(limit=5, context={"tenant": "t"})
    assert [s.session_id for s in page.sessions] == ["s"]
    assert calls == [("delete", ("s1", {"tenant": "t"})), ("prune", (60.0, None)), ("list", (5, None))]

    bare = as_session_store(SeedStyleStore())
    with pytest.raises(TurnkitError) as err:
        await bare.delete_session("s1")
    assert err.value.status == "UNIMPLEMENTED"
