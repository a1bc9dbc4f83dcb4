"""Session leases: one writer per session head, across tasks, processes and machines.

A turn that continues a session by its id holds the session's lease from reading the head until
its snapshot is written, so a second turn on the same session waits (or is rejected) and then
runs on the new head instead of forking. A lease lives a short time (`ttl`, a few seconds) and is
renewed by heartbeats every `ttl / 3` while held, so a long turn keeps it while the lease of a
process that dies runs out within `ttl`.

Each taking of a lease gets a fresh random token (its `owner`), which fences the holder's writes:
while a lease is held in the current context, the store saves a snapshot of that session only if
the lease is still this holder's, in the same atomic step as the write. A holder that stalled past
its ttl, and whose lease another turn has taken since, gets ABORTED instead of forking the session.
A lease once lost is never taken back by its renewals (`renew_lease` only extends a lease still
held), since another turn may have held and released it in between.

A release that fails (the store is unreachable) is retried in the background until it succeeds or
the lease has run out anyway, so a store blip does not leave the next turn waiting out the ttl.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import secrets
import time
from types import TracebackType
from typing import Final, Protocol, runtime_checkable

from turnkit.errors import TurnkitError

__all__ = ["DEFAULT_LEASE_TTL", "LeaseBackend", "SessionLease", "held_lease", "lease_lost"]

log = logging.getLogger("turnkit.sessions")

DEFAULT_LEASE_TTL: Final = 5.0
# Waits between tries of a failed release (then the last one repeats), in seconds.
_RELEASE_RETRY: Final = (0.05, 0.1, 0.2, 0.5)
# A turn that keeps waiting for a lease says so again this often (seconds).
_WAIT_REPORT_EVERY: Final = 10.0

_held: contextvars.ContextVar[SessionLease | None] = contextvars.ContextVar("turnkit_lease", default=None)
# Release retries under way: held here so they are not garbage collected mid-flight.
_retries: set[asyncio.Task[None]] = set()


@runtime_checkable
class LeaseBackend(Protocol):
    """The two atomic operations a backend provides for leases.

    A backend may also provide `renew_lease(tenant, name, owner, ttl) -> bool` (extend the lease only
    while `owner` still holds it, expired or not, but never take it afresh) and accept
    `fence=(name, owner)` in `put_record` (write only while `owner` holds lease `name`); the stores
    here all do, which is what makes a stale holder's save fail instead of forking a session.
    """

    async def try_lease(self, tenant: str, name: str, owner: str, ttl: float) -> bool:
        """Take the lease `name` for `ttl` seconds, or renew it if `owner` holds it already.

        Return False, changing nothing, while another owner holds an unexpired lease."""
        ...

    async def release_lease(self, tenant: str, name: str, owner: str) -> None:
        """Give the lease up if `owner` still holds it."""
        ...


def lease_lost(name: str) -> TurnkitError:
    """The error of a fenced write whose lease another holder has taken (see `SessionLease`)."""
    session = name.removeprefix("session:")
    return TurnkitError(
        "ABORTED",
        f"this turn lost the lease of session {session!r} (it stalled past the lease's ttl and another"
        " turn took the session): its snapshot was not saved, so the session does not fork",
    )


def held_lease(backend: object, tenant: str, session_id: str | None) -> SessionLease | None:
    """The lease of this session that the current context holds through `backend`, if any: the one
    whose token fences the context's writes to that session."""
    lease = _held.get()
    if (
        lease is None
        or not lease.active
        or lease.backend is not backend
        or lease.tenant != tenant
        or lease.session_id != session_id
    ):
        return None
    return lease


