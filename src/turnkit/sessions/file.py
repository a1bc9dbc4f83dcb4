"""`FileSessionStore`: the linear engine over a directory of JSON files, safe across processes.

Layout under the store directory, one subdirectory per tenant (`default`, or `t` + encoded tenant):
    records/<name>.rec    a header line `{"rev": n}` (and `"key": id` for hashed names), then the record
    heads/<name>.head     `{"session": id, "head": snapshot id}`
    logs/<name>.log       a message log, append-only: one `<index> <JSON text>` line per entry
    locks/NN.lock         flock stripes serialising compare-and-set between threads and processes
Every id becomes a file name by base32 (or, when long, a SHA-256 digest), so no id can name a
path outside the directory; hashed names keep the real id inside, which reads verify.
Records and heads are replaced atomically (temp file, fsync, rename). A log append checks the index
on the last complete line (compare-and-set on length) and writes past it; a writer that dies
mid-append leaves a torn line, which readers never reach and the next append cuts off. Lines a
writer appended without committing a record that names them are harmless: nothing reads them.
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import hashlib
import json
import os
import time
import uuid
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Final, Unpack

from turnkit.errors import TurnkitError
from turnkit.sessions.backend import StoredRecord
from turnkit.sessions.engine import LinearSessionStore, StoreOptions

__all__ = ["FileBackend", "FileSessionStore"]

_LOCK_STRIPES: Final = 64
_MAX_B32: Final = 120
_SUBDIRS: Final = ("records", "heads", "logs", "locks")
_TAIL_CHUNK: Final = 64 * 1024


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def encode_name(value: str) -> str:
    """A file name for any string: `b` + lowercase base32, or `h` + SHA-256 hex when that is long."""
    raw = value.encode("utf-8")
    b32 = base64.b32encode(raw).decode("ascii").rstrip("=").lower()
    return "b" + b32 if len(b32) <= _MAX_B32 else "h" + hashlib.sha256(raw).hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _log_tail(f: BinaryIO) -> tuple[int, int]:
    """The number of entries in a log file and the offset just past its last complete line."""
    pos = f.seek(0, os.SEEK_END)
    last_newline = -1
    line_start = 0
    # Read backwards in chunks, so a long history costs no more than its last line.
    while pos > 0:
        step = min(_TAIL_CHUNK, pos)
        pos -= step
        f.seek(pos)
        chunk = f.read(step)
        limit = len(chunk)
        if last_newline < 0:
            limit = chunk.rfind(b"\n")
            if limit < 0:
                continue
            last_newline = pos + limit
        before = chunk.rfind(b"\n", 0, limit)
        if before >= 0:
            line_start = pos + before + 1
            break
    if last_newline < 0:
        return 0, 0
    f.seek(line_start)
    index = f.read(min(32, last_newline - line_start)).split(b" ", 1)[0]
    return int(index) + 1, last_newline + 1


class FileBackend:
    """Records, heads and message logs as files; blocking I/O, to be called through `asyncio.to_thread`."""

    def __init__(self, directory: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.root = Path(directory)
        self.root.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self._ready: set[str] = set()

    # --- the RecordBackend methods -----------------------------------------------------------------

    async def get_record(self, tenant: str, key: str) -> StoredRecord | None:
        """The record stored under `key`, or None."""
        return await asyncio.to_thread(self._get_record, self._tenant_dir(tenant), key)

    async def put_record(
        self, tenant: str, key: str, data: str, *, expected_rev: int, head_of: str | None = None
    ) -> bool:
        """Replace the record if it is still at `expected_rev` (under a cross-process lock)."""
        return await asyncio.to_thread(self._put_record, tenant, key, data, expected_rev, head_of)

    async def get_head(self, tenant: str, session_id: str) -> str | None:
        """The snapshot most recently created in the session, or None."""
        return await asyncio.to_thread(self._get_head, tenant, session_id)

    async def append_log(self, tenant: str, log_id: str, start: int, entries: Sequence[str]) -> bool:
        """Append to a log that holds exactly `start` entries (under a cross-process lock)."""
        return await asyncio.to_thread(self._append_log, tenant, log_id, start, list(entries))

    async def read_log(self, tenant: str, log_id: str, start: int, end: int) -> list[str]:
        """Entries `start` to `end` of a log."""
        return await asyncio.to_thread(self._read_log, tenant, log_id, start, end)

    # --- blocking implementations ------------------------------------------------------------------

    def _tenant_dir(self, tenant: str, *, create: bool = False) -> Path:
        path = self.root / ("default" if tenant == "" else "t" + encode_name(tenant))
        if create and tenant not in self._ready:
            for sub in _SUBDIRS:
                (path / sub).mkdir(parents=True, exist_ok=True)
            self._ready.add(tenant)
        return path

    def _get_record(self, tdir: Path, key: str) -> StoredRecord | None:
        try:
            text = (tdir / "records" / f"{encode_name(key)}.rec").read_text("utf-8")
        except FileNotFoundError:
            return None
        header, _, data = text.partition("\n")
        meta = json.loads(header)
        if meta.get("key", key) != key:
            raise TurnkitError("DATA_LOSS", f"record file of {key!r} holds {meta['key']!r}", public=False)
        return StoredRecord(meta["rev"], data)

    def _put_record(self, tenant: str, key: str, data: str, expected_rev: int, head_of: str | None) -> bool:
        tdir = self._tenant_dir(tenant, create=True)
        with self._locked(tdir, "r:" + key):
            current = self._get_record(tdir, key)
            if (current.rev if current else 0) != expected_rev:
                return False
            name = encode_name(key)
            # Only a hashed name needs the real id beside it; base32 names decode back exactly.
            header = {"rev": expected_rev + 1} | ({"key": key} if name.startswith("h") else {})
            self._write_atomic(tdir / "records" / f"{name}.rec", f"{_compact(header)}\n{data}")
            if head_of is not None:
                head = json.dumps({"session": head_of, "head": key})
                self._write_atomic(tdir / "heads" / f"{encode_name(head_of)}.head", head)
        return True

    def _get_head(self, tenant: str, session_id: str) -> str | None:
        path = self._tenant_dir(tenant) / "heads" / f"{encode_name(session_id)}.head"
        try:
            head = json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            return None
        if head["session"] != session_id:
            raise TurnkitError("DATA_LOSS", f"head file of {session_id!r} is another's", public=False)
        snapshot_id: str = head["head"]
        return snapshot_id

    def _append_log(self, tenant: str, log_id: str, start: int, entries: list[str]) -> bool:
        if any("\n" in e for e in entries):
            raise ValueError("log entries must be one-line texts")
        tdir = self._tenant_dir(tenant, create=True)
        path = tdir / "logs" / f"{encode_name(log_id)}.log"
        with self._locked(tdir, "l:" + log_id):
            with os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o644), "r+b") as f:
                count, end = _log_tail(f)
                if count != start:
                    return False
                f.truncate(end)  # drop a line torn by a writer that died mid-append
                f.seek(end)
                lines = "".join(f"{start + i} {e}\n" for i, e in enumerate(entries))
                self._write_file(f, lines.encode("utf-8"))
            if start == 0 and self.fsync:
                _fsync_dir(path.parent)  # a new file: make its name durable too
        return True

    def _read_log(self, tenant: str, log_id: str, start: int, end: int) -> list[str]:
        path = self._tenant_dir(tenant) / "logs" / f"{encode_name(log_id)}.log"
        out: list[str] = []
        try:
            with path.open("rb") as f:
                for line in f:
                    if not line.endswith(b"\n"):
                        break  # a torn line past the committed entries
                    index, _, entry = line.partition(b" ")
                    if int(index) >= end:
                        break
                    if int(index) >= start:
                        out.append(entry[:-1].decode("utf-8"))
        except FileNotFoundError:
            return []
        return out

    async def try_lease(self, tenant: str, name: str, owner: str, ttl: float) -> bool:
        """Take or renew a lease unless another owner holds an unexpired one (across processes)."""
        return await asyncio.to_thread(self._try_lease, tenant, name, owner, ttl)

    async def release_lease(self, tenant: str, name: str, owner: str) -> None:
        """Drop the lease if `owner` holds it."""
        await asyncio.to_thread(self._release_lease, tenant, name, owner)

    def _lease_path(self, tenant: str, name: str) -> tuple[Path, Path]:
        tdir = self._tenant_dir(tenant, create=True)
        return tdir, tdir / "locks" / f"{encode_name(name)}.lease"

    def _lease_holder(self, path: Path) -> tuple[str, float]:
        try:
            held = json.loads(path.read_text("utf-8"))
            return str(held["owner"]), float(held["expires"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return "", 0.0  # absent, or torn by a crash: free

    def _try_lease(self, tenant: str, name: str, owner: str, ttl: float) -> bool:
        tdir, path = self._lease_path(tenant, name)
        with self._locked(tdir, name):
            holder, expires = self._lease_holder(path)
            # Wall-clock time: the other holder may be another process.
            if holder and holder != owner and expires > time.time():
                return False
            path.write_text(_compact({"owner": owner, "expires": time.time() + ttl}), "utf-8")
            return True

    def _release_lease(self, tenant: str, name: str, owner: str) -> None:
        tdir, path = self._lease_path(tenant, name)
        with self._locked(tdir, name):
            if self._lease_holder(path)[0] == owner:
                path.unlink(missing_ok=True)

    @contextmanager
    def _locked(self, tdir: Path, name: str) -> Iterator[None]:
        # A fixed set of lock files (never deleted, so flock on them is sound) shared by hash.
        stripe = zlib.crc32(name.encode("utf-8")) % _LOCK_STRIPES
        fd = os.open(tdir / "locks" / f"{stripe:02d}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _write_file(self, f: BinaryIO, data: bytes) -> None:
        f.write(data)
        f.flush()
        if self.fsync:
            os.fsync(f.fileno())

    def _write_atomic(self, path: Path, text: str) -> None:
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            with tmp.open("xb") as f:
                self._write_file(f, text.encode("utf-8"))
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if self.fsync:
            _fsync_dir(path.parent)


class FileSessionStore(LinearSessionStore):
    """A session store in a directory of JSON files; several processes may share the directory.

    `fsync=False` skips the flushes to disk (faster, not crash-safe). Other options are those of
    `LinearSessionStore`; status changes written by other processes are seen by polling.
    """

    def __init__(
        self, directory: str | os.PathLike[str], *, fsync: bool = True, **options: Unpack[StoreOptions]
    ) -> None:
        self.directory = Path(directory)
        super().__init__(FileBackend(directory, fsync=fsync), **options)
        self.backend: FileBackend
