"""`PostgresSessionStore` beyond the shared contract: schema versions, hostile ids, races between
instances and processes, LISTEN/NOTIFY wake-ups, closing, and surviving dead connections.

Runs against the real server (`store_case_postgres.DSN`), each test in a schema of its own.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from store_case_postgres import DSN, SCHEMAS, require_postgres
from test_store_contract import HOSTILE_IDS, Watch, change, get, live, msg, put, snap
from turnkit.errors import TurnkitError
from turnkit.sessions.postgres import SCHEMA_VERSION, PostgresBackend, PostgresSessionStore, change_payload
from turnkit.types import SessionSnapshot

psycopg = pytest.importorskip("psycopg")
from psycopg import sql  # noqa: E402 - after the skip: psycopg is an optional extra


@pytest.fixture
def schema(tmp_path: Path) -> str:
    """A fresh schema for this test (dropped once the next test starts, or at exit)."""
    require_postgres()
    return SCHEMAS.for_path(tmp_path)


@pytest.fixture
async def opened(schema: str) -> AsyncIterator[Callable[..., PostgresSessionStore]]:
    """Opens stores over the test's schema (optionally through `dsn`), and closes them afterwards."""
    stores: list[PostgresSessionStore] = []

    def open_store(dsn: str = DSN, **options: Any) -> PostgresSessionStore:
        store = PostgresSessionStore(dsn, schema=schema, **options)
        stores.append(store)
        return store

    yield open_store
    for store in stores:
        await store.close()


def named(app: str, dsn: str = DSN) -> str:
    """The DSN with an `application_name`, so a test can find (and kill) a store's connections."""
    return f"{dsn}?application_name={app}"


def backends_of(app: str) -> list[int]:
    """Process ids of the server backends serving connections with this application name."""
    rows = SCHEMAS.admin().execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s", (app,))
    return [pid for (pid,) in rows.fetchall()]


async def eventually(check: Callable[[], bool], within: float = 5.0) -> None:
    """Wait until `check()` holds (fail after `within` seconds)."""
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def increment(s: SessionSnapshot | None) -> SessionSnapshot:
    """Count one more, in custom state and as a message: a lost update shows as a gap."""
    if s is None:
        return snap("counter", custom={"n": 1}, messages=[msg("user", "1")])
    assert s.state is not None
    n = s.state.custom["n"] + 1
    messages = [*(s.state.messages or []), msg("user", str(n))]
    state = s.state.model_copy(update={"custom": {"n": n}, "messages": messages})
    return s.model_copy(update={"state": state})


def assert_counted(got: SessionSnapshot, n: int) -> None:
    assert got.state is not None and got.state.custom == {"n": n}
    assert [m.text for m in got.state.messages or []] == [str(i) for i in range(1, n + 1)]


# A child process: `increment N` counts N times; `abort` prints "ready", waits for a line on stdin,
# then marks snapshot "w" aborted and prints the wall-clock times before and after the write.
CHILD = """
import asyncio, json, sys, time
sys.path.insert(0, sys.argv[1])
from test_postgres_store import increment
from turnkit.sessions.postgres import PostgresSessionStore

async def main(dsn, schema, mode, n):
    async with PostgresSessionStore(dsn, schema=schema, max_attempts=100_000) as store:
        if mode == "increment":
            for _ in range(n):
                await store.save_snapshot("counter", increment)
        else:
            await store.read_status("w")
            print("ready", flush=True)
            await asyncio.to_thread(sys.stdin.readline)
            t0 = time.time()
            await store.save_snapshot("w", lambda s: s.model_copy(update={"status": "aborted"}))
            print(json.dumps([t0, time.time()]), flush=True)

asyncio.run(main(*sys.argv[2:5], int(sys.argv[5])))
"""


async def child(schema: str, mode: str, n: int = 0) -> asyncio.subprocess.Process:
    tests = str(Path(__file__).parent)
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, tests, DSN, schema, mode, str(n),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip


