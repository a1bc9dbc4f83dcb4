"""What only the Redis store has: its key layout, Lua compare-and-set, pub/sub wake-ups, reconnection.

Runs against the real Redis on 127.0.0.1:6379, each test under a key prefix of its own. Run as a
script, this module is the worker process of the cross-process tests:
    python test_redis_store.py increment PREFIX SNAPSHOT N   N read-modify-write increments
    python test_redis_store.py abort PREFIX SNAPSHOT         mark a snapshot aborted
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from conftest import require_service
from store_case_redis import HOST, PORT, URL, loop_bound_client, new_prefix, track
from turnkit.errors import TurnkitError
from turnkit.sessions.redis_store import LAYOUT_VERSION, RedisSessionStore, encode_part
from turnkit.types import Message, SessionSnapshot, SessionState

Mutator = Callable[[SessionSnapshot | None], SessionSnapshot | None]

# Ids that break naive key building: separators, glob and hash-tag characters, quotes, escapes,
# look-alikes of the layout's own parts, non-ASCII, and the longest id allowed.
HOSTILE_IDS = [
    *("a", "b", "a:b", "a:b:c", ":", "::", "a:", ":a", "*", "?", "[a-z]", "[", "]", "\\", "\\*"),
    *("{tag}", "{", "}", "{}", " ", "  ", "a b", "'", '"', "'\"`", "r:AA:BB", "m::version", "="),
    *("==", "YQ", "YQ==", "%2A", "é", "e\u0301", "日本語", "🙂", "x" * 256),
]
# The backend takes any string (the engine itself keys superseded states with "\x1f").
BACKEND_ONLY_IDS = ["\n", "a\nb", "\r\n", "\x00", "\x1f", "tab\there"]
TENANTS = ["", "a", "b", "a:b", "*", "{t}", "t\n"]


# --- fixtures and helpers --------------------------------------------------------------------------


@pytest.fixture
def prefix() -> str:
    """A fresh key prefix (Redis must be up)."""
    require_service("Redis", HOST, PORT)
    return new_prefix()


@pytest.fixture
async def opened(prefix: str) -> AsyncIterator[Callable[..., RedisSessionStore]]:
    """Opens stores over `prefix` (each a new instance with its own pool) and closes them afterwards."""
    stores: list[RedisSessionStore] = []

    def open_store(**options: Any) -> RedisSessionStore:
        stores.append(RedisSessionStore(URL, prefix=options.pop("prefix", prefix), **options))
        return stores[-1]

    yield open_store
    for store in stores:
        await store.close()


def snap(
    snapshot_id: str, *, session: str = "s", status: str = "completed", **custom: Any
) -> SessionSnapshot:
    """A snapshot with one message and `custom` as its custom state."""
    message = Message.model_validate({"role": "user", "content": [{"text": f"hi {snapshot_id}"}]})
    return SessionSnapshot.model_validate(
        {
            "snapshotId": snapshot_id,
            "sessionId": session,
            "status": status,
            "createdAt": datetime.now(UTC).isoformat(),
            "state": SessionState(session_id=session, messages=[message], custom=custom).to_wire(),
        }
    )


def put(snapshot: SessionSnapshot) -> Mutator:
    """A mutator writing `snapshot`."""
    return lambda _old: snapshot


def set_status(status: str) -> Mutator:
    """A mutator changing the status of an existing snapshot."""
    return lambda s: None if s is None else s.model_copy(update={"status": status})


def increment(s: SessionSnapshot | None) -> SessionSnapshot | None:
    """A read-modify-write: add one to `custom["n"]` (a lost update shows as a missing count)."""
    assert s is not None and s.state is not None
    state = s.state.model_copy(update={"custom": {"n": s.state.custom["n"] + 1}})
    return s.model_copy(update={"state": state})


def opened_for(prefix: str) -> RedisSessionStore:
    """A store over `prefix` whose pool closes with the event loop."""
    return RedisSessionStore(loop_bound_client(), prefix=prefix)


def sync_client() -> Any:
    """A plain (blocking) client for looking at the server directly."""
    import redis

    return redis.Redis(host=HOST, port=PORT)


def keys_of(store: RedisSessionStore) -> set[bytes]:
    """Every key the store owns, found by scanning the whole database."""
    with sync_client() as client:
        return {k for k in client.scan_iter(count=1000) if store.backend.owns(k)}


class Worker:
    """This module run as a worker process; its JSON lines can be read as they come."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
        )

    def event(self, name: str, timeout: float = 30) -> dict[str, Any]:
        """The next event called `name` (fail if the worker exits first)."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"worker exited before {name!r}: {self.proc.stderr.read()[-3000:]}")  # type: ignore[union-attr]
            event: dict[str, Any] = json.loads(line)
            if event["event"] == name:
                return event
        raise AssertionError(f"no {name!r} from the worker within {timeout}s")

    def finish(self, timeout: float = 60) -> None:
        """Wait for a clean exit."""
        _, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, err[-3000:]


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    """Worker processes, killed at the end if still running."""
    started: list[Worker] = []
    yield started
    for w in started:
        if w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait(10)


def next_status(statuses: AsyncIterator[str], within: float = 5) -> Awaitable[str]:
    """The next status `watch_status` yields (within `within` seconds)."""
    return asyncio.wait_for(anext(statuses), within)


# --- layout version --------------------------------------------------------------------------------


async def test_layout_version_is_written_and_a_newer_one_refused(
    prefix: str, opened: Callable[..., RedisSessionStore]
) -> None:
    store = opened()
    await store.save_snapshot("a", put(snap("a")))
    with sync_client() as client:
        assert client.get(f"{prefix}m::version") == str(LAYOUT_VERSION).encode()
        client.set(f"{prefix}m::version", str(LAYOUT_VERSION + 1))
    fresh = opened()
    for attempt in (
        fresh.get_snapshot(snapshot_id="a"),
        fresh.save_snapshot("b", put(snap("b"))),
        store.save_snapshot("c", put(snap("c"))),  # checked already: the write script refuses
    ):
        with pytest.raises(TurnkitError) as err:
            await attempt
        assert err.value.status == "FAILED_PRECONDITION"
        assert f"layout version {LAYOUT_VERSION + 1}, newer" in err.value.message
        assert "upgrade turnkit" in err.value.message
    with sync_client() as client:
        client.set(f"{prefix}m::version", "banana")
    with pytest.raises(TurnkitError, match="unknown layout version 'banana'"):
        await opened().get_snapshot(snapshot_id="a")
    with sync_client() as client:
        assert client.exists(f"{prefix}r::{encode_part('c')}") == 0  # the refused write changed nothing


# --- ids and keys ----------------------------------------------------------------------------------


async def test_hostile_ids_round_trip_exactly_through_the_backend(
    opened: Callable[..., RedisSessionStore],
) -> None:
    store = opened()
    backend = store.backend
    ids = HOSTILE_IDS + BACKEND_ONLY_IDS
    for tenant in TENANTS:
        for i in ids:
            tag = json.dumps([tenant, i])
            assert await backend.put_record(tenant, i, tag, expected_rev=0, head_of=i)
            assert await backend.append_log(tenant, i, 0, [tag, tag + "!"])
            assert await backend.try_lease(tenant, i, tag, 30)
    for tenant in TENANTS:
        for i in ids:
            tag = json.dumps([tenant, i])
            record = await backend.get_record(tenant, i)
            assert record is not None and (record.rev, record.data) == (1, tag)
            assert await backend.get_head(tenant, i) == i
            assert await backend.read_log(tenant, i, 0, 5) == [tag, tag + "!"]
            assert not await backend.try_lease(tenant, i, "someone else", 30)
    # One key per (kind, tenant, id): nothing collided, and every key has the layout's shape.
    keys = keys_of(store)
    # 5 kinds per id: record, head, log, lease, and the session's record index; + each tenant's session index
    assert len(keys) == 5 * len(TENANTS) * len(ids) + 1 + len(TENANTS)
    assert all(k.count(b":") - store.prefix.count(":") == 2 for k in keys)


async def test_hostile_ids_round_trip_exactly_through_the_store(
    opened: Callable[..., RedisSessionStore],
) -> None:
    store = opened()
    for tenant in ("acme", "a:b*"):
        for i in HOSTILE_IDS:
            await store.save_snapshot(i, put(snap(i, session=i, id=i)), context={"tenant": tenant})
    cold = opened()
    for tenant in ("acme", "a:b*"):
        for i in HOSTILE_IDS:
            for got in (
                await cold.get_snapshot(snapshot_id=i, context={"tenant": tenant}),
                await cold.get_snapshot(session_id=i, context={"tenant": tenant}),
            ):
                assert got is not None and got.snapshot_id == i and got.session_id == i
                assert got.state is not None and got.state.custom == {"id": i}
        assert await cold.get_snapshot(snapshot_id="a:b", context={"tenant": "other"}) is None


async def test_purge_deletes_its_prefix_and_nothing_of_any_other(
    prefix: str, opened: Callable[..., RedisSessionStore]
) -> None:
    # Prefixes that start with this one, that this one starts with, and that hold glob characters.
    others = [
        track(p)
        for p in (
            prefix + "r:AA:",
            prefix + "x",
            prefix + "m::",
            prefix[:-1],
            prefix + "*",
            prefix[:-1] + "?",
            prefix[:-1] + "[:]",
            prefix + "\\",
        )
    ]
    stores = {p: opened(prefix=p) for p in [prefix, *others]}
    for store in stores.values():
        for i in ("a", "a:b", "*"):
            await store.save_snapshot(i, put(snap(i, session="s:" + i)))
        assert await store.backend.try_lease("", "held", "me", 60)
    # Keys that merely start with the prefix are not the store's: they stay too.
    strangers = [f"{prefix}r:AA", f"{prefix}notours", f"{prefix}r:A:A:A", f"{prefix}q:AA:BB"]
    with sync_client() as client:
        for k in strangers:
            client.set(k, "stranger")
    before = {p: keys_of(s) for p, s in stores.items()}
    assert all(before.values()) and len(set().union(*before.values())) == sum(map(len, before.values()))

    deleted = await stores[prefix].purge()
    assert deleted == len(before[prefix]) and keys_of(stores[prefix]) == set()
    assert await stores[prefix].get_snapshot(snapshot_id="a") is None
    for p in others:
        assert keys_of(stores[p]) == before[p], p
        got = await opened(prefix=p).get_snapshot(session_id="s:a:b")
        assert got is not None and got.snapshot_id == "a:b"
    with sync_client() as client:
        assert client.delete(*strangers) == len(strangers)


# --- compare-and-set -------------------------------------------------------------------------------


async def test_two_instances_incrementing_concurrently_lose_no_update(
    opened: Callable[..., RedisSessionStore],
) -> None:
    a, b = opened(), opened()
    await a.save_snapshot("n", put(snap("n", n=0)))

    async def bump(store: RedisSessionStore, times: int) -> None:
        for _ in range(times):
            await store.save_snapshot("n", increment)

    await asyncio.gather(*(bump(s, 25) for s in (a, b) for _ in range(4)))
    got = await opened().get_snapshot(snapshot_id="n")
    assert got is not None and got.state is not None and got.state.custom == {"n": 200}
    assert a.stats.conflicts + b.stats.conflicts > 0  # they did contend


async def test_log_append_is_compare_and_set_on_length(opened: Callable[..., RedisSessionStore]) -> None:
    a, b = opened().backend, opened().backend
    results = await asyncio.gather(*(x.append_log("", "log", 0, [f"{i}"]) for i, x in enumerate([a, b] * 5)))
    assert sum(results) == 1
    assert not await a.append_log("", "log", 0, ["late"])
    assert await b.append_log("", "log", 1, ["second", "third"])
    assert await a.read_log("", "log", 0, 10) == [str(results.index(True)), "second", "third"]
    assert await a.read_log("", "log", 1, 2) == ["second"] and await a.read_log("", "log", 2, 2) == []


async def test_retried_writes_are_exact(opened: Callable[..., RedisSessionStore]) -> None:
    """A write whose reply is lost is retried: it must read as done, never as a conflict or twice."""
    backend = opened().backend
    assert await backend.put_record("", "r", "{}", expected_rev=0)  # makes the layout key
    keys = [backend.layout_key, backend.key("r", "", "r")]
    args: list[str | int] = [LAYOUT_VERSION, 1, "v2", "nonce-1", backend.channel]
    assert await backend._put(keys=keys, args=args) == 1
    assert await backend._put(keys=keys, args=args) == 1  # the same write again: done already
    assert await backend._put(keys=keys, args=[*args[:3], "nonce-2", args[4]]) == 0  # another's: conflict
    record = await backend.get_record("", "r")
    assert record is not None and (record.rev, record.data) == (2, "v2")

    log = [backend.layout_key, backend.key("l", "", "log")]
    assert await backend._append(keys=log, args=[LAYOUT_VERSION, 0, 0, "x", "y"]) == 1
    assert await backend._append(keys=log, args=[LAYOUT_VERSION, 0, 1, "x", "y"]) == 1  # retry: found
    assert await backend._append(keys=log, args=[LAYOUT_VERSION, 0, 0, "x", "y"]) == 0  # first try: taken
    assert await backend._append(keys=log, args=[LAYOUT_VERSION, 0, 1, "x", "z"]) == 0  # not ours
    assert await backend.read_log("", "log", 0, 10) == ["x", "y"]


async def test_two_processes_incrementing_concurrently_lose_no_update(
    prefix: str, opened: Callable[..., RedisSessionStore], workers: list[Worker]
) -> None:
    await opened().save_snapshot("n", put(snap("n", n=0)))
    workers += [Worker("increment", prefix, "n", "40") for _ in range(2)]
    for w in workers:
        w.finish()
    got = await opened().get_snapshot(snapshot_id="n")
    assert got is not None and got.state is not None and got.state.custom == {"n": 80}


# --- notifications ---------------------------------------------------------------------------------


async def test_a_write_by_another_instance_wakes_a_watcher_at_once(
    opened: Callable[..., RedisSessionStore],
) -> None:
    watcher, writer = opened(poll_interval=60), opened()  # a poll would take a minute
    latencies = []
    for i in range(20):
        sid = f"w{i}"
        await writer.save_snapshot(sid, put(snap(sid, status="pending")))
        statuses = watcher.watch_status(sid)
        assert await next_status(statuses) == "pending"
        waiting = asyncio.ensure_future(next_status(statuses))
        await asyncio.sleep(0.01)  # the watcher is blocked in its wait now
        start = time.perf_counter()
        await writer.save_snapshot(sid, set_status("aborted"))
        assert await waiting == "aborted"
        latencies.append(time.perf_counter() - start)
    print(
        f"pub/sub wake-up: median {statistics.median(latencies) * 1e3:.2f} ms, max {max(latencies) * 1e3:.2f} ms"
    )
    assert max(latencies) < 1.0


async def test_an_abort_written_by_another_process_wakes_a_watcher_at_once(
    prefix: str, opened: Callable[..., RedisSessionStore], workers: list[Worker]
) -> None:
    watcher = opened(poll_interval=60)
    await watcher.save_snapshot("bg", put(snap("bg", status="pending")))
    statuses = watcher.watch_status("bg")
    assert await next_status(statuses) == "pending"
    aborter = Worker("abort", prefix, "bg")
    workers.append(aborter)
    assert await next_status(statuses, within=30) == "aborted"
    seen = time.time()
    sent = aborter.event("writing")["at"]
    aborter.finish()
    print(f"cross-process abort seen {(seen - sent) * 1e3:.2f} ms after the write began")
    assert seen - sent < 1.0


# --- stored values ---------------------------------------------------------------------------------

RECORD = json.dumps({"v": 1, "srev": 1, "meta": {"status": "completed"}, "state": {"custom": "the " * 50}})
# Values the codec has to mark: texts that start with what could pass for a marker byte.
VALUES = [RECORD, "", "\x00", "\x01 looks like a marker", "\x1f" * 30, "plain", "ünïcødé 😀"]


async def test_values_are_stored_compressed_and_read_back_exactly(
    prefix: str, opened: Callable[..., RedisSessionStore]
) -> None:
    backend = opened().backend
    for i, value in enumerate(VALUES):
        assert await backend.put_record("", f"r{i}", value, expected_rev=0)
    assert await backend.append_log("", "L", 0, VALUES)
    with sync_client() as client:
        data = client.hget(backend.key("r", "", "r0"), "data")
        items = client.lrange(backend.key("l", "", "L"), 0, -1)
    assert data[:1] == b"\x01" and len(data) < len(RECORD) / 3  # compressed
    assert items[0] == data and items[1:4] == [b"", b"\x00\x00", b"\x00\x01 looks like a marker"]
    assert items[5:] == [b"plain", "ünïcødé 😀".encode()]  # stored as UTF-8 when that is shorter
    # Read back exactly, also by a client that decodes responses (values are read as bytes).
    decoding = RedisSessionStore(loop_bound_client(decode_responses=True), prefix=prefix).backend
    for reader in (backend, decoding):
        records = [await reader.get_record("", f"r{i}") for i in range(len(VALUES))]
        assert [r.data if r else None for r in records] == VALUES
        assert await reader.read_log("", "L", 0, 99) == VALUES
        assert await reader.read_log("", "L", 4, 6) == VALUES[4:6]


async def test_damaged_values_are_data_loss(opened: Callable[..., RedisSessionStore]) -> None:
    backend = opened().backend
    assert await backend.put_record("", "r", RECORD, expected_rev=0)
    assert await backend.append_log("", "L", 0, [RECORD])
    with sync_client() as client:
        client.hset(backend.key("r", "", "r"), "data", b"\x02an encoding this turnkit does not know")
        client.rpush(backend.key("l", "", "L"), b"\x01not deflate")
    for read in (backend.get_record("", "r"), backend.read_log("", "L", 0, 9)):
        with pytest.raises(TurnkitError) as err:
            await read
        assert err.value.status == "DATA_LOSS"
    assert await backend.read_log("", "L", 0, 1) == [RECORD]


# --- connections -----------------------------------------------------------------------------------


async def test_a_client_that_decodes_responses_works_too(prefix: str) -> None:
    store = RedisSessionStore(loop_bound_client(decode_responses=True), prefix=prefix, poll_interval=60)
    writer = opened_for(prefix)
    await store.save_snapshot("d:1", put(snap("d:1", session="s*", status="pending", n=1)))
    got = await opened_for(prefix).get_snapshot(session_id="s*")
    assert got is not None and got.snapshot_id == "d:1" and got.state is not None
    assert got.state.custom == {"n": 1} and got.state.messages is not None
    statuses = store.watch_status("d:1")
    assert await next_status(statuses) == "pending"
    waiting = asyncio.ensure_future(next_status(statuses))
    await asyncio.sleep(0.05)
    await writer.save_snapshot("d:1", set_status("failed"))
    assert await waiting == "failed"
    assert await store.purge() > 0
    await store.close()


def kill_clients(name: str) -> int:
    """CLIENT KILL every connection named `name` (ours only: other tests share the server)."""
    with sync_client() as client:
        ids = [c["id"] for c in client.client_list() if c.get("name") == name]
        for i in ids:
            client.client_kill_filter(_id=i)
        return len(ids)


async def until(condition: Callable[[], bool], within: float = 5) -> None:
    """Wait for `condition` to hold (fail after `within` seconds)."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def clients_named(name: str) -> list[dict[str, Any]]:
    """The server's connections named `name`."""
    with sync_client() as client:
        return [c for c in client.client_list() if c.get("name") == name]


