"""The SessionStore contract, run against every store. Add a store by adding one entry to STORES."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from turnkit.errors import TurnkitError
from turnkit.sessions import FileSessionStore, InMemorySessionStore, LinearSessionStore, SessionStore
from turnkit.sessions._memory import MemoryBackend
from turnkit.types import (
    Artifact,
    ErrorInfo,
    Media,
    Message,
    Part,
    SessionSnapshot,
    SessionState,
    SnapshotStatus,
    ToolRequest,
)

# --- the stores under test -------------------------------------------------------------------------


@dataclass
class StoreCase:
    """How to open a store over one storage location, as often as a test likes, and measure it."""

    open: Callable[..., LinearSessionStore]  # each call: a new store instance (cold cache), same data
    stored_bytes: Callable[[], int]
    url: str | None = None  # how another process opens the same store (`store_from_url`), if it can


def memory_case(tmp_path: Path) -> StoreCase:
    backend = MemoryBackend()
    return StoreCase(lambda **o: InMemorySessionStore(backend=backend, **o), backend.stored_bytes)


def file_case(tmp_path: Path) -> StoreCase:
    directory = tmp_path / "sessions"
    return StoreCase(
        lambda **o: FileSessionStore(directory, **o),
        lambda: sum(p.stat().st_size for p in directory.rglob("*") if p.is_file()),
        f"file:{directory}",
    )


STORES: dict[str, Callable[[Path], StoreCase]] = {"memory": memory_case, "file": file_case}
# Stores with a module of their own (`tests/store_case_<name>.py` defining `store_case(tmp_path)`),
# e.g. those needing a database server: they join every contract and conformance test.
for _name in ("sqlite", "postgres", "redis"):
    if importlib.util.find_spec(f"store_case_{_name}") is not None:
        STORES[_name] = importlib.import_module(f"store_case_{_name}").store_case


@pytest.fixture(params=sorted(STORES))
def case(request: pytest.FixtureRequest, tmp_path: Path) -> StoreCase:
    return STORES[request.param](tmp_path)


@pytest.fixture
def store(case: StoreCase) -> LinearSessionStore:
    return case.open()


# --- helpers ---------------------------------------------------------------------------------------

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def msg(role: str, text: str) -> Message:
    return Message.model_validate({"role": role, "content": [{"text": text}]})


def turn(i: int, size: int = 40) -> list[Message]:
    return [msg("user", f"question {i} " + "q" * size), msg("model", f"answer {i} " + "a" * (4 * size))]


def snap(
    snapshot_id: str,
    *,
    session: str | None = "s1",
    parent: str | None = None,
    status: SnapshotStatus | None = "completed",
    messages: Sequence[Message] | None = (),
    custom: Any = None,
    artifacts: Sequence[Artifact] | None = None,
    **meta: Any,
) -> SessionSnapshot:
    state = SessionState(
        session_id=session,
        messages=None if messages is None else list(messages),
        custom=custom,
        artifacts=None if artifacts is None else list(artifacts),
    )
    fields = {"created_at": T0.isoformat(), **meta}
    return SessionSnapshot(
        snapshot_id=snapshot_id, session_id=session, parent_id=parent, status=status, state=state, **fields
    )


def always(snapshot: SessionSnapshot) -> Callable[[SessionSnapshot | None], SessionSnapshot | None]:
    """A mutator that writes `snapshot` whatever is there."""
    return lambda _old: snapshot


async def put(store: LinearSessionStore, snapshot: SessionSnapshot, **kw: Any) -> SessionSnapshot:
    saved = await store.save_snapshot(snapshot.snapshot_id, always(snapshot), **kw)
    assert saved is not None
    return saved


async def get(store: LinearSessionStore, snapshot_id: str, **kw: Any) -> SessionSnapshot:
    got = await store.get_snapshot(snapshot_id=snapshot_id, **kw)
    assert got is not None, snapshot_id
    return got


def change(**fields: Any) -> Callable[[SessionSnapshot | None], SessionSnapshot | None]:
    """A mutator that changes fields of the existing snapshot."""
    return lambda s: None if s is None else s.model_copy(update=fields)


async def latest_id(store: LinearSessionStore, session_id: str, **kw: Any) -> str | None:
    got = await store.get_snapshot(session_id=session_id, **kw)
    return None if got is None else got.snapshot_id


def art(name: str | None, text: str) -> Artifact:
    return Artifact(name=name, parts=[Part(text=text)])


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


# --- round trip ------------------------------------------------------------------------------------


async def test_round_trip_keeps_every_field(case: StoreCase) -> None:
    store = case.open()
    rich = Message(
        role="model",
        content=[
            Part(text="see"),
            Part(media=Media(url="data:image/png;base64,AAAA", content_type="image/png")),
            Part(tool_request=ToolRequest(name="lookup", ref="r1", input={"q": [1, 2]}), metadata={"k": 1}),
        ],
        metadata={"latency": 3.5},
    )
    original = snap(
        "snap-1",
        parent=None,
        status="failed",
        messages=[msg("user", "hi"), rich],
        custom={"nested": {"list": [1, "two", None, True]}, "n": 1.5},
        artifacts=[art("report", "v1"), art(None, "loose")],
        updated_at=(T0 + timedelta(seconds=1)).isoformat(),
        heartbeat_at=(T0 + timedelta(seconds=2)).isoformat(),
        finish_reason="failed",
        error=ErrorInfo(status="INTERNAL", message="boom", details={"x": 1}),
    )
    saved = await put(store, original)
    for reader in (store, case.open()):  # warm cache, then a cold one
        got = await get(reader, "snap-1")
        assert got.to_wire() == original.to_wire() == saved.to_wire()
        wire = got.to_wire()
        assert {"snapshotId", "sessionId", "createdAt", "updatedAt", "heartbeatAt", "finishReason"} <= set(
            wire
        )
        assert wire["state"]["messages"][1]["content"][2]["toolRequest"]["name"] == "lookup"


async def test_absent_and_empty_state_fields_round_trip(store: LinearSessionStore) -> None:
    bare = SessionSnapshot(snapshot_id="bare", created_at=T0.isoformat())
    none_lists = snap("none-lists", messages=None, artifacts=None, custom=None)
    empty_lists = snap("empty-lists", parent="none-lists", messages=[], artifacts=[], custom={})
    back_to_none = snap("back-to-none", parent="empty-lists", messages=None, artifacts=None, custom=0)
    for s in (bare, none_lists, empty_lists, back_to_none):
        await put(store, s)
    store.clear_cache()
    for s in (bare, none_lists, empty_lists, back_to_none):
        assert (await get(store, s.snapshot_id)).to_wire() == s.to_wire()


async def test_json_values_that_python_thinks_equal_stay_distinct(store: LinearSessionStore) -> None:
    await put(store, snap("a", custom={"flag": 1, "xs": [1, 0]}))
    await put(store, snap("b", parent="a", custom={"flag": True, "xs": [1.0, False]}))
    store.clear_cache()
    got = (await get(store, "b")).state
    assert got is not None
    assert json.dumps(got.custom) == json.dumps({"flag": True, "xs": [1.0, False]})


async def test_what_a_caller_gets_is_a_copy(store: LinearSessionStore) -> None:
    history = [msg("user", "one")]
    saved = await put(store, snap("a", messages=history, custom={"list": [1]}, artifacts=[art("x", "1")]))
    assert saved.state is not None and saved.state.messages is not None
    saved.state.messages.append(msg("user", "injected"))
    saved.state.custom["list"].append(2)
    saved.state.artifacts = []
    history.append(msg("user", "caller keeps appending to its own list"))
    got = await get(store, "a")
    assert got.state is not None
    assert [m.text for m in got.state.messages or []] == ["one"]
    assert got.state.custom == {"list": [1]}
    assert len(got.state.artifacts or []) == 1


# --- chains, branches, heads -----------------------------------------------------------------------


async def test_parent_chain_and_branches_read_back(case: StoreCase) -> None:
    store = case.open(checkpoint_every=4)
    expected: dict[str, SessionSnapshot] = {}

    async def child(sid: str, parent: str | None, history: list[Message], **kw: Any) -> list[Message]:
        expected[sid] = await put(store, snap(sid, parent=parent, messages=history, **kw))
        return history

    root = await child("root", None, turn(0), custom={"n": 0}, artifacts=[art("plan", "p0")])
    a = await child("a", "root", root + turn(1), custom={"n": 1}, artifacts=[art("plan", "p0")])
    await child("b", "a", a + turn(2), custom={"n": 2, "extra": [1]}, artifacts=[art("plan", "p2")])
    # Two children of the older snapshot `a`: branches in mid-log.
    c = await child("c", "a", a + turn(3), custom={"n": 3}, artifacts=[art("plan", "p0"), art(None, "x")])
    await child("d", "a", [*a, msg("user", "other way")], custom=None, artifacts=[art("plan", "p0")])
    await child("c2", "c", c + turn(4), custom={"n": 4}, artifacts=[art("plan", "p4"), art(None, "x")])
    # Not an extension of the parent: history rewritten, artifacts dropped.
    await child("rewrite", "c2", [msg("system", "summary"), *turn(5)], custom=[1, 2], artifacts=[])
    for reader in (store, case.open()):
        for sid, want in expected.items():
            assert (await get(reader, sid)).to_wire() == want.to_wire(), sid


async def test_deep_branching_stays_bounded(case: StoreCase) -> None:
    k = 3
    store = case.open(checkpoint_every=k)
    history = turn(0)
    await put(store, snap("n0", messages=history))
    # Each step branches from the older of two siblings, so every step starts a new log segment.
    for i in range(1, 12):
        await put(store, snap(f"side{i}", parent=f"n{i - 1}", messages=[*history, msg("user", f"side {i}")]))
        history = history + turn(i)
        await put(store, snap(f"n{i}", parent=f"n{i - 1}", messages=history))
    cold = case.open(checkpoint_every=k)
    got = await get(cold, "n11")
    assert got.state is not None and got.state.messages == history
    assert cold.stats.logs_read <= k and cold.stats.records_read <= k


async def test_session_lookup_returns_the_latest_created(store: LinearSessionStore) -> None:
    assert await store.get_snapshot(session_id="s1") is None
    await put(store, snap("one", messages=turn(1)))
    await put(store, snap("two", parent="one", messages=turn(1) + turn(2)))
    await put(store, snap("other", session="s2"))
    assert await latest_id(store, "s1") == "two"
    # A branch from the older snapshot is the newest snapshot of the session.
    await put(store, snap("branch", parent="one", messages=turn(1) + turn(3)))
    latest = await store.get_snapshot(session_id="s1")
    assert latest is not None and latest.snapshot_id == "branch"
    assert latest.state is not None and latest.state.messages == turn(1) + turn(3)
    # Rewriting an older snapshot does not move the head.
    await store.save_snapshot("one", change(updated_at=T0.isoformat()))
    assert await latest_id(store, "s1") == "branch"
    assert await latest_id(store, "s2") == "other"


async def test_lookup_needs_exactly_one_key(store: LinearSessionStore) -> None:
    for lookup in (store.get_snapshot(), store.get_snapshot(snapshot_id="a", session_id="s")):
        with pytest.raises(TurnkitError) as err:
            await lookup
        assert err.value.status == "INVALID_ARGUMENT"


async def test_rewriting_a_parent_keeps_its_children_readable(case: StoreCase) -> None:
    store = case.open()
    await put(
        store, snap("p", custom={"a": 1, "big": "x" * 200}, artifacts=[art("r", "1")], messages=turn(0))
    )
    child = await put(
        store, snap("c", parent="p", custom={"a": 1, "big": "x" * 200, "b": 2}, artifacts=[art("r", "2")])
    )
    rewritten = await put(store, snap("p", custom={"a": 99}, artifacts=[art("r", "9")], messages=turn(7)))
    for reader in (store, case.open()):
        assert (await get(reader, "c")).to_wire() == child.to_wire()
        assert (await get(reader, "p")).to_wire() == rewritten.to_wire()


# --- saving: skip, normalisation, statuses ---------------------------------------------------------


async def test_save_skip_returns_existing_and_writes_nothing(store: LinearSessionStore) -> None:
    assert await store.save_snapshot("nope", lambda old: None) is None
    assert await store.get_snapshot(snapshot_id="nope") is None
    original = await put(store, snap("a", custom={"v": 1}))
    seen: list[SessionSnapshot | None] = []

    def watch(old: SessionSnapshot | None) -> None:
        seen.append(old)

    result = await store.save_snapshot("a", watch)
    assert result is not None and result.to_wire() == original.to_wire()
    assert seen[0] is not None and seen[0].to_wire() == original.to_wire()


async def test_a_mutator_may_edit_what_it_was_given(case: StoreCase) -> None:
    store = case.open()
    await put(store, snap("a", status="pending", messages=turn(0), custom={"tags": []}))

    def edit(s: SessionSnapshot | None) -> SessionSnapshot | None:
        assert s is not None and s.state is not None and s.state.messages is not None
        s.state.messages.append(msg("user", "more"))
        s.state.custom["tags"].append("edited")
        s.status = "completed"
        return s

    saved = await store.save_snapshot("a", edit)
    for reader in (store, case.open()):
        got = (await get(reader, "a")).state
        assert got is not None and got.messages is not None
        assert got.messages[-1].text == "more" and got.custom == {"tags": ["edited"]}
    assert saved is not None and saved.status == "completed"


async def test_save_forces_the_id_and_guards_structure(store: LinearSessionStore) -> None:
    saved = await put(store, snap("other-id"), context=None)
    assert saved.snapshot_id == "other-id"
    moved = await store.save_snapshot("x", always(snap("not-x")))
    assert moved is not None and moved.snapshot_id == "x"
    assert await store.get_snapshot(snapshot_id="not-x") is None
    for bad in (snap("x", session="elsewhere"), snap("x", parent="x")):
        with pytest.raises(TurnkitError) as err:
            await store.save_snapshot("x", always(bad))
        assert err.value.status == "INVALID_ARGUMENT"


@pytest.mark.parametrize("terminal", ["completed", "failed", "aborted"])
async def test_terminal_statuses_are_absorbing(store: LinearSessionStore, terminal: str) -> None:
    await put(store, snap("t", status="pending"))
    hb = (T0 + timedelta(seconds=5)).isoformat()
    beat = await store.save_snapshot("t", change(heartbeat_at=hb))
    assert beat is not None and beat.heartbeat_at == hb  # heartbeats on pending are fine
    await store.save_snapshot("t", change(status=terminal))
    for other in ("pending", "completed", "failed", "aborted", "expired"):
        if other == terminal:
            continue
        got = await store.save_snapshot("t", change(status=other, finish_reason="stop"))
        assert got is not None and got.status == terminal and got.finish_reason is None
    assert (await get(store, "t")).status == terminal
    # The same terminal status may still carry other changes.
    got = await store.save_snapshot("t", change(finish_reason="aborted"))
    assert got is not None and got.finish_reason == "aborted"


async def test_pending_expires_on_read_only(case: StoreCase) -> None:
    clock = Clock()
    store = case.open(expire_after=5, clock=clock)
    await put(store, snap("hb", status="pending", heartbeat_at=T0.isoformat()))
    await put(store, snap("no-hb", status="pending", created_at=T0.isoformat()))
    await put(store, snap("done", status="completed", created_at=T0.isoformat()))
    clock.now = T0 + timedelta(seconds=4)
    assert (await get(store, "hb")).status == "pending"
    clock.now = T0 + timedelta(seconds=6)
    assert [(await get(store, s)).status for s in ("hb", "no-hb", "done")] == [
        "expired",
        "expired",
        "completed",
    ]
    assert await store.read_status("hb") == "expired"
    # Never stored: a store with a longer window sees pending.
    assert (await get(case.open(expire_after=3600, clock=clock), "hb")).status == "pending"
    # The mutator sees `expired`; handing it back stores pending, and a fresh heartbeat revives it.
    seen: list[str | None] = []

    def beat(s: SessionSnapshot | None) -> SessionSnapshot | None:
        assert s is not None
        seen.append(s.status)
        return s.model_copy(update={"heartbeat_at": clock.now.isoformat()})

    revived = await store.save_snapshot("hb", beat)
    assert seen == ["expired"] and revived is not None and revived.status == "pending"
    await store.save_snapshot("no-hb", lambda s: s)  # expired handed back unchanged
    assert (await get(case.open(expire_after=3600, clock=clock), "no-hb")).status == "pending"


# --- concurrency -----------------------------------------------------------------------------------


class YieldingBackend:
    """Wraps a backend so every call yields to the event loop first: concurrent saves interleave."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(0)
            return await method(*args, **kwargs)

        return call


