"""Stores under real faults: data that disappears (a Redis restarted without persistence, a dropped
PostgreSQL schema, a journal damaged in the middle) is DATA_LOSS, not an empty session; a full disk
is RESOURCE_EXHAUSTED; a store that cannot be reached is UNAVAILABLE, whatever the operation."""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fault_servers import PrivateRedis, postgres_stopped, private_redis  # noqa: F401 - the fixture
from test_store_contract import art, put, snap, turn
from turnkit import Turnkit
from turnkit.errors import TurnkitError
from turnkit.sessions import FileSessionStore, LinearSessionStore, SqliteSessionStore
from turnkit.sessions.redis_store import RedisSessionStore
from turnkit.testing import ProgrammableModel


async def some_turns(store: LinearSessionStore, session: str, n: int, size: int = 40) -> list[str]:
    ids, history = [], []
    for i in range(n):
        history = [*history, *turn(i, size)]
        ids.append(f"{session}-{i}")
        await put(store, snap(ids[-1], session=session, parent=ids[-2] if i else None, messages=history))
    return ids


# --- data loss -------------------------------------------------------------------------------------


async def test_a_redis_restarted_without_persistence_reads_as_data_loss(
    private_redis: PrivateRedis,  # noqa: F811
) -> None:
    store = RedisSessionStore(private_redis.url, prefix="dl:")
    await some_turns(store, "s", 3)
    assert await store.get_snapshot(session_id="s") is not None
    private_redis.stop(save=False)  # every key is gone
    private_redis.start()
    with pytest.raises(TurnkitError) as err:
        await store.get_snapshot(session_id="s")
    assert (
        err.value.status == "DATA_LOSS"
        and "'s'" in err.value.message
        and "lost its data" in err.value.message
    )
    with pytest.raises(TurnkitError):  # it stays lost: not silently empty on the next read either
        await store.get_snapshot(session_id="s")
    await some_turns(store, "new", 1)  # the store itself works on
    assert await store.get_snapshot(session_id="new") is not None
    await store.delete_session("s")  # forgetting the session is the way to start it again
    assert await store.get_snapshot(session_id="s") is None
    await store.close()


async def test_a_turn_continuing_a_lost_session_fails_with_data_loss(
    private_redis: PrivateRedis,  # noqa: F811
    ai: Turnkit,
    pm: ProgrammableModel,
) -> None:
    pm.handler = lambda request, ctx: {
        "message": {"role": "model", "content": [{"text": f"seen {len(request.messages)}"}]},
        "finishReason": "stop",
    }
    agent = ai.define_agent(name="a", store=RedisSessionStore(private_redis.url))
    await agent.chat(session_id="s").send("remember this")
    private_redis.stop(save=False)
    private_redis.start()
    with pytest.raises(TurnkitError) as err:  # before: a turn on an empty session ("seen 1")
        await agent.chat(session_id="s").send("what did I say?")
    assert err.value.status == "DATA_LOSS"
    assert len(pm.requests) == 1  # the model never saw a history-less turn


async def test_a_session_deleted_elsewhere_is_just_gone(private_redis: PrivateRedis) -> None:  # noqa: F811
    store, other = RedisSessionStore(private_redis.url), RedisSessionStore(private_redis.url)
    await some_turns(store, "s", 2)
    assert await store.get_snapshot(session_id="s") is not None
    await other.delete_session("s")  # same store identity: not a loss
    assert await store.get_snapshot(session_id="s") is None
    await store.close()
    await other.close()


