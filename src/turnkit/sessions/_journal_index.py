"""The in-memory index of a journal: where every live frame is, what it holds, and its payloads' text.

`JournalIndex` is built by applying frames in file order (`_apply`, exactly as a reader would, also
for the frames this instance appends) and answers lookups without reading the file, except for
payloads, which it decompresses along their chains (at most `CHAIN` frames) and caches.
`turnkit.sessions._journal.Journal` adds the file, its lock, appends and compaction on top.
"""

from __future__ import annotations

import bisect
import os
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Final

from turnkit.sessions._journal_format import (
    CHAIN,
    DEFLATE,
    HEAD,
    LEASE,
    LOG,
    RECORD,
    TEXT_ERRORS,
    IncompleteFrame,
    NameEncoder,
    base_fields,
    compress_payload,
    data_loss,
    decompress_payload,
    lease_body,
    read_frame,
    read_lease,
    read_payload_fields,
    read_uvarint,
)

__all__ = ["FrameRef", "JournalIndex", "LogFrames"]

_CACHE_ENTRIES: Final = 1024
_CACHE_BYTES: Final = 8 << 20


class FrameRef:
    """Where a record or log frame is, and what its payload needs to be read back."""

    __slots__ = ("base", "codec", "depth", "key", "offset", "plen", "poff", "prefix", "size")

    def __init__(
        self,
        offset: int,
        size: int,
        poff: int,
        plen: int,
        codec: int,
        base: FrameRef | None,
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


class LogFrames:
    """Where one message log's frames are: (first entry index, entry count, frame), in order."""

    __slots__ = ("frames", "length", "starts")

    def __init__(self) -> None:
        self.frames: list[tuple[int, int, FrameRef]] = []  # (first index, count, frame)
        self.starts: list[int] = []
        self.length = 0


class JournalIndex:
    """One instance's index of one journal file. Blocking, and not thread-safe (see `Journal`)."""

    path: Path
    fd: int | None  # the open journal, once opened (payloads are read from it)

    def _reset(self, end: int) -> None:
        """Forget everything: the index covers the file up to `end` (its header), and nothing else."""
        self.end = end  # the index covers the file up to here
        self.header_len = end
        self.names: list[str] = []
        self.name_of: dict[str, int] = {}
        self.records: dict[str, tuple[int, FrameRef]] = {}
        self.heads: dict[str, tuple[str, int]] = {}  # session -> (key, bytes of its head frame, if any)
        self.logs: dict[str, LogFrames] = {}
        self.leases: dict[str, tuple[str, float, int]] = {}  # name -> (owner, expiry, frame bytes)
        self.frames: dict[int, FrameRef] = {}  # offset -> every frame a new frame may be based on
        self.last_record: FrameRef | None = None
        self.live = 0  # bytes of frames not superseded
        self.cache: OrderedDict[int, bytes] = OrderedDict()  # offset -> a frame's dictionary form
        self.cache_bytes = 0

    def _apply(self, buf: bytes, pos: int, offset: int) -> int:
        """Index the frame at `buf[pos:]` (at `offset` in the file) and return its size; `IncompleteFrame` if not whole."""
        body, stop = read_frame(buf, pos)
        size = stop + 4 - pos
        try:
            self._apply_body(buf, body, stop, offset, size, pos)
        except IncompleteFrame:
            raise data_loss(f"a journal frame at offset {offset} is malformed") from None
        return size

    def _apply_body(self, buf: bytes, body: int, stop: int, offset: int, size: int, pos: int) -> None:
        kind = buf[body]
        i = body + 1
        if kind == RECORD:
            key, i = self._read_name(buf, i, stop)
            rev, i = read_uvarint(buf, i, stop)
            head_of, i = self._read_name(buf, i, stop)
            if key is None:
                raise data_loss(f"a record frame at offset {offset} has no key")
            prefix = key.encode("utf-8", TEXT_ERRORS) + b"\n"
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
        elif kind == LOG:
            log_id, i = self._read_name(buf, i, stop)
            start, i = read_uvarint(buf, i, stop)
            count, i = read_uvarint(buf, i, stop)
            if log_id is None:
                raise data_loss(f"a log frame at offset {offset} has no log id")
            current = self.logs.get(log_id)
            if current is None:
                current = self.logs[log_id] = LogFrames()
            if start != current.length:
                raise data_loss(f"message log {log_id!r} skips from {current.length} to {start}")
            frame = self._payload_frame(buf, i, stop, offset, size, pos, log_id, b"")
            current.frames.append((start, count, frame))
            current.starts.append(start)
            current.length += count
            self.frames[offset] = frame
            self.live += size
        elif kind == LEASE:
            name, i = self._read_name(buf, i, stop)
            if name is None:
                raise data_loss(f"a lease frame at offset {offset} is malformed")
            owner, expires = read_lease(buf, i, stop, offset)
            held = self.leases.pop(name, None)
            if held is not None:
                self.live -= held[2]
            if owner:
                self.leases[name] = (owner, expires, size)
                self.live += size
        elif kind == HEAD:
            session, i = self._read_name(buf, i, stop)
            key, i = self._read_name(buf, i, stop)
            if session is None or key is None or i != stop:
                raise data_loss(f"a head frame at offset {offset} is malformed")
            self._set_head(session, key, size)
        else:
            raise data_loss(
                f"a journal frame at offset {offset} is of unknown kind {kind} (a newer turnkit?)"
            )

    def _payload_frame(
        self, buf: bytes, i: int, stop: int, offset: int, size: int, pos: int, key: str, prefix: bytes
    ) -> FrameRef:
        back, depth, codec, i = read_payload_fields(buf, i, stop, offset)
        base = None
        if back:
            base = self.frames.get(offset - back)
            if (
                base is None
                or depth != base.depth + 1
                or bool(base.prefix) != bool(prefix)
                or (not prefix and base.key != key)
            ):
                raise data_loss(f"a journal frame at offset {offset} names a base that is not there")
        return FrameRef(offset, size, offset + (i - pos), stop - i, codec, base, depth, key, prefix)

    def _read_name(self, buf: bytes, i: int, stop: int) -> tuple[str | None, int]:
        """A name field, adding a name spelled for the first time to the table."""
        v, i = read_uvarint(buf, i, stop)
        if v == 0:
            return None, i
        if v == 1:
            n, i = read_uvarint(buf, i, stop)
            if i + n > stop:
                raise data_loss("a journal frame spells a name past its end")
            name = bytes(buf[i : i + n]).decode("utf-8", TEXT_ERRORS)
            self.name_of[name] = len(self.names)
            self.names.append(name)
            return name, i + n
        if v - 2 >= len(self.names):
            raise data_loss(f"a journal frame refers to name {v - 2}, which is not there")
        return self.names[v - 2], i

    def _drop(self, frame: FrameRef) -> None:
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

    def _dictionary_form(self, frame: FrameRef) -> bytes:
        """A frame's dictionary form (prefix + plaintext), decompressing its chain where not cached."""
        cache = self.cache
        hit = cache.get(frame.offset)
        if hit is not None:
            cache.move_to_end(frame.offset)
            return hit
        assert self.fd is not None
        return self._decode(frame, self.fd, remember=True)

    def _decode(self, frame: FrameRef, fd: int, *, remember: bool) -> bytes:
        """Decompress a frame's chain from the nearest cached base (or its start), reading `fd`;
        `remember` caches every form decoded (only the worker thread may: see `peek_record`)."""
        cache = self.cache
        chain = [frame]
        base = frame.base
        zdict: bytes | None = None
        while base is not None:
            zdict = cache.get(base.offset)
            if zdict is not None:
                break
            chain.append(base)
            base = base.base
        form = b""
        for f in reversed(chain):
            payload = os.pread(fd, f.plen, f.poff)
            if len(payload) != f.plen:
                raise data_loss(f"{self.path.name} is shorter than its index")
            form = f.prefix + decompress_payload(f.codec, payload, zdict if f.base is not None else None)
            if remember:
                self._remember(f.offset, form)
            zdict = form
        return form

    def _log_entries(
        self, log_id: str, start: int, end: int, form_of: Callable[[FrameRef], bytes]
    ) -> list[str]:
        """Entries `start` to `end` of a log, its frames' dictionary forms read with `form_of`."""
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
            entries = form_of(frame).split(b"\n")
            if len(entries) != count:
                raise data_loss(
                    f"a frame of message log {log_id!r} holds {len(entries)} entries, not {count}"
                )
            lo, hi = max(start - first, 0), min(end - first, count)
            out.extend(e.decode("utf-8", TEXT_ERRORS) for e in entries[lo:hi])
            i += 1
        return out

    def _remember(self, offset: int, form: bytes) -> None:
        cache = self.cache
        old = cache.pop(offset, None)
        if old is not None:
            self.cache_bytes -= len(old)
        cache[offset] = form
        self.cache_bytes += len(form)
        while len(cache) > _CACHE_ENTRIES or (self.cache_bytes > _CACHE_BYTES and len(cache) > 1):
            self.cache_bytes -= len(cache.popitem(last=False)[1])

    def _encode(self, plain: bytes, base: FrameRef | None) -> tuple[int, bytes, FrameRef | None]:
        """Codec, payload and the base actually used (None when the frame stands alone)."""
        if base is not None and base.depth + 1 >= CHAIN:
            base = None
        codec, payload = compress_payload(plain, None if base is None else self._dictionary_form(base))
        return codec, payload, base if codec == DEFLATE else None

    def _base_fields(self, base: FrameRef | None) -> tuple[bytes, bytes]:
        """The base fields of a frame appended now, compressed against `base` (or standing alone)."""
        return (b"\x00", b"\x00") if base is None else base_fields(self.end - base.offset, base.depth + 1)

    def _lease_body(self, name: str, owner: str, expires: float) -> bytes:
        return lease_body(NameEncoder(self.name_of, len(self.names)), name, owner, expires)
