"""`RedisSessionStore`: the linear engine over Redis (redis-py asyncio), shared by any number of processes.

Key layout under the store's prefix P (default `turnkit:`); T is the tenant and I an id, each as
unpadded URL-safe base64 of its UTF-8 (the default tenant "" is empty), so every id, whatever it
holds (`:`, `*`, `{`, quotes, newlines), maps to exactly one key and no two ids to the same one:
    P r:T:I     hash {rev, data, tok}: a snapshot record (`tok`: the nonce of the write that made it)
    P h:T:I     string: the snapshot id last made head of session I
    P l:T:I     list: message log I, one item per entry
    P x:T:I     string `owner|expiry ms` with a PX expiry some minutes later: lease I
    P i:T:I     set: ids of session I's records (snapshots and their spilled states), for deleting it;
                `sess` in a record's hash names its session; P m:T:<record-index> marks them filled
    P s:T:      sorted set: tenant T's session ids (score 0, so in byte order), for `list_sessions`;
                the member "\\x00" (never an id) marks an index that holds every session
    P m::epoch  string: the store's identity, made with its data (see `turnkit.sessions._retention`)
    P m::version  string: the layout version (`LAYOUT_VERSION`); newer ones are refused
    P m::changes  (a pub/sub channel, not a key): every record write publishes its record key here
After the prefix every key is one kind letter, `:`, base64, `:`, base64: exactly two colons, the
first at index 1. So no key of prefix P can be read as a key of a prefix that extends P (or that P
extends), and `purge()` (a SCAN of P, keeping only keys of that exact shape) never touches another
prefix's keys, even when one prefix is the start of another or holds glob characters.

A record's `data` and a log item hold the engine's JSON text compressed, or as UTF-8 when compressing
would not make it shorter (`turnkit.sessions._codec`); they are read without decoding responses, so a
client made with `decode_responses=True` works too.

Every compare-and-set is one Lua script (`turnkit.sessions._redis_scripts`), so each backend call
is one round trip and atomic. Status watchers wake through pub/sub: one subscription per store
instance dispatches the published record keys to local waiters, with polling (`poll_interval`) as
the fallback. Not for Redis Cluster: a record write moves the session head in the same script,
across two keys.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, TypeVar, Unpack

from redis.asyncio import Redis
from redis.client import NEVER_DECODE
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from turnkit.errors import TurnkitError
from turnkit.sessions._backend import StoredRecord, parent_gone
from turnkit.sessions._codec import decode, encode
from turnkit.sessions._engine import LinearSessionStore, StoreOptions
from turnkit.sessions._lease import lease_lost
from turnkit.sessions._notify import ChangeFeed
from turnkit.sessions._redis_scripts import (
    APPEND_LOG,
    EPOCH,
    LAYOUT_ERROR,
    LEASE_KEEP_MS,
    PUT_RECORD,
    RELEASE_LEASE,
    RENEW_LEASE,
    TRY_LEASE,
)
from turnkit.sessions._session_index import SPILL_SEP, owner_of, sessions_of_records

__all__ = ["LAYOUT_VERSION", "RedisBackend", "RedisSessionStore", "encode_part", "glob_escape"]

log = logging.getLogger("turnkit.sessions")

LAYOUT_VERSION: Final = 1
_KINDS: Final = frozenset("rhlxmsi")
_BASE64: Final = re.compile(r"[A-Za-z0-9_-]*")
_GLOB_SPECIAL: Final = re.compile(r"([\\*?\[\]])")
# Waits before the second and third try of a call that lost its connection (then it raises).
_RETRY_DELAYS: Final = (0.0, 0.1)
# The longest the pub/sub listener reads before it checks whether it was cancelled (seconds).
_LISTEN_BEAT: Final = 1.0
_T = TypeVar("_T")
# Read stored values as the bytes they are, whatever the client's `decode_responses`.
_AS_BYTES: Final = {NEVER_DECODE: True}


def encode_part(value: str) -> str:
    """A key part for any string: unpadded URL-safe base64 of its UTF-8 (never holds `:` or glob chars)."""
    return base64.urlsafe_b64encode(value.encode("utf-8")).rstrip(b"=").decode("ascii")


def glob_escape(text: str) -> str:
    """`text` as a Redis glob pattern that matches only itself."""
    return _GLOB_SPECIAL.sub(r"\\\1", text)


def _decode_part(part: str) -> str:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)).decode("utf-8")


def _as_str(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


class RedisBackend:
    """Records, heads, message logs and leases in Redis: a `RecordBackend` and a `LeaseBackend`."""

    def __init__(self, client: Redis, prefix: str) -> None:
        if not isinstance(prefix, str) or not prefix:
            raise ValueError("the Redis key prefix must be a non-empty string")
        self.client = client
        self.prefix = prefix
        self.layout_key = f"{prefix}m::version"
        self.channel = f"{prefix}m::changes"
        self.epoch_key = f"{prefix}m::epoch"
        self._layout_checked = False
        self._indexed: set[str] = set()  # tenants whose session index is known to be complete
        self._records_indexed: set[str] = set()  # tenants whose record indexes are known to be complete
        self._put = client.register_script(PUT_RECORD)
        self._append = client.register_script(APPEND_LOG)
        self._try_lease = client.register_script(TRY_LEASE)
        self._release = client.register_script(RELEASE_LEASE)
        self._renew = client.register_script(RENEW_LEASE)
        self._epoch = client.register_script(EPOCH)

    # --- keys ------------------------------------------------------------------------------------

    def key(self, kind: str, tenant: str, name: str) -> str:
        """The Redis key of one item: prefix, kind letter, encoded tenant, encoded name."""
        return f"{self.prefix}{kind}:{encode_part(tenant)}:{encode_part(name)}"

    def owns(self, key: bytes | str) -> bool:
        """Whether `key` is one of this prefix's keys (and not, say, one of a longer prefix's)."""
        try:
            text = _as_str(key)
        except UnicodeDecodeError:
            return False
        if not text.startswith(self.prefix):
            return False
        parts = text[len(self.prefix) :].split(":")
        return (
            len(parts) == 3
            and parts[0] in _KINDS
            and all(_BASE64.fullmatch(p) is not None for p in parts[1:])
        )

    # --- the RecordBackend methods -----------------------------------------------------------------

    async def get_record(self, tenant: str, key: str) -> StoredRecord | None:
        """The record stored under `key`, or None."""
        rkey = self.key("r", tenant, key)
        rev, data = await self._call(lambda _: self._raw("HMGET", rkey, "rev", "data"))
        return None if rev is None or data is None else StoredRecord(int(rev), decode(data))

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
        that record exists), move the head if asked, and publish."""
        rkey = self.key("r", tenant, key)
        keys = [self.layout_key, rkey, rkey if head_of is None else self.key("h", tenant, head_of)]
        keys.append(rkey if head_of is None else self.key("s", tenant, ""))  # the tenant's session index
        keys.append(rkey if fence is None else self.key("x", tenant, fence[0]))
        required = requires is not None and expected_rev == 0
        keys.append(self.key("r", tenant, requires) if required and requires is not None else rkey)
        session = None if expected_rev else head_of
        if session is None and not expected_rev and SPILL_SEP in key:  # a spilled state: its snapshot's
            owner = self.key("r", tenant, owner_of(key))
            found = await self._call(lambda _: self._raw("HGET", owner, "sess"))
            session = None if found is None else _as_str(found)
        keys.append(rkey if session is None else self.key("i", tenant, session))
        args: list[str | int | bytes] = [
            LAYOUT_VERSION,
            expected_rev,
            encode(data),
            secrets.token_hex(8),
            self.channel,
            "" if head_of is None else key,
            head_of or "",
            "" if fence is None else fence[1],
            "1" if required else "",
            session or "",
            key,
        ]
        done = await self._call(lambda _: self._put(keys=keys, args=args))
        if done == -1 and fence is not None:
            raise lease_lost(fence[0])
        if done == -2 and requires is not None:
            raise parent_gone(requires)
        return bool(done)

    async def get_head(self, tenant: str, session_id: str) -> str | None:
        """The snapshot most recently created in the session, or None."""
        hkey = self.key("h", tenant, session_id)
        head = await self._call(lambda _: self.client.get(hkey))
        return None if head is None else _as_str(head)

    async def list_heads(self, tenant: str, after: str | None, limit: int) -> list[tuple[str, str]]:
        """Up to `limit` sessions of the tenant after `after` (byte order), with their heads: a
        range of the tenant's session index, then its heads (ids whose head is gone are skipped)."""
        index = self.key("s", tenant, "")
        await self._index_once(tenant, index)
        start = "(" + ("\x00" if after is None else after)
        out: list[tuple[str, str]] = []
        while len(out) < limit:
            want = limit - len(out)
            page: list[str | int] = ["ZRANGEBYLEX", index, start, "+", "LIMIT", 0, want]
            names = [_as_str(i) for i in await self._call(lambda _, c=page: self._raw(*c))]  # type: ignore[misc]
            if not names:
                break
            hkeys = [self.key("h", tenant, n) for n in names]
            heads = await self._call(lambda _, k=hkeys: self._raw("MGET", *k))  # type: ignore[misc]
            out += [(n, _as_str(h)) for n, h in zip(names, heads, strict=True) if h is not None]
            if len(names) < want:
                break
            start = "(" + names[-1]
        return out

    async def _index_once(self, tenant: str, index: str) -> None:
        """Fill the tenant's session index from its heads, once per store (sessions written by a
        turnkit older than the index are listed too); the member NUL marks it done."""
        if tenant in self._indexed:
            return
        if await self._call(lambda _: self._raw("ZSCORE", index, "\x00")) is None:
            found = await self._keys(glob_escape(f"{self.prefix}h:{encode_part(tenant)}:") + "*")
            ids = [_decode_part(_as_str(k).rsplit(":", 1)[1]) for k in found]
            for i in range(0, len(ids), 1000):
                members: list[str | int] = [x for n in ids[i : i + 1000] for x in (0, n)]
                await self._call(lambda _, m=members: self._raw("ZADD", index, *m))  # type: ignore[misc]
            await self._call(lambda _: self._raw("ZADD", index, 0, "\x00"))
        self._indexed.add(tenant)

    async def append_log(self, tenant: str, log_id: str, start: int, entries: Sequence[str]) -> bool:
        """Append to a log that holds exactly `start` entries."""
        keys = [self.layout_key, self.key("l", tenant, log_id)]
        items = [encode(e) for e in entries]  # once: a retry must send the very same bytes

        def append(retry: bool) -> Awaitable[Any]:
            args: list[str | int | bytes] = [LAYOUT_VERSION, start, int(retry), *items]
            return self._append(keys=keys, args=args)

        return bool(await self._call(append))

    async def read_log(self, tenant: str, log_id: str, start: int, end: int) -> list[str]:
        """Entries `start` to `end` (exclusive) of a log."""
        if end <= start:
            return []
        lkey = self.key("l", tenant, log_id)
        entries = await self._call(lambda _: self._raw("LRANGE", lkey, start, end - 1))
        return [decode(e) for e in entries]

    # --- the LeaseBackend methods ------------------------------------------------------------------

    async def try_lease(self, tenant: str, name: str, owner: str, ttl: float) -> bool:
        """Take or renew a lease (Redis expires it after `ttl` seconds) unless another owner holds it."""
        keys = [self.key("x", tenant, name)]
        args: list[str | int] = [owner, max(1, round(ttl * 1000)), LEASE_KEEP_MS]
        return bool(await self._call(lambda _: self._try_lease(keys=keys, args=args)))

    async def release_lease(self, tenant: str, name: str, owner: str) -> None:
        """Drop the lease if `owner` still holds it."""
        keys, args = [self.key("x", tenant, name)], [owner]
        await self._call(lambda _: self._release(keys=keys, args=args))

    async def renew_lease(self, tenant: str, name: str, owner: str, ttl: float) -> bool:
        """Extend the lease if `owner` still holds it; never take it afresh."""
        keys = [self.key("x", tenant, name)]
        args: list[str | int] = [owner, max(1, round(ttl * 1000)), LEASE_KEEP_MS]
        return bool(await self._call(lambda _: self._renew(keys=keys, args=args)))

    # --- maintenance -------------------------------------------------------------------------------

    async def store_epoch(self) -> str:
        """The identity of the data under this prefix: made with it, made anew once it is gone."""
        keys, args = [self.epoch_key], [secrets.token_hex(8)]
        return _as_str(await self._call(lambda _: self._epoch(keys=keys, args=args)))

    async def _keys(self, pattern: str) -> list[bytes | str]:
        async def scan(_: bool) -> list[bytes | str]:
            return [k async for k in self.client.scan_iter(match=pattern, count=1000) if self.owns(k)]

        return await self._call(scan)

    async def list_tenants(self) -> list[str]:
        """Every tenant holding records, heads or logs under this prefix."""
        found: set[str] = set()
        for key in await self._keys(glob_escape(self.prefix) + "*"):
            kind, tenant, _ = _as_str(key)[len(self.prefix) :].split(":")
            if kind in "rhl":
                found.add(_decode_part(tenant))
        return sorted(found)

    async def scan_records(self, tenant: str) -> list[tuple[str, StoredRecord]]:
        """Every record of a tenant, with its key."""
        keys = await self._keys(glob_escape(f"{self.prefix}r:{encode_part(tenant)}:") + "*")
        out = []
        for rkey in keys:
            rev, data = await self._call(functools.partial(self._hmget_record, _as_str(rkey)))
            if rev is not None and data is not None:
                out.append(
                    (_decode_part(_as_str(rkey).rsplit(":", 1)[1]), StoredRecord(int(rev), decode(data)))
                )
        return out

    async def scan_session(self, tenant: str, session_id: str) -> list[tuple[str, StoredRecord]]:
        """The session's records (its snapshots and their spilled states), with their keys: the
        members of its record index (those deleted since are skipped)."""
        await self._record_index_once(tenant)
        qkey = self.key("i", tenant, session_id)
        ids = sorted(_as_str(m) for m in await self._call(lambda _: self._raw("SMEMBERS", qkey)))
        out = []
        for key in ids:
            rkey = self.key("r", tenant, key)
            rev, data = await self._call(functools.partial(self._hmget_record, rkey))
            if rev is not None and data is not None:
                out.append((key, StoredRecord(int(rev), decode(data))))
        return out

    async def _record_index_once(self, tenant: str) -> None:
        """Fill the tenant's per-session record indexes from its records, once per store (records
        written by a turnkit older than the indexes are found too); a marker key says it is done."""
        if tenant in self._records_indexed:
            return
        marker = self.key("m", tenant, "record-index")
        if await self._call(lambda _: self._raw("GET", marker)) is None:
            owners = sessions_of_records((tenant, k, r.data) for k, r in await self.scan_records(tenant))
            for (_, key), session in owners.items():
                rkey, qkey = self.key("r", tenant, key), self.key("i", tenant, session)
                await self._call(lambda _, r=rkey, q=qkey, k=key, s=session: self._index_record(r, q, k, s))  # type: ignore[misc]
            await self._call(lambda _: self._raw("SET", marker, "1"))
        self._records_indexed.add(tenant)

    async def _index_record(self, rkey: str, qkey: str, key: str, session: str) -> None:
        if await self._raw("EXISTS", rkey):
            await self._raw("HSET", rkey, "sess", session)
            await self._raw("SADD", qkey, key)

    async def delete_data(
        self, tenant: str, *, records: Sequence[str], logs: Sequence[str], heads: Sequence[str]
    ) -> None:
        """Delete these records, logs and heads (and the records from the deleted sessions' record
        indexes: only them, so a record saved meanwhile stays listed for the deletion to find)."""
        doomed = [self.key("r", tenant, k) for k in records] + [self.key("l", tenant, g) for g in logs]
        doomed += [self.key("h", tenant, h) for h in heads]
        for i in range(0, len(doomed), 500):
            await self._call(functools.partial(self._unlink, doomed[i : i + 500]))
        for i in range(0, len(heads), 500):
            gone = list(heads[i : i + 500])
            await self._call(lambda _, g=gone: self._raw("ZREM", self.key("s", tenant, ""), *g))  # type: ignore[misc]
        for session in heads:
            qkey = self.key("i", tenant, session)
            for i in range(0, len(records), 500):
                some = list(records[i : i + 500])
                await self._call(lambda _, q=qkey, r=some: self._raw("SREM", q, *r))  # type: ignore[misc]

    async def _hmget_record(self, rkey: str, _retry: bool) -> Any:
        return await self._raw("HMGET", rkey, "rev", "data")

    async def _unlink(self, keys: list[str], _retry: bool) -> Any:
        return await self.client.unlink(*keys)

    async def purge(self) -> int:
        """Delete every key of this prefix (records, heads, logs, leases, version); return how many."""
        doomed: list[bytes | str] = []
        async for key in self.client.scan_iter(match=glob_escape(self.prefix) + "*", count=1000):
            if self.owns(key):
                doomed.append(key)
        for i in range(0, len(doomed), 500):
            await self.client.unlink(*doomed[i : i + 500])
        self._layout_checked = False
        self._indexed.clear()
        return len(doomed)

    # --- plumbing ----------------------------------------------------------------------------------

    async def _raw(self, *command: str | int) -> Any:
        """Run one command and return its reply as bytes, whatever the client's `decode_responses`."""
        execute: Callable[..., Awaitable[Any]] = self.client.execute_command  # untyped in redis-py
        return await execute(*command, **_AS_BYTES)

    async def _call(self, op: Callable[[bool], Awaitable[_T]]) -> _T:
        """Run `op` (told whether it is a retry), retrying when the connection drops under it.

        Every operation here is safe to repeat: reads and leases are idempotent, a record write
        recognises its own nonce, and a retried append recognises its own entries."""
        for attempt, delay in enumerate((*_RETRY_DELAYS, None)):
            try:
                if not self._layout_checked:
                    await self._check_layout()
                return await op(attempt > 0)
            except (RedisConnectionError, RedisTimeoutError) as exc:
                if delay is None:
                    raise TurnkitError("UNAVAILABLE", f"Redis is unavailable: {exc}", public=False) from exc
                log.debug("Redis connection lost; retrying", exc_info=True)
                await asyncio.sleep(delay)
            except ResponseError as exc:
                text = str(exc)
                if text.startswith(LAYOUT_ERROR):
                    raise self._layout_refused(text[len(LAYOUT_ERROR) + 1 :]) from None
                if isinstance(exc, OutOfMemoryError) or text.startswith("OOM"):  # maxmemory: a full disk
                    raise TurnkitError(
                        "RESOURCE_EXHAUSTED", f"Redis is out of memory: {text}", public=False
                    ) from exc
                if isinstance(exc, ReadOnlyError) or text.startswith(
                    ("MASTERDOWN", "MISCONF")
                ):  # no writes now
                    raise TurnkitError(
                        "UNAVAILABLE", f"Redis cannot take writes: {text}", public=False
                    ) from exc
                raise
        raise AssertionError("unreachable")

    async def _check_layout(self) -> None:
        stored = await self.client.get(self.layout_key)
        if stored is not None and _as_str(stored) != str(LAYOUT_VERSION):
            raise self._layout_refused(_as_str(stored))
        self._layout_checked = True

    def _layout_refused(self, stored: str) -> TurnkitError:
        if stored.isdigit() and int(stored) > LAYOUT_VERSION:
            why = f"layout version {stored}, newer than this turnkit's ({LAYOUT_VERSION}): upgrade turnkit"
        else:
            why = f"unknown layout version {stored!r} (this turnkit writes {LAYOUT_VERSION})"
        return TurnkitError(
            "FAILED_PRECONDITION", f"Redis prefix {self.prefix!r} holds session data of {why}", public=False
        )


