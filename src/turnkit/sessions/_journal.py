"""The append-only journal behind `FileSessionStore`: one file per tenant, shared by processes.

A journal holds everything a `RecordBackend` + `LeaseBackend` keeps for one tenant (records, session
heads, message logs, leases) as a sequence of binary frames, appended under an exclusive `flock` on
a lock file beside it. Each store instance keeps an in-memory index of the journal (where the current
frame of every record, log and lease is), refreshed before every operation by replaying only the
frames appended since (a `stat` tells whether there are any), so no read replays the journal.

The lock file's first 8 bytes are a change counter (little-endian), memory-mapped by every instance
and bumped by every writer, under the lock, before and after each append, cut or compaction. An
index that has seen the current count (and looked at the file within `_FRESH_FOR` seconds) is up to
date, so `peek_record`, `peek_log` and `peek_head` answer on the caller's thread, from the index (and
`pread`s of payloads not cached); a seqlock (`busy`) drops what they read while the worker changed it.

The frames themselves (header, frame and body layout, names, payload codecs) are described in
`turnkit.sessions._journal_format`. A record's base is its own previous revision, else the head of
its session, else the last record written; a log append's base is the log's previous append.

Crash safety: a frame counts only once whole with a matching CRC. A reader stops at the first frame
that does not (a writer may be mid-append); a writer, holding the lock, cuts such a tail off before
appending. Record frames are the commit points: with `fsync`, each is followed by an `fdatasync`,
which also makes every earlier frame durable (log appends and leases are not synced on their own:
nothing refers to an append until a record does, and a lease does not outlive its process anyway).

A whole frame that does not parse (an unknown kind: a newer turnkit) is DATA_LOSS, and never cut.

Compaction: when superseded frames (old record revisions, renewed or released leases) make up more
than half the journal and at least `compact_min_bytes`, the writer rewrites the live data to a temp
file (logs regrouped into larger frames) and renames it over the journal, under the lock. Other
instances see a new inode at their next operation and rebuild their index from the new file. Its
cost is linear in the live data and it runs only once as much has been superseded, so amortised
over the writes that superseded it, it is constant per byte written.
"""

from __future__ import annotations

import fcntl
import glob
import logging
import mmap
import os
import struct
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

from turnkit.sessions._backend import StoredRecord, parent_gone
from turnkit.sessions._journal_compact import live_frames
from turnkit.sessions._journal_format import (
    CHAIN,
    JOURNAL_FORMAT_VERSION,
    MAGIC,
    TEXT_ERRORS,
    IncompleteFrame,
    NameEncoder,
    check_header,
    data_loss,
    encode_frame,
    encode_header,
    frame_size,
    log_body,
    read_frame,
    record_body,
)
from turnkit.sessions._journal_index import FrameRef, JournalIndex
from turnkit.sessions._lease import lease_lost
from turnkit.sessions._listing import first_after
from turnkit.sessions._store import os_error

__all__ = [
    "CHAIN",
    "JOURNAL_FORMAT_VERSION",
    "JOURNAL_SUFFIX",
    "LOCK_SUFFIX",
    "MAGIC",
    "MISS",
    "Journal",
]

log = logging.getLogger("turnkit.sessions")
T = TypeVar("T")

JOURNAL_SUFFIX: Final = ".tkj"
LOCK_SUFFIX: Final = ".lock"
_SCAN_CHUNK: Final = 1 << 20
_CACHE_ENTRIES: Final = 1024
_CACHE_BYTES: Final = 8 << 20
_COUNTER: Final = struct.Struct("<Q")
_FRESH_FOR: Final = 1.0  # seconds an index may answer from memory before it looks at the file again
MISS: Final = object()  # what a `peek_*` returns when only the worker thread can answer
_fdatasync = getattr(os, "fdatasync", os.fsync)


class _Closed(Exception):
    """A `peek_*` found the journal closed: only the worker thread can answer."""


