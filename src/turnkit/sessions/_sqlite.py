"""`SqliteSessionStore`: the linear engine over one SQLite database file, the embedded default store.

Several processes on one machine may share the file. Each store instance owns one connection,
used only from one worker thread of its own, so no sqlite3 call ever blocks the event loop and
the connection never crosses threads (a forked child opens its own). Every backend method is one
short transaction; writes take the database write lock up front (`BEGIN IMMEDIATE`), so
compare-and-set is serialised across threads and processes, while readers (WAL mode) never wait
for writers. SQLite has no change notification across processes: watchers poll (`poll_interval`).

Schema (version 1), created on first use and recorded in `schema_version`, in 4 KiB pages:
    records(tenant, key, rev, data)           PRIMARY KEY (tenant, key), WITHOUT ROWID
    heads(tenant, session, key)               PRIMARY KEY (tenant, session), WITHOUT ROWID
    logs(tenant, log, seq, n, entry)          PRIMARY KEY (tenant, log, seq)
    leases(tenant, name, owner, expires_at)   PRIMARY KEY (tenant, name), WITHOUT ROWID
Every lookup is one search of a primary key. A logs row holds the `n` entries from index `seq` on
that one append wrote (a turn appends its messages together), `\n`-separated (an entry holding a
newline gets a row of its own; a long append is split into rows of about `_ROW_CHARS`), so a turn
costs one row and one index entry, and its messages compress together. Log rows are often larger
than a twentieth of a page, so they live in a rowid table, whose leaves hold rows of up to a page
without overflow; records (mostly small deltas, compressed), heads and leases live in their key's
own b-tree, which spares each an index repeating its key. Ids, keys and tenants are bound as
parameters and stored exactly as given.

`data` and `entry` hold the engine's JSON text, or, when that is shorter, a BLOB: its compressed
form (see `turnkit.sessions._codec`).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final, Literal, TypeVar, Unpack

from turnkit.errors import TurnkitError
from turnkit.sessions._backend import StoredRecord, parent_gone
from turnkit.sessions._codec import decode, pack
from turnkit.sessions._engine import LinearSessionStore, StoreOptions
from turnkit.sessions._lease import lease_lost
from turnkit.sessions._store import os_error
from turnkit.sessions._worker import WorkerThread

__all__ = ["DEFAULT_POLL_INTERVAL", "SCHEMA_VERSION", "SqliteBackend", "SqliteSessionStore"]

log = logging.getLogger("turnkit.sessions")

SCHEMA_VERSION: Final = 1
# How often a watcher re-reads a status that another process may have changed: SQLite has no
# cross-process notification, so this bounds how late an abort sent elsewhere stops a turn.
DEFAULT_POLL_INTERVAL: Final = 0.2

_SCHEMA: Final = (
    """CREATE TABLE records (
        tenant TEXT NOT NULL, key TEXT NOT NULL, rev INTEGER NOT NULL, data TEXT NOT NULL,
        PRIMARY KEY (tenant, key)) WITHOUT ROWID""",
    """CREATE TABLE heads (
        tenant TEXT NOT NULL, session TEXT NOT NULL, key TEXT NOT NULL,
        PRIMARY KEY (tenant, session)) WITHOUT ROWID""",
    """CREATE TABLE logs (
        tenant TEXT NOT NULL, log TEXT NOT NULL, seq INTEGER NOT NULL, n INTEGER NOT NULL,
        entry TEXT NOT NULL, PRIMARY KEY (tenant, log, seq))""",
    """CREATE TABLE leases (
        tenant TEXT NOT NULL, name TEXT NOT NULL, owner TEXT NOT NULL, expires_at REAL NOT NULL,
        PRIMARY KEY (tenant, name)) WITHOUT ROWID""",
)
_GET_RECORD: Final = "SELECT rev, data FROM records WHERE tenant = ? AND key = ?"
_HAS_RECORD: Final = "SELECT 1 FROM records WHERE tenant = ? AND key = ?"
_INSERT_RECORD: Final = (
    "INSERT INTO records (tenant, key, rev, data) VALUES (?, ?, 1, ?) ON CONFLICT DO NOTHING"
)
_UPDATE_RECORD: Final = "UPDATE records SET rev = rev + 1, data = ? WHERE tenant = ? AND key = ? AND rev = ?"
_SET_HEAD: Final = (
    "INSERT INTO heads (tenant, session, key) VALUES (?, ?, ?)"
    " ON CONFLICT (tenant, session) DO UPDATE SET key = excluded.key"
)
_GET_HEAD: Final = "SELECT key FROM heads WHERE tenant = ? AND session = ?"
_LIST_HEADS: Final = (
    "SELECT session, key FROM heads WHERE tenant = ? AND session > ? ORDER BY session LIMIT ?"
)
# The length of a log: where its last row ends.
_LOG_END: Final = "SELECT seq + n FROM logs WHERE tenant = ? AND log = ? ORDER BY seq DESC LIMIT 1"
_APPEND: Final = "INSERT INTO logs (tenant, log, seq, n, entry) VALUES (?, ?, ?, ?, ?)"
# The rows holding entries ?3 to ?4: from the last one starting at or before ?3 (one index search).
_READ_LOG: Final = (
    "SELECT seq, n, entry FROM logs WHERE tenant = ?1 AND log = ?2 AND seq < ?4 AND seq >="
    " coalesce((SELECT max(seq) FROM logs WHERE tenant = ?1 AND log = ?2 AND seq <= ?3), 0) ORDER BY seq"
)
# Entries of one append share a row up to about this many characters (then a row is split off), so a
# read of a few entries never has to decompress much more than it asked for.
_ROW_CHARS: Final = 16384
# Take the lease when it is free, expired, or ours already (then renew it).
_TRY_LEASE: Final = (
    "INSERT INTO leases (tenant, name, owner, expires_at) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (tenant, name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at"
    " WHERE leases.owner = excluded.owner OR leases.expires_at <= ?"
)
_RELEASE_LEASE: Final = "DELETE FROM leases WHERE tenant = ? AND name = ? AND owner = ?"
_RENEW_LEASE: Final = "UPDATE leases SET expires_at = ? WHERE tenant = ? AND name = ? AND owner = ?"
_LEASE_HELD: Final = "SELECT 1 FROM leases WHERE tenant = ? AND name = ? AND owner = ?"
# The store's identity: a random id written once with the schema (see `turnkit.sessions._retention`).
_IDENTITY: Final = "CREATE TABLE IF NOT EXISTS identity (epoch TEXT NOT NULL)"
# No session column or index on records, on purpose: an index entry repeats the tenant, the session
# and the key (1.44x -> 1.71x the history in benchmarks/stores.py, the column alone 1.53x), while
# what it saves is one read of the tenant's records when a session is deleted, a rare, offline
# operation (`delete_session` and `prune` find a session's records as the file store does).
_TENANTS: Final = "SELECT tenant FROM records UNION SELECT tenant FROM heads UNION SELECT tenant FROM logs"

# --- the blocking side ---------------------------------------------------------------------------------

T = TypeVar("T")
Synchronous = Literal["NORMAL", "FULL"]


class _Database:
    """One connection and the SQL of each operation. Used from the worker thread only."""

    def __init__(self, path: str, *, busy_timeout: float, synchronous: Synchronous) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.synchronous = synchronous
        self.conn: sqlite3.Connection | None = None

    def connect(self) -> sqlite3.Connection:
        """The open connection; opened (and the schema checked or created) on first use."""
        if self.conn is not None:
            return self.conn
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions; each operation says where its own begins.
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        try:
            # Wait this long for another connection's write lock instead of failing at once.
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            # The layout suits 4 KiB pages (most builds' default; some have 1 KiB). This only takes
            # effect in a new, empty file: before the WAL mode below writes its first page.
            conn.execute("PRAGMA page_size = 4096")
            # WAL: readers never block the writer, nor it them, and a commit is one append.
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal" and self.path != ":memory:":
                log.warning("SQLite store %s runs in journal mode %r, not WAL", self.path, mode)
            # NORMAL, in WAL mode, flushes to disk at checkpoints rather than at every commit. A crashed
            # process loses nothing (its commits are in the OS page cache) and the file cannot be
            # corrupted; only a power cut or OS crash may roll back the last commits. FULL would add an
            # fsync, milliseconds on most disks, to every commit: several per turn.
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        self.conn = conn
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")  # two processes creating the schema at once: one waits
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            found = conn.execute("SELECT max(version) FROM schema_version").fetchone()[0]
            if found is None:
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            conn.execute(_IDENTITY)  # added after version 1 shipped: older files get it now
            if conn.execute("SELECT count(*) FROM identity").fetchone()[0] == 0:
                conn.execute("INSERT INTO identity (epoch) VALUES (?)", (uuid.uuid4().hex,))
            elif found > SCHEMA_VERSION:
                raise TurnkitError(
                    "FAILED_PRECONDITION",
                    f"SQLite session database {self.path} has schema version {found}, newer than version"
                    f" {SCHEMA_VERSION} that this turnkit knows; upgrade turnkit to open it",
                    public=False,
                )
            # found < SCHEMA_VERSION: the migrations go here, once there is a version 2.
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Close the connection (the last one to close also checkpoints the WAL into the file)."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run one operation on the connection, with SQLite's errors turned into turnkit's.

        SQLite skips its busy handler where waiting could deadlock: a connection that must upgrade
        a read to a write (opening a new file while another process turns it to WAL, say) gets
        SQLITE_BUSY at once. Each operation is one transaction, rolled back on error, so it is
        simply run again, until `busy_timeout` after the first attempt.
        """
        deadline = 0.0
        while True:
            try:
                return fn(self.connect(), *args)
            except sqlite3.OperationalError as exc:
                code = exc.sqlite_errorcode & 0xFF
                if code == sqlite3.SQLITE_FULL:
                    raise TurnkitError(
                        "RESOURCE_EXHAUSTED",
                        f"SQLite database {self.path}: the disk is full ({exc})",
                        public=False,
                    ) from exc
                if code in (sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN):
                    raise TurnkitError(
                        "UNAVAILABLE",
                        f"SQLite database {self.path} cannot be read or written: {exc}",
                        public=False,
                    ) from exc
                if code not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                    raise TurnkitError(
                        "INTERNAL", f"SQLite database {self.path}: {exc}", public=False
                    ) from exc
                now = time.monotonic()
                deadline = deadline or now + self.busy_timeout
                if now >= deadline:
                    raise TurnkitError(
                        "UNAVAILABLE", f"SQLite database {self.path} stayed busy: {exc}", public=False
                    ) from exc
                time.sleep(min(0.005, deadline - now))
            except sqlite3.DatabaseError as exc:
                raise TurnkitError("DATA_LOSS", f"SQLite database {self.path}: {exc}", public=False) from exc
            except OSError as exc:  # creating the directory
                raise os_error(exc, f"SQLite database {self.path}") from exc


