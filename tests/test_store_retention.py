"""Retention, for every store: `delete_session` forgets a session (snapshots, messages, artifacts),
`prune` removes sessions untouched for too long and superseded snapshots beyond a bound. Each shows
the bytes the store keeps going down."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from test_store_contract import StoreCase, art, case, get, put, snap, turn  # noqa: F401 - `case` is a fixture
from turnkit.errors import TurnkitError
from turnkit.sessions import LinearSessionStore, Pruned, SessionStore


async def conversation(
    store: LinearSessionStore, session: str, turns: int, *, at: datetime | None = None, **kw: Any
) -> list[str]:
    """A linear session of `turns` snapshots with messages and artifacts; returns their ids."""
    ids: list[str] = []
    history: list[Any] = []
    for i in range(turns):
        history = [*history, *turn(i)]
        stamp = (at or datetime.now(UTC)) + timedelta(seconds=i)
        ids.append(f"{session}-{i}")
        await put(
            store,
            snap(
                ids[-1],
                session=session,
                parent=ids[-2] if len(ids) > 1 else None,
                messages=history,
                custom={"turn": i, "notes": "n" * 200},
                artifacts=[art(f"a{j}", f"artifact {j} of {session}") for j in range(i + 1)],
                created_at=stamp.isoformat(),
                **kw,
            ),
        )
    return ids


def show(where: StoreCase, what: str, before: int, after: int) -> None:
    print(f"\n{where.url or 'memory'}: {what}: {before} -> {after} bytes")


async def test_delete_session_removes_its_snapshots_messages_and_artifacts(case: StoreCase) -> None:  # noqa: F811
    store = case.open()
    kept = await conversation(store, "kept", 4)
    gone = await conversation(store, "gone", 12)
    before = case.stored_bytes()
    assert await store.delete_session("gone") == 12
    after = case.stored_bytes()
    show(case, "delete_session", before, after)
    assert after < before * 0.6
    for reader in (store, case.open()):  # this instance, and a cold one (another process)
        assert await reader.get_snapshot(session_id="gone") is None
        for snapshot_id in gone:
            assert await reader.get_snapshot(snapshot_id=snapshot_id) is None
        head = await get(reader, kept[-1])
        assert len(head.state.messages or []) == 8 and len(head.state.artifacts or []) == 4
    assert await store.delete_session("gone") == 0  # deleting again: nothing there
    assert await store.delete_session("never-was") == 0


async def test_delete_session_is_refused_while_a_turn_holds_it(case: StoreCase) -> None:  # noqa: F811
    store, other = case.open(), case.open()
    await conversation(store, "busy", 2)
    async with other.session_lease("busy", wait=0):  # a turn (in another process) holds it
        with pytest.raises(TurnkitError) as err:
            await store.delete_session("busy")
        assert err.value.status == "FAILED_PRECONDITION" and "'busy'" in err.value.message
    assert await store.get_snapshot(session_id="busy") is not None  # nothing was deleted
    assert await store.delete_session("busy") == 2


async def test_delete_session_is_refused_while_a_detached_turn_runs(case: StoreCase) -> None:  # noqa: F811
    store = case.open()
    now = datetime.now(UTC).isoformat()
    await put(store, snap("bg", session="bg", status="pending", heartbeat_at=now, created_at=now))
    with pytest.raises(TurnkitError) as err:
        await store.delete_session("bg")
    assert err.value.status == "FAILED_PRECONDITION" and "pending" in err.value.message


async def test_delete_session_stays_in_its_tenant(case: StoreCase) -> None:  # noqa: F811
    store = case.open()
    await conversation(store, "s", 2)
    await put(store, snap("t-0", session="s"), context={"tenant": "t"})
    assert await store.delete_session("s", context={"tenant": "t"}) == 1
    assert await store.get_snapshot(session_id="s") is not None  # the default tenant's is untouched


async def test_prune_removes_sessions_untouched_for_longer(case: StoreCase) -> None:  # noqa: F811
    store = case.open()
    long_ago = datetime.now(UTC) - timedelta(days=40)
    old = await conversation(store, "old", 6, at=long_ago)
    await put(store, snap("t-old", session="old", created_at=long_ago.isoformat()), context={"tenant": "t"})
    recent = await conversation(store, "recent", 3)
    before = case.stored_bytes()
    pruned = await store.prune(older_than=timedelta(days=30))
    after = case.stored_bytes()
    show(case, "prune(older_than=30 days)", before, after)
    assert pruned == Pruned(sessions_deleted=2, snapshots_deleted=7, busy=[])
    assert after < before
    assert await store.get_snapshot(snapshot_id=old[-1]) is None
    assert await store.get_snapshot(snapshot_id="t-old", context={"tenant": "t"}) is None
    assert (await get(store, recent[-1])).state.messages is not None
    assert await store.prune(older_than=timedelta(days=30)) == Pruned()  # nothing more to do


async def test_the_max_age_option_is_what_prune_uses(case: StoreCase) -> None:  # noqa: F811
    store = case.open(max_age=3600.0)
    await conversation(store, "old", 2, at=datetime.now(UTC) - timedelta(hours=2))
    await conversation(store, "young", 2)
    assert (await store.prune()).sessions_deleted == 1
    assert await store.get_snapshot(session_id="old") is None
    assert await store.get_snapshot(session_id="young") is not None


async def test_prune_skips_a_session_a_turn_holds(case: StoreCase) -> None:  # noqa: F811
    store = case.open()
    await conversation(store, "old", 2, at=datetime.now(UTC) - timedelta(days=2))
    async with case.open().session_lease("old", wait=0):
        assert (await store.prune(older_than=3600)).busy == ["old"]
    assert (await store.prune(older_than=3600)).sessions_deleted == 1


async def test_max_snapshots_per_session_drops_superseded_branches(case: StoreCase) -> None:  # noqa: F811
    store = case.open(checkpoint_every=4, max_snapshots_per_session=3)
    main = await conversation(store, "s", 10)
    start = datetime.now(UTC) + timedelta(minutes=1)
    for b in range(4):  # retries of turn 2 that were abandoned: superseded branches
        branch = snap(
            f"branch-{b}",
            session="s",
            parent=main[1],
            messages=[*turn(0), *turn(1), *turn(100 + b, size=400)],
            artifacts=[art("x", "branch " * 50)],
            created_at=(start - timedelta(minutes=30 - b)).isoformat(),
        )
        await put(store, branch)
    head = await store.get_snapshot(session_id="s")
    assert head is not None and head.snapshot_id == "branch-3"  # the last one created
    tip_at = (start + timedelta(minutes=5)).isoformat()
    messages = list(head.state.messages or [])
    await put(store, snap("s-tip", session="s", parent=main[-1], messages=messages, created_at=tip_at))
    before = case.stored_bytes()
    pruned = await store.prune()
    after = case.stored_bytes()
    show(case, "prune(max_snapshots_per_session=3)", before, after)
    assert pruned.snapshots_deleted >= 8 and after < before
    for reader in (store, case.open()):
        tip = await get(reader, "s-tip")  # the head reads whole, its delta chain kept
        assert tip.state.messages == head.state.messages
        assert await reader.get_snapshot(snapshot_id="branch-0") is None
        assert await reader.get_snapshot(snapshot_id=main[0]) is None


async def test_retention_is_part_of_the_contract(case: StoreCase) -> None:  # noqa: F811
    store: SessionStore = case.open()
    assert await store.delete_session("nothing") == 0
    assert await store.prune(older_than=1) == Pruned()
    with pytest.raises(TurnkitError) as err:
        await store.delete_session("")
    assert err.value.status == "INVALID_ARGUMENT"