class Journal(JournalIndex):
    """One tenant's journal file and this instance's index of it. Blocking, and not thread-safe:
    the file backend calls it from its single worker thread."""

    def __init__(self, root: Path, stem: str, tenant: str, *, fsync: bool, compact_min_bytes: int) -> None:
        self.path = root / f"{stem}{JOURNAL_SUFFIX}"
        self.lock_path = root / f"{stem}{LOCK_SUFFIX}"
        self.tenant = tenant
        self.fsync = fsync
        self.compact_min_bytes = compact_min_bytes
        self.fd: int | None = None
        self.lock_fd: int | None = None
        self.counter: mmap.mmap | None = None  # the lock file's change counter, shared by processes
        self.inode = (0, 0)
        # A seqlock between the worker thread (odd while it changes the index) and `peek_*`.
        self.busy = 0
        self.seen = -1  # the change counter the index is known to be up to date with
        self.checked_at = 0.0
        self.rebuilds = 0  # how often the index was built from scratch (tests watch it)
        self.compactions = 0  # how often this instance compacted the journal
        self._reset(0)

    def close(self) -> None:
        """Close the files (the index is dropped; the next operation reopens)."""
        self.busy += 2  # a `peek_*` under way answers MISS
        self.seen = -1
        if self.counter is not None:
            self.counter.close()
            self.counter = None
        for fd in (self.fd, self.lock_fd):
            if fd is not None:
                os.close(fd)
        self.fd = self.lock_fd = None
        self.inode = (0, 0)
        self._reset(0)

    # --- answers from memory, on the caller's thread ---------------------------------------------

    def _peekable_version(self) -> int | None:
        """The seqlock value if the index may answer from memory: no change since it was checked
        (the shared counter says so, and it was checked lately) and the worker is not changing it."""
        busy, counter = self.busy, self.counter
        if busy & 1 or counter is None or time.monotonic() - self.checked_at > _FRESH_FOR:
            return None
        try:
            if _COUNTER.unpack_from(counter, 0)[0] != self.seen:
                return None
        except ValueError:  # closed meanwhile
            return None
        return busy

    def peek_record(self, key: str) -> StoredRecord | object | None:
        """`get_record` without a hop to the worker thread, or MISS. A payload not cached is decoded
        here (a `pread` per frame of its chain, page-cached bytes for a journal in use) but not cached:
        only the worker changes the index and cache. Whatever the worker did meanwhile (even closing
        the file, its descriptor reused) shows in the seqlock: MISS. A hop (two thread wake-ups, far
        dearer across CPUs) costs more than the decoding, and most lookups are cold in a large store."""
        busy = self._peekable_version()
        if busy is None:
            return MISS
        answer: StoredRecord | None = None
        try:
            current = self.records.get(key)
            if current is not None:
                rev, frame = current
                form = self._peek_form(frame)
                answer = StoredRecord(rev, form[len(frame.prefix) :].decode("utf-8", TEXT_ERRORS))
        except Exception:  # read while the worker changed things (the seqlock would say so): ask it
            return MISS
        return answer if self.busy == busy else MISS

    def peek_log(self, log_id: str, start: int, end: int) -> list[str] | object:
        """`read_log` without a hop to the worker thread (as `peek_record`), or MISS."""
        busy = self._peekable_version()
        if busy is None:
            return MISS
        try:
            answer = self._log_entries(log_id, start, end, self._peek_form)
        except Exception:  # as in `peek_record`
            return MISS
        return answer if self.busy == busy else MISS

    def _peek_form(self, frame: FrameRef) -> bytes:
        """A frame's dictionary form for a `peek_*`: cached, or decoded without caching it."""
        form = self.cache.get(frame.offset)
        if form is not None:
            return form
        fd = self.fd
        if fd is None:
            raise _Closed
        return self._decode(frame, fd, remember=False)

    def peek_head(self, session_id: str) -> str | object | None:
        """`get_head` without I/O, or MISS."""
        busy = self._peekable_version()
        if busy is None:
            return MISS
        head = self.heads.get(session_id)
        return (None if head is None else head[0]) if self.busy == busy else MISS

    # --- the operations (on the worker thread) ------------------------------------------------------

    def run(self, method: Callable[..., T], *args: Any) -> T:
        """Run one operation, marking the index busy meanwhile (see `peek_record`). A failing file
        system is reported as a turnkit error (a full disk: RESOURCE_EXHAUSTED)."""
        self.busy += 1
        try:
            return method(*args)
        except OSError as exc:
            self.inode = (0, 0)  # a write may have stopped half-way: index the file afresh next time
            raise os_error(exc, f"session journal {self.path}") from exc
        finally:
            self.busy += 1

    def get_record(self, key: str) -> StoredRecord | None:
        if not self._refresh(locked=False):
            return None
        current = self.records.get(key)
        if current is None:
            return None
        rev, frame = current
        form = self._dictionary_form(frame)
        return StoredRecord(rev, form[len(frame.prefix) :].decode("utf-8", TEXT_ERRORS))

    def put_record(
        self,
        key: str,
        data: str,
        expected_rev: int,
        head_of: str | None,
        fence: tuple[str, str] | None = None,
        requires: str | None = None,
    ) -> bool:
        plain = data.encode("utf-8", TEXT_ERRORS)
        self._lock()
        try:
            if fence is not None and self.leases.get(fence[0], ("",))[0] != fence[1]:
                raise lease_lost(fence[0])
            if requires is not None and requires not in self.records:
                raise parent_gone(requires)
            current = self.records.get(key)
            if (current[0] if current else 0) != expected_rev:
                return False
            base = current[1] if current else None
            if base is None and head_of is not None:
                head = self.heads.get(head_of)
                head_record = None if head is None else self.records.get(head[0])
                base = None if head_record is None else head_record[1]
            if base is None and self.last_record is not None:
                base = self.frames.get(self.last_record.offset)
            codec, payload, base = self._encode(plain, base)
            names = NameEncoder(self.name_of, len(self.names))
            fields = self._base_fields(base)
            body = record_body(names, key, expected_rev + 1, head_of, fields, codec, payload)
            known = key.encode("utf-8", TEXT_ERRORS) + b"\n" + plain
            self._append(encode_frame(body), sync=True, dictionary_form=known)
            return True
        finally:
            self._unlock()

    def scan_records(self) -> list[tuple[str, StoredRecord]]:
        """Every record, with its key."""
        if not self._refresh(locked=False):
            return []
        out = []
        for key, (rev, frame) in list(self.records.items()):
            form = self._dictionary_form(frame)
            out.append((key, StoredRecord(rev, form[len(frame.prefix) :].decode("utf-8", TEXT_ERRORS))))
        return out

    def get_head(self, session_id: str) -> str | None:
        if not self._refresh(locked=False):
            return None
        head = self.heads.get(session_id)
        return None if head is None else head[0]

    def list_heads(self, after: str | None, limit: int) -> list[tuple[str, str]]:
        """Up to `limit` sessions after `after` (id order), with their heads."""
        if not self._refresh(locked=False):
            return []
        return [(s, self.heads[s][0]) for s in first_after(self.heads, after, limit)]

    def append_log(self, log_id: str, start: int, entries: Sequence[str]) -> bool:
        if any("\n" in e for e in entries):
            raise ValueError("log entries must be one-line texts")
        self._lock()
        try:
            current = self.logs.get(log_id)
            if (current.length if current else 0) != start:
                return False
            if not entries:
                return True
            base = current.frames[-1][2] if current and current.frames else None
            plain = "\n".join(entries).encode("utf-8", TEXT_ERRORS)
            codec, payload, base = self._encode(plain, base)
            names = NameEncoder(self.name_of, len(self.names))
            body = log_body(names, log_id, start, len(entries), self._base_fields(base), codec, payload)
            # Not synced: nothing refers to these entries until a record does, and the record's
            # fdatasync (same file) makes them durable first.
            self._append(encode_frame(body), sync=False, dictionary_form=plain)
            return True
        finally:
            self._unlock()

    def read_log(self, log_id: str, start: int, end: int) -> list[str]:
        if not self._refresh(locked=False):
            return []
        return self._log_entries(log_id, start, end, self._dictionary_form)

    def try_lease(self, name: str, owner: str, ttl: float) -> bool:
        self._lock()
        try:
            holder = self.leases.get(name)
            now = time.time()  # wall-clock time: the other holder may be another process
            if holder is not None and holder[0] != owner and holder[1] > now:
                return False
            self._append(encode_frame(self._lease_body(name, owner, now + ttl)))
            return True
        finally:
            self._unlock()

    def renew_lease(self, name: str, owner: str, ttl: float) -> bool:
        self._lock()
        try:
            holder = self.leases.get(name)
            if holder is None or holder[0] != owner:
                return False
            self._append(encode_frame(self._lease_body(name, owner, time.time() + ttl)))
            return True
        finally:
            self._unlock()

    def delete_data(self, records: Sequence[str], logs: Sequence[str], heads: Sequence[str]) -> None:
        """Drop these records, logs and heads, then compact: the journal no longer holds their bytes."""
        if not self.path.exists():
            return
        self._lock()
        try:
            for key in records:
                self.records.pop(key, None)
            for log_id in logs:
                self.logs.pop(log_id, None)
            for session in heads:
                self.heads.pop(session, None)
            self._compact(reindex=False)
        finally:
            self._unlock(compact=False)

    def release_lease(self, name: str, owner: str) -> None:
        self._lock()
        try:
            holder = self.leases.get(name)
            if holder is not None and holder[0] == owner:
                self._append(encode_frame(self._lease_body(name, "", 0.0)))
        finally:
            self._unlock()

    def compact(self) -> bool:
        """Rewrite the journal with its live data only, now; False if there is no journal."""
        if not self.path.exists():
            return False
        self._lock()
        try:
            self._compact()
            return True
        finally:
            self._unlock(compact=False)

    # --- the index -------------------------------------------------------------------------------

    def _refresh(self, *, locked: bool) -> bool:
        """Bring the index up to date with the file; False when there is no journal yet.

        With the lock held, bytes past the last whole frame are a torn append: they are cut off."""
        seen = self._read_counter(create=locked)  # before looking: what changes after, it will show
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self.fd is not None:  # deleted under us: forget it
                os.close(self.fd)
                self.fd, self.inode = None, (0, 0)
                self._reset(0)
            self.seen = -1
            if (self.path.parent / self.path.stem / "records").is_dir():
                raise data_loss(
                    f"{self.path.parent} holds sessions in the layout of turnkit 0.1's first file store "
                    f"(a directory per tenant), which this version does not read"
                ) from None
            return False
        size = st.st_size
        if self.fd is None or (st.st_dev, st.st_ino) != self.inode or size < self.end:
            size = self._open()  # new to this instance, or replaced by a compaction
        elif size > self.end:
            self._scan(size)
        if locked and size > self.end:
            assert self.fd is not None
            log.warning(
                "%s: cutting off %d bytes of a torn frame at %d", self.path, size - self.end, self.end
            )
            os.ftruncate(self.fd, self.end)
            seen = self._bump()
        self.seen, self.checked_at = seen, time.monotonic()
        return True

    def _read_counter(self, *, create: bool) -> int:
        """The shared change counter (-1 while there is none), mapping the lock file if need be."""
        if self.counter is None:
            if self.lock_fd is None:
                try:
                    self.lock_fd = os.open(self.lock_path, os.O_RDWR)
                except FileNotFoundError:
                    return -1
            if os.fstat(self.lock_fd).st_size < _COUNTER.size:
                if not create:  # only a writer, holding the lock, sizes it
                    return -1
                os.ftruncate(self.lock_fd, _COUNTER.size)
            self.counter = mmap.mmap(self.lock_fd, _COUNTER.size)
        value: int = _COUNTER.unpack_from(self.counter, 0)[0]
        return value

    def _bump(self) -> int:
        """Under the lock: tell every instance the journal changed."""
        assert self.counter is not None
        value: int = (_COUNTER.unpack_from(self.counter, 0)[0] + 1) & 0xFFFF_FFFF_FFFF_FFFF
        _COUNTER.pack_into(self.counter, 0, value)
        return value

    def _open(self) -> int:
        """(Re)open the journal and index it from the start; return the size it had."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self.inode = (0, 0)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
        try:
            st = os.fstat(fd)
            end = check_header(os.pread(fd, 4096, 0), self.path.name, self.tenant)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self.rebuilds += 1
        self._reset(end)
        self._scan(st.st_size)
        self.inode = (st.st_dev, st.st_ino)
        return st.st_size

    def _scan(self, size: int) -> None:
        """Index the whole frames between the end of the index and `size`; stop at one that is not."""
        assert self.fd is not None
        try:
            while self.end < size:
                start = self.end
                buf = os.pread(self.fd, min(size - start, _SCAN_CHUNK), start)
                pos = 0
                try:
                    while pos < len(buf):
                        pos += self._apply(buf, pos, start + pos)
                        self.end = start + pos
                except IncompleteFrame:
                    pass
                if pos:
                    continue  # read on from the first frame not indexed
                need = frame_size(buf)
                if need is None or start + need > size:
                    return  # torn, or still being written
                if need <= len(buf):
                    self._check_not_damaged(start, need, size)
                    return  # a torn tail
                # A frame longer than a chunk: read it whole.
                try:
                    self.end += self._apply(os.pread(self.fd, need, start), 0, start)
                except IncompleteFrame:
                    self._check_not_damaged(start, need, size)
                    return
        except BaseException:
            self.inode = (0, 0)  # the index may be half updated: rebuild it next time
            raise

    def _check_not_damaged(self, start: int, need: int, size: int) -> None:
        """A whole frame at `start` failed its CRC: a torn tail if nothing whole follows it, but
        DATA_LOSS if a valid frame does (the journal was damaged in the middle: never cut that off)."""
        assert self.fd is not None
        after = start + need
        if after >= size:
            return
        head = os.pread(self.fd, min(size - after, 16), after)
        following = frame_size(head)
        if following is None or after + following > size:
            return
        try:
            read_frame(os.pread(self.fd, following, after), 0)
        except IncompleteFrame:
            return
        raise data_loss(
            f"{self.path} is damaged in the middle: the frame at offset {start} fails its checksum,"
            f" yet whole frames follow it (at {after}); restore the file from a backup"
        )

    # --- writing ---------------------------------------------------------------------------------

    def _lock(self) -> None:
        """Take the journal's lock and bring the index up to date (creating the journal if need be)."""
        if self.lock_fd is None:
            self.lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.lock_fd, fcntl.LOCK_EX)
        try:
            if not self._refresh(locked=True):
                self._create()
                self._refresh(locked=True)
        except BaseException:
            fcntl.flock(self.lock_fd, fcntl.LOCK_UN)
            raise

    def _unlock(self, *, compact: bool = True) -> None:
        """Compact if superseded frames outweigh live ones, then let the lock go."""
        assert self.lock_fd is not None
        try:
            dead = self.end - self.header_len - self.live
            if compact and self.fd is not None and dead >= self.compact_min_bytes and dead > self.live:
                try:
                    self._compact()
                except Exception:  # the write is done; compaction can wait for the next one
                    log.exception("compacting %s failed", self.path)
        finally:
            fcntl.flock(self.lock_fd, fcntl.LOCK_UN)

    def _append(self, frame: bytes, *, sync: bool = False, dictionary_form: bytes | None = None) -> None:
        """Under the lock: append a frame, index it, and cache its payload's text if known."""
        assert self.fd is not None
        offset = self.end
        # Bumped before (so a writer that dies mid-append still shows a change) and after.
        self._bump()
        view = memoryview(frame)
        while view:
            view = view[os.write(self.fd, view) :]
        if sync and self.fsync:
            _fdatasync(self.fd)
        # Index it exactly as a reader would.
        try:
            self.end += self._apply(frame, 0, offset)
        except BaseException:
            self.inode = (0, 0)
            raise
        if dictionary_form is not None:
            self._remember(offset, dictionary_form)
        self.seen = self._bump()  # holding the lock, the index is exactly up to date

    def _create(self) -> None:
        self._write_new(self.path, [encode_header(self.tenant)])

    def _write_new(self, path: Path, parts: Sequence[bytes] | Iterator[bytes]) -> None:
        """Under the lock: write a file whole under a temporary name, then rename it to `path`."""
        for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
            stale.unlink(missing_ok=True)  # left by a writer that died (the lock is ours)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            with tmp.open("xb") as f:
                for part in parts:
                    f.write(part)
                f.flush()
                if self.fsync:
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if self.fsync:
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    # --- compaction ------------------------------------------------------------------------------

    def _compact(self, *, reindex: bool = True) -> None:
        """Under the lock: replace the journal with one holding only live data, then reindex it.
        `reindex=False`: the index, up to date with the file already, has had items dropped on purpose."""
        # The index must cover the whole file (a write that failed half-way may have left it behind).
        if reindex and not self._refresh(locked=True):
            return
        before = self.end
        self._bump()  # so a compactor that dies after the rename still shows a change
        self._write_new(self.path, live_frames(self, self.tenant))
        self.compactions += 1
        self._open()
        self.seen = self._bump()
        log.info("compacted %s from %d to %d bytes", self.path, before, self.end)
