"""The machinery the stores share: `WorkerThread` (SQLite and file stores) and `ChangeFeed`
(PostgreSQL and Redis stores). The stores' own suites test them through real databases; these pin
the shared contract directly."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from turnkit.errors import TurnkitError
from turnkit.sessions._notify import ChangeFeed
from turnkit.sessions._worker import WorkerThread

# --- WorkerThread --------------------------------------------------------------------------------


async def test_calls_run_in_order_on_one_thread_and_errors_reach_the_caller() -> None:
    threads: list[str] = []
    done: list[int] = []
    worker = WorkerThread("turnkit-test-worker")

    def job(n: int) -> int:
        threads.append(threading.current_thread().name)
        time.sleep(0.001 * (5 - n))  # earlier jobs take longer: order is by submission, not speed
        done.append(n)
        return n * 10

    def fail() -> None:
        raise ValueError("boom")

    results = await asyncio.gather(*(worker.submit(job, n) for n in range(5)))
    assert results == [0, 10, 20, 30, 40] and done == [0, 1, 2, 3, 4]
    assert set(threads) == {"turnkit-test-worker"}
    with pytest.raises(ValueError, match="boom"):
        await worker.submit(fail)
    worker.stop()
    await worker.join()


async def test_a_cancelled_caller_stops_waiting_but_its_call_still_runs() -> None:
    release, ran = threading.Event(), threading.Event()
    worker = WorkerThread("turnkit-test-worker")
    blocked = worker.submit(release.wait, 5)
    queued = worker.submit(ran.set)
    queued.cancel()
    release.set()
    assert await blocked is True
    assert await asyncio.to_thread(ran.wait, 5)  # the cancelled caller's call ran anyway
    worker.stop()
    await worker.join()


async def test_stop_runs_on_stop_on_the_thread_after_the_calls_already_submitted() -> None:
    order: list[str] = []
    stopped_on: list[str] = []

    def on_stop() -> None:
        order.append("stop")
        stopped_on.append(threading.current_thread().name)

    worker = WorkerThread("turnkit-test-worker", on_stop=on_stop)
    pending = [worker.submit(order.append, f"job{n}") for n in range(3)]
    worker.stop()
    worker.stop()  # idempotent
    await asyncio.gather(*pending)
    await worker.join()
    assert order == ["job0", "job1", "job2", "stop"] and stopped_on == ["turnkit-test-worker"]
    assert worker.thread is not None and not worker.thread.is_alive()
    with pytest.raises(TurnkitError) as err:
        worker.submit(order.append, "late")  # refused: queued behind the stop, it would never settle
    assert err.value.status == "FAILED_PRECONDITION"


async def test_a_worker_never_started_runs_on_stop_at_once_and_then_refuses_calls() -> None:
    stopped = threading.Event()
    worker = WorkerThread("turnkit-test-worker", on_stop=stopped.set)
    worker.stop()
    assert stopped.is_set() and worker.thread is None
    with pytest.raises(TurnkitError) as err:
        worker.submit(print)
    assert err.value.status == "FAILED_PRECONDITION"


# --- ChangeFeed ----------------------------------------------------------------------------------


class ScriptedFeed(ChangeFeed[str]):
    """A feed whose connection fails `failures` times, then subscribes and relays what is queued."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.attempts = 0
        self.published: asyncio.Queue[str | None] = asyncio.Queue()  # None: the connection drops

    async def _listen(self) -> None:
        self.attempts += 1
        if self.failures:
            self.failures -= 1
            raise ConnectionError("refused")
        self.on_subscribed()
        while (key := await self.published.get()) is not None:
            self.wake(key)


async def test_a_feed_reconnects_and_wakes_waiters_on_subscription_and_on_their_change() -> None:
    feed = ScriptedFeed(failures=2)
    before = feed.waiter("a", timeout=5)  # made before any subscription: waits for one
    feed.start(name="test feed")
    started = time.perf_counter()
    await asyncio.wait_for(before(), 5)
    assert feed.attempts == 3 and feed.subscribed.is_set()
    assert time.perf_counter() - started >= 0.05 + 0.1  # backed off between the failed attempts

    mine, other = feed.waiter("a", timeout=5), feed.waiter("b", timeout=5)
    waiting_b = asyncio.ensure_future(other())
    await feed.published.put("a")
    await asyncio.wait_for(mine(), 5)  # woken by its record's change...
    assert not waiting_b.done()  # ...and not the other record's waiter
    await feed.published.put(None)  # the connection drops: every waiter is woken to read again
    await asyncio.wait_for(waiting_b, 5)
    await feed.close()
    assert feed.closed


async def test_a_waiter_returns_after_its_timeout_when_nothing_changes() -> None:
    feed = ScriptedFeed(failures=0)
    feed.start(name="test feed")
    await asyncio.wait_for(feed.subscribed.wait(), 5)
    started = time.perf_counter()
    await feed.waiter("quiet", timeout=0.05)()
    assert 0.04 <= time.perf_counter() - started < 2
    await feed.close()