async def test_a_dropped_postgres_schema_reads_as_data_loss() -> None:
    psycopg = pytest.importorskip("psycopg")
    from store_case_postgres import DSN, require_postgres
    from turnkit.sessions.postgres import PostgresSessionStore

    require_postgres()
    schema = f"tk_fault_{uuid.uuid4().hex[:10]}"
    store = PostgresSessionStore(DSN, schema=schema)
    try:
        await some_turns(store, "s", 2)
        assert await store.get_snapshot(session_id="s") is not None
        with psycopg.connect(DSN, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")
        with pytest.raises(TurnkitError) as err:
            await store.get_snapshot(session_id="s")
        assert err.value.status == "DATA_LOSS" and "'s'" in err.value.message
    finally:
        await store.close()
        with psycopg.connect(DSN, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def journal(directory: Path) -> Path:
    return directory / "default.tkj"


def frame_offsets(store: FileSessionStore) -> list[int]:
    index = store.backend.journal("")
    return sorted(frame.offset for _, frame in index.records.values())


async def test_a_journal_damaged_in_the_middle_is_data_loss(tmp_path: Path) -> None:
    store = FileSessionStore(tmp_path)
    await some_turns(store, "s", 6)
    await store.get_snapshot(session_id="s")
    offsets = frame_offsets(store)
    await store.close()
    data = bytearray(journal(tmp_path).read_bytes())
    data[offsets[1] + 6] ^= 0xFF  # one bit-flipped byte inside a whole frame, with frames after it
    journal(tmp_path).write_bytes(bytes(data))
    for _ in range(2):  # a reader, and then a writer (which must not cut the damage off as a torn tail)
        damaged = FileSessionStore(tmp_path)
        with pytest.raises(TurnkitError) as err:
            await damaged.get_snapshot(session_id="s")
        assert err.value.status == "DATA_LOSS" and "damaged in the middle" in err.value.message
        with pytest.raises(TurnkitError):
            await put(damaged, snap("more", session="s"))
        await damaged.close()
    assert journal(tmp_path).read_bytes() == bytes(data)  # nothing was cut off


async def test_a_torn_tail_is_still_cut_off_quietly(tmp_path: Path) -> None:
    store = FileSessionStore(tmp_path)
    ids = await some_turns(store, "s", 4)
    await store.close()
    data = journal(tmp_path).read_bytes()
    journal(tmp_path).write_bytes(data[:-3])  # the last append torn: its record is lost, not the journal
    torn = FileSessionStore(tmp_path)
    head = await torn.get_snapshot(session_id="s")
    assert head is not None and head.snapshot_id == ids[-2]
    await put(torn, snap("again", session="s", parent=ids[-2]))
    assert (await torn.get_snapshot(session_id="s")).snapshot_id == "again"  # type: ignore[union-attr]
    await torn.close()


# --- a full disk -----------------------------------------------------------------------------------


@contextlib.contextmanager
def small_filesystem(path: Path) -> Iterator[Path]:
    """A real 1 MiB tmpfs mounted at `path` for the block."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.parametrize("kind", ["file", "sqlite"])
async def test_a_full_disk_is_resource_exhausted(tmp_path: Path, kind: str) -> None:
    with small_filesystem(tmp_path / "small") as small:
        store: Any = FileSessionStore(small) if kind == "file" else SqliteSessionStore(small / "s.db")
        try:
            with pytest.raises(TurnkitError) as err:
                for i in range(200):  # 200 x ~20 KB of incompressible text: more than the 1 MiB
                    noise = os.urandom(10_000).hex()
                    await put(
                        store, snap(f"big-{i}", session=f"s{i}", custom=noise, artifacts=[art("a", "x")])
                    )
            assert err.value.status == "RESOURCE_EXHAUSTED", err.value
            assert "space" in err.value.message or "full" in err.value.message
            assert not err.value.public  # the path is for the server's log, not for clients
            # What was saved before the disk filled up still reads back.
            assert await store.get_snapshot(snapshot_id="big-0") is not None
        finally:
            await store.close()


async def test_a_redis_out_of_memory_is_resource_exhausted(private_redis: PrivateRedis) -> None:  # noqa: F811
    store = RedisSessionStore(private_redis.url)
    await store.client.config_set("maxmemory", "3mb")
    with pytest.raises(TurnkitError) as err:
        for i in range(400):  # ~20 KB each of incompressible text, past the 3 MB limit
            await put(store, snap(f"big-{i}", session=f"s{i}", custom=os.urandom(10_000).hex()))
    assert err.value.status == "RESOURCE_EXHAUSTED" and "memory" in err.value.message
    assert await store.get_snapshot(snapshot_id="big-0") is not None
    await store.close()


# --- an unreachable store --------------------------------------------------------------------------


async def expect_unavailable(store: LinearSessionStore) -> None:
    """Every kind of call fails the same way: UNAVAILABLE."""
    calls = {
        "get_snapshot": lambda: store.get_snapshot(session_id="s"),
        "save_snapshot": lambda: put(store, snap("x", session="s")),
        "session_lease": lambda: store.session_lease("s", wait=0).__aenter__(),
        "delete_session": lambda: store.delete_session("s"),
    }
    for name, call in calls.items():
        with pytest.raises(TurnkitError) as err:
            await call()
        assert err.value.status == "UNAVAILABLE", (name, err.value)


async def test_an_unreachable_redis_is_unavailable(private_redis: PrivateRedis) -> None:  # noqa: F811
    store = RedisSessionStore(private_redis.url)
    await some_turns(store, "s", 1)
    private_redis.stop(save=True)
    try:
        await expect_unavailable(store)
    finally:
        private_redis.start()
    assert await store.get_snapshot(session_id="s") is not None  # back, with its data
    await store.close()


async def test_an_unreachable_postgres_is_unavailable() -> None:
    pytest.importorskip("psycopg")
    from store_case_postgres import DSN, require_postgres
    from turnkit.sessions.postgres import PostgresSessionStore

    require_postgres()
    schema = f"tk_fault_{uuid.uuid4().hex[:10]}"
    store = PostgresSessionStore(DSN, schema=schema, pool_timeout=0.5)
    try:
        await some_turns(store, "s", 1)
        with postgres_stopped():  # a few seconds: the shared server is back right after
            await expect_unavailable(store)
        assert await store.get_snapshot(session_id="s") is not None
    finally:
        await store.close()
        import psycopg

        with psycopg.connect(DSN, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
