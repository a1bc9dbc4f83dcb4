"""`WorkerThread`: one thread of a store's own that runs its blocking calls in order.

The SQLite and file stores keep state that must only be touched from one thread (a connection, open
journals), and one hop to a thread that is already running costs less than `asyncio.to_thread`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, TypeVar

from turnkit.errors import TurnkitError

__all__ = ["WorkerThread"]

T = TypeVar("T")
_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller gave up; what the job did stands (a retry will see it)
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


def _serve(jobs: SimpleQueue[_Job | None], on_stop: Callable[[], None]) -> None:
    """The thread's loop: run jobs in order until told to stop, then run `on_stop`."""
    try:
        while (job := jobs.get()) is not None:
            loop, future, fn, args = job
            result, error = None, None
            try:
                result = fn(*args)
            except BaseException as exc:
                error = exc
            with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody to tell
                loop.call_soon_threadsafe(_settle, future, result, error)
            # Drop the references now, not at the next job: a result may hold much memory.
            del job, loop, future, fn, args, result, error
    finally:
        on_stop()


class WorkerThread:
    """A daemon thread, started on first use, that runs `fn(*args)` calls one at a time in the order
    they were submitted; `stop()` ends it after the calls already submitted, then runs `on_stop` on
    it (or at once, on the caller's thread, when the thread never started).

    A caller cancelled while its call is queued or running stops waiting, but the call still runs to
    its end, as a request already sent to a database server would. A daemon, so a process may exit
    with stores open.
    """

    def __init__(self, name: str, on_stop: Callable[[], None] = lambda: None) -> None:
        self.name = name
        self._on_stop = on_stop
        self._jobs: SimpleQueue[_Job | None] = SimpleQueue()
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()
        self._stopping = False

    @property
    def thread(self) -> threading.Thread | None:
        """The thread, once started."""
        return self._thread

    def submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Queue `fn(*args)`; the future (of the running loop) settles with its result or error."""
        if self._stopping:  # a call queued behind the stop would never run, nor settle
            raise TurnkitError("FAILED_PRECONDITION", f"{self.name} is stopped", public=False)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if self._thread is None:
            self._start()
        self._jobs.put((loop, future, fn, args))
        return future

    def _start(self) -> None:
        with self._starting:
            if self._stopping:
                raise TurnkitError("FAILED_PRECONDITION", f"{self.name} is stopped", public=False)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=_serve, args=(self._jobs, self._on_stop), name=self.name, daemon=True
                )
                self._thread.start()

    def stop(self) -> None:
        """End the thread once the calls submitted so far have run; idempotent.

        It takes no lock and at most puts on a queue, so a finalizer may call it from any thread,
        even from a garbage collection that interrupts this object's own methods.
        """
        if self._stopping:
            return
        self._stopping = True
        if self._thread is None:
            self._on_stop()
        else:
            self._jobs.put(None)

    async def join(self) -> None:
        """Wait, without blocking the loop, until a stopped thread has ended."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            await asyncio.to_thread(thread.join)