# --- schema --------------------------------------------------------------------------------------


async def test_schema_is_created_with_its_version_and_a_newer_one_is_refused(
    schema: str, opened: Callable[..., PostgresSessionStore]
) -> None:
    # Many stores opening a new schema at once agree on it (the advisory lock serialises creation).
    assert await asyncio.gather(*(opened().get_snapshot(snapshot_id="a") for _ in range(8))) == [None] * 8
    await put(opened(), snap("a"))
    admin = SCHEMAS.admin()
    version = sql.Identifier(schema, "schema_version")
    rows = admin.execute(sql.SQL("SELECT version FROM {}").format(version)).fetchall()
    assert rows == [(SCHEMA_VERSION,)]
    tables = admin.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)).fetchall()
    assert {t for (t,) in tables} == {"schema_version", "records", "heads", "logs", "leases"}

    admin.execute(sql.SQL("UPDATE {} SET version = %s").format(version), (SCHEMA_VERSION + 1,))
    with pytest.raises(TurnkitError) as err:
        await opened().get_snapshot(snapshot_id="a")
    assert err.value.status == "FAILED_PRECONDITION"
    assert f"version {SCHEMA_VERSION + 1}" in err.value.message and "upgrade turnkit" in err.value.message


@pytest.mark.parametrize("bad", ["", "1abc", "a-b", 'x"; DROP SCHEMA public; --', "a.b", "x" * 61, "ü"])
def test_schema_names_must_be_plain_identifiers(bad: str) -> None:
    with pytest.raises(TurnkitError) as err:
        PostgresSessionStore(DSN, schema=bad)
    assert err.value.status == "INVALID_ARGUMENT"


# --- ids -----------------------------------------------------------------------------------------

NASTY = [
    *HOSTILE_IDS,
    "'",
    "''",
    '"',
    "\\",
    "%s",
    "%(t)s",
    "$1",
    "{}",
    "a\x1f1",  # the engine's own spill separator
    "x' OR '1'='1",
    "); DELETE FROM records; --",
    "ß" * 256,
]


async def test_hostile_ids_are_stored_and_found_exactly(
    schema: str, opened: Callable[..., PostgresSessionStore]
) -> None:
    backend = opened().postgres
    for i, key in enumerate(NASTY):
        tenant = key if i % 2 else ""
        assert await backend.put_record(tenant, key, f"data {i}", expected_rev=0, head_of=key)
        assert await backend.append_log(tenant, key, 0, [f"entry {i}", key])
        assert await backend.try_lease(tenant, key, key, 30)
    for i, key in enumerate(NASTY):
        tenant = key if i % 2 else ""
        stored = await backend.get_record(tenant, key)
        assert stored is not None and (stored.rev, stored.data) == (1, f"data {i}")
        assert await backend.get_head(tenant, key) == key
        assert await backend.read_log(tenant, key, 0, 9) == [f"entry {i}", key]
        assert not await backend.try_lease(tenant, key, "someone else", 30)
    # Near misses find nothing: no case folding, trimming or collation games.
    for near in ("a ", "A ", "x" * 255, "ss" * 256, "'''", "a\x1f2"):
        if near not in NASTY:
            assert await backend.get_record("", near) is None
    # And the rows hold the ids verbatim.
    records = sql.Identifier(schema, "records")
    ids = SCHEMAS.admin().execute(sql.SQL("SELECT id FROM {}").format(records)).fetchall()
    assert sorted(i for (i,) in ids) == sorted(NASTY)
    # Through the whole store: snapshot ids, session ids and tenants.
    store = opened()
    for i, sid in enumerate(HOSTILE_IDS):
        ctx = {"tenant": "store " + sid[:200]}  # tenants apart from the raw rows above
        await put(store, snap(sid, session=sid, custom={"i": i}), context=ctx)
    cold = opened()
    for i, sid in enumerate(HOSTILE_IDS):
        ctx = {"tenant": "store " + sid[:200]}
        got = await cold.get_snapshot(session_id=sid, context=ctx)
        assert got is not None and got.snapshot_id == sid and got.state is not None
        assert got.state.custom == {"i": i}