def _write(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], bool]) -> bool:
    """Run `fn` in a write transaction; commit when it returns True, else change nothing."""
    conn.execute("BEGIN IMMEDIATE")  # the write lock first: no other writer between our read and write
    try:
        done = fn(conn)
        conn.execute("COMMIT" if done else "ROLLBACK")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return done


def _get_record(conn: sqlite3.Connection, tenant: str, key: str) -> StoredRecord | None:
    row = conn.execute(_GET_RECORD, (tenant, key)).fetchone()
    return None if row is None else StoredRecord(row[0], decode(row[1]))


def _put_record(
    conn: sqlite3.Connection,
    tenant: str,
    key: str,
    data: str,
    expected_rev: int,
    head_of: str | None,
    fence: tuple[str, str] | None,
    requires: str | None,
) -> bool:
    value = pack(data)  # before the transaction: hold the write lock no longer than needed

    def put(c: sqlite3.Connection) -> bool:
        if fence is not None and c.execute(_LEASE_HELD, (tenant, *fence)).fetchone() is None:
            raise lease_lost(fence[0])
        if requires is not None and c.execute(_HAS_RECORD, (tenant, requires)).fetchone() is None:
            raise parent_gone(requires)
        if expected_rev == 0:
            changed = c.execute(_INSERT_RECORD, (tenant, key, value)).rowcount
        else:
            changed = c.execute(_UPDATE_RECORD, (value, tenant, key, expected_rev)).rowcount
        if changed != 1:
            return False
        if head_of is not None:
            c.execute(_SET_HEAD, (tenant, head_of, key))
        return True

    return _write(conn, put)


