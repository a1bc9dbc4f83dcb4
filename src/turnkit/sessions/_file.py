"""`FileSessionStore`: the linear engine over one append-only journal file per tenant, safe across processes.

Layout of the store directory (nothing else is created there; other files are left alone):
    default.tkj        the default tenant's journal (`turnkit.sessions._journal` describes the format)
    t<name>.tkj        another tenant's journal, `<name>` the tenant id encoded by `encode_name`
    <stem>.lock        beside each journal: writers `flock` it; its 8 bytes are a change counter
    .<journal>.<hex>.tmp   a journal being created or compacted, renamed over the journal when whole
Tenants are the only ids that become file names: by base32 (or, when long, a SHA-256 digest), so no
id can name a path outside the directory, and each journal's header spells its tenant, which opening
verifies. Keys, session, log and lease ids are data inside the journal, stored exactly. A directory
in the first file store's layout (a directory per tenant) is refused with DATA_LOSS, not ignored.

Every record write, log append and lease change is one frame appended to the journal under the lock,
after a compare-and-set against the index this instance keeps of the journal; every operation first
catches the index up with frames other processes appended (reading just the new tail), so nothing
replays the journal but a new instance (or one that finds the journal compacted). A record is
compressed against the record it most likely resembles (its previous revision, or its session's
head, which is its parent), and a log append against the log's previous append, so a short turn adds
about 100-150 bytes. A writer killed mid-append leaves a torn frame, which readers ignore and the next
writer cuts off. `fsync=True` (the default) makes each record write durable with one `fdatasync`
before it returns, which also covers the log appends and leases written before it.

Blocking file I/O runs on one worker thread per store instance, one hop there and back per backend
call; the journal's index is only changed from that thread. Reads skip the hop when the index is
known to be up to date: the lock file's change counter (memory-mapped, bumped by every writer) shows
no change since the index last looked; they then read payloads not cached with `pread` on the
caller's thread (not caching them), and a seqlock drops an answer read while the worker changed the
index. So a hot turn (two reads, a log append, a record write) takes two hops, a lookup none. `stored_bytes()` is the total size of the journals: the
bytes the store keeps on disk.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar, Unpack

from turnkit.errors import TurnkitError
from turnkit.sessions._backend import StoredRecord
from turnkit.sessions._engine import LinearSessionStore, StoreOptions
from turnkit.sessions._journal import JOURNAL_SUFFIX, MISS, Journal
from turnkit.sessions._journal_format import header_tenant
from turnkit.sessions._worker import WorkerThread

__all__ = ["FileBackend", "FileSessionStore", "encode_name"]

_MAX_B32: Final = 120
DEFAULT_COMPACT_MIN_BYTES: Final = 1 << 20
MAX_OPEN_JOURNALS = 64

T = TypeVar("T")


def encode_name(value: str) -> str:
    """A file name for any string: `b` + lowercase base32, or `h` + SHA-256 hex when that is long."""
    raw = value.encode("utf-8")
    b32 = base64.b32encode(raw).decode("ascii").rstrip("=").lower()
    return "b" + b32 if len(b32) <= _MAX_B32 else "h" + hashlib.sha256(raw).hexdigest()


def journal_stem(tenant: str) -> str:
    """The file name (without suffix) of a tenant's journal."""
    return "default" if tenant == "" else "t" + encode_name(tenant)


