"""`PostgresSessionStore`: the linear engine over PostgreSQL (psycopg 3), shared by any number of processes.

Tables in one PostgreSQL schema (default `turnkit`), created on first use under an advisory lock:
    schema_version  one row: the layout version (a newer one than this code knows is refused)
    records         (tenant, id) -> rev, data, writer     snapshot records, compare-and-set on rev
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
would not make it shorter (`turnkit.sessions.codec`; a record's JSON shrinks to about a third).

Every `put_record` notifies the channel `tk_<schema>` with the record's tenant and id, and one
listening connection per store instance wakes the status watchers (`watch_status`) of that record,
so an abort written by any process reaches the process running the turn at once. Polling every
`poll_interval` remains the fallback while the listener is (re)connecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import inspect
import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar, Unpack

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from turnkit.errors import TurnkitError
from turnkit.sessions.backend import StoredRecord
from turnkit.sessions.codec import decode, encode
from turnkit.sessions.engine import LinearSessionStore, StoreOptions

__all__ = ["SCHEMA_VERSION", "PostgresBackend", "PostgresSessionStore", "change_payload"]

log = logging.getLogger("turnkit.sessions")

SCHEMA_VERSION: Final = 1
_SCHEMA_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,59}")
_LOCK_CLASS: Final = 0x746B  # "tk": the advisory-lock namespace of schema creation
_MAX_PAYLOAD: Final = 7999  # NOTIFY payloads must stay under 8000 bytes
_ATTEMPTS: Final = 3  # tries of one operation when connections turn out to be dead
_LISTEN_PING: Final = 30.0  # a quiet listener checks its connection this often (seconds)

Conn = psycopg.AsyncConnection[TupleRow]
T = TypeVar("T")


def _unavailable(exc: Exception) -> TurnkitError:
    return TurnkitError("UNAVAILABLE", f"PostgreSQL is unavailable: {exc}", public=False)


def change_payload(tenant: str, key: str) -> str:
    """The NOTIFY payload announcing a write of record `key`: JSON `[tenant, key]`, or `#` + a digest if long."""
    payload = json.dumps([tenant, key], ensure_ascii=False, separators=(",", ":"))
    if len(payload.encode("utf-8")) <= _MAX_PAYLOAD:
        return payload
    return "#" + hashlib.sha256(payload.encode("utf-8")).hexdigest()


class _Sql:
    """Every statement the backend runs, composed once for one schema (identifiers quoted by psycopg)."""

    def __init__(self, schema: str) -> None:
        def q(text: str) -> bytes:
            tables = {t: sql.Identifier(schema, t) for t in ("records", "heads", "logs", "leases")}
            version = sql.Identifier(schema, "schema_version")
            return sql.SQL(text).format(schema=sql.Identifier(schema), version=version, **tables).as_bytes()

        key = 'text COLLATE "C" NOT NULL'  # byte-wise equality and ordering: ids are stored exactly
        self.ddl = [
            q("CREATE SCHEMA IF NOT EXISTS {schema}"),
            q(
                "CREATE TABLE IF NOT EXISTS {version} ("
                " singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton), version integer NOT NULL)"
            ),
            q(
                f"CREATE TABLE IF NOT EXISTS {{records}} (tenant {key}, id {key}, rev bigint NOT NULL,"
                " data bytea NOT NULL, writer bigint NOT NULL, PRIMARY KEY (tenant, id))"
            ),
            q(
                f"CREATE TABLE IF NOT EXISTS {{heads}} (tenant {key}, session_id {key},"
                " snapshot_id text NOT NULL, PRIMARY KEY (tenant, session_id))"
            ),
            q(
                f"CREATE TABLE IF NOT EXISTS {{logs}} (tenant {key}, log_id {key}, seq integer NOT NULL,"
                " entry bytea NOT NULL, writer bigint, PRIMARY KEY (tenant, log_id, seq))"
            ),
            q(
                f"CREATE TABLE IF NOT EXISTS {{leases}} (tenant {key}, name {key}, owner text NOT NULL,"
                " expires_at timestamptz NOT NULL, PRIMARY KEY (tenant, name))"
            ),
        ]
        self.lock = b"SELECT pg_advisory_xact_lock(%s, hashtext(%s))"
        self.read_version = q("SELECT version FROM {version}")
        self.write_version = q("INSERT INTO {version} (version) VALUES (%s)")
        self.get_record = q("SELECT rev, data FROM {records} WHERE tenant = %s AND id = %s")
        self.get_writer = q("SELECT rev, writer FROM {records} WHERE tenant = %s AND id = %s")
        self.get_head = q("SELECT snapshot_id FROM {heads} WHERE tenant = %s AND session_id = %s")
        # A put: the compare-and-set, the head move (if any) and the notification, all in one statement.
        insert = (
            "INSERT INTO {records} (tenant, id, rev, data, writer) VALUES (%(t)s, %(k)s, 1, %(d)s, %(w)s)"
            " ON CONFLICT DO NOTHING RETURNING 1"
        )
        update = (
            "UPDATE {records} SET rev = rev + 1, data = %(d)s, writer = %(w)s"
            " WHERE tenant = %(t)s AND id = %(k)s AND rev = %(r)s RETURNING 1"
        )
        head = (
            ", head AS (INSERT INTO {heads} (tenant, session_id, snapshot_id) SELECT %(t)s, %(s)s, %(k)s"
            " FROM put ON CONFLICT (tenant, session_id) DO UPDATE SET snapshot_id = EXCLUDED.snapshot_id)"
        )
        notify = " SELECT pg_notify(%(c)s, %(p)s) FROM put"
        self.put = {
            (new, with_head): q(
                f"WITH put AS ({insert if new else update}){head if with_head else ''}{notify}"
            )
            for new in (True, False)
            for with_head in (True, False)
        }
        self.append = q(
            "INSERT INTO {logs} (tenant, log_id, seq, entry, writer)"
            " SELECT %(t)s, %(l)s, %(s)s + u.n - 1, u.entry, CASE WHEN u.n = 1 THEN %(w)s::bigint END"
            " FROM unnest(%(e)s::bytea[]) WITH ORDINALITY AS u(entry, n)"
            " WHERE %(s)s = 0 OR EXISTS"
            " (SELECT FROM {logs} WHERE tenant = %(t)s AND log_id = %(l)s AND seq = %(s)s - 1)"
        )
        self.log_length_is = q(
            "SELECT (%(s)s = 0 OR EXISTS (SELECT FROM {logs} WHERE tenant = %(t)s AND log_id = %(l)s"
            " AND seq = %(s)s - 1)) AND NOT EXISTS"
            " (SELECT FROM {logs} WHERE tenant = %(t)s AND log_id = %(l)s AND seq = %(s)s)"
        )
        self.log_writer = q("SELECT writer FROM {logs} WHERE tenant = %s AND log_id = %s AND seq = %s")
        self.read_log = q(
            "SELECT entry FROM {logs} WHERE tenant = %s AND log_id = %s AND seq >= %s AND seq < %s"
            " ORDER BY seq"
        )
        self.try_lease = q(
            "INSERT INTO {leases} AS l (tenant, name, owner, expires_at)"
            " VALUES (%(t)s, %(n)s, %(o)s, now() + make_interval(secs => %(ttl)s))"
            " ON CONFLICT (tenant, name) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at"
            " WHERE l.owner = EXCLUDED.owner OR l.expires_at < now() RETURNING 1"
        )
        self.release_lease = q("DELETE FROM {leases} WHERE tenant = %s AND name = %s AND owner = %s")


@functools.lru_cache(maxsize=64)
def _statements(schema: str) -> _Sql:
    return _Sql(schema)


@dataclass
class _Live:
    """What an open backend holds in the event loop that opened it."""

    pool: AsyncConnectionPool[Conn]
    want_listen: asyncio.Event = field(default_factory=asyncio.Event)
    listening: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


async def _abandon(pool: AsyncConnectionPool[Any]) -> None:
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
    use. `on_change` receives each change notification's payload (see `change_payload`), or None
    when notifications may have been missed (the listener reconnected).
    """

    def __init__(
        self,
        dsn_or_pool: str | AsyncConnectionPool[Any],
        *,
        schema: str = "turnkit",
        pool_size: int = 10,
        pool_timeout: float = 30.0,
        on_change: Callable[[str | None], None] | None = None,
    ) -> None:
        if not isinstance(schema, str) or not _SCHEMA_NAME.fullmatch(schema):
            raise TurnkitError(
                "INVALID_ARGUMENT",
                f"schema name {schema!r} must be a letter or _ and then up to 59 letters, digits or _",
            )
        self.schema = schema
        self.channel = f"tk_{schema}"
        self.on_change = on_change
        self._sql = _statements(schema)
        self._listen_sql = sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)).as_bytes()
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
        self._live: _Live | None = None
        self._opening: asyncio.Lock | None = None
        self._want_listen = False
        self._closed = False

    # --- lifetime -----------------------------------------------------------------------------------

    async def _open(self) -> _Live:
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
            live = _Live(pool)
            if self._want_listen:
                live.want_listen.set()
            live.task = asyncio.ensure_future(self._background(live))
            self._live = live
            return live

    async def _ensure_schema(self, pool: AsyncConnectionPool[Any]) -> None:
        """Check the schema's version, first creating the schema if it is not there."""
        async with pool.connection() as conn:
            try:
                async with conn.transaction():
                    version = await self._version(conn)
            except psycopg.errors.UndefinedTable:
                version = None
            if version is None:
                # Under a lock: concurrent CREATE ... IF NOT EXISTS can still collide in the catalog.
                async with conn.transaction():
                    await conn.execute(self._sql.lock, (_LOCK_CLASS, self.schema))
                    for statement in self._sql.ddl:
                        await conn.execute(statement)
                    version = await self._version(conn)
                    if version is None:
                        await conn.execute(self._sql.write_version, (SCHEMA_VERSION,))
                        version = SCHEMA_VERSION
        if version > SCHEMA_VERSION:
            raise TurnkitError(
                "FAILED_PRECONDITION",
                f"PostgreSQL schema {self.schema!r} holds turnkit storage version {version}; this turnkit"
                f" reads version {SCHEMA_VERSION} at most: upgrade turnkit or use another schema",
            )

    async def _version(self, conn: Conn) -> int | None:
        row = await (await conn.execute(self._sql.read_version)).fetchone()
        return None if row is None else int(row[0])

    async def close(self) -> None:
        """Stop listening and close the pool (unless the caller gave it); the backend cannot be used after."""
        self._closed = True
        live, self._live = self._live, None
        if live is not None:
            await self._let_go(live)

    async def _let_go(self, live: _Live) -> None:
        if live.task is not None:
            live.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await live.task
        if self._given_pool is None:
            await live.pool.close()

    async def _background(self, live: _Live) -> None:
        """The listener; and, if the event loop shuts down under an open backend, its cleanup."""
        try:
            await live.want_listen.wait()
            await self._listen(live)
        except asyncio.CancelledError:
            if self._live is live:
                # Nobody called close(): the loop is ending (asyncio.run and pytest cancel leftover
                # tasks). Close what this loop opened, so no server connection leaks; a later use in
                # another loop opens afresh.
                self._live, self._opening = None, None
                if self._given_pool is None:
                    await _abandon(live.pool)
            raise

    # --- notifications ------------------------------------------------------------------------------

    def start_listening(self) -> None:
        """Make sure a listener runs (from the first use on), so change notifications arrive."""
        self._want_listen = True
        if self._live is not None:
            self._live.want_listen.set()

    @property
    def listening(self) -> bool:
        """Whether the listener is listening now (if it stops, it announces None when back)."""
        live = self._live
        return live is not None and live.listening.is_set()

    async def wait_listening(self, seconds: float) -> None:
        """Wait (at most `seconds`) until the listener is listening."""
        live = self._live
        if live is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(live.listening.wait(), seconds)

    async def _listen_conninfo(self) -> str:
        if not callable(self._conninfo):
            return self._conninfo
        # A pool may be given a function that returns the connection string.
        conninfo = self._conninfo()
        return await conninfo if inspect.isawaitable(conninfo) else conninfo

    async def _listen(self, live: _Live) -> None:
        """Hold one connection in LISTEN and hand every notification to `on_change`; reconnect on failure."""
        delay = 0.05
        while True:
            try:
                conninfo = await self._listen_conninfo()
                conn = await psycopg.AsyncConnection.connect(
                    conninfo, **{**self._listen_kwargs, "autocommit": True}
                )
            except Exception as exc:
                log.warning("turnkit: cannot connect the change listener (%s); retrying", exc)
            else:
                try:
                    await conn.execute(self._listen_sql)
                    live.listening.set()
                    self._announce(None)  # anything may have changed while nobody listened
                    delay = 0.05
                    while True:
                        async for note in conn.notifies(timeout=_LISTEN_PING):
                            self._announce(note.payload)
                        await conn.execute(b"SELECT 1")  # quiet for a while: is the connection alive?
                except Exception as exc:
                    log.warning("turnkit: the change listener lost its connection (%s); reconnecting", exc)
                finally:
                    live.listening.clear()
                    await conn.close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _announce(self, payload: str | None) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change(payload)
        except Exception:  # a listener must survive whatever a callback (or a stray NOTIFY) does
            log.exception("turnkit: handling a change notification failed")

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
                    except psycopg.OperationalError as exc:
                        if not conn.broken:
                            raise  # the statement failed (a timeout, a lock): the connection is fine
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

    async def _one(self, query: bytes, params: Sequence[Any] | Mapping[str, Any]) -> tuple[Any, ...] | None:
        async def op(conn: Conn) -> tuple[Any, ...] | None:
            return await (await conn.execute(query, params)).fetchone()

        return await self._run(op)

    # --- RecordBackend ------------------------------------------------------------------------------

    async def get_record(self, tenant: str, key: str) -> StoredRecord | None:
        """The record stored under `key`, or None."""
        row = await self._one(self._sql.get_record, (tenant, key))
        return None if row is None else StoredRecord(row[0], decode(row[1]))

    async def put_record(
        self, tenant: str, key: str, data: str, *, expected_rev: int, head_of: str | None = None
    ) -> bool:
        """Store `data` if the record is still at `expected_rev`, move the head if asked, and notify."""
        writer = secrets.randbits(63)
        query = self._sql.put[(expected_rev == 0, head_of is not None)]
        params = {
            "t": tenant,
            "k": key,
            "d": encode(data),
            "w": writer,
            "r": expected_rev,
            "s": head_of,
            "c": self.channel,
            "p": change_payload(tenant, key),
        }

        async def op(conn: Conn) -> bool:
            return (await conn.execute(query, params)).rowcount == 1

        async def landed(conn: Conn) -> bool | None:
            row = await (await conn.execute(self._sql.get_writer, (tenant, key))).fetchone()
            return True if row is not None and tuple(row) == (expected_rev + 1, writer) else None

        return await self._run(op, landed)

    async def get_head(self, tenant: str, session_id: str) -> str | None:
        """The snapshot most recently created in the session, or None."""
        row = await self._one(self._sql.get_head, (tenant, session_id))
        return None if row is None else str(row[0])

    async def append_log(self, tenant: str, log_id: str, start: int, entries: Sequence[str]) -> bool:
        """Append to a log that holds exactly `start` entries; False if another writer got there first."""
        params = {"t": tenant, "l": log_id, "s": start}
        if not entries:
            row = await self._one(self._sql.log_length_is, params)
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
        backend = PostgresBackend(
            dsn_or_pool,
            schema=schema,
            pool_size=pool_size,
            pool_timeout=pool_timeout,
            on_change=self._changed,
        )
        super().__init__(backend, **options)
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
        key = (self.tenant_key(context), snapshot_id)
        event = self._signals.get(key)
        if event is None:
            event = self._signals[key] = asyncio.Event()
        self.postgres.start_listening()
        listening = self.postgres.listening

        async def wait() -> None:
            if not listening:
                # Nobody was listening when the caller read: a change since may have gone unannounced,
                # so return (and let the caller read again) as soon as the listener is up.
                await self.postgres.wait_listening(self.poll_interval)
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), self.poll_interval)

        return wait

    def _changed(self, payload: str | None) -> None:
        """Wake the watchers of the record a notification names (all of them for None)."""
        if payload is None:
            keys = list(self._signals.keys())
        elif payload.startswith("#"):
            keys = [k for k in list(self._signals.keys()) if change_payload(*k) == payload]
        else:
            tenant, key = json.loads(payload)
            keys = [(str(tenant), str(key))]
        for k in keys:
            event = self._signals.pop(k, None)
            if event is not None:
                event.set()
