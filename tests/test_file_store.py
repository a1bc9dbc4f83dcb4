"""FileSessionStore specifics: journal layout and names, record and journal format, torn appends,
compaction, other instances and processes, and what a short turn costs in bytes and thread hops."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import re
import sys
import textwrap
import uuid
import zlib
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from test_store_contract import HOSTILE_IDS, T0, msg, put, snap, turn
from turnkit.errors import TurnkitError
from turnkit.sessions import FileSessionStore
from turnkit.sessions import _file as file_module
from turnkit.sessions._file import FileBackend, encode_name
from turnkit.sessions._journal import CHAIN, JOURNAL_FORMAT_VERSION, MAGIC, MISS
from turnkit.sessions._journal_format import check_header, encode_frame, encode_string, uvarint
from turnkit.sessions._worker import WorkerThread
from turnkit.types import Message, SessionSnapshot, SessionState

ENCODED = r"(b[a-z2-7]+|h[0-9a-f]{64})"
NAME = re.compile(rf"^(default|t{ENCODED})\.(tkj|lock)$")


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def journal_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.glob("*.tkj"))


def journal_path(root: Path, tenant: str = "") -> Path:
    return root / ("default.tkj" if tenant == "" else f"t{encode_name(tenant)}.tkj")


async def test_every_name_is_encoded_and_inside_the_directory(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = FileSessionStore(root)
    tenants: list[str | None] = [None, "../../outside", "default", "a/b"]
    for tenant in tenants:
        ctx = None if tenant is None else {"tenant": tenant}
        for i, hostile in enumerate(HOSTILE_IDS):
            await put(store, snap(hostile, session=hostile, custom=[tenant, i]), context=ctx)
            async with store.session_lease(hostile, context=ctx, wait=0):
                pass
    assert listing(tmp_path) == ["store"]
    names = {p.name for p in root.rglob("*")}
    assert all(NAME.match(n) for n in names), sorted(n for n in names if not NAME.match(n))
    # Four tenants, a journal and a lock file each; the tenant called "default" is not the default one.
    assert len(names) == 8 and all(p.is_file() for p in root.iterdir())
    for reader in (store, FileSessionStore(root)):
        for tenant in tenants:
            ctx = None if tenant is None else {"tenant": tenant}
            for i, hostile in enumerate(HOSTILE_IDS):
                got = await reader.get_snapshot(snapshot_id=hostile, context=ctx)
                assert got is not None and got.state is not None and got.state.custom == [tenant, i]
                latest = await reader.get_snapshot(session_id=hostile, context=ctx)
                assert latest is not None and latest.snapshot_id == hostile


def test_encoded_names_are_short_and_distinct() -> None:
    ids = ["a", "A", "x" * 120, "x" * 256, "x" * 255 + "y", "😀" * 256]
    names = [encode_name(i) for i in ids]
    assert len(set(names)) == len(ids)
    assert all(len(n) <= 121 for n in names)
    assert names[0].startswith("b") and names[3].startswith("h")


async def test_reads_create_nothing(tmp_path: Path) -> None:
    store = FileSessionStore(tmp_path)
    assert await store.get_snapshot(snapshot_id="a") is None
    assert await store.get_snapshot(session_id="s", context={"tenant": "t"}) is None
    assert listing(tmp_path) == []


async def test_any_string_is_stored_exactly(tmp_path: Path) -> None:
    """Keys, session, log and lease ids are length-prefixed data: anything round-trips, nothing collides."""
    backend, cold = FileBackend(tmp_path), FileBackend(tmp_path)
    strange = ["", "\n", "a\nb", "\x00", "\x01" * 3, "😀", "\udc80", "x" * 100_000, "k", "K"]
    for i, key in enumerate(strange):
        assert await backend.put_record("", key, f"data {i}\n{key}", expected_rev=0, head_of=key)
        assert await backend.append_log("", key, 0, [f"entry {i}", key.replace("\n", " ")])
        assert await backend.try_lease("", key, f"owner {i}", 30)
    for reader in (backend, cold):
        for i, key in enumerate(strange):
            record = await reader.get_record("", key)
            assert record is not None and (record.rev, record.data) == (1, f"data {i}\n{key}")
            assert await reader.get_head("", key) == key
            assert await reader.read_log("", key, 0, 9) == [f"entry {i}", key.replace("\n", " ")]
            assert not await reader.try_lease("", key, "someone else", 30)
    with pytest.raises(ValueError):
        await backend.append_log("", "log", 0, ["two\nlines"])


async def test_record_format_and_revisions(tmp_path: Path) -> None:
    store = FileSessionStore(tmp_path)
    await put(store, snap("a", custom=1))
    await store.save_snapshot("a", lambda s: s and s.model_copy(update={"finish_reason": "stop"}))
    stored = await FileBackend(tmp_path).get_record("", "a")
    assert stored is not None and stored.rev == 2
    record = json.loads(stored.data)
    assert (
        record["v"] == 1 and "snapshotId" not in record["meta"] and record["meta"]["finishReason"] == "stop"
    )
    # A record format this code does not know is refused rather than misread.
    assert await store.backend.put_record("", "a", json.dumps({**record, "v": 99}), expected_rev=2)
    with pytest.raises(TurnkitError) as err:
        await FileSessionStore(tmp_path).get_snapshot(snapshot_id="a")
    assert err.value.status == "DATA_LOSS"


def rewrite_header(path: Path, *, magic: bytes = MAGIC, version: int = JOURNAL_FORMAT_VERSION) -> None:
    data = path.read_bytes()
    end = check_header(data, path.name, "")
    head = magic + uvarint(version) + encode_string("")
    path.write_bytes(head + zlib.crc32(head).to_bytes(4, "little") + data[end:])


@pytest.mark.parametrize(
    ("what", "change"), [("version", {"version": 2}), ("magic", {"magic": b"not-a-journal\n.."})]
)
async def test_an_unknown_journal_format_is_refused(
    tmp_path: Path, what: str, change: dict[str, Any]
) -> None:
    await put(FileSessionStore(tmp_path), snap("a", messages=turn(0)))
    path = journal_path(tmp_path)
    rewrite_header(path, **change)
    size = path.stat().st_size
    for attempt in (
        lambda s: s.get_snapshot(snapshot_id="a"),
        lambda s: put(s, snap("b")),  # a writer neither reads nor cuts anything either
    ):
        with pytest.raises(TurnkitError) as err:
            await attempt(FileSessionStore(tmp_path))
        assert err.value.status == "DATA_LOSS", what
        assert ("version 2" in err.value.message) == (what == "version")
    assert path.stat().st_size == size


async def test_a_journal_names_its_tenant(tmp_path: Path) -> None:
    store = FileSessionStore(tmp_path)
    long_a, long_b = "a" * 200, "b" * 200  # hashed file names
    await put(store, snap("x", custom="a's"), context={"tenant": long_a})
    # Were two tenants ever to hash alike, the reader would notice instead of returning the other's data.
    journal_path(tmp_path, long_a).rename(journal_path(tmp_path, long_b))
    with pytest.raises(TurnkitError) as err:
        await FileSessionStore(tmp_path).get_snapshot(snapshot_id="x", context={"tenant": long_b})
    assert err.value.status == "DATA_LOSS"


async def test_the_first_file_layout_is_refused_not_ignored(tmp_path: Path) -> None:
    (tmp_path / "default" / "records").mkdir(parents=True)  # sessions kept by the first file store
    for attempt in (lambda s: s.get_snapshot(snapshot_id="a"), lambda s: put(s, snap("a"))):
        with pytest.raises(TurnkitError) as err:
            await attempt(FileSessionStore(tmp_path))
        assert err.value.status == "DATA_LOSS" and "layout" in err.value.message
    assert await FileSessionStore(tmp_path).get_snapshot(snapshot_id="a", context={"tenant": "t"}) is None


# --- torn appends ------------------------------------------------------------------------------------


async def last_frame(store: FileSessionStore, write: Any) -> tuple[int, bytes]:
    """The size of the journal before `write` and the bytes `write` appended."""
    path = journal_path(store.directory)
    before = path.stat().st_size
    await write
    return before, path.read_bytes()[before:]


@pytest.mark.parametrize("damage", ["half", "crc", "zeros"])
async def test_a_torn_append_is_ignored_then_cut_off(tmp_path: Path, damage: str) -> None:
    store = FileSessionStore(tmp_path)
    history = turn(0)
    await put(store, snap("one", messages=history))
    path = journal_path(tmp_path)
    size, frame = await last_frame(store, put(store, snap("lost", parent="one", messages=history + turn(9))))
    # A writer died mid-append: half a frame, a frame whose bytes did not all reach the disk, or zeros.
    torn = {
        "half": frame[: len(frame) // 2],
        "crc": frame[:-5] + bytes([frame[-5] ^ 1]) + frame[-4:],
        "zeros": bytes(len(frame)),
    }[damage]
    with path.open("r+b") as f:
        f.truncate(size)
        f.seek(size)
        f.write(torn)
    cold = FileSessionStore(tmp_path)
    assert await cold.get_snapshot(snapshot_id="lost") is None
    assert (await cold.get_snapshot(session_id="s1")).snapshot_id == "one"  # type: ignore[union-attr]
    assert path.stat().st_size == size + len(torn)  # readers leave it alone
    history = history + turn(1)
    await put(cold, snap("two", parent="one", messages=history))
    assert torn not in path.read_bytes()[size:]
    for reader in (cold, FileSessionStore(tmp_path)):
        got = await reader.get_snapshot(snapshot_id="two")
        assert got is not None and got.state is not None and got.state.messages == history


async def test_a_whole_frame_this_code_cannot_read_is_never_cut(tmp_path: Path) -> None:
    store = FileSessionStore(tmp_path)
    await put(store, snap("a"))
    path = journal_path(tmp_path)
    with path.open("ab") as f:
        f.write(encode_frame(b"\x63 from a newer turnkit"))
    size = path.stat().st_size
    for attempt in (lambda s: s.get_snapshot(snapshot_id="a"), lambda s: put(s, snap("b"))):
        with pytest.raises(TurnkitError) as err:
            await attempt(FileSessionStore(tmp_path))
        assert err.value.status == "DATA_LOSS" and "unknown kind" in err.value.message
    assert path.stat().st_size == size


async def test_without_fsync_it_still_round_trips(tmp_path: Path) -> None:
    store = FileSessionStore(tmp_path, fsync=False)
    saved = await put(store, snap("a", messages=turn(0), custom={"k": 1}))
    got = await FileSessionStore(tmp_path).get_snapshot(snapshot_id="a")
    assert got is not None and got.to_wire() == saved.to_wire()


# --- size and thread hops of short turns ---------------------------------------------------------


def short_turns(n: int) -> list[tuple[SessionSnapshot, list[Message]]]:
    """A conversation like benchmarks/turns.py: uuid ids, "message N" and a fixed reply, real timestamps."""
    rng = random.Random(7)
    new_id = lambda: str(uuid.UUID(int=rng.getrandbits(128), version=4))  # noqa: E731
    session, parent = new_id(), None
    history: list[Message] = []
    out = []
    for i in range(n):
        history = [*history, msg("user", f"message {i + 1}"), msg("model", "ok, noted.")]
        at = (T0 + timedelta(seconds=i, microseconds=rng.randrange(10**6))).isoformat().replace("+00:00", "Z")
        snapshot = snap(
            new_id(),
            session=session,
            parent=parent,
            messages=history,
            created_at=at,
            updated_at=at,
            finish_reason="stop",
        )
        out.append((snapshot, history))
        parent = snapshot.snapshot_id
    return out


async def test_short_turns_cost_little_disk(tmp_path: Path) -> None:
    store = FileSessionStore(tmp_path)
    sizes = []
    for snapshot, _ in short_turns(200):
        await put(store, snapshot)
        sizes.append(store.stored_bytes())
    history = short_turns(200)[-1][1]
    history_bytes = len(json.dumps([m.to_wire() for m in history], separators=(",", ":")))
    # Each snapshot costs its new messages and a record compressed against its parent's.
    assert store.stored_bytes() <= 2 * history_bytes, (store.stored_bytes(), history_bytes)
    growth = [b - a for a, b in itertools.pairwise(sizes)]
    assert max(growth[CHAIN:]) <= 400 and sum(growth[-100:]) / 100 <= 160, growth
    assert store.stored_bytes() == journal_bytes(tmp_path)
    latest = await FileSessionStore(tmp_path).get_snapshot(session_id=short_turns(1)[0][0].session_id)
    assert latest is not None and latest.state is not None and latest.state.messages == history


async def test_a_hot_turn_takes_two_hops_and_reads_take_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hops: list[str] = []
    submit = WorkerThread.submit

    def counting(self: Any, fn: Any, *args: Any) -> Any:
        hops.append(fn.__name__)
        return submit(self, fn, *args)

    monkeypatch.setattr(WorkerThread, "submit", counting)
    store = FileSessionStore(tmp_path)
    turns = short_turns(20)
    for snapshot, _ in turns[:10]:
        await put(store, snapshot)
    for snapshot, history in turns[10:]:
        hops.clear()
        await put(store, snapshot)  # reads itself (absent), appends messages, writes the record
        assert hops == ["append_log", "put_record"]
        got = await store.get_snapshot(session_id=snapshot.session_id)
        assert got is not None and got.state is not None and got.state.messages == history
        assert await store.read_status(snapshot.snapshot_id) == "completed"
        assert hops == ["append_log", "put_record"]  # answered from the index


async def test_cold_lookups_take_no_hop_and_leave_the_cache_to_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Many sessions, each looked up once by a new instance: nothing is cached, yet no read needs the
    # worker thread (a hop costs more than decoding a chain, and more still across CPUs).
    writer = FileSessionStore(tmp_path, fsync=False)
    sessions = {}
    for i in range(60):
        history = turn(i)
        await put(writer, snap(f"k{i}", session=f"s{i}", messages=history, custom={"i": i}))
        sessions[f"s{i}"] = (f"k{i}", history)
    hops: list[str] = []
    submit = WorkerThread.submit

    def counting(self: Any, fn: Any, *args: Any) -> Any:
        hops.append(fn.__name__)
        return submit(self, fn, *args)

    monkeypatch.setattr(WorkerThread, "submit", counting)
    store = FileSessionStore(tmp_path)
    assert await store.get_snapshot(session_id="none") is None  # indexes the journal: one hop
    journal = store.backend.journal()
    journal.cache.clear()
    hops.clear()
    for session, (key, history) in sessions.items():
        got = await store.get_snapshot(session_id=session)
        assert got is not None and got.snapshot_id == key and got.state is not None
        assert got.state.messages == history and got.state.custom == {"i": int(session[1:])}
    assert hops == [] and len(journal.cache) == 0  # decoded on this thread, cached by none


@pytest.mark.parametrize("meanwhile", ["worker runs", "file closed"])
async def test_a_cold_read_racing_the_worker_is_left_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, meanwhile: str
) -> None:
    first = FileBackend(tmp_path)
    assert await first.put_record("", "k", "one " * 50, expected_rev=0, head_of="s")
    assert await first.append_log("", "log", 0, ["a", "b"])
    backend = FileBackend(tmp_path)
    assert await backend.get_head("", "s") == "k"  # indexed
    journal = backend.journal()
    journal.cache.clear()
    pread = os.pread

    def racing(fd: int, n: int, offset: int) -> bytes:
        # What the worker may do while a caller's thread decodes: change the index, or close the
        # file (its descriptor then reads as nothing, or as some other file).
        if meanwhile == "worker runs":
            journal.busy += 2
            return pread(fd, n, offset)
        raise OSError(9, "Bad file descriptor")

    monkeypatch.setattr(os, "pread", racing)
    assert journal.peek_record("k") is MISS and journal.peek_log("log", 0, 2) is MISS
    monkeypatch.setattr(os, "pread", pread)
    got = await backend.get_record("", "k")  # the worker answers instead
    assert got is not None and (got.rev, got.data) == (1, "one " * 50)
    assert await backend.read_log("", "log", 0, 2) == ["a", "b"]


# --- bounded reads, other instances and processes -------------------------------------------------


async def test_reads_touch_only_what_they_need(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FileSessionStore(tmp_path, fsync=False)
    for snapshot, _ in short_turns(300):
        await put(store, snapshot)
    journal = FileBackend(tmp_path).journal()
    key = short_turns(150)[-1][0].snapshot_id
    assert journal.get_record(key) is not None and journal.rebuilds == 1  # one replay, at first use
    read: list[int] = []
    pread = os.pread

    def counting(fd: int, n: int, offset: int) -> bytes:
        read.append(n)
        return pread(fd, n, offset)

    monkeypatch.setattr(os, "pread", counting)
    journal.cache.clear()
    for snapshot, _ in short_turns(300)[::37]:
        read.clear()
        assert journal.get_record(snapshot.snapshot_id) is not None
        assert len(read) <= CHAIN and sum(read) <= 4096  # a chain of frames, not the journal
    read.clear()
    await put(store, snap("new", session="other", custom="x" * 1000))
    assert journal.get_record("new") is not None
    assert sum(read) < 1500 and journal.rebuilds == 1  # just the new frame
    assert journal_path(tmp_path).stat().st_size > 30_000  # what a replay would read


async def test_an_instance_sees_another_ones_writes_at_once(tmp_path: Path) -> None:
    first, second = FileBackend(tmp_path), FileBackend(tmp_path)
    assert await first.put_record("", "k", "one", expected_rev=0, head_of="s")
    for rev in range(1, 20):
        got = await second.get_record("", "k")  # the second instance's index is warm from now on
        assert got is not None and (got.rev, got.data) == (rev, ["one", "two"][rev % 2 == 0])
        writer = [first, second][rev % 2]
        assert await writer.put_record("", "k", ["one", "two"][rev % 2], expected_rev=rev)
        assert not await writer.put_record("", "k", "stale", expected_rev=rev)
        reader = [second, first][rev % 2]
        latest = await reader.get_record("", "k")
        assert latest is not None and latest.rev == rev + 1
    assert await second.get_head("", "s") == "k"


async def test_a_second_instance_sees_the_first_ones_writes(tmp_path: Path) -> None:
    first, second = FileSessionStore(tmp_path), FileSessionStore(tmp_path)
    history: list[Message] = turn(0)
    await put(first, snap("a", messages=history))
    await put(second, snap("b", parent="a", messages=history + turn(1)))  # second materialises `a` cold
    history = history + turn(1) + turn(2)
    await put(first, snap("c", parent="b", messages=history))  # first: `b` comes from disk
    latest = await second.get_snapshot(session_id="s1")
    assert latest is not None and latest.snapshot_id == "c"
    assert latest.state == SessionState(session_id="s1", messages=history, custom=None, artifacts=None)


async def test_only_so_many_journals_stay_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(file_module, "MAX_OPEN_JOURNALS", 3)
    store = FileSessionStore(tmp_path)
    tenants = [f"tenant-{i}" for i in range(8)]
    for rounds in range(2):
        for tenant in tenants:
            await put(store, snap(f"x{rounds}", custom=tenant), context={"tenant": tenant})
    assert len(store.backend.journals.by_tenant) == 3
    for tenant in tenants:  # the closed ones reopen and rebuild their index
        for rounds in range(2):
            got = await store.get_snapshot(snapshot_id=f"x{rounds}", context={"tenant": tenant})
            assert got is not None and got.state is not None and got.state.custom == tenant


# --- compaction -----------------------------------------------------------------------------------


async def test_rewrites_are_compacted_away(tmp_path: Path) -> None:
    limit = 2 << 10
    store = FileSessionStore(tmp_path, compact_min_bytes=limit, fsync=False)
    watcher = FileSessionStore(tmp_path)  # another instance, its index built before any compaction
    history: list[Message] = []
    for i in range(5):
        history = history + turn(i)
        await put(store, snap(f"t{i}", parent=f"t{i - 1}" if i else None, messages=history, custom={"i": i}))
    await put(store, snap("other", session="s2", messages=turn(7)))
    assert (await watcher.get_snapshot(snapshot_id="t4")) is not None
    watcher_journal = watcher.backend.journal()
    rebuilds = watcher_journal.rebuilds
    async with store.session_lease("held", wait=0):
        async with store.session_lease("released", wait=0):
            pass
        sizes = []
        for beat in range(400):  # heartbeats: the record of t4 rewritten over and over
            at = (T0 + timedelta(seconds=beat)).isoformat()
            await store.save_snapshot("t4", lambda s, at=at: s and s.model_copy(update={"heartbeat_at": at}))
            sizes.append(store.stored_bytes())
        assert store.backend.journal().compactions >= 3
        # Never much more than the live data plus the threshold, however many rewrites.
        assert max(sizes) <= 2 * limit + 1024, sizes
        # The other instance notices the new file and rebuilds its index from it.
        got = await watcher.get_snapshot(snapshot_id="t4")
        assert (
            got is not None
            and got.heartbeat_at is not None
            and got.heartbeat_at.startswith("2025-01-01T00:06:39")
        )
        assert watcher_journal.rebuilds > rebuilds
        for reader in (watcher, FileSessionStore(tmp_path)):
            assert (await reader.get_snapshot(session_id="s1")).snapshot_id == "t4"  # type: ignore[union-attr]
            assert (await reader.get_snapshot(session_id="s2")).snapshot_id == "other"  # type: ignore[union-attr]
            reader.clear_cache()
            for i in range(5):
                got = await reader.get_snapshot(snapshot_id=f"t{i}")
                assert got is not None and got.state is not None and got.state.custom == {"i": i}
                assert got.state.messages == history[: 2 * i + 2]
            with pytest.raises(TurnkitError):  # the held lease survived compaction...
                async with reader.session_lease("held", wait=0):
                    pass
            async with reader.session_lease("released", wait=0):  # ...and the released one is gone
                pass
    assert not [name for name in listing(tmp_path) if name.startswith(".")]  # no temp files left
    (tmp_path / ".default.tkj.0123.tmp").write_bytes(b"a compactor died here")
    assert await store.backend.compact()
    assert not [name for name in listing(tmp_path) if name.startswith(".")]  # swept up


async def test_compaction_keeps_logs_readable_in_any_range(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path, compact_min_bytes=1 << 30)
    entries = {
        log: [f'{{"log":"{log}","i":{i},"pad":"{"p" * (i % 50)}"}}' for i in range(700)] for log in "abc"
    }
    for i in range(0, 700, 7):  # three logs appended in turns, so their frames interleave
        for log, lines in entries.items():
            assert await backend.append_log("", log, i, lines[i : i + 7])
    for i in range(50):
        assert await backend.put_record("", "rec", f"revision {i}", expected_rev=i, head_of="s")
    before = backend.stored_bytes()
    assert await backend.compact()
    assert backend.stored_bytes() < before
    for reader in (backend, FileBackend(tmp_path)):
        for log, lines in entries.items():
            for start, end in [(0, 700), (0, 1), (123, 124), (199, 650), (690, 800), (700, 701)]:
                assert await reader.read_log("", log, start, end) == lines[start:end]
        record = await reader.get_record("", "rec")
        assert record is not None and (record.rev, record.data) == (50, "revision 49")
        assert await reader.get_head("", "s") == "rec"
    # Appending and compacting go on as before.
    assert await backend.append_log("", "a", 700, ["more"])
    assert not await backend.append_log("", "a", 700, ["again"])
    assert await FileBackend(tmp_path).read_log("", "a", 699, 702) == [entries["a"][699], "more"]
    assert not await backend.compact("no such tenant")


# --- another process sharing the directory ---------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import asyncio, sys
    from turnkit.sessions import FileSessionStore
    from turnkit.types import Message

    def bump(s):
        state = s.state
        note = Message.model_validate({"role": "user", "content": [{"text": "child"}]})
        new = state.model_copy(update={"custom": {"n": state.custom["n"] + 1},
                                       "messages": [*state.messages, note]})
        return s.model_copy(update={"state": new})

    async def main():
        store = FileSessionStore(sys.argv[1])
        await store.get_snapshot(snapshot_id="counter")  # warm up before the start signal
        print("ready", flush=True)
        sys.stdin.readline()
        await store.save_snapshot("counter", bump)
        # Each side goes on only once the other has written too, so the two really overlap.
        while not any(m.text == "parent" for m in (await store.get_snapshot(snapshot_id="counter")).state.messages):
            await asyncio.sleep(0.001)
        for _ in range(int(sys.argv[2]) - 1):
            await store.save_snapshot("counter", bump)

    asyncio.run(main())
    """
)


