"""`PostgresSessionStore`: the linear engine over PostgreSQL (psycopg 3), shared by any number of processes.

Tables in one PostgreSQL schema (default `turnkit`), created on first use under an advisory lock
(`turnkit.sessions._postgres_schema`):
    schema_version  one row: the layout version (a newer one than this code knows is refused)
    records         (tenant, id) -> rev, data, writer,    snapshot records, compare-and-set on rev;
                    session_id                            session_id indexed (delete_session)
    heads           (tenant, session_id) -> snapshot_id   the latest snapshot created in a session
    logs            (tenant, log_id, seq) -> entry        message logs, append-only, one row per entry
    leases          (tenant, name) -> owner, expires_at   session leases, timed by the database clock
Every lookup is one read of a primary key. Every write is one statement, so it is atomic without an
explicit transaction: a put is an `INSERT ... ON CONFLICT DO NOTHING` or `UPDATE ... WHERE rev = ...`
with the head upsert and a `pg_notify` in the same statement; an append inserts `seq = start..` only
if entry `start - 1` exists, and a duplicate key means another writer won the race.

`writer` is a random token per write. When a connection dies mid-statement the outcome is unknown;
the store then looks for its token on a fresh connection before retrying, so a write that did land
is reported as landed instead of being applied twice.

`data` and `entry` are `bytea`: the engine's JSON text compressed, or as UTF-8 when compressing
would not make it shorter (`turnkit.sessions._codec`; a record's JSON shrinks to about a third).

Every `put_record` notifies the channel `tk_<schema>` with the record's tenant and id, and one
listening connection per store instance wakes the status watchers (`watch_status`) of that record,
so an abort written by any process reaches the process running the turn at once. Polling every
`poll_interval` remains the fallback while the listener is (re)connecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import re
import secrets
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar, Unpack

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from turnkit.errors import TurnkitError
from turnkit.sessions._backend import StoredRecord, parent_gone
from turnkit.sessions._codec import decode, encode
from turnkit.sessions._engine import LinearSessionStore, StoreOptions
from turnkit.sessions._lease import lease_lost
from turnkit.sessions._postgres_notify import PostgresChangeFeed, Waiters, change_payload
from turnkit.sessions._postgres_schema import SCHEMA_VERSION, ensure_schema
from turnkit.sessions._postgres_sql import statements_for
from turnkit.sessions._session_index import owner_of

__all__ = ["SCHEMA_VERSION", "PostgresBackend", "PostgresSessionStore", "change_payload"]

log = logging.getLogger("turnkit.sessions")

_SCHEMA_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,59}")
_ATTEMPTS: Final = 3  # tries of one operation when connections turn out to be dead

Conn = psycopg.AsyncConnection[TupleRow]
T = TypeVar("T")


def _unavailable(exc: Exception) -> TurnkitError:
    return TurnkitError("UNAVAILABLE", f"PostgreSQL is unavailable: {exc}", public=False)


def _server_trouble(exc: psycopg.Error) -> TurnkitError | None:
    """A statement's failure that says the server is full or going away, as a turnkit error."""
    state = exc.sqlstate or ""
    if state in ("53100", "53200"):  # disk_full, out_of_memory
        return TurnkitError("RESOURCE_EXHAUSTED", f"PostgreSQL is out of space: {exc}", public=False)
    if state == "53300" or state.startswith("57P"):  # too many connections; shutting down
        return _unavailable(exc)
    return None


@dataclass
class _LoopState:
    """What an open backend holds in the event loop that opened it."""

    pool: AsyncConnectionPool[Conn]
    changes: PostgresChangeFeed
    want_listen: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


async def _close_abandoned_pool(pool: AsyncConnectionPool[Any]) -> None:
    """Close a pool whose event loop is ending: its workers are being cancelled already, so
    `close()` alone fails before closing anything; close the idle connections first."""
    for _ in range(pool.get_stats().get("pool_available", 0)):
        try:
            conn = await pool.getconn(timeout=0.1)
        except Exception:
            break
        await conn.close()
    with contextlib.suppress(asyncio.CancelledError):  # from waiting on the cancelled workers
        await pool.close()


