"""`FileSessionStore`: the linear engine over a directory of JSON files, safe across processes.

Layout under the store directory, one subdirectory per tenant (`default`, or `t` + encoded tenant):
    records/<name>.rec    a header line `{"rev": n}` (and `"key": id` for hashed names), then the record
    heads/<name>.head     `{"session": id, "head": snapshot id}`
    logs/<name>.jsonl     message log, one JSON text per line, append-only
    logs/<name>.len       `{"log": id, "count": entries, "size": bytes}` of the committed log
    locks/NN.lock         flock stripes serialising compare-and-set between threads and processes
Every id becomes a file name by base32 (or, when long, a SHA-256 digest), so no id can name a
path outside the directory; hashed names keep the real id inside, which reads verify.
Records and heads are replaced atomically (temp file, fsync, rename). A log append writes past the
committed size and commits by replacing its `.len`; a crash mid-append leaves bytes past that size,
which no reader looks at and the next append truncates.
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import hashlib
import json
import os
import uuid
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Final, Unpack

from turnkit.errors import TurnkitError
from turnkit.sessions.engine import LinearSessionStore, StoredRecord, StoreOptions

__all__ = ["FileBackend", "FileSessionStore"]

_LOCK_STRIPES: Final = 64
_MAX_B32: Final = 120
_SUBDIRS: Final = ("records", "heads", "logs", "locks")


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def encode_name(value: str) -> str:
    """A file name for any string: `b` + lowercase base32, or `h` + SHA-256 hex when that is long."""
    raw = value.encode("utf-8")
    b32 = base64.b32encode(raw).decode("ascii").rstrip("=").lower()
    return "b" + b32 if len(b32) <= _MAX_B32 else "h" + hashlib.sha256(raw).hexdigest()


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

    def stored_bytes(self) -> int:
        """Bytes in all files under the store directory."""
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())

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
        base = tdir / "logs" / encode_name(log_id)
        with self._locked(tdir, "l:" + log_id):
            length = self._log_length(base)
            if length["count"] != start:
                return False
            payload = "".join(e + "\n" for e in entries).encode("utf-8")
            fd = os.open(base.with_suffix(".jsonl"), os.O_WRONLY | os.O_CREAT, 0o644)
            with os.fdopen(fd, "wb") as f:
                f.truncate(length["size"])  # drop what a crashed append left uncommitted
                f.seek(length["size"])
                self._write_file(f, payload)
            committed = {"log": log_id, "count": start + len(entries), "size": length["size"] + len(payload)}
            self._write_atomic(base.with_suffix(".len"), json.dumps(committed))
        return True

    def _log_length(self, base: Path) -> dict[str, int]:
        try:
            length: dict[str, int] = json.loads(base.with_suffix(".len").read_text("utf-8"))
        except FileNotFoundError:
            return {"count": 0, "size": 0}
        return length

    def _read_log(self, tenant: str, log_id: str, start: int, end: int) -> list[str]:
        path = (self._tenant_dir(tenant) / "logs" / encode_name(log_id)).with_suffix(".jsonl")
        out: list[str] = []
        try:
            with path.open("rb") as f:
                for index, line in enumerate(f):
                    if index >= end:
                        break
                    if index >= start:
                        out.append(line.rstrip(b"\n").decode("utf-8"))
        except FileNotFoundError:
            return []
        return out

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
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


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
