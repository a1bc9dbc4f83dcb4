"""How the engine stores a snapshot's messages in message logs and reads them back (internal).

A history is a list of segments `[(log, count), ...]`: the first `count` entries of each log, in
order (see `turnkit.sessions._engine`). Writing extends a base snapshot's last log when that log
still ends where the base does, so each message is stored once; reading reuses a cached ancestor's
messages when its segments are a prefix of the ones read.
"""

from __future__ import annotations

import secrets

from turnkit.sessions._backend import RecordBackend
from turnkit.sessions._deltas import Node, Segments, data_loss, is_prefix
from turnkit.sessions._options import StoreStats
from turnkit.types import Message

__all__ = ["read_messages", "write_messages"]


async def read_messages(
    backend: RecordBackend, stats: StoreStats, tenant: str, segments: Segments | None, hint: Node | None
) -> tuple[Message, ...] | None:
    """The messages that `segments` name; `hint`, a cached node, may spare reading some of them."""
    if segments is None:
        return None
    messages: list[Message] = []
    first, offset = 0, 0
    # Reuse a cached ancestor's messages when its segments are a prefix of ours.
    if hint is not None and hint.segments and hint.messages is not None:
        k = len(hint.segments)
        log, count = hint.segments[-1]
        if (
            k <= len(segments)
            and hint.segments[:-1] == segments[: k - 1]
            and segments[k - 1][0] == log
            and segments[k - 1][1] >= count
        ):
            messages, first, offset = list(hint.messages), k - 1, count
    for i in range(first, len(segments)):
        log, count = segments[i]
        start = offset if i == first else 0
        if count <= start:
            continue
        entries = await backend.read_log(tenant, log, start, count)
        stats.logs_read += 1
        if len(entries) != count - start:
            raise data_loss(f"message log {log!r} is shorter than a snapshot says")
        messages.extend(Message.model_validate_json(e) for e in entries)
    return tuple(messages)


async def write_messages(
    backend: RecordBackend,
    stats: StoreStats,
    tenant: str,
    messages: tuple[Message, ...],
    bases: tuple[Node | None, ...],
    max_segments: int,
) -> Segments:
    """Store a history by extending a base's log where possible; only the new messages are serialised.

    A history of a base that already has `max_segments` segments starts over with one new log."""
    for base in bases:
        if base is None or base.messages is None or base.segments is None:
            continue
        if not is_prefix(base.messages, messages):
            continue
        extra = messages[len(base.messages) :]
        if not extra:
            return base.segments
        entries = [m.to_json() for m in extra]
        if base.segments:
            log, count = base.segments[-1]
            if await _append(backend, stats, tenant, log, count, entries):
                return (*base.segments[:-1], (log, count + len(entries)))
        if len(base.segments) < max_segments:
            return (*base.segments, await _new_log(backend, stats, tenant, entries))
    if not messages:
        return ()
    return (await _new_log(backend, stats, tenant, [m.to_json() for m in messages]),)


async def _append(
    backend: RecordBackend, stats: StoreStats, tenant: str, log: str, start: int, entries: list[str]
) -> bool:
    appended = await backend.append_log(tenant, log, start, entries)
    stats.logs_appended += int(appended)
    return appended


async def _new_log(
    backend: RecordBackend, stats: StoreStats, tenant: str, entries: list[str]
) -> tuple[str, int]:
    # 64 random bits name a log: every record names one, so short names keep records small,
    # and the append below refuses a name that is taken anyway.
    while True:
        log = secrets.token_hex(8)
        if await _append(backend, stats, tenant, log, 0, entries):
            return log, len(entries)