class PostgresBackend:
    """Records, heads, message logs and leases in PostgreSQL tables; a `RecordBackend` and `LeaseBackend`.

    `dsn_or_pool` is a libpq connection string (or URL), or an `AsyncConnectionPool` the caller owns
    (then `close()` leaves it open). An own pool (`pool_size` connections at most, waiting up to
    `pool_timeout` seconds for one before failing with UNAVAILABLE) is created and opened on first
    use. `waiters` maps (tenant, record key) to the events that a change notification of that
    record sets (see `change_waiter`); the store wakes them on its own writes too.
    """

    def __init__(
        self,
        dsn_or_pool: str | AsyncConnectionPool[Any],
        *,
        schema: str = "turnkit",
        pool_size: int = 10,
        pool_timeout: float = 30.0,
    ) -> None:
        if not isinstance(schema, str) or not _SCHEMA_NAME.fullmatch(schema):
            raise TurnkitError(
                "INVALID_ARGUMENT",
                f"schema name {schema!r} must be a letter or _ and then up to 59 letters, digits or _",
            )
        self.schema = schema
        self.channel = f"tk_{schema}"
        self.waiters: Waiters = weakref.WeakValueDictionary()
        self._sql = statements_for(schema)
        self.listen_sql = sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)).as_bytes()
        if isinstance(dsn_or_pool, AsyncConnectionPool):
            self._given_pool: AsyncConnectionPool[Any] | None = dsn_or_pool
            self._conninfo = dsn_or_pool.conninfo
            given = dsn_or_pool.kwargs
            self._listen_kwargs: dict[str, Any] = dict(given) if isinstance(given, dict) else {}
        else:
            self._given_pool = None
            self._conninfo = dsn_or_pool
            self._listen_kwargs = {}
        self.pool_size = pool_size
        self.pool_timeout = pool_timeout
        self._live: _LoopState | None = None
        self._opening: asyncio.Lock | None = None
        self._want_listen = False
        self._closed = False

    # --- lifetime -----------------------------------------------------------------------------------

    async def _open(self) -> _LoopState:
        """The open state, opening the pool (and creating the schema) on first use."""
        live = self._live
        if live is not None:
            return live
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._live is not None:
                return self._live
            if self._closed:
                raise TurnkitError("FAILED_PRECONDITION", "this PostgreSQL store is closed")
            pool = self._given_pool or AsyncConnectionPool(
                self._conninfo,
                kwargs={"autocommit": True},
                min_size=1,
                max_size=self.pool_size,
                timeout=self.pool_timeout,
                open=False,
                name=f"turnkit-{self.schema}",
            )
            await pool.open()
            try:
                await self._ensure_schema(pool)
            except BaseException as exc:
                if self._given_pool is None:
                    await pool.close()
                if isinstance(exc, PoolTimeout):
                    raise _unavailable(exc) from exc
                raise
            live = _LoopState(pool, PostgresChangeFeed(self, self.waiters))
            if self._want_listen:
                live.want_listen.set()
            live.task = asyncio.ensure_future(self._background(live))
            self._live = live
            return live

    async def _ensure_schema(self, pool: AsyncConnectionPool[Any]) -> None:
        """Check the schema's version, first creating the schema if it is not there."""
        async with pool.connection() as conn:
            await self._ensure_schema_on(conn)

    async def _ensure_schema_on(self, conn: Conn) -> None:
        """`_ensure_schema` on a connection the caller holds (see `_postgres_schema`)."""
        await ensure_schema(conn, self._sql, self.schema)

    async def close(self) -> None:
        """Stop listening and close the pool (unless the caller gave it); the backend cannot be used after."""
        self._closed = True
        live, self._live = self._live, None
        if live is not None:
            await self._close_live(live)

    async def _close_live(self, live: _LoopState) -> None:
        if live.task is not None:
            live.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await live.task
        if self._given_pool is None:
            await live.pool.close()

    async def _background(self, live: _LoopState) -> None:
        """The listener; and, if the event loop shuts down under an open backend, its cleanup."""
        try:
            await live.want_listen.wait()
            await live.changes.run()
        except asyncio.CancelledError:
            if self._live is live:
                # Nobody called close(): the loop is ending (asyncio.run and pytest cancel leftover
                # tasks). Close what this loop opened, so no server connection leaks; a later use in
                # another loop opens afresh.
                self._live, self._opening = None, None
                if self._given_pool is None:
                    await _close_abandoned_pool(live.pool)
            raise

    # --- notifications ------------------------------------------------------------------------------

    def start_listening(self) -> None:
        """Make sure a listener runs (from the first use on), so change notifications arrive."""
        self._want_listen = True
        if self._live is not None:
            self._live.want_listen.set()

    @property
    def listening(self) -> bool:
        """Whether the listener is listening now (if it stops, it wakes every waiter when back)."""
        live = self._live
        return live is not None and live.changes.subscribed.is_set()

    def change_waiter(self, tenant: str, key: str, timeout: float) -> Callable[[], Awaitable[None]]:
        """Start listening for a write of record `key` from any process; the result waits for one
        (or `timeout`). Listening starts with the first use: until then, waiters only poll."""
        self.start_listening()
        live = self._live
        if live is None:  # not open yet: the caller's read opens it, and starts the listener
            return lambda: self.wait_listening(timeout)
        return live.changes.waiter((tenant, key), timeout)

    async def wait_listening(self, seconds: float) -> None:
        """Wait (at most `seconds`) until the listener is listening."""
        live = self._live
        if live is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(live.changes.subscribed.wait(), seconds)

    async def connect_listener(self) -> Conn:
        """A new connection of the listener's own (outside the pool: it stays in LISTEN)."""
        conninfo = self._conninfo
        if callable(conninfo):  # a pool may be given a function that returns the connection string
            found = conninfo()
            conninfo = await found if inspect.isawaitable(found) else found
        return await psycopg.AsyncConnection.connect(conninfo, **{**self._listen_kwargs, "autocommit": True})

    # --- running statements -------------------------------------------------------------------------

    async def _run(
        self,
        op: Callable[[Conn], Awaitable[T]],
        landed: Callable[[Conn], Awaitable[T | None]] | None = None,
    ) -> T:
        """Run `op` on a pooled connection, again on a fresh one if the connection turns out dead.

        After a connection died mid-operation, `landed` (for writes) first checks whether the lost
        attempt took effect, and returns its result if so.
        """
        pool = (await self._open()).pool
        lost = False
        for attempt in range(_ATTEMPTS):
            try:
                async with pool.connection() as conn:
                    try:
                        if lost and landed is not None:
                            result = await self._in_transaction(conn, landed)
                            if result is not None:
                                return result
                        return await self._in_transaction(conn, op)
                    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
                        if attempt + 1 == _ATTEMPTS:
                            raise
                        # The schema was dropped under us: make it again (with a new identity, which
                        # is how sessions this process saw are then reported lost, not found empty).
                        log.warning("turnkit: PostgreSQL schema %r is gone; creating it again", self.schema)
                        await self._ensure_schema_on(conn)
                        continue
                    except psycopg.OperationalError as exc:
                        if not conn.broken:
                            # The statement failed (a timeout, a lock, a full disk): the connection is fine.
                            known = _server_trouble(exc)
                            if known is None:
                                raise
                            raise known from exc
                        if attempt + 1 == _ATTEMPTS:
                            raise _unavailable(exc) from exc
                        log.warning("turnkit: a PostgreSQL connection died (%s); retrying on another", exc)
                        lost = True
            except PoolTimeout as exc:
                raise _unavailable(exc) from exc
            await pool.check()  # drop the other dead connections before trying again
        raise AssertionError("unreachable")

    @staticmethod
    async def _in_transaction(conn: Conn, op: Callable[[Conn], Awaitable[T]]) -> T:
        if conn.autocommit:  # our own pool: every statement is its own transaction
            return await op(conn)
        async with conn.transaction():  # a caller's pool without autocommit: commit each operation
            return await op(conn)

    async def _fetch_one(
        self, query: bytes, params: Sequence[Any] | Mapping[str, Any]
    ) -> tuple[Any, ...] | None:
        async def op(conn: Conn) -> tuple[Any, ...] | None:
            return await (await conn.execute(query, params)).fetchone()

        return await self._run(op)

    # --- RecordBackend ------------------------------------------------------------------------------

    async def get_record(self, tenant: str, key: str) -> StoredRecord | None:
        """The record stored under `key`, or None."""
        row = await self._fetch_one(self._sql.get_record, (tenant, key))
        return None if row is None else StoredRecord(row[0], decode(row[1]))

    async def put_record(
        self,
        tenant: str,
        key: str,
        data: str,
        *,
        expected_rev: int,
        head_of: str | None = None,
        fence: tuple[str, str] | None = None,
        requires: str | None = None,
    ) -> bool:
        """Store `data` if the record is still at `expected_rev` (and, with a `fence` (lease name,
        owner), only while that owner holds the lease; with `requires`, for a new record, only while
        that record exists), move the head if asked, and notify."""
        writer = secrets.randbits(63)
        new = expected_rev == 0
        requires = requires if new else None
        query = self._sql.put[(new, head_of is not None, fence is not None, requires is not None)]
        params: dict[str, Any] = {
            "t": tenant,
            "k": key,
            "d": encode(data),
            "w": writer,
            "r": expected_rev,
            "s": head_of,
            "o": owner_of(key),
            "c": self.channel,
            "p": change_payload(tenant, key),
        }
        if fence is not None:
            params |= {"fn": fence[0], "fo": fence[1]}
        if requires is not None:
            params["q"] = requires

        async def op(conn: Conn) -> bool:
            if (await conn.execute(query, params)).rowcount == 1:
                return True
            if fence is not None:
                held = await (await conn.execute(self._sql.lease_held, (tenant, *fence))).fetchone()
                if held is None:
                    raise lease_lost(fence[0])
            parent = None if requires is None else (tenant, requires)
            if (
                parent is not None
                and await (await conn.execute(self._sql.get_writer, parent)).fetchone() is None
            ):
                raise parent_gone(parent[1])
            return False

        async def landed(conn: Conn) -> bool | None:
            row = await (await conn.execute(self._sql.get_writer, (tenant, key))).fetchone()
            return True if row is not None and tuple(row) == (expected_rev + 1, writer) else None

        return await self._run(op, landed)

    async def get_head(self, tenant: str, session_id: str) -> str | None:
        """The snapshot most recently created in the session, or None."""
        row = await self._fetch_one(self._sql.get_head, (tenant, session_id))
        return None if row is None else str(row[0])

    async def list_heads(self, tenant: str, after: str | None, limit: int) -> list[tuple[str, str]]:
        """Up to `limit` sessions of the tenant after `after` (id order), with their heads."""

        async def op(conn: Conn) -> list[tuple[str, str]]:
            rows = await (await conn.execute(self._sql.list_heads, (tenant, after or "", limit))).fetchall()
            return [(str(s), str(k)) for s, k in rows]

        return await self._run(op)

    async def append_log(self, tenant: str, log_id: str, start: int, entries: Sequence[str]) -> bool:
        """Append to a log that holds exactly `start` entries; False if another writer got there first."""
        params = {"t": tenant, "l": log_id, "s": start}
        if not entries:
            row = await self._fetch_one(self._sql.log_length_is, params)
            return row is not None and bool(row[0])
        writer = secrets.randbits(63)
        params |= {"e": [encode(e) for e in entries], "w": writer}

        async def op(conn: Conn) -> bool:
            return (await conn.execute(self._sql.append, params)).rowcount == len(entries)

        async def landed(conn: Conn) -> bool | None:
            row = await (await conn.execute(self._sql.log_writer, (tenant, log_id, start))).fetchone()
            return True if row is not None and row[0] == writer else None

        try:
            return await self._run(op, landed)
        except psycopg.errors.UniqueViolation:
            return False  # entry `start` exists: the log is longer (the statement changed nothing)

    async def read_log(self, tenant: str, log_id: str, start: int, end: int) -> list[str]:
        """Entries `start` to `end` of a log."""
        if end <= start:
            return []

        async def op(conn: Conn) -> list[str]:
            cur = await conn.execute(self._sql.read_log, (tenant, log_id, start, end))
            return [decode(row[0]) for row in await cur.fetchall()]

        return await self._run(op)

    # --- LeaseBackend -------------------------------------------------------------------------------

    async def try_lease(self, tenant: str, name: str, owner: str, ttl: float) -> bool:
        """Take or renew a lease unless another owner holds an unexpired one (by the database clock)."""
        params = {"t": tenant, "n": name, "o": owner, "ttl": float(ttl)}

        async def op(conn: Conn) -> bool:
            return (await conn.execute(self._sql.try_lease, params)).rowcount == 1

        return await self._run(op)  # retrying is safe: the owner renewing its own lease succeeds

    async def release_lease(self, tenant: str, name: str, owner: str) -> None:
        """Drop the lease if `owner` holds it."""

        async def op(conn: Conn) -> None:
            await conn.execute(self._sql.release_lease, (tenant, name, owner))

        await self._run(op)

    async def renew_lease(self, tenant: str, name: str, owner: str, ttl: float) -> bool:
        """Extend the lease if `owner` still holds it (expired or not); never take it afresh."""
        params = {"t": tenant, "n": name, "o": owner, "ttl": float(ttl)}

        async def op(conn: Conn) -> bool:
            return (await conn.execute(self._sql.renew_lease, params)).rowcount == 1

        return await self._run(op)

    # --- identity and maintenance -------------------------------------------------------------------

    async def store_epoch(self) -> str:
        """The schema's identity, written with it (a schema dropped and made again has a new one)."""

        async def op(conn: Conn) -> str:
            try:
                row = await (await conn.execute(self._sql.epoch, (secrets.token_hex(8),))).fetchone()
            except psycopg.errors.UndefinedColumn:  # a schema made before the column existed
                await conn.execute(self._sql.add_epoch)
                row = await (await conn.execute(self._sql.epoch, (secrets.token_hex(8),))).fetchone()
            return "" if row is None else str(row[0])

        return await self._run(op)

    async def list_tenants(self) -> list[str]:
        """Every tenant holding data in the schema."""

        async def op(conn: Conn) -> list[str]:
            return sorted(str(r[0]) for r in await (await conn.execute(self._sql.tenants)).fetchall())

        return await self._run(op)

    async def scan_records(self, tenant: str) -> list[tuple[str, StoredRecord]]:
        """Every record of a tenant, with its key."""

        async def op(conn: Conn) -> list[tuple[str, StoredRecord]]:
            rows = await (await conn.execute(self._sql.scan_records, (tenant,))).fetchall()
            return [(str(k), StoredRecord(rev, decode(data))) for k, rev, data in rows]

        return await self._run(op)

    async def scan_session(self, tenant: str, session_id: str) -> list[tuple[str, StoredRecord]]:
        """The session's records (its snapshots and their spilled states), with their keys."""

        async def op(conn: Conn) -> list[tuple[str, StoredRecord]]:
            rows = await (await conn.execute(self._sql.scan_session, (tenant, session_id))).fetchall()
            return [(str(k), StoredRecord(rev, decode(data))) for k, rev, data in rows]

        return await self._run(op)

    async def delete_data(
        self, tenant: str, *, records: Sequence[str], logs: Sequence[str], heads: Sequence[str]
    ) -> None:
        """Delete these records, logs and heads in one transaction."""

        async def op(conn: Conn) -> None:
            async with conn.transaction():
                await conn.execute(self._sql.delete_records, (tenant, list(records)))
                await conn.execute(self._sql.delete_logs, (tenant, list(logs)))
                await conn.execute(self._sql.delete_heads, (tenant, list(heads)))

        await self._run(op)