def test_long_notification_payloads_are_hashed() -> None:
    short = change_payload("t", "k")
    assert json.loads(short) == ["t", "k"]
    long = change_payload("😀" * 1500, "😀" * 1500)
    assert long.startswith("#") and len(long) == 65
    assert long == change_payload("😀" * 1500, "😀" * 1500)


# --- stored values -------------------------------------------------------------------------------

RECORD = json.dumps({"v": 1, "srev": 1, "meta": {"status": "completed"}, "state": {"custom": "the " * 50}})
# Values the codec has to mark: texts that start with what could pass for a marker byte.
VALUES = [RECORD, "", "\x00", "\x01 looks like a marker", "\x1f" * 30, "plain", "ünïcødé 😀"]


async def test_values_are_stored_compressed_in_bytea_and_read_back_exactly(
    schema: str, opened: Callable[..., PostgresSessionStore]
) -> None:
    backend = opened().postgres
    for i, value in enumerate(VALUES):
        assert await backend.put_record("", f"r{i}", value, expected_rev=0)
    assert await backend.append_log("", "L", 0, VALUES)
    admin = SCHEMAS.admin()
    columns = admin.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = %s AND column_name IN ('data', 'entry')",
        (schema,),
    ).fetchall()
    assert sorted(columns) == [("logs", "entry", "bytea"), ("records", "data", "bytea")]
    records, logs = sql.Identifier(schema, "records"), sql.Identifier(schema, "logs")
    data = admin.execute(sql.SQL("SELECT data FROM {} WHERE id = 'r0'").format(records)).fetchone()
    items = admin.execute(sql.SQL("SELECT entry FROM {} ORDER BY seq").format(logs)).fetchall()
    assert data is not None and data[0][:1] == b"\x01" and len(data[0]) < len(RECORD) / 3  # compressed
    assert [bytes(e) for (e,) in items[:4]] == [data[0], b"", b"\x00\x00", b"\x00\x01 looks like a marker"]
    assert [bytes(e) for (e,) in items[5:]] == [b"plain", "ünïcødé 😀".encode()]  # UTF-8 when shorter
    cold = opened().postgres
    stored = [await cold.get_record("", f"r{i}") for i in range(len(VALUES))]
    assert [r.data if r else None for r in stored] == VALUES
    assert await cold.read_log("", "L", 0, 99) == VALUES
    assert await cold.read_log("", "L", 4, 6) == VALUES[4:6]


async def test_damaged_values_are_data_loss(schema: str, opened: Callable[..., PostgresSessionStore]) -> None:
    backend = opened().postgres
    assert await backend.put_record("", "r", RECORD, expected_rev=0)
    assert await backend.append_log("", "L", 0, [RECORD, RECORD])
    admin = SCHEMAS.admin()
    records, logs = sql.Identifier(schema, "records"), sql.Identifier(schema, "logs")
    admin.execute(sql.SQL("UPDATE {} SET data = '\\x02aa'::bytea").format(records))
    admin.execute(sql.SQL("UPDATE {} SET entry = '\\x01ff'::bytea WHERE seq = 1").format(logs))
    for read in (backend.get_record("", "r"), backend.read_log("", "L", 0, 9)):
        with pytest.raises(TurnkitError) as err:
            await read
        assert err.value.status == "DATA_LOSS"
    assert await backend.read_log("", "L", 0, 1) == [RECORD]


# --- races ---------------------------------------------------------------------------------------