def _list_heads(
    conn: sqlite3.Connection, tenant: str, after: str | None, limit: int
) -> list[tuple[str, str]]:
    # TEXT compares with the BINARY collation: UTF-8 byte order, which is code-point order.
    rows = conn.execute(_LIST_HEADS, (tenant, after or "", limit)).fetchall()
    return [(str(session), str(key)) for session, key in rows]


def _get_head(conn: sqlite3.Connection, tenant: str, session_id: str) -> str | None:
    row = conn.execute(_GET_HEAD, (tenant, session_id)).fetchone()
    return None if row is None else str(row[0])


def _log_rows(start: int, entries: Sequence[str]) -> Iterator[tuple[int, int, str | bytes]]:
    """The rows (first index, entry count, stored value) that hold `entries` appended at `start`."""
    group: list[str] = []
    size = 0
    for entry in entries:
        alone = "\n" in entry  # the separator: such an entry cannot share a row
        if group and (alone or size + len(entry) > _ROW_CHARS):
            yield start, len(group), pack("\n".join(group))
            start, group, size = start + len(group), [], 0
        group.append(entry)
        size += len(entry) + 1
        if alone:
            yield start, 1, pack(entry)
            start, group, size = start + 1, [], 0
    if group:
        yield start, len(group), pack("\n".join(group))


