"""Session leases: one writer per session head, across tasks, processes and machines.

A turn that continues a session by its id holds the session's lease from reading the head until
its snapshot is written, so a second turn on the same session waits (or is rejected) and then
runs on the new head instead of forking. A lease has a time to live, renewed while held, so the
lease of a process that dies runs out on its own.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from types import TracebackType
from typing import Protocol, runtime_checkable

from turnkit.errors import TurnkitError

__all__ = ["LeaseBackend", "SessionLease"]

log = logging.getLogger("turnkit.sessions")


@runtime_checkable
class LeaseBackend(Protocol):
    """The two atomic operations a backend provides for leases."""

    async def try_lease(self, tenant: str, name: str, owner: str, ttl: float) -> bool:
        """Take the lease `name` for `ttl` seconds, or renew it if `owner` holds it already.

        Return False, changing nothing, while another owner holds an unexpired lease."""
        ...

    async def release_lease(self, tenant: str, name: str, owner: str) -> None:
        """Give the lease up if `owner` still holds it."""
        ...


class SessionLease:
    """An async context manager holding one session's lease, renewed in the background."""

    def __init__(
        self,
        backend: LeaseBackend,
        tenant: str,
        session_id: str,
        *,
        ttl: float,
        wait: float,
        poll: float = 0.01,
    ) -> None:
        self.backend = backend
        self.tenant = tenant
        self.session_id = session_id
        self.name = f"session:{session_id}"
        self.owner = secrets.token_hex(8)
        self.ttl = ttl
        self.wait = wait
        self.poll = poll
        self._renewer: asyncio.Task[None] | None = None

    async def __aenter__(self) -> SessionLease:
        deadline = time.monotonic() + self.wait
        delay = self.poll
        try:
            while not await self.backend.try_lease(self.tenant, self.name, self.owner, self.ttl):
                if time.monotonic() >= deadline:
                    why = "is busy with another turn" if self.wait <= 0 else f"stayed busy for {self.wait:g}s"
                    raise TurnkitError("ABORTED", f"session {self.session_id!r} {why}; try again")
                await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                delay = min(delay * 1.5, 0.1)
        except asyncio.CancelledError:
            # A backend may take the lease even though we were cancelled waiting for its answer.
            await self._release()
            raise
        self._renewer = asyncio.ensure_future(self._renew())
        return self

    async def _release(self) -> None:
        try:  # shielded: a cancelled turn must still let the next one in
            await asyncio.shield(self.backend.release_lease(self.tenant, self.name, self.owner))
        except asyncio.CancelledError:
            raise
        except Exception:  # the store is down: the lease runs out by itself after its ttl
            log.exception("releasing the lease of session %r failed", self.session_id)

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                if not await self.backend.try_lease(self.tenant, self.name, self.owner, self.ttl):
                    log.warning("lost the lease of session %r (held past its ttl?)", self.session_id)
                    return
            except Exception:  # a blip in the store: try again at the next beat
                log.exception("renewing the lease of session %r failed", self.session_id)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)  # never swallows our own cancel
        await self._release()
