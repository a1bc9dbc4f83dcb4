"""`list_sessions(limit, cursor)` on every store: a tenant's sessions in id order, a page at a time,
with a keyset cursor that stays correct while sessions come and go between pages."""

from __future__ import annotations

from pathlib import Path

import pytest

from test_store_contract import STORES, StoreCase, put, snap
from turnkit.errors import TurnkitError
from turnkit.sessions import LinearSessionStore
from turnkit.sessions._listing import MAX_LIST_LIMIT, SessionPage, encode_cursor


@pytest.fixture(params=sorted(STORES))
def case(request: pytest.FixtureRequest, tmp_path: Path) -> StoreCase:
    return STORES[request.param](tmp_path)


async def walk(store: LinearSessionStore, limit: int, **kw: object) -> list[SessionPage]:
    """Every page of a listing, following next_cursor to the end."""
    pages = [await store.list_sessions(limit=limit, **kw)]  # type: ignore[arg-type]
    while pages[-1].next_cursor is not None:
        pages.append(await store.list_sessions(limit=limit, cursor=pages[-1].next_cursor, **kw))  # type: ignore[arg-type]
    return pages


def ids(pages: list[SessionPage]) -> list[str]:
    return [s.session_id for page in pages for s in page.sessions]


async def test_an_empty_store_lists_one_empty_last_page(case: StoreCase) -> None:
    page = await case.open().list_sessions()
    assert page.sessions == [] and page.next_cursor is None


async def test_sessions_come_in_code_point_order_with_their_latest_snapshot(case: StoreCase) -> None:
    store = case.open()
    sessions = ["b", "a", "Z", "é", "日本", "a b", "a:b", "🙂", "aa"]
    for n, session in enumerate(sessions):
        await put(store, snap(f"k{n}", session=session))
    await put(store, snap("k-later", session="a", parent="k1"))  # the head moves to the newest snapshot
    pages = await walk(case.open(), limit=4)  # a cold instance reads what the first one wrote
    assert [len(p.sessions) for p in pages] == [4, 4, 1]
    assert ids(pages) == sorted(sessions)  # Python orders str by code point
    latest = {s.session_id: s.snapshot_id for p in pages for s in p.sessions}
    assert latest["a"] == "k-later" and latest["日本"] == "k4"


async def test_a_full_last_page_says_there_is_no_next(case: StoreCase) -> None:
    store = case.open()
    for n in range(6):
        await put(store, snap(f"k{n}", session=f"s{n}"))
    pages = await walk(store, limit=3)
    assert [len(p.sessions) for p in pages] == [3, 3]
    assert pages[-1].next_cursor is None


async def test_each_tenant_lists_only_its_own_sessions(case: StoreCase) -> None:
    store = case.open()
    await put(store, snap("k1", session="shared-name"), context={"tenant": "acme"})
    await put(store, snap("k2", session="only-acme"), context={"tenant": "acme"})
    await put(store, snap("k3", session="shared-name"), context={"tenant": "globex"})
    await put(store, snap("k4", session="default-one"))
    assert ids(await walk(store, 10, context={"tenant": "acme"})) == ["only-acme", "shared-name"]
    assert ids(await walk(store, 10, context={"tenant": "globex"})) == ["shared-name"]
    assert ids(await walk(store, 10)) == ["default-one"]


async def test_the_cursor_is_stable_while_sessions_come_and_go(case: StoreCase) -> None:
    store = case.open()
    for n in range(1, 10):
        await put(store, snap(f"k{n}", session=f"s{n}"))
    first = await store.list_sessions(limit=4)
    assert [s.session_id for s in first.sessions] == ["s1", "s2", "s3", "s4"]
    # Between pages: a session before the cursor, one after it, and one deleted after it.
    await put(store, snap("k0", session="s0"))
    await put(store, snap("k5a", session="s5a"))
    await store.delete_session("s6")
    rest: list[str] = []
    cursor = first.next_cursor
    while cursor is not None:
        page = await store.list_sessions(limit=4, cursor=cursor)
        rest += [s.session_id for s in page.sessions]
        cursor = page.next_cursor
    assert rest == ["s5", "s5a", "s7", "s8", "s9"]  # nothing twice, nothing that lived throughout missed


@pytest.mark.parametrize("limit", [0, -1, MAX_LIST_LIMIT + 1, True, 2.5])
async def test_a_bad_limit_is_refused(case: StoreCase, limit: object) -> None:
    with pytest.raises(TurnkitError) as err:
        await case.open().list_sessions(limit=limit)  # type: ignore[arg-type]
    assert err.value.status == "INVALID_ARGUMENT" and "limit" in err.value.message


@pytest.mark.parametrize("cursor", ["not base64 !", "", encode_cursor("x")[:-1] + "%", "AA"])
async def test_a_cursor_not_made_by_list_sessions_is_refused(case: StoreCase, cursor: str) -> None:
    with pytest.raises(TurnkitError) as err:
        await case.open().list_sessions(cursor=cursor)
    assert err.value.status == "INVALID_ARGUMENT" and "cursor" in err.value.message


async def test_redis_lists_sessions_written_before_its_index_existed(tmp_path: Path) -> None:
    if "redis" not in STORES:
        pytest.skip("the Redis store case is not available")
    case = STORES["redis"](tmp_path)
    store = case.open()
    for n in range(5):
        await put(store, snap(f"k{n}", session=f"s{n}"))
    backend = store.backend
    index = backend.key("s", "", "")  # type: ignore[attr-defined]
    await backend.client.delete(index)  # type: ignore[attr-defined]  # as an older turnkit left it
    assert ids(await walk(case.open(), limit=2)) == ["s0", "s1", "s2", "s3", "s4"]
    await put(store, snap("k9", session="s9"))  # written after the fill: indexed by the write itself
    assert ids(await walk(case.open(), limit=10)) == ["s0", "s1", "s2", "s3", "s4", "s9"]