async def test_concurrent_saves_lose_no_update(store: LinearSessionStore) -> None:
    store.backend = YieldingBackend(store.backend)
    calls = 0

    def increment(s: SessionSnapshot | None) -> SessionSnapshot:
        nonlocal calls
        calls += 1
        if s is None:
            return snap("counter", custom={"n": 1}, messages=[msg("user", "1")])
        assert s.state is not None
        n = s.state.custom["n"] + 1
        messages = [*(s.state.messages or []), msg("user", str(n))]
        state = s.state.model_copy(update={"custom": {"n": n}, "messages": messages})
        return s.model_copy(update={"state": state})

    workers = 40
    await asyncio.gather(*(store.save_snapshot("counter", increment) for _ in range(workers)))
    got = await get(store, "counter")
    assert got.state is not None and got.state.custom == {"n": workers}
    assert [m.text for m in got.state.messages or []] == [str(i) for i in range(1, workers + 1)]
    assert store.stats.conflicts > 0 and calls > workers  # the race really happened, and was retried
    store.clear_cache()
    assert (await get(store, "counter")).to_wire() == got.to_wire()


# --- tenancy and ids -------------------------------------------------------------------------------


async def test_tenants_are_isolated(case: StoreCase) -> None:
    store = case.open()
    acme, globex = {"tenant": "acme"}, {"tenant": "globex", "auth": {"uid": "u"}}
    await put(store, snap("shared-id", session="sess", custom="acme's"), context=acme)
    for ctx in (globex, None, {"tenant": "ACME"}):
        assert await store.get_snapshot(snapshot_id="shared-id", context=ctx) is None
        assert await store.get_snapshot(session_id="sess", context=ctx) is None
        assert await store.read_status("shared-id", context=ctx) is None
    await put(store, snap("shared-id", session="sess", custom="globex's"), context=globex)
    for reader in (store, case.open()):
        mine = (await get(reader, "shared-id", context=acme)).state
        assert mine is not None and mine.custom == "acme's"
        latest = await reader.get_snapshot(session_id="sess", context=globex)
        assert latest is not None and latest.state is not None and latest.state.custom == "globex's"