def bump(author: str) -> Any:
    def fn(s: SessionSnapshot | None) -> SessionSnapshot:
        assert s is not None and s.state is not None
        note = msg("user", author)
        state = s.state.model_copy(
            update={"custom": {"n": s.state.custom["n"] + 1}, "messages": [*(s.state.messages or []), note]}
        )
        return s.model_copy(update={"state": state})

    return fn


async def wrote(store: FileSessionStore, author: str) -> None:
    """Return once `author` has a message in the counter snapshot."""
    while True:
        got = await store.get_snapshot(snapshot_id="counter")
        if got and got.state and any(m.text == author for m in got.state.messages or []):
            return
        await asyncio.sleep(0.001)


async def test_two_processes_lose_no_update(tmp_path: Path) -> None:
    store = FileSessionStore(tmp_path)
    await put(store, snap("counter", custom={"n": 0}, messages=[]))
    rounds = 60
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WORKER,
        str(tmp_path),
        str(rounds),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdin is not None and child.stdout is not None
    assert await asyncio.wait_for(child.stdout.readline(), 30) == b"ready\n"
    child.stdin.write(b"go\n")
    await child.stdin.drain()
    await store.save_snapshot("counter", bump("parent"))
    await asyncio.wait_for(wrote(store, "child"), 30)
    for _ in range(rounds - 1):
        await store.save_snapshot("counter", bump("parent"))
    assert await asyncio.wait_for(child.wait(), 60) == 0
    got = await FileSessionStore(tmp_path).get_snapshot(snapshot_id="counter")
    assert got is not None and got.state is not None
    assert got.state.custom == {"n": 2 * rounds}
    authors = [m.text for m in got.state.messages or []]
    assert authors.count("parent") == authors.count("child") == rounds
    # The writers interleaved (each waited for the other's first write after its own).
    assert sum(1 for a, b in itertools.pairwise(authors) if a != b) >= 2, authors