def _append_log(
    conn: sqlite3.Connection, tenant: str, log_id: str, start: int, entries: Sequence[str]
) -> bool:
    # Compressed before the transaction: hold the write lock no longer than needed.
    rows = [(tenant, log_id, seq, n, value) for seq, n, value in _log_rows(start, entries)]

    def append(c: sqlite3.Connection) -> bool:
        row = c.execute(_LOG_END, (tenant, log_id)).fetchone()
        if (0 if row is None else row[0]) != start:
            return False
        c.executemany(_APPEND, rows)
        return True

    return _write(conn, append)


def _read_log(conn: sqlite3.Connection, tenant: str, log_id: str, start: int, end: int) -> list[str]:
    start = max(start, 0)
    if end <= start:
        return []
    out: list[str] = []
    expected = None  # where the next row must start: rows tile the log from 0
    for seq, n, value in conn.execute(_READ_LOG, (tenant, log_id, start, end)).fetchall():
        if (seq > start) if expected is None else (seq != expected):
            raise TurnkitError("DATA_LOSS", f"message log {log_id!r} has a gap at entry {seq}", public=False)
        expected = seq + n
        if seq + n <= start:
            continue  # the log ends before `start`
        text = decode(value)
        held = [text] if n == 1 else text.split("\n")
        if len(held) != n:
            raise TurnkitError(
                "DATA_LOSS",
                f"message log {log_id!r}: the row at {seq} holds {len(held)} entries, not {n}",
                public=False,
            )
        out.extend(held[max(start - seq, 0) : end - seq])
    return out


def _try_lease(conn: sqlite3.Connection, tenant: str, name: str, owner: str, ttl: float) -> bool:
    # One statement is one transaction, which takes the write lock before it reads the holder.
    # Wall-clock time: the holder may be another process.
    now = time.time()
    return bool(conn.execute(_TRY_LEASE, (tenant, name, owner, now + ttl, now)).rowcount == 1)