@pytest.mark.parametrize("driver_retries", [True, False], ids=["driver-retries", "no-driver-retries"])
async def test_the_store_keeps_working_after_its_connections_are_killed(
    prefix: str,
    opened: Callable[..., RedisSessionStore],
    driver_retries: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    caplog.set_level(logging.DEBUG, "turnkit.sessions")

    name = f"turnkit-test-{uuid.uuid4().hex[:8]}"
    # Without redis-py's own retries (as in redis-py 5), the store's retries and resubscribing do it all.
    extra: dict[str, Any] = {} if driver_retries else {"retry": Retry(NoBackoff(), 0)}
    store = RedisSessionStore(loop_bound_client(client_name=name, **extra), prefix=prefix, poll_interval=60)
    writer = opened()
    await store.save_snapshot("k", put(snap("k", status="pending", n=0)))
    statuses = store.watch_status("k")
    assert await next_status(statuses) == "pending"  # the pub/sub listener is starting
    await until(lambda: len(clients_named(name)) >= 2)
    assert kill_clients(name) >= 2  # the command connection and the pub/sub one
    for _ in range(3):
        await store.save_snapshot("k", increment)
        assert kill_clients(name) >= 1
    got = await store.get_snapshot(snapshot_id="k")
    assert got is not None and got.state is not None and got.state.custom == {"n": 3}
    async with store.session_lease("k", wait=0):
        assert kill_clients(name) >= 1
    async with writer.session_lease("k", wait=0):  # the lease was released over a new connection
        pass
    kill_clients(name)
    waiting = asyncio.ensure_future(next_status(statuses))
    await asyncio.sleep(0.3)  # the listener resubscribes and the watcher blocks in its wait
    start = time.perf_counter()
    await writer.save_snapshot("k", set_status("aborted"))
    assert await waiting == "aborted"
    assert time.perf_counter() - start < 1.0  # woken by pub/sub, not the one-minute poll
    await store.close()
    if not driver_retries:  # the store's own recovery did it
        assert "retrying" in caplog.text and "resubscribing" in caplog.text


async def test_close_and_async_with_release_every_connection(prefix: str) -> None:
    name = f"turnkit-test-{uuid.uuid4().hex[:8]}"
    async with RedisSessionStore(f"{URL}?client_name={name}", prefix=prefix) as store:
        await store.save_snapshot("c", put(snap("c", status="pending")))
        statuses = store.watch_status("c")
        assert await next_status(statuses) == "pending"
        await until(lambda: len(clients_named(name)) >= 2)  # commands, and the pub/sub listener
    assert store.changes._task is None
    await until(lambda: clients_named(name) == [])

    # A client passed in stays the caller's: close() stops only the listener.
    client = loop_bound_client(client_name=name)
    shared = RedisSessionStore(client, prefix=prefix)
    got = await shared.get_snapshot(snapshot_id="c")
    assert got is not None and got.status == "pending"
    shared.change_waiter("c")
    await until(lambda: any(c["cmd"] == "subscribe" for c in clients_named(name)))
    await shared.close()
    assert await client.ping()
    await until(lambda: not any(c["cmd"] == "subscribe" for c in clients_named(name)))


# --- the worker process ----------------------------------------------------------------------------


def say(event: str, **fields: Any) -> None:
    """Print one event line for the test that started this worker."""
    print(json.dumps({"event": event, "at": time.time(), **fields}), flush=True)


async def _work(argv: list[str]) -> None:
    command, prefix, snapshot_id = argv[:3]
    async with RedisSessionStore(URL, prefix=prefix) as store:
        if command == "increment":

            async def bump(times: int) -> None:
                for _ in range(times):
                    await store.save_snapshot(snapshot_id, increment)

            await asyncio.gather(*(bump(int(argv[3]) // 4) for _ in range(4)))
        elif command == "abort":
            say("writing")
            await store.save_snapshot(snapshot_id, set_status("aborted"))
        else:
            raise SystemExit(f"unknown command {command!r}")
    say("done")


if __name__ == "__main__":
    asyncio.run(_work(sys.argv[1:]))
