"""Shared by the scale benchmarks (`sessions_scale.py`, `long_session.py`, `replicas.py`): opening and
dropping a store of each kind in a place of its own, the benchmark agent, percentiles and verdicts.

Stores: `file` (a temporary directory), `sqlite` (a file in one), `postgres` (a schema of its own,
`tkscale_...`, in the database of `--pg-url`), `redis` (a key prefix of its own, `tkscale:...:`,
under `--redis-url`); each is dropped afterwards, also when the run fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from turnkit import Turnkit
from turnkit.models import ModelContext
from turnkit.sessions import FileSessionStore, SessionStore
from turnkit.sessions._url import store_from_url
from turnkit.testing import define_programmable_model
from turnkit.types import Message, ModelRequest, ModelResponse, Part

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"
DURABLE = ("file", "sqlite", "postgres", "redis")
REPLY = "The quick brown fox jumps over the lazy dog, then naps in the afternoon sun."


class Place:
    """Where one store of a kind lives: `url` opens it from any process; `drop()` removes it."""

    def __init__(self, kind: str, pg_url: str = PG_URL, redis_url: str = REDIS_URL) -> None:
        if kind not in DURABLE:
            raise ValueError(f"unknown store kind {kind!r} (choose from {', '.join(DURABLE)})")
        self.kind = kind
        tag = f"{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self.tmp = Path(tempfile.mkdtemp(prefix=f"turnkit-scale-{kind}-"))
        self.pg_url, self.redis_url = pg_url, redis_url
        self.schema = f"tkscale_{tag}"
        self.prefix = f"tkscale:{tag}:"
        if kind == "file":
            self.url = f"file:{self.tmp / 'sessions'}"
        elif kind == "sqlite":
            self.url = f"sqlite:{self.tmp / 'sessions.db'}"
        elif kind == "postgres":
            self.url = f"{pg_url}{'&' if '?' in pg_url else '?'}schema={self.schema}"
        else:
            self.url = f"{redis_url}{'&' if '?' in redis_url else '?'}prefix={self.prefix}"

    def open(self, *, bulk: bool = False) -> SessionStore:
        """A new store instance (a cold cache) over this place. `bulk`: for loading data only, the
        file store skips fsync and PostgreSQL's commits skip the WAL flush (the measured
        instances use every default)."""
        if bulk and self.kind == "file":
            return FileSessionStore(self.tmp / "sessions", fsync=False)
        if bulk and self.kind == "postgres":
            # More connections, and commits that do not wait for the WAL flush: loading only.
            return store_from_url(f"{self.url}&options=-csynchronous_commit%3Doff", pool_size=48)
        return store_from_url(self.url)

    def settle(self) -> None:
        """After a bulk load, what an operator would do: PostgreSQL's tables vacuumed and their
        planner statistics brought up to date (else autovacuum may still be busy while measuring)."""
        if self.kind == "postgres":
            tables = ", ".join(f'"{self.schema}".{t}' for t in ("records", "heads", "logs", "leases"))
            _run(["psql", self.pg_url, "-q", "-c", f"VACUUM ANALYZE {tables}"])

    def drop(self) -> None:
        """Remove everything the store wrote."""
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self.kind == "postgres":
            _run(["psql", self.pg_url, "-q", "-c", f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'])
        elif self.kind == "redis":
            script = (
                "local n = 0 for _, k in ipairs(redis.call('KEYS', ARGV[1])) do"
                " redis.call('UNLINK', k) n = n + 1 end return n"
            )
            _run(["redis-cli", "-u", self.redis_url, "EVAL", script, "0", _glob(self.prefix) + "*"])


def _glob(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


def _run(cmd: list[str]) -> None:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    if out.returncode != 0:
        print(f"cleanup failed ({' '.join(cmd[:2])}): {out.stderr.strip()}")


@contextmanager
def place(kind: str, pg_url: str = PG_URL, redis_url: str = REDIS_URL) -> Iterator[Place]:
    """A `Place` dropped when the block ends, however it ends."""
    where = Place(kind, pg_url, redis_url)
    try:
        yield where
    finally:
        where.drop()


async def close_store(store: Any) -> None:
    """Close a store if it has something to close (connections, worker threads)."""
    for name in ("aclose", "close"):
        method = getattr(store, name, None)
        if method is not None:
            result = method()
            if asyncio.iscoroutine(result):
                await result
            return


def benchmark_app(record: list[int] | None = None) -> Turnkit:
    """A Turnkit app whose default model answers every turn with REPLY (no inference). With
    `record`, the JSON size of every model request is appended to it."""
    reply = ModelResponse(message=Message(role="model", content=[Part(text=REPLY)]), finish_reason="stop")

    def answer(request: ModelRequest, ctx: ModelContext) -> ModelResponse:
        if record is not None:
            record.append(len(request.to_json()))
        return reply

    ai = Turnkit(model="programmableModel")
    model = define_programmable_model(ai)
    model.handler = answer
    model.requests = _Forgetful()  # the model keeps no log of requests: long runs stay flat
    return ai


class _Forgetful(list[ModelRequest]):
    def append(self, item: ModelRequest) -> None:
        pass


class RawClient:
    """One keep-alive HTTP/1.1 connection speaking just enough of the protocol for these turns.

    httpx costs about a millisecond of CPU per streamed request, which on two cores is CPU taken
    from the server under test; this reads the same bytes (status line, headers, chunked body)
    with a few stream calls per frame.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        """Close the connection, if open."""
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def stream(self, path: str, body: bytes) -> AsyncIterator[bytes]:
        """POST `body` to `path` and yield the decoded pieces of a chunked 200 response."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.reader, self.writer
        assert reader is not None
        writer.write(
            b"POST %s HTTP/1.1\r\nhost: %s:%d\r\naccept: text/event-stream\r\n"
            b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (path.encode(), self.host.encode(), self.port, len(body), body)
        )
        head = await reader.readuntil(b"\r\n\r\n")
        status = head[9:12]
        lower = head.lower()
        if status != b"200":
            await self.close()
            raise ProtocolError(f"HTTP {status.decode(errors='replace')}: {head[:200]!r}")
        if b"transfer-encoding: chunked" not in lower:
            await self.close()
            raise ProtocolError(f"not a chunked stream: {head[:300]!r}")
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # the empty trailer
                if b"connection: close" in lower:
                    await self.close()
                return
            piece = await reader.readexactly(size + 2)
            yield piece[:-2]

    async def call(self, path: str, body: bytes) -> tuple[int, bytes]:
        """POST a JSON `body` to `path` (no streaming) and return the status and the whole body."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.reader, self.writer
        assert reader is not None
        writer.write(
            b"POST %s HTTP/1.1\r\nhost: %s:%d\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (path.encode(), self.host.encode(), self.port, len(body), body)
        )
        head = await reader.readuntil(b"\r\n\r\n")
        lower = head.lower()
        status = int(head[9:12])
        if b"transfer-encoding: chunked" in lower:
            pieces = []
            while size := int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16):
                pieces.append((await reader.readexactly(size + 2))[:-2])
            await reader.readuntil(b"\r\n")
            data = b"".join(pieces)
        else:
            length = int(lower.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
            data = await reader.readexactly(length)
        if b"connection: close" in lower:
            await self.close()
        return status, data


class ProtocolError(Exception):
    """An HTTP answer this client cannot read as expected."""


def percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank q-th percentile (q in 0..100), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def ms(seconds: float | None) -> float | None:
    """Seconds as milliseconds, rounded for display."""
    return None if seconds is None else round(seconds * 1000, 3)


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is zero."""
    return None if a is None or b is None or b == 0 else round(a / b, 2)


def verdict(name: str, value: float | None, limit: float, unit: str = "x") -> dict[str, Any]:
    """A target: PASS when `value` is at most `limit`."""
    return {
        "target": name,
        "value": value,
        "limit": limit,
        "unit": unit,
        "pass": value is not None and value <= limit,
    }


def print_verdicts(verdicts: list[dict[str, Any]]) -> None:
    """One PASS/MISS line per target."""
    for v in verdicts:
        shown = "-" if v["value"] is None else f"{v['value']}{v['unit']}"
        print(f"{'PASS' if v['pass'] else 'MISS'}  {v['target']}: {shown} (limit {v['limit']}{v['unit']})")
