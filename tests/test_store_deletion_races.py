"""Deleting and pruning against what runs meanwhile, for every store: a turn continued by snapshot id
(which holds no lease) cannot bring a deleted session back; a deletion catches a save that landed
between its read and its delete; prune reads each tenant once; a session deleted elsewhere reads as
gone, not as data loss; retention options are checked."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from test_store_contract import StoreCase, case, put, snap, turn  # noqa: F401 - `case` is a fixture
from test_store_retention import conversation
from turnkit import Turnkit
from turnkit.errors import TurnkitError
from turnkit.sessions import InMemorySessionStore, LinearSessionStore
from turnkit.sessions._backend import StoredRecord
from turnkit.sessions._memory import MemoryBackend
from turnkit.testing import define_programmable_model


def reply(request: Any, ctx: Any) -> dict[str, Any]:
    text = f"seen {len(request.messages)}"
    return {"message": {"role": "model", "content": [{"text": text}]}, "finishReason": "stop"}


async def test_a_save_continuing_a_deleted_session_writes_nothing(case: StoreCase) -> None:  # noqa: F811
    writer, deleter = case.open(), case.open()  # two processes, say
    ids = await conversation(writer, "s", 3)
    history = [*turn(0), *turn(1), *turn(2), *turn(3)]
    assert await deleter.delete_session("s") == 3
    with pytest.raises(TurnkitError) as err:
        await put(writer, snap("late", session="s", parent=ids[-1], messages=history))
    assert err.value.status == "NOT_FOUND" and repr(ids[-1]) in err.value.message
    assert "nothing was saved" in err.value.message
    for reader in (writer, case.open()):
        assert await reader.get_snapshot(session_id="s") is None
        assert await reader.get_snapshot(snapshot_id="late") is None


async def test_a_branch_turn_running_through_a_delete_does_not_restore_the_session(
    case: StoreCase,  # noqa: F811
) -> None:
    ai = Turnkit(model="programmableModel")
    model = define_programmable_model(ai)
    model.handler = reply
    store = case.open()
    agent = ai.define_agent(name="a", store=store)
    result = None
    for i in range(3):
        result = await agent.chat(session_id="s").send(f"m{i}")
    assert result is not None
    model.gate = asyncio.Event()
    calls = model.calls
    # Continued by snapshot id: no lease, no pending snapshot (attached), so the delete goes through.
    branch = asyncio.ensure_future(agent.chat(snapshot_id=result.snapshot_id).send("branch"))
    await model.wait_for_calls(calls + 1)
    assert await case.open().delete_session("s") == 3
    model.gate.set()
    with pytest.raises(TurnkitError) as err:
        await branch
    assert err.value.status == "NOT_FOUND"
    for reader in (store, case.open()):
        assert await reader.get_snapshot(session_id="s") is None
        assert await reader.get_snapshot(snapshot_id=result.snapshot_id) is None
        assert (await reader.list_sessions()).sessions == []


class RacingBackend(MemoryBackend):
    """Runs `before_delete` once, just before the first deletion: a save landing after the read."""

    def __init__(self) -> None:
        super().__init__()
        self.before_delete: Any = None
        self.scans = 0

    async def scan_records(self, tenant: str) -> list[tuple[str, StoredRecord]]:
        self.scans += 1
        return await super().scan_records(tenant)

    async def delete_data(
        self, tenant: str, *, records: Sequence[str], logs: Sequence[str], heads: Sequence[str]
    ) -> None:
        hook, self.before_delete = self.before_delete, None
        if hook is not None:
            await hook()
        await super().delete_data(tenant, records=records, logs=logs, heads=heads)


async def test_delete_session_catches_a_save_that_lands_after_its_read() -> None:
    backend = RacingBackend()
    store, turn_store = InMemorySessionStore(backend=backend), InMemorySessionStore(backend=backend)
    ids = await conversation(store, "s", 2)

    async def save_child() -> None:
        await put(turn_store, snap("raced", session="s", parent=ids[-1], messages=[*turn(0), *turn(1)]))

    backend.before_delete = save_child
    assert await store.delete_session("s") == 3
    assert await store.get_snapshot(snapshot_id="raced") is None
    assert await store.get_snapshot(session_id="s") is None
    assert backend.records == {} and backend.logs == {} and backend.heads == {}


async def test_prune_catches_a_save_that_lands_after_its_read() -> None:
    backend = RacingBackend()
    store, turn_store = InMemorySessionStore(backend=backend), InMemorySessionStore(backend=backend)
    ids = await conversation(store, "old", 2, at=datetime.now(UTC) - timedelta(days=2))

    async def save_child() -> None:
        await put(turn_store, snap("raced", session="old", parent=ids[-1], messages=[*turn(0)]))

    backend.before_delete = save_child
    assert (await store.prune(older_than=3600)).sessions_deleted == 1
    assert await store.get_snapshot(snapshot_id="raced") is None
    assert backend.records == {} and backend.heads == {}


async def test_prune_reads_each_tenant_once_not_once_per_session() -> None:
    backend = RacingBackend()
    store = InMemorySessionStore(backend=backend)
    long_ago = datetime.now(UTC) - timedelta(days=2)
    for i in range(30):
        await conversation(store, f"s{i}", 2, at=long_ago)
    await conversation(store, "young", 2)
    backend.scans = 0
    pruned = await store.prune(older_than=3600)
    assert pruned.sessions_deleted == 30 and pruned.snapshots_deleted == 60
    assert backend.scans <= 2  # one read, one more for saves that raced the deletions
    assert await store.get_snapshot(session_id="young") is not None


def open_kind(kind: str, tmp_path: Any) -> LinearSessionStore:
    from turnkit.sessions import SqliteSessionStore

    if kind in ("postgres", "redis"):
        from store_case_postgres import store_case as postgres_case
        from store_case_redis import store_case as redis_case

        return (postgres_case if kind == "postgres" else redis_case)(tmp_path).open()
    return InMemorySessionStore() if kind == "memory" else SqliteSessionStore(str(tmp_path / "s.db"))


# The stores that index records by session; SQLite and the file store read the tenant instead (no
# index: it would cost a fifth more bytes per turn for a rare operation).
@pytest.mark.parametrize("kind", ["memory", "postgres", "redis"])
async def test_delete_session_reads_only_its_session(kind: str, tmp_path: Any) -> None:
    store = open_kind(kind, tmp_path)
    for i in range(5):
        await conversation(store, f"other{i}", 2)
    await conversation(store, "s", 3)
    read: list[str] = []
    scan_session = store.backend.scan_session  # type: ignore[attr-defined]
    await scan_session("", "warm-up")  # Redis fills its record index once per prefix (a tenant scan)

    async def counting(tenant: str, session_id: str) -> list[tuple[str, StoredRecord]]:
        got: list[tuple[str, StoredRecord]] = await scan_session(tenant, session_id)
        read.extend(key for key, _ in got)
        return got

    async def no_tenant_scan(tenant: str) -> Any:
        raise AssertionError("delete_session read the whole tenant")

    store.backend.scan_session = counting  # type: ignore[attr-defined]
    store.backend.scan_records = no_tenant_scan  # type: ignore[attr-defined]
    assert await store.delete_session("s") == 3
    assert sorted(read) == ["s-0", "s-1", "s-2"]
    for i in range(5):
        assert await store.get_snapshot(session_id=f"other{i}") is not None


async def test_a_session_made_after_a_reset_then_deleted_elsewhere_reads_as_gone() -> None:
    backend = MemoryBackend()
    store, other = InMemorySessionStore(backend=backend), InMemorySessionStore(backend=backend)
    await put(store, snap("a", session="before"))
    assert await store.get_snapshot(session_id="before") is not None
    for data in (backend.records, backend.heads, backend.logs):  # the store loses its data
        data.clear()
    backend.epoch = "after-reset"
    await put(store, snap("b", session="made-after"))
    assert await other.delete_session("made-after") == 1
    assert await store.get_snapshot(session_id="made-after") is None  # deleted: not DATA_LOSS
    with pytest.raises(TurnkitError) as err:
        await store.get_snapshot(session_id="before")  # this one was lost
    assert err.value.status == "DATA_LOSS"


async def test_a_session_deleted_by_another_process_reads_as_gone(case: StoreCase) -> None:  # noqa: F811
    store = case.open()
    await conversation(store, "s", 2)
    assert await store.get_snapshot(session_id="s") is not None
    assert await case.open().delete_session("s") == 2
    assert await store.get_snapshot(session_id="s") is None
    assert await store.get_snapshot(session_id="s") is None


@pytest.mark.parametrize("bad", [0, -1, 0.0, timedelta(0), timedelta(seconds=-5), True, "1"])
async def test_max_age_must_be_positive(bad: Any) -> None:
    with pytest.raises(TurnkitError) as err:
        InMemorySessionStore(max_age=bad)
    assert err.value.status == "INVALID_ARGUMENT" and "max_age" in err.value.message
    with pytest.raises(TurnkitError) as err:
        await InMemorySessionStore().prune(older_than=bad)
    assert err.value.status == "INVALID_ARGUMENT" and "older_than" in err.value.message


@pytest.mark.parametrize("bad", [0, -3, 1.5, True])
async def test_max_snapshots_per_session_must_be_at_least_one(bad: Any) -> None:
    with pytest.raises(TurnkitError) as err:
        InMemorySessionStore(max_snapshots_per_session=bad)
    assert err.value.status == "INVALID_ARGUMENT" and "max_snapshots_per_session" in err.value.message
    store = InMemorySessionStore()
    await put(store, snap("a", session="s"))
    with pytest.raises(TurnkitError) as err:
        await store.prune(max_snapshots_per_session=bad)
    assert err.value.status == "INVALID_ARGUMENT" and "max_snapshots_per_session" in err.value.message
    assert await store.get_snapshot(session_id="s") is not None


async def test_a_session_branched_from_another_survives_its_deletion(case: StoreCase) -> None:  # noqa: F811
    store = case.open()
    ids = await conversation(store, "a", 3)
    history = [*turn(0), *turn(1), *turn(2), *turn(3)]
    await put(store, snap("b-0", session="b", parent=ids[-1], messages=history, custom={"from": "a"}))
    assert await store.delete_session("a") == 3
    for reader in (store, case.open()):
        copied = await reader.get_snapshot(snapshot_id="b-0")
        assert copied is not None and copied.state is not None
        assert copied.state.messages == history and copied.state.custom == {"from": "a"}


async def test_postgres_schemas_from_before_the_session_column_get_it_filled(tmp_path: Any) -> None:
    import psycopg
    from psycopg import sql

    from store_case_postgres import DSN, store_case

    case_ = store_case(tmp_path)
    store = case_.open()
    await conversation(store, "s", 3)
    await conversation(store, "t", 2)
    await store.close()
    schema = str(case_.url).rsplit("schema=", 1)[1]
    with psycopg.connect(DSN, autocommit=True) as conn:  # a schema as the previous version left it
        conn.execute(
            sql.SQL("ALTER TABLE {} DROP COLUMN session_id").format(sql.Identifier(schema, "records"))
        )
    reopened = case_.open()
    assert await reopened.delete_session("s") == 3
    assert await reopened.get_snapshot(session_id="s") is None
    assert await reopened.get_snapshot(session_id="t") is not None
    await reopened.close()


async def test_redis_prefixes_from_before_the_record_index_get_it_filled(tmp_path: Any) -> None:
    import redis

    from store_case_redis import HOST, PORT, glob_escape, store_case

    case_ = store_case(tmp_path)
    store = case_.open()
    ids = await conversation(store, "s", 3)
    await put(store, snap(ids[0], session="s", parent=None, custom={"rewritten": True}))  # a spilled state
    await conversation(store, "t", 2)
    await store.close()
    prefix = str(store.backend.prefix)  # type: ignore[attr-defined]
    client = redis.Redis(host=HOST, port=PORT)
    try:  # keys as the previous version left them
        for key in client.scan_iter(match=glob_escape(prefix) + "*"):
            kind = key.decode()[len(prefix)]
            if kind == "i" or (kind == "m" and key.decode().endswith(":cmVjb3JkLWluZGV4")):
                client.delete(key)
            elif kind == "r":
                client.hdel(key, "sess")
    finally:
        client.close()
    reopened = case_.open()
    assert await reopened.delete_session("s") == 3
    assert await reopened.get_snapshot(session_id="s") is None
    assert await reopened.get_snapshot(session_id="t") is not None
    left = [k for k in await reopened.backend.scan_records("")]  # type: ignore[attr-defined]
    assert sorted(k for k, _ in left) == ["t-0", "t-1"]
    await reopened.close()