class _Journals:
    """The journals of one directory, by tenant (changed from the worker thread only). At most
    `MAX_OPEN_JOURNALS` stay open (three file descriptors each); the least recently used is closed."""

    def __init__(self, root: Path, fsync: bool, compact_min_bytes: int) -> None:
        self.root = root
        self.fsync = fsync
        self.compact_min_bytes = compact_min_bytes
        self.by_tenant: OrderedDict[str, Journal] = OrderedDict()

    def __call__(self, tenant: str) -> Journal:
        journal = self.by_tenant.get(tenant)
        if journal is not None:
            self.by_tenant.move_to_end(tenant)
            return journal
        journal = self.by_tenant[tenant] = Journal(
            self.root,
            journal_stem(tenant),
            tenant,
            fsync=self.fsync,
            compact_min_bytes=self.compact_min_bytes,
        )
        while len(self.by_tenant) > MAX_OPEN_JOURNALS:
            self.by_tenant.popitem(last=False)[1].close()
        return journal

    def get_record(self, tenant: str, key: str) -> StoredRecord | None:
        j = self(tenant)
        return j.run(j.get_record, key)

    def put_record(
        self,
        tenant: str,
        key: str,
        data: str,
        expected_rev: int,
        head_of: str | None,
        fence: tuple[str, str] | None = None,
        requires: str | None = None,
    ) -> bool:
        j = self(tenant)
        return j.run(j.put_record, key, data, expected_rev, head_of, fence, requires)

    def get_head(self, tenant: str, session_id: str) -> str | None:
        j = self(tenant)
        return j.run(j.get_head, session_id)

    def list_heads(self, tenant: str, after: str | None, limit: int) -> list[tuple[str, str]]:
        j = self(tenant)
        return j.run(j.list_heads, after, limit)

    def append_log(self, tenant: str, log_id: str, start: int, entries: Sequence[str]) -> bool:
        j = self(tenant)
        return j.run(j.append_log, log_id, start, entries)

    def read_log(self, tenant: str, log_id: str, start: int, end: int) -> list[str]:
        j = self(tenant)
        return j.run(j.read_log, log_id, start, end)

    def try_lease(self, tenant: str, name: str, owner: str, ttl: float) -> bool:
        j = self(tenant)
        return j.run(j.try_lease, name, owner, ttl)

    def release_lease(self, tenant: str, name: str, owner: str) -> None:
        j = self(tenant)
        j.run(j.release_lease, name, owner)

    def renew_lease(self, tenant: str, name: str, owner: str, ttl: float) -> bool:
        j = self(tenant)
        return j.run(j.renew_lease, name, owner, ttl)

    def scan_records(self, tenant: str) -> list[tuple[str, StoredRecord]]:
        j = self(tenant)
        return j.run(j.scan_records)

    def delete_data(
        self, tenant: str, records: Sequence[str], logs: Sequence[str], heads: Sequence[str]
    ) -> None:
        j = self(tenant)
        j.run(j.delete_data, records, logs, heads)

    def list_tenants(self) -> list[str]:
        found = []
        for path in sorted(self.root.glob(f"*{JOURNAL_SUFFIX}")):
            try:
                with path.open("rb") as f:
                    tenant = header_tenant(f.read(4096))
            except (OSError, ValueError):
                continue  # not a journal of ours (or half made): nothing to prune there
            if journal_stem(tenant) == path.name[: -len(JOURNAL_SUFFIX)]:
                found.append(tenant)
        return found

    def compact(self, tenant: str) -> bool:
        j = self(tenant)
        return j.run(j.compact)

    def close(self) -> None:
        for journal in self.by_tenant.values():
            journal.close()
        self.by_tenant.clear()