def _release_lease(conn: sqlite3.Connection, tenant: str, name: str, owner: str) -> None:
    conn.execute(_RELEASE_LEASE, (tenant, name, owner))


def _renew_lease(conn: sqlite3.Connection, tenant: str, name: str, owner: str, ttl: float) -> bool:
    return bool(conn.execute(_RENEW_LEASE, (time.time() + ttl, tenant, name, owner)).rowcount == 1)


def _epoch(conn: sqlite3.Connection) -> str:
    return str(conn.execute("SELECT epoch FROM identity").fetchone()[0])


def _tenants(conn: sqlite3.Connection) -> list[str]:
    return sorted(str(row[0]) for row in conn.execute(_TENANTS).fetchall())


def _scan_records(conn: sqlite3.Connection, tenant: str) -> list[tuple[str, StoredRecord]]:
    rows = conn.execute("SELECT key, rev, data FROM records WHERE tenant = ?", (tenant,)).fetchall()
    return [(str(k), StoredRecord(rev, decode(data))) for k, rev, data in rows]


def _delete_data(
    conn: sqlite3.Connection, tenant: str, records: Sequence[str], logs: Sequence[str], heads: Sequence[str]
) -> bool:
    def delete(c: sqlite3.Connection) -> bool:
        c.executemany("DELETE FROM records WHERE tenant = ? AND key = ?", [(tenant, k) for k in records])
        c.executemany("DELETE FROM logs WHERE tenant = ? AND log = ?", [(tenant, g) for g in logs])
        c.executemany("DELETE FROM heads WHERE tenant = ? AND session = ?", [(tenant, h) for h in heads])
        return True

    # Deleted is gone: freed pages are zeroed, not left readable in the file, and the write-ahead
    # log, which still holds their old images, is emptied once no reader needs it (best effort).
    conn.execute("PRAGMA secure_delete = ON")
    try:
        done = _write(conn, delete)
    finally:
        conn.execute("PRAGMA secure_delete = OFF")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return done


# Connections a forked child inherited: never to be used or closed there (see `SqliteBackend._after_fork`).
_FORKED_AWAY: list[_Database] = []