async def test_two_instances_racing_lose_no_update(opened: Callable[..., PostgresSessionStore]) -> None:
    one, two = opened(), opened()
    per_store = 15
    await asyncio.gather(
        *(s.save_snapshot("counter", increment) for s in (one, two) for _ in range(per_store))
    )
    assert one.stats.conflicts + two.stats.conflicts > 0  # they really raced
    assert_counted(await get(opened(), "counter"), 2 * per_store)


async def test_two_processes_racing_lose_no_update(
    schema: str, opened: Callable[..., PostgresSessionStore]
) -> None:
    per_process = 25
    children = [await child(schema, "increment", per_process) for _ in range(2)]
    codes = await asyncio.wait_for(asyncio.gather(*(c.wait() for c in children)), 120)
    assert codes == [0, 0]
    assert_counted(await get(opened(), "counter"), 2 * per_process)


async def test_append_is_compare_and_set_on_length(opened: Callable[..., PostgresSessionStore]) -> None:
    backend = opened().postgres
    results = await asyncio.gather(*(backend.append_log("", "L", 0, [f"w{i}", "x"]) for i in range(10)))
    assert results.count(True) == 1
    winner = results.index(True)
    assert not await backend.append_log("", "L", 1, ["torn"])  # mid-log
    assert not await backend.append_log("", "L", 3, ["gap"])  # past the end
    assert await backend.append_log("", "L", 2, [])  # an empty append only checks the length
    assert not await backend.append_log("", "L", 1, [])
    assert await backend.append_log("", "L", 2, ["y"])
    assert await backend.read_log("", "L", 0, 99) == [f"w{winner}", "x", "y"]


# --- notifications -------------------------------------------------------------------------------


async def watch_until_listening(store: PostgresSessionStore, snapshot_id: str) -> Watch:
    watch = Watch(store, snapshot_id)
    assert await watch.next() == "pending"
    await eventually(lambda: store.postgres.listening)
    await asyncio.sleep(0.05)  # let the watcher's first wait (before listening) return and re-arm
    return watch


async def test_an_abort_from_another_instance_wakes_a_watcher_at_once(
    opened: Callable[..., PostgresSessionStore],
) -> None:
    watcher, writer = opened(poll_interval=60), opened()  # only a notification can wake it in time
    await put(writer, live("w", "pending"))
    latencies = []
    for i in range(5):
        sid = f"w{i}"
        await put(writer, live(sid, "pending"))
        watch = await watch_until_listening(watcher, sid)
        start = time.perf_counter()
        await writer.save_snapshot(sid, change(status="aborted"))
        assert await watch.next() == "aborted"
        latencies.append(time.perf_counter() - start)
        assert await watch.next() is None
    shown = ", ".join(f"{x * 1e3:.2f} ms" for x in latencies)
    print(f"\nNOTIFY wake-up after the write began (same process): {shown}")
    assert max(latencies) < 1.0


async def test_an_abort_from_another_process_wakes_a_watcher_at_once(
    schema: str, opened: Callable[..., PostgresSessionStore]
) -> None:
    watcher = opened(poll_interval=60)
    await put(watcher, live("w", "pending"))
    proc = await child(schema, "abort")
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert await asyncio.wait_for(proc.stdout.readline(), 60) == b"ready\n"
        watch = await watch_until_listening(watcher, "w")
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
        assert await watch.next() == "aborted"
        seen = time.time()
        before, _written = json.loads(await asyncio.wait_for(proc.stdout.readline(), 10))
    finally:
        proc.stdin.close()
        await asyncio.wait_for(proc.wait(), 30)
    print(f"\nNOTIFY wake-up after the write began in another process: {(seen - before) * 1e3:.2f} ms")
    assert seen - before < 1.0
    assert await watch.next() is None