class RedisChangeFeed(ChangeFeed[str]):
    """One pub/sub subscription per store instance, waking the local waiters of the record keys
    published on the store's channel."""

    def __init__(self, client: Redis, channel: str) -> None:
        super().__init__()
        self.client = client
        self.channel = channel

    async def _listen(self) -> None:
        task = asyncio.current_task()
        pubsub = self.client.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            while True:
                # redis-py sends through `asyncio.wait_for`, which on Python 3.11 can swallow a
                # cancellation that lands as a send completes: notice it, and read in short beats.
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError
                message = await pubsub.get_message(timeout=_LISTEN_BEAT)
                if message is None:
                    continue
                if message["type"] == "message":
                    self.wake(_as_str(message["data"]))
                elif message["type"] == "subscribe":
                    # (Re)subscribed, perhaps after a silent reconnect: changes may have been missed.
                    self.on_subscribed()
        finally:
            close: Callable[[], Awaitable[None]] = pubsub.aclose  # untyped in redis-py
            with contextlib.suppress(Exception):
                await close()

    def _lost(self, exc: Exception) -> None:
        # A lost connection is routine (it is resubscribed); anything else deserves a warning.
        lost = isinstance(exc, (RedisConnectionError, RedisTimeoutError, OSError))
        log.log(logging.DEBUG if lost else logging.WARNING, "Redis pub/sub failed (%s); resubscribing", exc)


