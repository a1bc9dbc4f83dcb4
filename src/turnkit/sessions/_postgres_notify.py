"""Change notifications of the PostgreSQL store (`turnkit.sessions.postgres`): the NOTIFY payload
naming a written record, and the LISTEN connection that wakes that record's status watchers."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import weakref
from typing import Final, Protocol

import psycopg
from psycopg.rows import TupleRow

from turnkit.sessions._notify import ChangeFeed

__all__ = ["ListenerSource", "PostgresChangeFeed", "Waiters", "change_payload"]

log = logging.getLogger("turnkit.sessions")

_MAX_PAYLOAD: Final = 7999  # NOTIFY payloads must stay under 8000 bytes
_LISTEN_PING: Final = 30.0  # a quiet listener checks its connection this often (seconds)


class ListenerSource(Protocol):
    """What the listener needs of its backend: a connection of its own, and the LISTEN statement."""

    listen_sql: bytes

    async def connect_listener(self) -> psycopg.AsyncConnection[TupleRow]:
        """A new autocommit connection outside the pool."""
        ...


def change_payload(tenant: str, key: str) -> str:
    """The NOTIFY payload announcing a write of record `key`: JSON `[tenant, key]`, or `#` + a digest if long."""
    payload = json.dumps([tenant, key], ensure_ascii=False, separators=(",", ":"))
    if len(payload.encode("utf-8")) <= _MAX_PAYLOAD:
        return payload
    return "#" + hashlib.sha256(payload.encode("utf-8")).hexdigest()


Waiters = weakref.WeakValueDictionary[tuple[str, str], asyncio.Event]


class PostgresChangeFeed(ChangeFeed[tuple[str, str]]):
    """The LISTEN connection of one backend in one event loop: wakes the waiters (by tenant and
    record key) of the records that notifications name."""

    def __init__(self, backend: ListenerSource, waiters: Waiters) -> None:
        super().__init__(waiters)
        self.backend = backend

    async def _listen(self) -> None:
        try:
            conn = await self.backend.connect_listener()
        except Exception as exc:
            log.warning("turnkit: cannot connect the change listener (%s); retrying", exc)
            return
        try:
            await conn.execute(self.backend.listen_sql)
            self.on_subscribed()
            while True:
                async for note in conn.notifies(timeout=_LISTEN_PING):
                    self.relay(note.payload)
                await conn.execute(b"SELECT 1")  # quiet for a while: is the connection alive?
        finally:
            await conn.close()

    def _lost(self, exc: Exception) -> None:
        log.warning("turnkit: the change listener lost its connection (%s); reconnecting", exc)

    def relay(self, payload: str) -> None:
        """Wake the waiters of the record a notification names (see `change_payload`)."""
        try:
            if payload.startswith("#"):
                keys = [k for k in list(self.events.keys()) if change_payload(*k) == payload]
            else:
                tenant, key = json.loads(payload)
                keys = [(str(tenant), str(key))]
        except Exception:  # a stray NOTIFY on our channel must not stop the listener
            log.exception("turnkit: ignoring a change notification it cannot read: %r", payload)
            return
        for k in keys:
            self.wake(k)