COMPACTOR = textwrap.dedent(
    """
    import asyncio, sys
    from turnkit.sessions._file import FileBackend

    async def main():
        backend = FileBackend(sys.argv[1], compact_min_bytes=2048)
        rev = (await backend.get_record("", "k")).rev
        for i in range(300):
            assert await backend.put_record("", "k", f"from the child {i}", expected_rev=rev + i)
        assert await backend.append_log("", "log", 2, ["child entry"])
        print(backend.journal().compactions, flush=True)

    asyncio.run(main())
    """
)


async def test_another_process_compacting_is_noticed(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path)
    assert await backend.put_record("", "k", "from the parent", expected_rev=0, head_of="s")
    assert await backend.append_log("", "log", 0, ["one", "two"])
    assert (await backend.get_record("", "k")) is not None  # indexed and cached here
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", COMPACTOR, str(tmp_path), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(child.communicate(), 60)
    assert child.returncode == 0 and int(out) >= 1  # the child compacted the journal at least once
    rebuilds = backend.journal().rebuilds
    record = await backend.get_record("", "k")
    assert record is not None and (record.rev, record.data) == (301, "from the child 299")
    assert backend.journal().rebuilds == rebuilds + 1
    assert await backend.read_log("", "log", 0, 5) == ["one", "two", "child entry"]
    assert await backend.get_head("", "s") == "k"
    assert await backend.put_record("", "k", "parent again", expected_rev=301)