class RedisSessionStore(LinearSessionStore):
    """A session store in Redis that any number of processes share, with pub/sub status notifications.

    `url_or_client` is a `redis://` URL (the store then owns the connection pool and `close()`
    closes it) or a `redis.asyncio.Redis` client (left open). `prefix` separates stores that share
    a database; other options are those of `LinearSessionStore`. Use `async with` or `close()`.
    """

    def __init__(
        self, url_or_client: str | Redis, *, prefix: str = "turnkit:", **options: Unpack[StoreOptions]
    ) -> None:
        if isinstance(url_or_client, str):
            client, self._owns_client = Redis.from_url(url_or_client), True
        else:
            client, self._owns_client = url_or_client, False
        super().__init__(RedisBackend(client, prefix), **options)
        self.backend: RedisBackend
        self.client = client
        self.prefix = prefix
        self.changes = RedisChangeFeed(client, self.backend.channel)

    def change_waiter(
        self, snapshot_id: str, *, context: Mapping[str, Any] | None = None
    ) -> Callable[[], Awaitable[None]]:
        """Wake as soon as any process writes this snapshot (pub/sub), else after a poll interval."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # no loop to listen on: poll
            return super().change_waiter(snapshot_id, context=context)
        if self.changes.closed:
            return super().change_waiter(snapshot_id, context=context)
        key = self.backend.key("r", self.tenant_key(context), snapshot_id)
        self.changes.start(name=f"listen {self.changes.channel}")
        return self.changes.waiter(key, self.poll_interval)

    async def purge(self) -> int:
        """Delete all of this store's data (every key under its prefix, no other); return the key count."""
        self.clear_cache()
        return await self.backend.purge()

    async def close(self) -> None:
        """Stop the pub/sub listener and, if the store opened it from a URL, its connection pool."""
        await self.changes.close()
        if self._owns_client:
            await self.client.aclose()
