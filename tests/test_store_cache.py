"""The engine's state cache under many active sessions: a session keeps about one cached state, so
a cache a little larger than the number of sessions in use keeps serving every turn."""

from __future__ import annotations

from test_store_contract import put, snap, turn
from turnkit.sessions import InMemorySessionStore


async def test_more_sessions_than_half_the_cache_still_hit_it() -> None:
    sessions = 6
    store = InMemorySessionStore(cache_size=sessions + 1)  # with one state per turn, 6 would need 12
    heads = {}
    history = {}
    for s in range(sessions):
        history[s] = turn(0)
        heads[s] = (await put(store, snap(f"s{s}-0", session=f"s{s}", messages=history[s]))).snapshot_id
    store.stats.reset()
    for n in range(1, 6):  # round robin: every session's turn comes after all the others'
        for s in range(sessions):
            parent = await store.get_snapshot(snapshot_id=heads[s])  # a turn reads its session
            assert parent is not None
            history[s] = history[s] + turn(n)
            child = snap(f"s{s}-{n}", session=f"s{s}", parent=heads[s], messages=history[s])
            heads[s] = (await put(store, child)).snapshot_id
    rounds = 5 * sessions
    assert store.stats.logs_read == 0  # no state was ever rebuilt from the store
    assert store.stats.cache_hits >= 2 * rounds  # the read and the save's parent, every time
    saved = await store.get_snapshot(snapshot_id=heads[0])
    assert saved is not None and saved.state is not None and saved.state.messages == history[0]
