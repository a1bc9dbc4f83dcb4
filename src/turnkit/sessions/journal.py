"""The append-only journal behind `FileSessionStore`: one file per tenant, shared by processes.

A journal holds everything a `RecordBackend` + `LeaseBackend` keeps for one tenant (records, session
heads, message logs, leases) as a sequence of binary frames, appended under an exclusive `flock` on
a lock file beside it. Each store instance keeps an in-memory index of the journal (where the current
frame of every record, log and lease is), refreshed before every operation by replaying only the
frames appended since (a `stat` tells whether there are any), so no read replays the journal.

The lock file's first 8 bytes are a change counter (little-endian), memory-mapped by every instance
and bumped by every writer, under the lock, before and after each append, cut or compaction. An
index that has seen the current count (and looked at the file within `_FRESH_FOR` seconds) is up to
date, so `peek_record` and `peek_head` answer from memory without any system call; a seqlock (`busy`)
keeps them from reading the index while the worker thread changes it.

File format (version 1; integers are unsigned LEB128 varints unless noted):

    header  b"turnkit-journal\\n", version, tenant (string), CRC-32 of the bytes before it (4 bytes LE)
    frame   length of body, body, CRC-32 of length and body (4 bytes LE)
    body    one kind byte, then
      1 record  key (name), revision, session it becomes head of (name or none),
                base (bytes back to the base frame, 0: none), chain depth, codec byte, payload
      2 log     log id (name), index of its first entry, entry count, base, depth, codec, payload
      3 lease   lease name (name), owner (string, "" = released), expiry (float64 LE, Unix time)
      4 head    session (name), key (name)
    string  length, UTF-8 bytes
    name    0: none; 1: a new name follows (string) and takes the next number; n >= 2: name number n - 2

Names (keys, session and log ids, lease names) are numbered in the order the journal first spells
them, so each is written once and referenced by a small number after that. A payload is a record's
JSON text, or a log append's entries joined by newlines; codec 0 stores it as is, codec 1 as raw
deflate primed with the base frame's text (for a record, its key, a newline and its JSON), so a record
that differs a little from its parent (or from its own previous revision) costs only the difference.
A record's base is its own previous revision, else the head of its session, else the last record
written; a log append's base is the log's previous append. Chains are at most `CHAIN` frames long
(then a frame stands alone), so reading any frame decompresses at most `CHAIN` frames.

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

import bisect
import fcntl
import glob
import logging
import mmap
import os
import struct
import time
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

from turnkit.errors import TurnkitError
from turnkit.sessions.backend import StoredRecord

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

MAGIC: Final = b"turnkit-journal\n"
JOURNAL_FORMAT_VERSION: Final = 1
JOURNAL_SUFFIX: Final = ".tkj"
LOCK_SUFFIX: Final = ".lock"
CHAIN: Final = 16  # longest chain of frames compressed against one another
_RECORD, _LOG, _LEASE, _HEAD = 1, 2, 3, 4
_RAW, _DEFLATE = 0, 1
_MAX_BODY: Final = 1 << 31
_SCAN_CHUNK: Final = 1 << 20
_CACHE_ENTRIES: Final = 1024
_CACHE_BYTES: Final = 8 << 20
_LOG_CHUNK: Final = 16 << 10  # plaintext per log frame written by compaction
_TEXT: Final = "surrogatepass"  # store any str exactly
_DOUBLE: Final = struct.Struct("<d")
_COUNTER: Final = struct.Struct("<Q")
_FRESH_FOR: Final = 1.0  # seconds an index may answer from memory before it looks at the file again
MISS: Final = object()  # what a `peek_*` returns when only the worker thread can answer
_fdatasync = getattr(os, "fdatasync", os.fsync)


def _data_loss(message: str) -> TurnkitError:
    return TurnkitError("DATA_LOSS", message, public=False)


class _Torn(Exception):
    """A frame that is not (yet) whole: incomplete, or its CRC does not match."""


def _uvarint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_uvarint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """The varint at `pos` and the position after it; `_Torn` if it runs past `end`."""
    if pos >= end:
        raise _Torn
    b = buf[pos]
    if b < 0x80:
        return b, pos + 1
    value, shift = b & 0x7F, 7
    pos += 1
    while True:
        if pos >= end or shift > 63:
            raise _Torn
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def _string(value: str) -> bytes:
    raw = value.encode("utf-8", _TEXT)
    return _uvarint(len(raw)) + raw


def _frame(body: bytes) -> bytes:
    head = _uvarint(len(body))
    crc = zlib.crc32(body, zlib.crc32(head))
    return head + body + crc.to_bytes(4, "little")


def _pack(plain: bytes, zdict: bytes | None) -> tuple[int, bytes]:
    """The codec and payload for `plain`: raw deflate primed with `zdict`, or as is when that is no smaller."""
    size = len(plain) + (len(zdict) if zdict else 0)
    # A small window and hash (for small texts) make a compressor ~5x cheaper to set up.
    wbits = max(10, min(15, (size + 300).bit_length()))
    mem = 3 if size < (16 << 10) else 8
    level = 6 if len(plain) < (1 << 20) else 1
    if zdict:
        c = zlib.compressobj(level, zlib.DEFLATED, -wbits, mem, zlib.Z_DEFAULT_STRATEGY, zdict[-32768:])
    else:
        c = zlib.compressobj(level, zlib.DEFLATED, -wbits, mem)
    packed = c.compress(plain) + c.flush()
    return (_DEFLATE, packed) if len(packed) < len(plain) else (_RAW, plain)


def _unpack(codec: int, payload: bytes, zdict: bytes | None) -> bytes:
    if codec == _RAW:
        return payload
    try:
        d = zlib.decompressobj(-15, zdict[-32768:]) if zdict else zlib.decompressobj(-15)
        plain = d.decompress(payload)
    except zlib.error as exc:
        raise _data_loss(f"a journal frame does not decompress: {exc}") from None
    if not d.eof or d.unused_data:
        raise _data_loss("a journal frame does not decompress to its end")
    return plain


class _Frame:
    """Where a record or log frame is, and what its payload needs to be read back."""

    __slots__ = ("base", "codec", "depth", "key", "offset", "plen", "poff", "prefix", "size")

    def __init__(
        self,
        offset: int,
        size: int,
        poff: int,
        plen: int,
        codec: int,
        base: _Frame | None,
        depth: int,
        key: str,
        prefix: bytes,
    ) -> None:
        self.offset = offset
        self.size = size
        self.poff = poff  # the payload's offset in the file, and its length
        self.plen = plen
        self.codec = codec
        self.base = base  # the frame this one is compressed against (kept alive by this reference)
        self.depth = depth
        self.key = key  # the record's key, or the log's id
        self.prefix = prefix  # what precedes the payload in its dictionary form: b"key\n" for records


class _Log:
    __slots__ = ("frames", "length", "starts")

    def __init__(self) -> None:
        self.frames: list[tuple[int, int, _Frame]] = []  # (first index, count, frame)
        self.starts: list[int] = []
        self.length = 0


class _Names:
    """Encodes names for one frame against a name table, numbering the new ones as a reader will."""

    __slots__ = ("first", "new", "table")

    def __init__(self, table: dict[str, int], count: int) -> None:
        self.table = table
        self.first = count
        self.new: dict[str, int] = {}

    def ref(self, name: str | None) -> bytes:
        if name is None:
            return b"\x00"
        n = self.table.get(name)
        if n is None:
            n = self.new.get(name)
        if n is not None:
            return _uvarint(n + 2)
        self.new[name] = self.first + len(self.new)
        return b"\x01" + _string(name)


class Journal:
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

    def _reset(self, end: int) -> None:
        self.end = end  # the index covers the file up to here
        self.header_len = end
        self.names: list[str] = []
        self.name_of: dict[str, int] = {}
        self.records: dict[str, tuple[int, _Frame]] = {}
        self.heads: dict[str, tuple[str, int]] = {}  # session -> (key, bytes of its head frame, if any)
        self.logs: dict[str, _Log] = {}
        self.leases: dict[str, tuple[str, float, int]] = {}  # name -> (owner, expiry, frame bytes)
        self.frames: dict[int, _Frame] = {}  # offset -> every frame a new frame may be based on
        self.last_record: _Frame | None = None
        self.live = 0  # bytes of frames not superseded
        self.cache: OrderedDict[int, bytes] = OrderedDict()  # offset -> a frame's dictionary form
        self.cache_bytes = 0

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

    def _calm(self) -> int | None:
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
        """`get_record` without I/O, or MISS."""
        busy = self._calm()
        if busy is None:
            return MISS
        current = self.records.get(key)
        answer: StoredRecord | None = None
        if current is not None:
            rev, frame = current
            form = self.cache.get(frame.offset)
            if form is None:
                return MISS
            answer = StoredRecord(rev, form[len(frame.prefix) :].decode("utf-8", _TEXT))
        return answer if self.busy == busy else MISS

    def peek_head(self, session_id: str) -> str | object | None:
        """`get_head` without I/O, or MISS."""
        busy = self._calm()
        if busy is None:
            return MISS
        head = self.heads.get(session_id)
        return (None if head is None else head[0]) if self.busy == busy else MISS

    # --- the operations (on the worker thread) ------------------------------------------------------

    def run(self, method: Callable[..., T], *args: Any) -> T:
        """Run one operation, marking the index busy meanwhile (see `peek_record`)."""
        self.busy += 1
        try:
            return method(*args)
        finally:
            self.busy += 1

    def get_record(self, key: str) -> StoredRecord | None:
        if not self._refresh(locked=False):
            return None
        current = self.records.get(key)
        if current is None:
            return None
        rev, frame = current
        form = self._form(frame)
        return StoredRecord(rev, form[len(frame.prefix) :].decode("utf-8", _TEXT))

    def put_record(self, key: str, data: str, expected_rev: int, head_of: str | None) -> bool:
        plain = data.encode("utf-8", _TEXT)
        self._lock()
        try:
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
            names = _Names(self.name_of, len(self.names))
            body = b"".join(
                (
                    bytes((_RECORD,)),
                    names.ref(key),
                    _uvarint(expected_rev + 1),
                    names.ref(head_of),
                    *self._base_fields(base),
                    bytes((codec,)),
                    payload,
                )
            )
            self._append(_frame(body), sync=True, form=key.encode("utf-8", _TEXT) + b"\n" + plain)
            return True
        finally:
            self._unlock()

    def get_head(self, session_id: str) -> str | None:
        if not self._refresh(locked=False):
            return None
        head = self.heads.get(session_id)
        return None if head is None else head[0]

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
            plain = "\n".join(entries).encode("utf-8", _TEXT)
            codec, payload, base = self._encode(plain, base)
            names = _Names(self.name_of, len(self.names))
            body = b"".join(
                (
                    bytes((_LOG,)),
                    names.ref(log_id),
                    _uvarint(start),
                    _uvarint(len(entries)),
                    *self._base_fields(base),
                    bytes((codec,)),
                    payload,
                )
            )
            # Not synced: nothing refers to these entries until a record does, and the record's
            # fdatasync (same file) makes them durable first.
            self._append(_frame(body), sync=False, form=plain)
            return True
        finally:
            self._unlock()

    def read_log(self, log_id: str, start: int, end: int) -> list[str]:
        if not self._refresh(locked=False):
            return []
        current = self.logs.get(log_id)
        if current is None:
            return []
        end = min(end, current.length)
        out: list[str] = []
        i = max(0, bisect.bisect_right(current.starts, start) - 1)
        while i < len(current.frames):
            first, count, frame = current.frames[i]
            if first >= end:
                break
            entries = self._form(frame).split(b"\n")
            if len(entries) != count:
                raise _data_loss(
                    f"a frame of message log {log_id!r} holds {len(entries)} entries, not {count}"
                )
            lo, hi = max(start - first, 0), min(end - first, count)
            out.extend(e.decode("utf-8", _TEXT) for e in entries[lo:hi])
            i += 1
        return out

    def try_lease(self, name: str, owner: str, ttl: float) -> bool:
        self._lock()
        try:
            holder = self.leases.get(name)
            now = time.time()  # wall-clock time: the other holder may be another process
            if holder is not None and holder[0] != owner and holder[1] > now:
                return False
            self._append(_frame(self._lease_body(name, owner, now + ttl)))
            return True
        finally:
            self._unlock()

    def release_lease(self, name: str, owner: str) -> None:
        self._lock()
        try:
            holder = self.leases.get(name)
            if holder is not None and holder[0] == owner:
                self._append(_frame(self._lease_body(name, "", 0.0)))
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
                raise _data_loss(
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
            end = self._check_header(os.pread(fd, 4096, 0))
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self.rebuilds += 1
        self._reset(end)
        self._scan(st.st_size)
        self.inode = (st.st_dev, st.st_ino)
        return st.st_size

    def _check_header(self, header: bytes) -> int:
        if not header.startswith(MAGIC):
            raise _data_loss(f"{self.path.name} is not a turnkit journal")
        try:
            version, pos = _read_uvarint(header, len(MAGIC), len(header))
            if version != JOURNAL_FORMAT_VERSION:
                raise _data_loss(
                    f"{self.path.name} has journal format version {version}; "
                    f"this turnkit reads version {JOURNAL_FORMAT_VERSION}"
                )
            n, pos = _read_uvarint(header, pos, len(header))
            tenant = header[pos : pos + n]
            pos += n
            if pos + 4 > len(header) or zlib.crc32(header[:pos]) != int.from_bytes(
                header[pos : pos + 4], "little"
            ):
                raise _Torn
        except _Torn:
            raise _data_loss(f"{self.path.name} has a damaged header") from None
        if tenant.decode("utf-8", _TEXT) != self.tenant:
            raise _data_loss(f"{self.path.name} holds another tenant's data")
        return pos + 4

    def _header(self) -> bytes:
        head = MAGIC + _uvarint(JOURNAL_FORMAT_VERSION) + _string(self.tenant)
        return head + zlib.crc32(head).to_bytes(4, "little")

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
                except _Torn:
                    pass
                if pos:
                    continue  # read on from the first frame not indexed
                need = self._frame_size(buf)
                if need is None or need <= len(buf) or start + need > size:
                    return  # torn, or still being written
                # A frame longer than a chunk: read it whole.
                try:
                    self.end += self._apply(os.pread(self.fd, need, start), 0, start)
                except _Torn:
                    return
        except BaseException:
            self.inode = (0, 0)  # the index may be half updated: rebuild it next time
            raise

    @staticmethod
    def _frame_size(buf: bytes) -> int | None:
        try:
            n, pos = _read_uvarint(buf, 0, len(buf))
        except _Torn:
            return None
        return None if n > _MAX_BODY else pos + n + 4

    def _apply(self, buf: bytes, pos: int, offset: int) -> int:
        """Index the frame at `buf[pos:]` (at `offset` in the file) and return its size; `_Torn` if not whole."""
        end = len(buf)
        n, body = _read_uvarint(buf, pos, end)
        stop = body + n
        if n == 0 or n > _MAX_BODY or stop + 4 > end:
            raise _Torn
        view = memoryview(buf)
        if zlib.crc32(view[pos:stop]) != int.from_bytes(buf[stop : stop + 4], "little"):
            raise _Torn
        size = stop + 4 - pos
        try:
            self._apply_body(buf, body, stop, offset, size, pos)
        except _Torn:
            raise _data_loss(f"a journal frame at offset {offset} is malformed") from None
        return size

    def _apply_body(self, buf: bytes, body: int, stop: int, offset: int, size: int, pos: int) -> None:
        kind = buf[body]
        i = body + 1
        if kind == _RECORD:
            key, i = self._name(buf, i, stop)
            rev, i = _read_uvarint(buf, i, stop)
            head_of, i = self._name(buf, i, stop)
            if key is None:
                raise _data_loss(f"a record frame at offset {offset} has no key")
            prefix = key.encode("utf-8", _TEXT) + b"\n"
            frame = self._payload_frame(buf, i, stop, offset, size, pos, key, prefix)
            old = self.records.get(key)
            if old is not None:
                self._drop(old[1])
            self.records[key] = (rev, frame)
            self.frames[offset] = frame
            self.live += size
            self.last_record = frame
            if head_of is not None:
                self._set_head(head_of, key, 0)
        elif kind == _LOG:
            log_id, i = self._name(buf, i, stop)
            start, i = _read_uvarint(buf, i, stop)
            count, i = _read_uvarint(buf, i, stop)
            if log_id is None:
                raise _data_loss(f"a log frame at offset {offset} has no log id")
            current = self.logs.get(log_id)
            if current is None:
                current = self.logs[log_id] = _Log()
            if start != current.length:
                raise _data_loss(f"message log {log_id!r} skips from {current.length} to {start}")
            frame = self._payload_frame(buf, i, stop, offset, size, pos, log_id, b"")
            current.frames.append((start, count, frame))
            current.starts.append(start)
            current.length += count
            self.frames[offset] = frame
            self.live += size
        elif kind == _LEASE:
            name, i = self._name(buf, i, stop)
            n_owner, i = _read_uvarint(buf, i, stop)
            owner = bytes(buf[i : i + n_owner]).decode("utf-8", _TEXT)
            i += n_owner
            if name is None or i + 8 != stop:
                raise _data_loss(f"a lease frame at offset {offset} is malformed")
            (expires,) = _DOUBLE.unpack_from(buf, i)
            held = self.leases.pop(name, None)
            if held is not None:
                self.live -= held[2]
            if owner:
                self.leases[name] = (owner, expires, size)
                self.live += size
        elif kind == _HEAD:
            session, i = self._name(buf, i, stop)
            key, i = self._name(buf, i, stop)
            if session is None or key is None or i != stop:
                raise _data_loss(f"a head frame at offset {offset} is malformed")
            self._set_head(session, key, size)
        else:
            raise _data_loss(
                f"a journal frame at offset {offset} is of unknown kind {kind} (a newer turnkit?)"
            )

    def _payload_frame(
        self, buf: bytes, i: int, stop: int, offset: int, size: int, pos: int, key: str, prefix: bytes
    ) -> _Frame:
        back, i = _read_uvarint(buf, i, stop)
        depth, i = _read_uvarint(buf, i, stop)
        if i >= stop:
            raise _data_loss(f"a journal frame at offset {offset} is malformed")
        codec = buf[i]
        i += 1
        base = None
        if back:
            base = self.frames.get(offset - back)
            if (
                base is None
                or depth != base.depth + 1
                or bool(base.prefix) != bool(prefix)
                or (not prefix and base.key != key)
            ):
                raise _data_loss(f"a journal frame at offset {offset} names a base that is not there")
        elif depth:
            raise _data_loss(f"a journal frame at offset {offset} is malformed")
        if codec not in (_RAW, _DEFLATE):
            raise _data_loss(f"a journal frame at offset {offset} has unknown codec {codec}")
        return _Frame(offset, size, offset + (i - pos), stop - i, codec, base, depth, key, prefix)

    def _name(self, buf: bytes, i: int, stop: int) -> tuple[str | None, int]:
        v, i = _read_uvarint(buf, i, stop)
        if v == 0:
            return None, i
        if v == 1:
            n, i = _read_uvarint(buf, i, stop)
            if i + n > stop:
                raise _data_loss("a journal frame spells a name past its end")
            name = bytes(buf[i : i + n]).decode("utf-8", _TEXT)
            self.name_of[name] = len(self.names)
            self.names.append(name)
            return name, i + n
        if v - 2 >= len(self.names):
            raise _data_loss(f"a journal frame refers to name {v - 2}, which is not there")
        return self.names[v - 2], i

    def _drop(self, frame: _Frame) -> None:
        """A record frame superseded by a newer revision."""
        self.live -= frame.size
        self.frames.pop(frame.offset, None)

    def _set_head(self, session: str, key: str, size: int) -> None:
        old = self.heads.get(session)
        if old is not None:
            self.live -= old[1]
        self.heads[session] = (key, size)
        self.live += size

    # --- payloads --------------------------------------------------------------------------------

    def _form(self, frame: _Frame) -> bytes:
        """A frame's dictionary form (prefix + plaintext), decompressing its chain where not cached."""
        cache = self.cache
        hit = cache.get(frame.offset)
        if hit is not None:
            cache.move_to_end(frame.offset)
            return hit
        chain = [frame]
        base = frame.base
        zdict: bytes | None = None
        while base is not None:
            zdict = cache.get(base.offset)
            if zdict is not None:
                break
            chain.append(base)
            base = base.base
        assert self.fd is not None
        form = b""
        for f in reversed(chain):
            payload = os.pread(self.fd, f.plen, f.poff)
            if len(payload) != f.plen:
                raise _data_loss(f"{self.path.name} is shorter than its index")
            form = f.prefix + _unpack(f.codec, payload, zdict if f.base is not None else None)
            self._remember(f.offset, form)
            zdict = form
        return form

    def _remember(self, offset: int, form: bytes) -> None:
        cache = self.cache
        old = cache.pop(offset, None)
        if old is not None:
            self.cache_bytes -= len(old)
        cache[offset] = form
        self.cache_bytes += len(form)
        while len(cache) > _CACHE_ENTRIES or (self.cache_bytes > _CACHE_BYTES and len(cache) > 1):
            self.cache_bytes -= len(cache.popitem(last=False)[1])

    def _encode(self, plain: bytes, base: _Frame | None) -> tuple[int, bytes, _Frame | None]:
        """Codec, payload and the base actually used (None when the frame stands alone)."""
        if base is not None and base.depth + 1 >= CHAIN:
            base = None
        codec, payload = _pack(plain, None if base is None else self._form(base))
        return codec, payload, base if codec == _DEFLATE else None

    def _base_fields(self, base: _Frame | None) -> tuple[bytes, bytes]:
        if base is None:
            return b"\x00", b"\x00"
        return _uvarint(self.end - base.offset), _uvarint(base.depth + 1)

    def _lease_body(self, name: str, owner: str, expires: float) -> bytes:
        names = _Names(self.name_of, len(self.names))
        return bytes((_LEASE,)) + names.ref(name) + _string(owner) + _DOUBLE.pack(expires)

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

    def _append(self, frame: bytes, *, sync: bool = False, form: bytes | None = None) -> None:
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
        if form is not None:
            self._remember(offset, form)
        self.seen = self._bump()  # holding the lock, the index is exactly up to date

    def _create(self) -> None:
        self._write_new(self.path, [self._header()])

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

    def _compact(self) -> None:
        """Under the lock: replace the journal with one holding only live data, then reindex it."""
        # The index must cover the whole file (a write that failed half-way may have left it behind).
        if not self._refresh(locked=True):
            return
        before = self.end
        self._bump()  # so a compactor that dies after the rename still shows a change
        self._write_new(self.path, self._live_frames())
        self.compactions += 1
        self._open()
        self.seen = self._bump()
        log.info("compacted %s from %d to %d bytes", self.path, before, self.end)

    def _live_frames(self) -> Iterator[bytes]:
        """The compacted journal: header, records, heads, logs, leases (bases among what precedes)."""
        header = self._header()
        yield header
        pos = len(header)
        table: dict[str, int] = {}
        count = 0

        def emit(body: bytes, names: _Names) -> bytes:
            nonlocal pos, count
            table.update(names.new)
            count += len(names.new)
            out = _frame(body)
            pos += len(out)
            return out

        # Records, in journal order, each compressed against its old base's record where possible.
        recent: OrderedDict[str, tuple[int, int, bytes]] = OrderedDict()  # key -> (offset, depth, form)
        last: tuple[int, int, bytes] | None = None
        for key, (rev, frame) in sorted(self.records.items(), key=lambda item: item[1][1].offset):
            form = self._form(frame)
            plain = form[len(frame.prefix) :]
            base = None
            if frame.base is not None and frame.base.key != key:
                base = recent.get(frame.base.key)
            base = base or last
            if base is not None and base[1] + 1 >= CHAIN:
                base = None
            codec, payload = _pack(plain, None if base is None else base[2])
            if codec == _RAW:
                base = None
            names = _Names(table, count)
            fields = (b"\x00", b"\x00") if base is None else (_uvarint(pos - base[0]), _uvarint(base[1] + 1))
            here = (pos, 0 if base is None else base[1] + 1, form)
            body = b"".join(
                (bytes((_RECORD,)), names.ref(key), _uvarint(rev), b"\x00", *fields, bytes((codec,)), payload)
            )
            yield emit(body, names)
            last = recent[key] = here
            while len(recent) > 256:
                recent.popitem(last=False)
        for session, (key, _) in self.heads.items():
            if key in self.records:
                names = _Names(table, count)
                yield emit(bytes((_HEAD,)) + names.ref(session) + names.ref(key), names)
        # Logs: each regrouped into frames of about `_LOG_CHUNK` bytes of entries that stand alone.
        for log_id, current in sorted(self.logs.items(), key=lambda item: item[1].frames[0][2].offset):
            done = 0
            chunk: list[bytes] = []
            chunk_bytes = 0
            for _, entry_count, frame in current.frames:
                entries = self._form(frame).split(b"\n")
                if len(entries) != entry_count:
                    raise _data_loss(f"a frame of message log {log_id!r} holds {len(entries)} entries")
                for entry in entries:
                    chunk.append(entry)
                    chunk_bytes += len(entry) + 1
                    if chunk_bytes >= _LOG_CHUNK:
                        yield emit(*self._log_chunk(table, count, log_id, done, chunk))
                        done += len(chunk)
                        chunk, chunk_bytes = [], 0
            if chunk:
                yield emit(*self._log_chunk(table, count, log_id, done, chunk))
        now = time.time()
        for name, (owner, expires, _) in self.leases.items():
            if expires > now:
                names = _Names(table, count)
                body = bytes((_LEASE,)) + names.ref(name) + _string(owner) + _DOUBLE.pack(expires)
                yield emit(body, names)

    @staticmethod
    def _log_chunk(
        table: dict[str, int], count: int, log_id: str, start: int, entries: list[bytes]
    ) -> tuple[bytes, _Names]:
        codec, payload = _pack(b"\n".join(entries), None)
        names = _Names(table, count)
        fields = (names.ref(log_id), _uvarint(start), _uvarint(len(entries)), b"\x00", b"\x00")
        return b"".join((bytes((_LOG,)), *fields, bytes((codec,)), payload)), names