class SessionLease:
    """An async context manager holding one session's lease, renewed in the background.

    `owner` is the token of this taking of the lease (the fencing token its writes carry);
    `lost` turns True once a renewal found the lease taken by another holder.
    """

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
        self.lost = False
        self.waited = 0.0  # seconds spent waiting for another holder
        self._active = False
        self._renewed_at = 0.0  # monotonic time of the last successful take or renewal
        self._renewer: asyncio.Task[None] | None = None
        self._outer: SessionLease | None = None  # the lease this context held before (restored on exit)

    @property
    def token(self) -> str:
        """The fencing token of this holder: the store refuses its writes once another holds the lease."""
        return self.owner

    @property
    def active(self) -> bool:
        """Whether the lease is held (entered and not yet left)."""
        return self._active

    async def __aenter__(self) -> SessionLease:
        start = time.monotonic()
        deadline = start + self.wait
        delay = self.poll
        reported = 0.0
        try:
            while not await self.backend.try_lease(self.tenant, self.name, self.owner, self.ttl):
                now = time.monotonic()
                if now >= deadline:
                    why = "is busy with another turn" if self.wait <= 0 else f"stayed busy for {self.wait:g}s"
                    raise TurnkitError("ABORTED", f"session {self.session_id!r} {why}; try again")
                if now - reported >= _WAIT_REPORT_EVERY:
                    # Said, not silent: a turn stuck behind a dead holder shows in the logs at once.
                    log.log(
                        logging.INFO if not reported else logging.WARNING,
                        "session %r is busy with another turn: waiting for its lease (%.1fs so far, up to %gs)",
                        self.session_id,
                        now - start,
                        self.wait,
                    )
                    reported = now
                await asyncio.sleep(min(delay, max(0.0, deadline - now)))
                delay = min(delay * 1.5, 0.1)
        except asyncio.CancelledError:
            # A backend may take the lease even though we were cancelled waiting for its answer.
            await self._release()
            raise
        self._renewed_at = time.monotonic()
        self.waited = self._renewed_at - start
        if reported:
            log.info("session %r: got its lease after waiting %.1fs", self.session_id, self.waited)
        self._active = True
        outer = _held.get()
        self._outer = outer if outer is not None and outer.active else None  # no chain of old leases
        _held.set(self)
        self._renewer = asyncio.ensure_future(self._renew())
        return self

    async def _release(self) -> None:
        try:  # shielded: a cancelled turn must still let the next one in
            await asyncio.shield(self.backend.release_lease(self.tenant, self.name, self.owner))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the store is down: keep trying in the background
            log.warning("releasing the lease of session %r failed (%s); retrying", self.session_id, exc)
            task = asyncio.ensure_future(self._retry_release())
            _retries.add(task)
            task.add_done_callback(_retries.discard)

    async def _retry_release(self) -> None:
        """Release until it works, or until the lease has surely run out (nothing left to release)."""
        gone_at = self._renewed_at + self.ttl
        for attempt in range(1_000_000):
            await asyncio.sleep(_RELEASE_RETRY[min(attempt, len(_RELEASE_RETRY) - 1)])
            if time.monotonic() >= gone_at:
                log.info("the lease of session %r ran out before the store came back", self.session_id)
                return
            try:
                await self.backend.release_lease(self.tenant, self.name, self.owner)
            except Exception:
                continue
            log.info("released the lease of session %r after %d retries", self.session_id, attempt + 1)
            return

    async def _renew(self) -> None:
        renew = getattr(self.backend, "renew_lease", None) or self.backend.try_lease
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                if not await renew(self.tenant, self.name, self.owner, self.ttl):
                    self.lost = True
                    log.warning(
                        "lost the lease of session %r (held past its ttl of %gs, and taken since?):"
                        " this turn's snapshot will not be saved",
                        self.session_id,
                        self.ttl,
                    )
                    return
                self._renewed_at = time.monotonic()
            except Exception as exc:  # a blip in the store: try again at the next beat
                log.warning("renewing the lease of session %r failed (%s)", self.session_id, exc)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._active = False
        if _held.get() is self:
            _held.set(self._outer)
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)  # never swallows our own cancel
        if not self.lost:
            await self._release()
