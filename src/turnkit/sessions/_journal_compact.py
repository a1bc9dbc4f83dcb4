"""Compaction output for the file store's journals: the live data of an index as fresh frames.

`turnkit.sessions._journal` describes when compaction runs; this is what it writes.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import Final

from turnkit.sessions._journal_format import (
    CHAIN,
    RAW,
    NameEncoder,
    base_fields,
    compress_payload,
    data_loss,
    encode_frame,
    encode_header,
    head_body,
    lease_body,
    log_body,
    record_body,
)
from turnkit.sessions._journal_index import JournalIndex

__all__ = ["live_frames"]

_LOG_CHUNK: Final = 16 << 10  # plaintext per log frame written by compaction


def live_frames(self: JournalIndex, tenant: str) -> Iterator[bytes]:
    """The compacted form of an indexed journal: header, records, heads, logs, leases (each frame
    based only on frames before it). `self` is the journal's up-to-date index."""
    header = encode_header(tenant)
    yield header
    pos = len(header)
    table: dict[str, int] = {}
    count = 0

    def emit(body: bytes, names: NameEncoder) -> bytes:
        nonlocal pos, count
        table.update(names.new)
        count += len(names.new)
        out = encode_frame(body)
        pos += len(out)
        return out

    # Records, in journal order, each compressed against its old base's record where possible.
    recent: OrderedDict[str, tuple[int, int, bytes]] = OrderedDict()  # key -> (offset, depth, form)
    last: tuple[int, int, bytes] | None = None
    for key, (rev, frame) in sorted(self.records.items(), key=lambda item: item[1][1].offset):
        form = self._dictionary_form(frame)
        plain = form[len(frame.prefix) :]
        base = None
        if frame.base is not None and frame.base.key != key:
            base = recent.get(frame.base.key)
        base = base or last
        if base is not None and base[1] + 1 >= CHAIN:
            base = None
        codec, payload = compress_payload(plain, None if base is None else base[2])
        if codec == RAW:
            base = None
        names = NameEncoder(table, count)
        fields = base_fields(0, 0) if base is None else base_fields(pos - base[0], base[1] + 1)
        here = (pos, 0 if base is None else base[1] + 1, form)
        yield emit(record_body(names, key, rev, None, fields, codec, payload), names)
        last = recent[key] = here
        while len(recent) > 256:
            recent.popitem(last=False)
    for session, (key, _) in self.heads.items():
        if key in self.records:
            names = NameEncoder(table, count)
            yield emit(head_body(names, session, key), names)
    # Logs: each regrouped into frames of about `_LOG_CHUNK` bytes of entries that stand alone.
    for log_id, current in sorted(self.logs.items(), key=lambda item: item[1].frames[0][2].offset):
        done = 0
        chunk: list[bytes] = []
        chunk_bytes = 0
        for _, entry_count, frame in current.frames:
            entries = self._dictionary_form(frame).split(b"\n")
            if len(entries) != entry_count:
                raise data_loss(f"a frame of message log {log_id!r} holds {len(entries)} entries")
            for entry in entries:
                chunk.append(entry)
                chunk_bytes += len(entry) + 1
                if chunk_bytes >= _LOG_CHUNK:
                    yield emit(*_log_chunk(table, count, log_id, done, chunk))
                    done += len(chunk)
                    chunk, chunk_bytes = [], 0
        if chunk:
            yield emit(*_log_chunk(table, count, log_id, done, chunk))
    now = time.time()
    for name, (owner, expires, _) in self.leases.items():
        if expires > now:
            names = NameEncoder(table, count)
            yield emit(lease_body(names, name, owner, expires), names)


def _log_chunk(
    table: dict[str, int], count: int, log_id: str, start: int, entries: list[bytes]
) -> tuple[bytes, NameEncoder]:
    codec, payload = compress_payload(b"\n".join(entries), None)
    names = NameEncoder(table, count)
    return log_body(names, log_id, start, len(entries), base_fields(0, 0), codec, payload), names