async def test_notifications_are_per_record_and_tenant(opened: Callable[..., PostgresSessionStore]) -> None:
    watcher, writer = opened(poll_interval=60), opened()
    await put(writer, live("w", "pending"))
    watch = await watch_until_listening(watcher, "w")
    # Writes of other records, or of "w" in another tenant, do not wake it (poll_interval is 60 s).
    reads = watcher.stats.records_read
    await put(writer, live("other", "aborted"))
    await put(writer, live("w", "aborted"), context={"tenant": "t2"})
    await asyncio.sleep(0.3)
    assert watch.statuses.empty() and watcher.stats.records_read == reads  # not even woken to read
    await writer.save_snapshot("w", change(status="completed"))
    assert [await watch.next(), await watch.next()] == ["completed", None]


# --- lifetime ------------------------------------------------------------------------------------


async def test_close_releases_every_connection(schema: str) -> None:
    app = f"tk_close_{schema}"
    async with PostgresSessionStore(named(app), schema=schema) as store:
        await put(store, live("w", "pending"))
        watch = await watch_until_listening(store, "w")  # a pool connection and the listener
        assert len(backends_of(app)) >= 2
        await store.save_snapshot("w", change(status="completed"))
        assert [await watch.next(), await watch.next()] == ["completed", None]
    await eventually(lambda: backends_of(app) == [])
    with pytest.raises(TurnkitError) as err:
        await store.get_snapshot(snapshot_id="w")
    assert err.value.status == "FAILED_PRECONDITION"


async def test_a_store_left_open_closes_with_its_event_loop(schema: str) -> None:
    app = f"tk_loop_{schema}"
    store = PostgresSessionStore(named(app), schema=schema, poll_interval=0.05)

    async def use() -> None:
        await put(store, live("w", "completed"))
        async for _ in store.watch_status("w"):  # starts the listener too
            pass
        assert len(backends_of(app)) >= 2

    await asyncio.to_thread(asyncio.run, use())  # another event loop, ended without close()
    await eventually(lambda: backends_of(app) == [])
    assert (await get(store, "w")).status == "completed"  # usable again, in this loop
    await store.close()


async def test_a_given_pool_is_used_and_left_open(schema: str) -> None:
    from psycopg_pool import AsyncConnectionPool

    async with AsyncConnectionPool(DSN, min_size=1, max_size=2, open=False) as pool:  # not autocommit
        async with PostgresSessionStore(pool, schema=schema) as store:
            await put(store, snap("a", custom={"x": 1}))
            async with store.session_lease("s", wait=0):
                pass
        assert not pool.closed
        async with pool.connection() as conn:
            row = await (await conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
                sql.Identifier(schema, "records")))).fetchone()  # fmt: skip
            assert row == (1,)  # committed, though the pool's connections do not autocommit
        assert (await get(PostgresSessionStore(pool, schema=schema), "a")).state is not None


# --- dead connections ----------------------------------------------------------------------------


async def test_the_store_survives_killed_connections(
    schema: str, opened: Callable[..., PostgresSessionStore]
) -> None:
    app = f"tk_kill_{schema}"
    store, writer = opened(named(app), pool_size=4, poll_interval=60), opened()
    # Concurrent writes, so the pool holds several connections.
    await asyncio.gather(*(put(store, snap(f"s{i}", custom={"i": i})) for i in range(6)))
    await put(writer, live("w", "pending"))
    await watch_until_listening(store, "w")
    killed = backends_of(app)
    assert len(killed) >= 2
    admin = SCHEMAS.admin()
    for pid in killed:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    await eventually(lambda: not set(backends_of(app)) & set(killed))
    # Reads and writes go on, on new connections.
    store.clear_cache()
    assert (await get(store, "s3")).state is not None
    await put(store, snap("after", parent="s3", custom={"i": 99}))
    assert (await get(writer, "after")).state is not None
    async with store.session_lease("s", wait=0):
        pass
    # The listener reconnects, and watching wakes on notifications again.
    watch = await watch_until_listening(store, "w")
    start = time.perf_counter()
    await writer.save_snapshot("w", change(status="aborted"))
    assert await watch.next() == "aborted"
    assert time.perf_counter() - start < 1.0