async def test_tenant_function_is_configurable_and_checked(case: StoreCase) -> None:
    store = case.open(tenant_of=lambda ctx: (ctx or {}).get("auth", {}).get("org"))
    await put(store, snap("a"), context={"auth": {"org": "../../evil"}, "tenant": "ignored"})
    assert await store.get_snapshot(snapshot_id="a", context={"tenant": "ignored"}) is None
    assert await store.get_snapshot(snapshot_id="a", context={"auth": {"org": "../../evil"}}) is not None
    for org in ("", "a\x00b", "x" * 257):
        with pytest.raises(TurnkitError) as err:
            await store.get_snapshot(snapshot_id="a", context={"auth": {"org": org}})
        assert err.value.status == "INVALID_ARGUMENT"


HOSTILE_IDS = [
    "../../etc/passwd",
    "a/b",
    "..",
    ".",
    "/",
    "\\..\\x",
    "x'; DROP TABLE snapshots; --",
    '"quoted"',
    "*",
    "key:with:colons{hashtag}",
    "%2e%2e%2f",
    "  spaces  ",
    "A",
    "a",
    "ünïcødé ✓ 😀",
    "CON",
    "x" * 256,
    "y" * 255 + "😀",
]
BAD_IDS: list[Any] = ["", "a\x00b", "line\nbreak", "tab\t", "del\x7f", "c1\x85", "x" * 257, "\ud800", 7]