class PostgresSessionStore(LinearSessionStore):
    """A session store in PostgreSQL: any number of processes and machines may share one schema.

    `dsn_or_pool`: a connection string or URL (the store opens its own pool on first use), or an
    `AsyncConnectionPool` the caller owns. `schema`: the PostgreSQL schema holding the tables, created
    on first use. `pool_size` and `pool_timeout`: the most connections an own pool opens, and how
    long an operation waits for one (then it fails with UNAVAILABLE). Other options are those of
    `LinearSessionStore`. Status watchers wake on a write from any process at once (LISTEN/NOTIFY),
    and poll every `poll_interval` seconds while notifications are unavailable.
    Close the store with `close()` or `async with`; if the event loop ends first, it closes itself.
    """

    def __init__(
        self,
        dsn_or_pool: str | AsyncConnectionPool[Any],
        *,
        schema: str = "turnkit",
        pool_size: int = 10,
        pool_timeout: float = 30.0,
        **options: Unpack[StoreOptions],
    ) -> None:
        backend = PostgresBackend(dsn_or_pool, schema=schema, pool_size=pool_size, pool_timeout=pool_timeout)
        super().__init__(backend, **options)
        # One map of waiters: this instance's own writes and notifications wake the same watchers.
        self._signals = backend.waiters
        self.backend: PostgresBackend
        self.postgres = backend  # `backend` may be wrapped (tests do); notifications need the real one

    @property
    def schema(self) -> str:
        """The PostgreSQL schema holding this store's tables."""
        return self.postgres.schema

    async def close(self) -> None:
        """Stop listening and close the connection pool (unless the caller gave it)."""
        await self.postgres.close()

    def change_waiter(
        self, snapshot_id: str, *, context: Mapping[str, Any] | None = None
    ) -> Callable[[], Awaitable[None]]:
        """Wake on a write of the snapshot from any process (LISTEN/NOTIFY), else after a poll interval."""
        return self.postgres.change_waiter(self.tenant_key(context), snapshot_id, self.poll_interval)
