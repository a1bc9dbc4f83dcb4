"""The Redis store in the contract, lease and conformance suites (the real server on 127.0.0.1:6379).

Each test gets a key prefix of its own, `turnkit-test:<unix time>-<pid>-<random>:`. Its keys are
deleted when the test process exits (`purge()` of every prefix it made); prefixes left behind by a
process that was killed are swept when this module is next imported: those whose pid is no longer
running (the server is on this machine, so its test processes are too), and any over a day old.
No TTL is involved. `stored_bytes()` counts payload, like the in-memory store: the stored length
(compressed, or UTF-8) of every record's data, head and message log entry under the prefix (not
Redis's MEMORY USAGE, which adds per-key allocator overhead).

The suites never close the stores they open, so each store gets a connection pool that closes
itself when its event loop shuts down (instead of leaving sockets to the garbage collector).
"""

from __future__ import annotations

import asyncio
import atexit
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest

from conftest import IN_CI, require_service

if TYPE_CHECKING:
    from test_store_contract import StoreCase

try:
    import redis
    from redis.asyncio import ConnectionPool, Redis

    from turnkit.sessions.redis_store import RedisSessionStore, glob_escape
except ImportError:  # the `redis` extra is missing: store_case says so
    redis = None  # type: ignore[assignment]

HOST, PORT = "127.0.0.1", 6379
URL = f"redis://{HOST}:{PORT}/0"
ROOT = "turnkit-test:"
STALE_AFTER = 24 * 3600.0
_RUN = f"{int(time.time())}-{os.getpid()}"
_made: list[str] = []
_guards: set[asyncio.Task[None]] = set()


def track(prefix: str) -> str:
    """Have `prefix`'s keys purged when this process exits; return it."""
    if not _made:
        atexit.register(_purge_made)
    _made.append(prefix)
    return prefix


def new_prefix() -> str:
    """A key prefix no other test (in this run or any other) uses; purged when this process exits."""
    return track(f"{ROOT}{_RUN}-{uuid.uuid4().hex[:12]}:")


def loop_bound_client(url: str = URL, **kwargs: Any) -> Redis:
    """A client whose pool disconnects itself when the event loop that first used it shuts down."""
    return Redis(connection_pool=_LoopBoundPool.from_url(url, **kwargs))


def store_case(tmp_path: Path) -> StoreCase:
    """Redis stores over a fresh prefix: every `open` is a new instance (own pool, cold cache)."""
    from test_store_contract import StoreCase  # here: that module imports this one

    if redis is None:
        message = "the redis package is not installed (pip install 'turnkit[redis]')"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    require_service("Redis", HOST, PORT)
    prefix = new_prefix()
    return StoreCase(
        lambda **o: RedisSessionStore(loop_bound_client(), prefix=prefix, **o),
        lambda: payload_bytes(prefix),
        url=f"{URL}?prefix={quote(prefix, safe='')}",
    )


def payload_bytes(prefix: str) -> int:
    """Bytes of data stored under `prefix`: record data, heads and log entries (no key overhead)."""
    client = redis.Redis(host=HOST, port=PORT)
    try:
        total = 0
        for key in client.scan_iter(match=glob_escape(prefix) + "*", count=1000):
            kind = key[len(prefix.encode()) :][:1]
            if kind == b"r":
                total += int(client.hstrlen(key, "data"))
            elif kind == b"h":
                total += int(client.strlen(key))
            elif kind == b"l":
                total += sum(len(e) for e in client.lrange(key, 0, -1))
        return total
    finally:
        client.close()


async def purge(prefixes: list[str]) -> int:
    """Delete the keys of these prefixes (each store's own `purge`, which leaves other prefixes alone)."""
    client = Redis.from_url(URL)
    try:
        return sum([await RedisSessionStore(client, prefix=p).purge() for p in prefixes])
    finally:
        await client.aclose()


if redis is not None:

    class _LoopBoundPool(ConnectionPool):
        """A connection pool that disconnects when its event loop shuts down (cancelling every task)."""

        _guard: asyncio.Task[None] | None = None

        async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
            if self._guard is None:
                # Held strongly until it ends, so a pool the test dropped still closes at shutdown.
                self._guard = asyncio.get_running_loop().create_task(self._close_at_shutdown())
                _guards.add(self._guard)
                self._guard.add_done_callback(_guards.discard)
            get: Callable[..., Awaitable[Any]] = super().get_connection  # untyped in redis-py
            return await get(*args, **kwargs)

        async def _close_at_shutdown(self) -> None:
            try:
                await asyncio.Event().wait()
            finally:
                # Shutdown cancels every task at once: let the others finish with the pool first.
                others = asyncio.all_tasks() - _guards
                if others:
                    await asyncio.wait(others, timeout=2)
                await self.disconnect()


def _purge_made() -> None:
    try:
        asyncio.run(purge(_made))
    except Exception as exc:  # Redis went away: the next run's sweep gets them
        print(f"store_case_redis: could not purge test keys ({exc})")


def _is_stale(run: str) -> bool:
    """Whether the test process that named a prefix `<unix time>-<pid>-<random>` is gone."""
    started, pid, *_ = [*run.split("-"), "", ""]
    if not (started.isdigit() and pid.isdigit()):
        return False  # not ours
    if time.time() - int(started) > STALE_AFTER:
        return True  # whatever runs under that pid now is not that run
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True  # killed before its exit handler ran (the server is local, so is the process)
    except PermissionError:
        pass
    return False


def _sweep_stale() -> None:
    """Purge prefixes of test processes that are gone (killed, so their exit handler never ran)."""
    client = redis.Redis(host=HOST, port=PORT, socket_connect_timeout=1)
    try:
        stale: set[str] = set()
        for key in client.scan_iter(match=ROOT + "*", count=1000):
            run = key.decode("utf-8", "replace")[len(ROOT) :].split(":", 1)[0]
            if _is_stale(run):
                stale.add(f"{ROOT}{run}:")
        if stale:
            asyncio.run(purge(sorted(stale)))
    except redis.exceptions.ConnectionError:
        pass  # no server: nothing to sweep
    finally:
        client.close()


if redis is not None:
    _sweep_stale()