async def test_bad_ids_are_rejected(store: LinearSessionStore) -> None:
    await put(store, snap("fine"))

    def new_with(**update: Any) -> SessionSnapshot:
        return snap("new", session=None).model_copy(update=update)

    attempts: list[Callable[[Any], Any]] = [
        lambda bad: store.get_snapshot(snapshot_id=bad),
        lambda bad: store.get_snapshot(session_id=bad),
        lambda bad: store.save_snapshot(bad, lambda _: snap("fine")),
        lambda bad: store.read_status(bad),
        lambda bad: store.save_snapshot("new", lambda _: new_with(session_id=bad)),
        lambda bad: store.save_snapshot("new", lambda _: new_with(parent_id=bad)),
    ]
    for bad in [*BAD_IDS, None]:
        for attempt in attempts if bad is not None else attempts[2:4]:  # elsewhere None means "absent"
            with pytest.raises(TurnkitError) as err:
                await attempt(bad)
            assert err.value.status == "INVALID_ARGUMENT", repr(bad)
    assert await store.get_snapshot(snapshot_id="new") is None


# --- linearity -------------------------------------------------------------------------------------


async def test_reads_touch_at_most_k_records(case: StoreCase) -> None:
    k = 4
    writer = case.open(checkpoint_every=k)
    history: list[Message] = []
    for i in range(13):
        history = history + turn(i)
        await put(writer, snap(f"t{i}", parent=f"t{i - 1}" if i else None, messages=history, custom={"i": i}))
    for i in range(13):
        cold = case.open(checkpoint_every=k)
        got = await get(cold, f"t{i}")
        assert (
            got.state is not None
            and got.state.custom == {"i": i}
            and len(got.state.messages or []) == 2 * i + 2
        )
        assert cold.stats.records_read == i % k + 1  # itself, then parents back to a checkpoint
        assert cold.stats.logs_read == 1
    writer.stats.reset()
    await get(writer, "t12")
    assert writer.stats.records_read == 1 and writer.stats.logs_read == 0  # warm: state came from the cache