class SqliteBackend:
    """Records, heads, logs and leases in one SQLite file, run on a worker thread of its own.

    `busy_timeout` (seconds) is how long a write waits for another connection's transaction;
    `synchronous` is "NORMAL" (the default; see `_Database.connect`) or "FULL" (fsync every commit).
    """

    def __init__(
        self, path: str | os.PathLike[str], *, busy_timeout: float = 5.0, synchronous: Synchronous = "NORMAL"
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be 'NORMAL' or 'FULL', not {synchronous!r}")
        self.path = os.fspath(path)
        self.busy_timeout = busy_timeout
        self.synchronous: Synchronous = synchronous
        self._starting = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        """A fresh connection (opened on first use) and worker thread (started on first use)."""
        self._database = _Database(self.path, busy_timeout=self.busy_timeout, synchronous=self.synchronous)
        # The connection is opened, used and closed on the worker thread only.
        self._worker = WorkerThread(f"turnkit-sqlite {self.path}", on_stop=self._database.close)
        self._pid = os.getpid()
        # Ending the thread takes only a put on the queue, which is safe from any context (even from
        # a garbage collection that interrupts another put); the connection closes on the thread.
        self._finalizer = weakref.finalize(self, self._worker.stop)

    def _after_fork(self) -> None:
        with self._starting:
            if self._pid != os.getpid():
                # A forked child: the parent's thread is not here, and its connection must never be
                # used (nor closed: SQLite's locks would go wrong), so keep it, untouched, forever.
                _FORKED_AWAY.append(self._database)
                self._finalizer.detach()
                self._reset()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(connection, *args)` on the worker thread and return what it returns.

        Jobs run one at a time, in the order they were sent. A caller cancelled while its job is
        queued or running stops waiting, but the job still runs to its end (a transaction either
        commits or changes nothing), as a request already sent to a database server would.
        """
        if not self._finalizer.alive:
            raise TurnkitError("FAILED_PRECONDITION", f"SQLite store {self.path} is closed", public=False)
        if self._pid != os.getpid():
            self._after_fork()
        return await self._worker.submit(self._database.call, fn, *args)

    # --- RecordBackend ------------------------------------------------------------------------------

    async def get_record(self, tenant: str, key: str) -> StoredRecord | None:
        """The record stored under `key`, or None."""
        return await self._run(_get_record, tenant, key)

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
        owner), only while that owner holds the lease; with `requires`, only while that record
        exists), and move the session head if asked."""
        return await self._run(_put_record, tenant, key, data, expected_rev, head_of, fence, requires)

    async def get_head(self, tenant: str, session_id: str) -> str | None:
        """The snapshot most recently created in the session, or None."""
        return await self._run(_get_head, tenant, session_id)

    async def list_heads(self, tenant: str, after: str | None, limit: int) -> list[tuple[str, str]]:
        """Up to `limit` sessions of the tenant after `after` (id order), with their heads."""
        return await self._run(_list_heads, tenant, after, limit)

    async def append_log(self, tenant: str, log_id: str, start: int, entries: Sequence[str]) -> bool:
        """Append to a log that holds exactly `start` entries."""
        return await self._run(_append_log, tenant, log_id, start, entries)

    async def read_log(self, tenant: str, log_id: str, start: int, end: int) -> list[str]:
        """Entries `start` to `end` of a log."""
        return await self._run(_read_log, tenant, log_id, start, end)

    # --- LeaseBackend -------------------------------------------------------------------------------

    async def try_lease(self, tenant: str, name: str, owner: str, ttl: float) -> bool:
        """Take or renew a lease unless another owner holds an unexpired one (across processes)."""
        return await self._run(_try_lease, tenant, name, owner, ttl)

    async def release_lease(self, tenant: str, name: str, owner: str) -> None:
        """Drop the lease if `owner` holds it."""
        await self._run(_release_lease, tenant, name, owner)

    async def renew_lease(self, tenant: str, name: str, owner: str, ttl: float) -> bool:
        """Extend the lease if `owner` still holds it (expired or not); never take it afresh."""
        return await self._run(_renew_lease, tenant, name, owner, ttl)

    # --- identity and maintenance ------------------------------------------------------------------

    async def store_epoch(self) -> str:
        """The database's identity, written with its schema (a new file has a new one)."""
        return await self._run(_epoch)

    async def list_tenants(self) -> list[str]:
        """Every tenant holding data."""
        return await self._run(_tenants)

    async def scan_records(self, tenant: str) -> list[tuple[str, StoredRecord]]:
        """Every record of a tenant, with its key."""
        return await self._run(_scan_records, tenant)

    async def delete_data(
        self, tenant: str, *, records: Sequence[str], logs: Sequence[str], heads: Sequence[str]
    ) -> None:
        """Delete these records, logs and heads in one transaction."""
        await self._run(_delete_data, tenant, list(records), list(logs), list(heads))

    # --- lifetime -----------------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the connection and end the worker thread, once the calls already made have run.

        A backend nobody closes does the same when it is garbage collected, without the wait.
        """
        self._finalizer()  # does nothing the second time
        await self._worker.join()

    aclose = close


class SqliteSessionStore(LinearSessionStore):
    """A session store in one SQLite database file, which several processes on one machine may share.

    `busy_timeout` and `synchronous` are as in `SqliteBackend`; other options are those of
    `LinearSessionStore`. Other processes' writes are seen by polling every `poll_interval` seconds
    (default 0.2 here, so an abort sent to another process stops its turn well within a second).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 5.0,
        synchronous: Synchronous = "NORMAL",
        **options: Unpack[StoreOptions],
    ) -> None:
        options.setdefault("poll_interval", DEFAULT_POLL_INTERVAL)
        super().__init__(SqliteBackend(path, busy_timeout=busy_timeout, synchronous=synchronous), **options)
        self.backend: SqliteBackend
        self.path = Path(path)
