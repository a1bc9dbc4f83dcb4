"""FileSessionStore specifics: file layout and names, record format, crash leftovers, other processes."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from test_store_contract import HOSTILE_IDS, msg, put, snap, turn
from turnkit.errors import TurnkitError
from turnkit.sessions import FileSessionStore
from turnkit.sessions.file import encode_name
from turnkit.types import Message, SessionSnapshot, SessionState

ENCODED = r"(b[a-z2-7]+|h[0-9a-f]{64})"
NAME = re.compile(rf"^(default|t{ENCODED}|records|heads|logs|locks|{ENCODED}\.(rec|head|log)|\d\d\.lock)$")


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def test_every_name_is_encoded_and_inside_the_directory(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = FileSessionStore(root)
    tenants: list[str | None] = [None, "../../outside", "default", "a/b"]
    for tenant in tenants:
        ctx = None if tenant is None else {"tenant": tenant}
        for i, hostile in enumerate(HOSTILE_IDS):
            await put(store, snap(hostile, session=hostile, custom=[tenant, i]), context=ctx)
    assert listing(tmp_path) == ["store"]
    names = {p.name for p in root.rglob("*")}
    assert all(NAME.match(n) for n in names), sorted(n for n in names if not NAME.match(n))
    # Four tenants, each in its own directory; the tenant called "default" is not the default tenant.
    assert len([p for p in root.iterdir() if p.is_dir()]) == 4
    for tenant in tenants:
        ctx = None if tenant is None else {"tenant": tenant}
        for i, hostile in enumerate(HOSTILE_IDS):
            got = await store.get_snapshot(snapshot_id=hostile, context=ctx)
            assert got is not None and got.state is not None and got.state.custom == [tenant, i]


def test_encoded_names_are_short_and_distinct() -> None:
    ids = ["a", "A", "x" * 120, "x" * 256, "x" * 255 + "y", "😀" * 256]
    names = [encode_name(i) for i in ids]
    assert len(set(names)) == len(ids)
    assert all(len(n) <= 121 for n in names)
    assert names[0].startswith("b") and names[3].startswith("h")


async def test_record_format_and_revisions(tmp_path: Path) -> None:
    store = FileSessionStore(tmp_path)
    await put(store, snap("a", custom=1))
    await store.save_snapshot("a", lambda s: s and s.model_copy(update={"finish_reason": "stop"}))
    path = tmp_path / "default" / "records" / f"{encode_name('a')}.rec"
    header, body = path.read_text().split("\n", 1)
    assert json.loads(header) == {"rev": 2}
    record = json.loads(body)
    assert (
        record["v"] == 1 and "snapshotId" not in record["meta"] and record["meta"]["finishReason"] == "stop"
    )
    # A format this code does not know is refused rather than misread.
    path.write_text(header + "\n" + json.dumps({**record, "v": 99}))
    with pytest.raises(TurnkitError) as err:
        await FileSessionStore(tmp_path).get_snapshot(snapshot_id="a")
    assert err.value.status == "DATA_LOSS"


async def test_hashed_names_are_verified(tmp_path: Path) -> None:
    store = FileSessionStore(tmp_path)
    long_a, long_b = "a" * 200, "b" * 200
    await put(store, snap(long_a, custom="a"))
    records = tmp_path / "default" / "records"
    header = json.loads((records / f"{encode_name(long_a)}.rec").read_text().split("\n", 1)[0])
    assert header["key"] == long_a
    # Were two ids ever to hash alike, the reader would notice instead of returning the other's data.
    (records / f"{encode_name(long_a)}.rec").rename(records / f"{encode_name(long_b)}.rec")
    with pytest.raises(TurnkitError) as err:
        await FileSessionStore(tmp_path).get_snapshot(snapshot_id=long_b)
    assert err.value.status == "DATA_LOSS"


async def test_a_crashed_append_leaves_nothing_visible(tmp_path: Path) -> None:
    store = FileSessionStore(tmp_path)
    history = turn(0)
    await put(store, snap("one", messages=history))
    (log,) = (tmp_path / "default" / "logs").glob("*.log")
    size = log.stat().st_size
    with log.open("ab") as f:
        f.write(b'2 {"role":"user","content":[{"text":"half a mess')  # a writer died mid-append
    history = history + turn(1)
    await put(store, snap("two", parent="one", messages=history))
    cold = FileSessionStore(tmp_path)
    got = await cold.get_snapshot(snapshot_id="two")
    assert got is not None and got.state is not None and got.state.messages == history
    assert b"half a mess" not in log.read_bytes() and log.stat().st_size > size


async def test_without_fsync_it_still_round_trips(tmp_path: Path) -> None:
    store = FileSessionStore(tmp_path, fsync=False)
    saved = await put(store, snap("a", messages=turn(0), custom={"k": 1}))
    got = await FileSessionStore(tmp_path).get_snapshot(snapshot_id="a")
    assert got is not None and got.to_wire() == saved.to_wire()


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
