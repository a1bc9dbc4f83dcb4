"""Across OS processes, for every store another process can open: one linear history per session,
aborts that reach a turn running elsewhere, and nothing lost when a process is killed mid-turn."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from test_store_contract import STORES, StoreCase
from turnkit import Turnkit, TurnkitError
from turnkit.sessions import LinearSessionStore, store_from_url
from turnkit.testing import define_programmable_model

WORKER = str(Path(__file__).with_name("mp_worker.py"))
SHARED = [name for name in STORES if name != "memory"]  # memory is private to one process


@pytest.fixture(params=SHARED)
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> StoreCase:
    made = STORES[request.param](tmp_path)
    if made.url is None:
        pytest.fail(f"store case {request.param!r} has no url for other processes")
    return made


def with_options(url: str, **options: float) -> str:
    query = "&".join(f"{k}={v}" for k, v in options.items())
    return f"{url}{'&' if '?' in url else '?'}{query}"


class Worker:
    """A worker process whose JSON-line events can be awaited."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, WORKER, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
        )
        self.seen: list[dict[str, Any]] = []

    def event(self, name: str) -> dict[str, Any]:
        """Block until the worker has printed the event `name` (in any order; fail if it exits first)."""
        assert self.proc.stdout is not None
        while True:
            for event in self.seen:
                if event["event"] == name:
                    return event
            line = self.proc.stdout.readline()  # the test's own timeout bounds this
            if not line:
                err = self.proc.stderr.read() if self.proc.stderr else ""
                raise AssertionError(f"worker exited before {name!r}: {err[-3000:]}")
            self.seen.append(json.loads(line))

    def finish(self, timeout: float = 60) -> None:
        """Wait for a clean exit."""
        _, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, err[-3000:]

    def kill(self) -> None:
        """`kill -9`: no cleanup of any kind runs in the worker."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for w in started:
        if w.proc.poll() is None:
            w.kill()
        for pipe in (w.proc.stdout, w.proc.stderr):
            if pipe is not None:
                pipe.close()


async def chain_of(store: LinearSessionStore, session_id: str) -> list[Any]:
    """The snapshots from the session's head back to its first one."""
    chain = []
    snap = await store.get_snapshot(session_id=session_id)
    while snap is not None:
        chain.append(snap)
        snap = await store.get_snapshot(snapshot_id=snap.parent_id) if snap.parent_id else None
    return chain


async def test_two_processes_continuing_one_session_make_one_linear_history(
    shared: StoreCase, workers: list[Worker]
) -> None:
    rounds = 8
    workers += [Worker("continue", shared.url or "", "s1", str(rounds), tag) for tag in ("a", "b")]
    for w in workers:
        w.finish()
    store = shared.open()
    chain = await chain_of(store, "s1")
    assert len(chain) == 2 * rounds  # every turn is a snapshot on one chain: no fork, none lost
    messages = chain[0].state.messages
    users = [m.text for m in messages if m.role == "user"]
    assert sorted(users) == sorted(f"{t}-{i}" for t in "ab" for i in range(rounds))
    for i, m in enumerate(messages):
        if m.role == "model":  # each turn saw every message before it
            assert m.text == f"seen {i}", [x.text for x in messages]


async def test_abort_from_another_process_stops_the_turn_within_a_second(
    shared: StoreCase, workers: list[Worker]
) -> None:
    runner = Worker("detach", shared.url or "", "s2")
    workers.append(runner)
    snapshot = runner.event("detached")["snapshot"]
    runner.event("started")
    aborter = Worker("abort", shared.url or "", snapshot)
    workers.append(aborter)
    sent = aborter.event("abort-sent")
    assert sent["previous"] == "pending"
    stopped = runner.event("aborted")
    assert stopped["at"] - sent["at"] < 1.0
    runner.event("finished")
    runner.finish()
    snap = await shared.open().get_snapshot(snapshot_id=snapshot)
    assert snap is not None and snap.status == "aborted"


async def test_kill_during_a_detached_turn_leaves_it_expired_and_the_session_resumable(
    shared: StoreCase, workers: list[Worker]
) -> None:
    url = with_options(shared.url or "", lease_ttl=0.5)
    first = Worker("continue", url, "s3", "1", "before")
    first.finish()
    runner = Worker("detach", url, "s3")
    workers.append(runner)
    pending_id = runner.event("detached")["snapshot"]
    runner.event("started")
    runner.kill()
    store = shared.open(expire_after=0.5)
    head = await store.get_snapshot(session_id="s3")
    assert head is not None and head.snapshot_id == pending_id
    deadline = time.monotonic() + 10
    while (await store.get_snapshot(snapshot_id=pending_id)).status != "expired":  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "the dead turn's snapshot never expired"
        await asyncio.sleep(0.1)
    completed = await store.get_snapshot(snapshot_id=head.parent_id or "")
    assert completed is not None and completed.status == "completed"
    assert [m.text for m in completed.state.messages or []] == ["before-0", "seen 1"]
    after = Worker("continue", url, "s3", "1", "after")  # waits out the dead holder's lease
    after.finish()
    chain = await chain_of(store, "s3")
    assert chain[0].parent_id == completed.snapshot_id  # continued from the last completed turn
    assert [m.text for m in chain[0].state.messages or []] == ["before-0", "seen 1", "after-0", "seen 3"]


async def test_kill_during_an_attached_turn_loses_nothing_completed(
    shared: StoreCase, workers: list[Worker]
) -> None:
    url = with_options(shared.url or "", lease_ttl=0.5)
    Worker("continue", url, "s4", "2", "ok").finish()
    hanging = Worker("hang", url, "s4")
    workers.append(hanging)
    hanging.event("in-turn")
    # While the hanging turn holds the session, a reject-policy turn is refused at once.
    ai = Turnkit(model="programmableModel")
    define_programmable_model(ai)
    store = store_from_url(url)
    rejecting = ai.define_agent(name="r", store=store, on_conflict="reject")
    with pytest.raises(TurnkitError) as err:
        await rejecting.chat(session_id="s4").send("now")
    assert err.value.status == "ABORTED"
    close = getattr(store, "close", None)
    if close is not None:  # stores holding connections (Postgres, Redis)
        await close()
    hanging.kill()
    Worker("continue", url, "s4", "1", "after").finish()
    chain = await chain_of(shared.open(), "s4")
    assert len(chain) == 3  # the killed turn wrote nothing; the two before and one after remain
    texts = [m.text for m in chain[0].state.messages or []]
    assert texts == ["ok-0", "seen 1", "ok-1", "seen 3", "after-0", "seen 5"]