class FileBackend:
    """Records, heads, message logs and leases in one journal per tenant; a `RecordBackend` and
    `LeaseBackend` whose every call is one hop to the store's worker thread."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        fsync: bool = True,
        compact_min_bytes: int = DEFAULT_COMPACT_MIN_BYTES,
    ) -> None:
        self.root = Path(directory)
        self.root.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self.compact_min_bytes = compact_min_bytes
        self._setup()

    def _setup(self) -> None:
        self._closed = False
        self._pid = os.getpid()
        self.journals = _Journals(self.root, self.fsync, self.compact_min_bytes)
        self._worker = WorkerThread("turnkit-file-store", on_stop=self.journals.close)
        self._finalizer = weakref.finalize(self, self._worker.stop)

    def _run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        if self._closed:
            raise TurnkitError("FAILED_PRECONDITION", f"the file session store at {self.root} is closed")
        if self._pid != os.getpid():
            self._after_fork()
        return self._worker.submit(fn, *args)

    async def close(self) -> None:
        """Close the journals and end the worker thread, once the calls already made have run."""
        if self._closed:
            return
        self._closed = True
        self._finalizer()  # queued behind the calls already made
        await self._worker.join()

    def _after_fork(self) -> None:
        # A forked child: the thread is gone, and the parent's open files (and locks) are not ours.
        self._finalizer.detach()
        self.journals.close()
        self._setup()

    def _peeking(self, tenant: str) -> Journal | None:
        """The tenant's journal, if this process has indexed it (reads may then skip the hop)."""
        if self._pid != os.getpid():
            self._after_fork()
        return self.journals.by_tenant.get(tenant)

    # --- the RecordBackend methods -----------------------------------------------------------------

    async def get_record(self, tenant: str, key: str) -> StoredRecord | None:
        """The record stored under `key`, or None."""
        journal = self._peeking(tenant)
        if journal is not None:
            got = journal.peek_record(key)
            if got is not MISS:
                return got  # type: ignore[return-value]
        return await self._run(self.journals.get_record, tenant, key)

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
        """Append the record if it is still at `expected_rev` (under the journal's lock), with a
        `fence` (lease name, owner) only while that owner holds the lease, and with `requires` only
        while that record exists."""
        return await self._run(
            self.journals.put_record, tenant, key, data, expected_rev, head_of, fence, requires
        )

    async def get_head(self, tenant: str, session_id: str) -> str | None:
        """The snapshot most recently created in the session, or None."""
        journal = self._peeking(tenant)
        if journal is not None:
            got = journal.peek_head(session_id)
            if got is not MISS:
                return got  # type: ignore[return-value]
        return await self._run(self.journals.get_head, tenant, session_id)

    async def list_heads(self, tenant: str, after: str | None, limit: int) -> list[tuple[str, str]]:
        """Up to `limit` sessions of the tenant after `after` (id order), with their heads."""
        return await self._run(self.journals.list_heads, tenant, after, limit)

    async def append_log(self, tenant: str, log_id: str, start: int, entries: Sequence[str]) -> bool:
        """Append to a log that holds exactly `start` entries (under the journal's lock)."""
        return await self._run(self.journals.append_log, tenant, log_id, start, list(entries))

    async def read_log(self, tenant: str, log_id: str, start: int, end: int) -> list[str]:
        """Entries `start` to `end` of a log."""
        journal = self._peeking(tenant)
        if journal is not None:
            got = journal.peek_log(log_id, start, end)
            if got is not MISS:
                return got  # type: ignore[return-value]
        return await self._run(self.journals.read_log, tenant, log_id, start, end)

    # --- the LeaseBackend methods ------------------------------------------------------------------

    async def try_lease(self, tenant: str, name: str, owner: str, ttl: float) -> bool:
        """Take or renew a lease unless another owner holds an unexpired one (across processes)."""
        return await self._run(self.journals.try_lease, tenant, name, owner, ttl)

    async def release_lease(self, tenant: str, name: str, owner: str) -> None:
        """Drop the lease if `owner` holds it."""
        await self._run(self.journals.release_lease, tenant, name, owner)

    async def renew_lease(self, tenant: str, name: str, owner: str, ttl: float) -> bool:
        """Extend the lease if `owner` still holds it (expired or not); never take it afresh."""
        return await self._run(self.journals.renew_lease, tenant, name, owner, ttl)

    # --- upkeep ------------------------------------------------------------------------------------

    async def list_tenants(self) -> list[str]:
        """Every tenant with a journal in the directory."""
        return await self._run(self.journals.list_tenants)

    async def scan_records(self, tenant: str) -> list[tuple[str, StoredRecord]]:
        """Every record of a tenant, with its key."""
        return await self._run(self.journals.scan_records, tenant)

    async def delete_data(
        self, tenant: str, *, records: Sequence[str], logs: Sequence[str], heads: Sequence[str]
    ) -> None:
        """Delete these records, logs and heads, compacting the journal so their bytes are gone."""
        await self._run(self.journals.delete_data, tenant, list(records), list(logs), list(heads))

    async def compact(self, tenant: str = "") -> bool:
        """Rewrite a tenant's journal with its live data only, now (it also happens on its own when
        superseded data outweighs live data); False when the tenant has no journal."""
        return await self._run(self.journals.compact, tenant)

    def journal(self, tenant: str = "") -> Journal:
        """A tenant's journal, for inspection (its methods block and are not thread-safe: call them
        only while no backend call is in flight)."""
        return self.journals(tenant)

    def stored_bytes(self) -> int:
        """Bytes of all the journals in the directory (what the store keeps on disk)."""
        return sum(p.stat().st_size for p in self.root.glob(f"*{JOURNAL_SUFFIX}") if p.is_file())


class FileSessionStore(LinearSessionStore):
    """A session store in a directory of journal files; several processes may share the directory.

    `fsync=False` skips the flushes to disk (faster, not crash-safe). A journal is compacted once
    superseded data outweighs live data and is at least `compact_min_bytes`. Other options are those
    of `LinearSessionStore`; status changes written by other processes are seen by polling.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        fsync: bool = True,
        compact_min_bytes: int = DEFAULT_COMPACT_MIN_BYTES,
        **options: Unpack[StoreOptions],
    ) -> None:
        self.directory = Path(directory)
        super().__init__(FileBackend(directory, fsync=fsync, compact_min_bytes=compact_min_bytes), **options)
        self.backend: FileBackend

    def stored_bytes(self) -> int:
        """Bytes the store keeps on disk (its journals)."""
        return self.backend.stored_bytes()