async def test_storage_grows_linearly(case: StoreCase) -> None:
    store = case.open()
    history: list[Message] = []
    growth: list[int] = []
    parent = None
    for i in range(200):
        before = case.stored_bytes()
        reads_before = store.stats.records_read
        history = history + turn(i)
        sid = f"turn-{i:03d}"
        await put(store, snap(sid, session="long", parent=parent, messages=history, custom={"turns": i}))
        parent = sid
        growth.append(case.stored_bytes() - before)
        # Hot path: only the (absent) new record is read; the parent comes from the cache.
        assert store.stats.records_read - reads_before == 1
    assert store.stats.logs_read == 0
    history_bytes = len(json.dumps([m.to_wire() for m in history]))
    assert case.stored_bytes() <= 2 * history_bytes, (case.stored_bytes(), history_bytes)
    turn_bytes = len(json.dumps([m.to_wire() for m in turn(199)]))
    assert max(growth[100:]) <= 2 * turn_bytes + 1024  # each write is O(turn), also at turn 200
    latest = await case.open().get_snapshot(session_id="long")
    assert latest is not None and latest.state is not None and latest.state.messages == history


# --- status watching -------------------------------------------------------------------------------


def live(snapshot_id: str, status: SnapshotStatus) -> SessionSnapshot:
    return snap(snapshot_id, status=status, created_at=datetime.now(UTC).isoformat())