async def test_a_write_killed_before_it_ran_is_retried(
    schema: str, opened: Callable[..., PostgresSessionStore]
) -> None:
    app = f"tk_inflight_{schema}"
    backend = opened(named(app)).postgres
    assert await backend.put_record("", "k", "v1", expected_rev=0)
    async with await psycopg.AsyncConnection.connect(DSN) as locker:  # a transaction holding the row
        query = sql.SQL("SELECT 1 FROM {} WHERE id = 'k' FOR UPDATE").format(
            sql.Identifier(schema, "records")
        )
        await locker.execute(query)
        write = asyncio.ensure_future(backend.put_record("", "k", "v2", expected_rev=1))
        blocked = "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'"

        def waiting() -> list[int]:
            return [pid for (pid,) in SCHEMAS.admin().execute(blocked, (app,)).fetchall()]

        await eventually(lambda: len(waiting()) == 1)
        SCHEMAS.admin().execute("SELECT pg_terminate_backend(%s)", (waiting()[0],))
        await asyncio.sleep(0.2)  # the write notices, finds it did not land, and tries again (blocked)
        assert not write.done()
        await locker.rollback()
    assert await asyncio.wait_for(write, 5) is True
    stored = await backend.get_record("", "k")
    assert stored is not None and (stored.rev, stored.data) == (2, "v2")


class CuttingProxy:
    """A TCP proxy to the server that can cut a connection just after passing on a query containing
    `marker`: the server runs (and commits) it, and the client never hears back."""

    def __init__(self) -> None:
        parts = urlsplit(DSN)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self.marker: bytes | None = None
        self.cuts = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> CuttingProxy:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()

    def dsn(self) -> str:
        parts = urlsplit(DSN)
        return parts._replace(netloc=f"127.0.0.1:{self.port}").geturl()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(*self.target)
        self.writers += [client_w, server_w]
        cut = False

        async def up() -> None:
            nonlocal cut
            while data := await client_r.read(65536):
                if self.marker is not None and self.marker in data:
                    self.marker, cut = None, True
                    self.cuts += 1
                server_w.write(data)
                await server_w.drain()
                if cut:
                    await asyncio.sleep(0.3)  # the server runs and commits the query meanwhile
                    break
            client_w.close()
            server_w.close()

        async def down() -> None:
            while not cut and (data := await server_r.read(65536)):
                if not cut:
                    client_w.write(data)
                    await client_w.drain()

        await asyncio.gather(up(), down(), return_exceptions=True)


@pytest.mark.parametrize("operation", ["put", "append"])
async def test_a_write_whose_reply_is_lost_is_not_applied_twice(
    schema: str, opened: Callable[..., PostgresSessionStore], operation: str
) -> None:
    async with CuttingProxy() as proxy:
        store = opened(proxy.dsn())
        backend = store.postgres
        assert await backend.put_record("", "k", "v1", expected_rev=0)
        assert await backend.append_log("", "L", 0, ["a"])
        if operation == "put":
            proxy.marker = b"UPDATE"
            assert await backend.put_record("", "k", "v2", expected_rev=1)  # landed, though unanswered
            stored = await backend.get_record("", "k")
            assert stored is not None and (stored.rev, stored.data) == (2, "v2")
        else:
            proxy.marker = b"unnest"
            assert await backend.append_log("", "L", 1, ["b"])
            assert await backend.read_log("", "L", 0, 9) == ["a", "b"]
        assert proxy.cuts == 1
        await store.close()


async def test_an_unreachable_server_is_unavailable(opened: Callable[..., PostgresSessionStore]) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = opened(f"postgresql://127.0.0.1:{port}/test?connect_timeout=1", pool_timeout=0.5)
    for _ in range(2):
        with pytest.raises(TurnkitError) as err:
            await store.get_snapshot(snapshot_id="a")
        assert err.value.status == "UNAVAILABLE"
    assert isinstance(store.backend, PostgresBackend)
