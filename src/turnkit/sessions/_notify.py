"""`ChangeFeed`: wake this process's status watchers when a record changes in any process.

The PostgreSQL (LISTEN/NOTIFY) and Redis (pub/sub) stores each hold one subscription per store
instance in a background task, which reconnects with backoff when it drops. A watcher registers
for one record before it reads, then waits for that record's change, or for a poll interval.
Until the subscription is confirmed (and after it drops) a waiter returns as soon as it is in place
again, or a poll interval passes, so a change published while nobody listened is read anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Hashable, MutableMapping
from typing import Final, Generic, TypeVar

__all__ = ["ChangeFeed"]

log = logging.getLogger("turnkit.sessions")

K = TypeVar("K", bound=Hashable)
# Waits between reconnection attempts: doubling from the first to the last, back to the first
# once a subscription succeeds.
FIRST_RETRY_DELAY: Final = 0.05
MAX_RETRY_DELAY: Final = 2.0


class ChangeFeed(ABC, Generic[K]):
    """Waiters keyed by record, and the subscription that wakes them.

    Subclasses implement `_listen`: connect, subscribe, call `on_subscribed()`, then `wake(key)` for
    each change announced, until the connection fails (raise) or ends (return). `run()` repeats it
    for good; `start()` runs it in a task of the running loop, `close()` ends that task.
    `events` is the map of waiting events to share (a store may also wake them on its own writes);
    by default a weak map of the feed's own, which drops an event nobody waits for any more.
    """

    def __init__(self, events: MutableMapping[K, asyncio.Event] | None = None) -> None:
        self.events: MutableMapping[K, asyncio.Event] = (
            weakref.WeakValueDictionary() if events is None else events
        )
        # Set while subscribed. Events belong to one event loop: `start()` makes a new one.
        self.subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # --- waiting ------------------------------------------------------------------------------------

    def waiter(self, key: K, timeout: float) -> Callable[[], Awaitable[None]]:
        """Start listening for a change of record `key`; the result waits for one (or `timeout`)."""
        event = self.events.get(key)
        if event is None:
            event = self.events[key] = asyncio.Event()
        was_subscribed = self.subscribed.is_set()

        async def wait() -> None:
            # The closure holds the event, which keeps it in a weak map while someone waits.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    # Not subscribed when the caller read: a change since may have gone unannounced,
                    # so return (and let the caller read again) once the subscription is up. (The
                    # feed's event, as of now: `start()` may have made a new one meanwhile.)
                    await (event.wait() if was_subscribed else self.subscribed.wait())

        return wait

    def wake(self, key: K) -> None:
        """Wake the waiters of one record."""
        event = self.events.pop(key, None)
        if event is not None:
            event.set()

    def wake_all(self) -> None:
        """Wake every waiter (to read again): changes may have gone unannounced."""
        events = list(self.events.values())
        self.events.clear()
        for event in events:
            event.set()

    def on_subscribed(self) -> None:
        """Called by `_listen` once subscribed: from now on changes are announced."""
        self.subscribed.set()
        self.wake_all()  # anything may have changed while nobody listened

    # --- the subscription ---------------------------------------------------------------------------

    @abstractmethod
    async def _listen(self) -> None:
        """Connect, subscribe, call `on_subscribed()`, and `wake` the records announced, until the
        connection fails or ends."""

    def _lost(self, exc: Exception) -> None:
        """Report a failed subscription (it is retried)."""
        log.warning("turnkit: %s failed (%s); reconnecting", type(self).__name__, exc)

    async def run(self) -> None:
        """Hold the subscription until cancelled, reconnecting with backoff whenever it fails."""
        delay = FIRST_RETRY_DELAY
        while True:
            try:
                await self._listen()
            except Exception as exc:
                self._lost(exc)
            finally:
                was_subscribed = self.subscribed.is_set()
                self.subscribed.clear()  # before the wake-up: whoever waits again waits for it
            self.wake_all()  # to read again, rather than wait out a poll interval
            if was_subscribed:
                delay = FIRST_RETRY_DELAY
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_DELAY)

    def start(self, name: str) -> None:
        """Make sure `run()` runs in a task of the running loop (again, if it ended)."""
        if self._closed:
            return
        if self._task is None or self._task.done():
            self.subscribed = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self.run(), name=name)

    @property
    def closed(self) -> bool:
        """Whether `close()` was called (waiters then only poll)."""
        return self._closed

    async def close(self) -> None:
        """Stop the subscription task for good."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