class Watch:
    """Runs `watch_status` in a task; `next()` is the next status it yields (or None when it ended)."""

    def __init__(self, store: LinearSessionStore, snapshot_id: str) -> None:
        self.statuses: asyncio.Queue[str | None] = asyncio.Queue()
        self.task = asyncio.create_task(self._run(store, snapshot_id))

    async def _run(self, store: LinearSessionStore, snapshot_id: str) -> None:
        async for status in store.watch_status(snapshot_id):
            await self.statuses.put(status)
        await self.statuses.put(None)

    async def next(self) -> str | None:
        return await asyncio.wait_for(self.statuses.get(), 5)


async def test_watch_status_wakes_on_local_writes(store: LinearSessionStore) -> None:
    store.poll_interval = 60  # only a notification can wake the watcher in time
    watch = Watch(store, "w")
    await asyncio.sleep(0.01)  # watching a snapshot that does not exist yet
    await put(store, live("w", "pending"))
    assert await watch.next() == "pending"
    await store.save_snapshot("w", change(status="aborted"))
    assert [await watch.next(), await watch.next()] == ["aborted", None]


async def test_watch_status_polls_for_other_writers(case: StoreCase) -> None:
    watcher_store, writer = case.open(poll_interval=0.01), case.open()
    await put(writer, live("w", "pending"))
    watch = Watch(watcher_store, "w")
    assert await watch.next() == "pending"
    await writer.save_snapshot("w", change(status="completed"))
    assert [await watch.next(), await watch.next()] == ["completed", None]


async def test_watch_status_reports_expiry(case: StoreCase) -> None:
    clock = Clock()
    store = case.open(poll_interval=0.01, expire_after=5, clock=clock)
    await put(store, snap("w", status="pending", heartbeat_at=T0.isoformat()))
    watch = Watch(store, "w")
    assert await watch.next() == "pending"
    clock.now = T0 + timedelta(seconds=10)
    assert await watch.next() == "expired"
    await store.save_snapshot("w", change(status="aborted"))
    assert [await watch.next(), await watch.next()] == ["aborted", None]


async def test_watch_status_is_part_of_the_contract(store: LinearSessionStore) -> None:
    def watch(contract: SessionStore, snapshot_id: str) -> AsyncIterator[SnapshotStatus]:
        # Typed as the Protocol: the runtime calls watch_status on any store, without probing.
        return contract.watch_status(snapshot_id)

    assert isinstance(store, SessionStore)
    await put(store, live("c", "pending"))
    statuses = watch(store, "c")
    assert await asyncio.wait_for(anext(statuses), 5) == "pending"
    await store.save_snapshot("c", change(status="failed"))
    assert await asyncio.wait_for(anext(statuses), 5) == "failed"
    with pytest.raises(StopAsyncIteration):  # a terminal status ends the watch
        await asyncio.wait_for(anext(statuses), 5)
