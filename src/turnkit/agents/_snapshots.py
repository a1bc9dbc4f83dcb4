"""The snapshot lifecycle of a turn, and every rule about snapshot statuses the runtime applies.

A store-backed turn writes its snapshot in up to four ways, all here:

- `write_pending`: a detached turn first stores a `pending` snapshot (with a heartbeat), so it can
  be polled and aborted while it runs in the background;
- `heartbeat`: while it runs, the pending snapshot's `heartbeat_at` is refreshed; a store reports a
  pending snapshot whose heartbeat went stale as `expired` (see `sessions.reported_status`);
- `write_outcome`: the turn's end writes `completed`, `failed` or `aborted`;
- `abort_snapshot`: an abort (from any process) flips a `pending` or `expired` snapshot to `aborted`.

Terminal statuses (`TERMINAL_STATUSES`) are absorbing: no writer changes a snapshot once it has one.
Only a `completed` snapshot (or one from before statuses existed) can be continued from.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, Literal

from turnkit.errors import TurnkitError
from turnkit.sessions import SessionStore
from turnkit.sessions._store import TERMINAL_STATUSES
from turnkit.types import (
    AgentFinishReason,
    ErrorInfo,
    SessionSnapshot,
    SessionState,
    SnapshotStatus,
)

__all__ = [
    "INTERNAL_MARK",
    "TurnOutcomeStatus",
    "abort_snapshot",
    "heartbeat",
    "is_resumable",
    "latest_resumable",
    "now_iso",
    "stored_error",
    "write_outcome",
    "write_pending",
]

# Marks, in a stored error's details, an error whose text is for the server's eyes only.
INTERNAL_MARK: Final = "turnkitInternal"

# The statuses a turn's end writes.
TurnOutcomeStatus = Literal[SnapshotStatus.COMPLETED, SnapshotStatus.FAILED, SnapshotStatus.ABORTED]

# The statuses an abort may flip: a turn still running, or one whose heartbeat went stale.
_ABORTABLE: Final = frozenset({SnapshotStatus.PENDING, SnapshotStatus.EXPIRED})


def now_iso() -> str:
    """The current UTC time as ISO-8601."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def is_resumable(snapshot: SessionSnapshot) -> bool:
    """Whether a turn may continue from this snapshot: only completed ones (or status-less legacy ones)."""
    return snapshot.status in (None, SnapshotStatus.COMPLETED)


def stored_error(err: TurnkitError) -> ErrorInfo:
    """A failed turn's error as its snapshot keeps it: text intact, non-public ones marked so."""
    info = ErrorInfo.of(err)
    if err.public:
        return info
    if isinstance(info.details, dict):
        details = info.details
    else:
        details = {} if info.details is None else {"details": info.details}
    return info.model_copy(update={"details": {**details, INTERNAL_MARK: True}})


async def latest_resumable(
    store: SessionStore, session_id: str, context: Mapping[str, Any]
) -> SessionSnapshot | None:
    """The session's head, walking back through parents past pending, failed or aborted turns."""
    snap = await store.get_snapshot(session_id=session_id, context=context)
    while snap is not None and not is_resumable(snap):
        if not snap.parent_id:
            return None
        snap = await store.get_snapshot(snapshot_id=snap.parent_id, context=context)
    return snap


async def write_pending(
    store: SessionStore,
    *,
    snapshot_id: str,
    parent_id: str | None,
    state: SessionState,
    context: Mapping[str, Any],
) -> None:
    """Store the `pending` snapshot of a turn that is detaching (unless the id is somehow taken)."""
    stamp = now_iso()
    pending = SessionSnapshot(
        snapshot_id=snapshot_id,
        session_id=state.session_id,
        parent_id=parent_id,
        created_at=stamp,
        updated_at=stamp,
        heartbeat_at=stamp,
        status=SnapshotStatus.PENDING,
        state=state,
    )
    await store.save_snapshot(
        snapshot_id, lambda existing: pending if existing is None else None, context=context
    )


async def write_outcome(
    store: SessionStore,
    *,
    snapshot_id: str,
    parent_id: str | None,
    state: SessionState,
    status: TurnOutcomeStatus,
    finish_reason: AgentFinishReason,
    error: TurnkitError | None,
    context: Mapping[str, Any],
) -> None:
    """Store a turn's end; a snapshot already terminal (an abort got there first) is left as it is."""
    stamp = now_iso()

    def write(existing: SessionSnapshot | None) -> SessionSnapshot | None:
        if existing is not None and existing.status in TERMINAL_STATUSES:
            return None
        return SessionSnapshot(
            snapshot_id=snapshot_id,
            session_id=state.session_id,
            parent_id=parent_id,
            created_at=existing.created_at if existing else stamp,
            updated_at=stamp,
            status=status,
            finish_reason=finish_reason,
            error=stored_error(error) if error else None,
            state=state,
        )

    await store.save_snapshot(snapshot_id, write, context=context)


async def abort_snapshot(
    store: SessionStore, snapshot_id: str, *, context: Mapping[str, Any] | None
) -> SnapshotStatus | None:
    """Flip a pending (or expired) snapshot to `aborted`; returns its status before (None if absent)."""
    previous: list[SnapshotStatus | None] = [None]

    def flip(existing: SessionSnapshot | None) -> SessionSnapshot | None:
        previous[0] = SnapshotStatus(existing.status) if existing and existing.status else None
        if existing is None or existing.status not in _ABORTABLE:
            return None
        return existing.model_copy(
            update={
                "status": SnapshotStatus.ABORTED,
                "finish_reason": AgentFinishReason.ABORTED,
                "updated_at": now_iso(),
            }
        )

    await store.save_snapshot(snapshot_id, flip, context=context)
    return previous[0]


async def heartbeat(
    store: SessionStore,
    snapshot_id: str,
    interval: float,
    context: Mapping[str, Any],
    progress: Callable[[], SessionState] | None = None,
) -> None:
    """Refresh a pending snapshot's heartbeat every `interval` seconds until cancelled or terminal.

    With `progress`, each beat also stores the turn's state so far (custom state, messages), so that
    pollers see a background turn's progress and an abort keeps what it had done."""

    def beat(existing: SessionSnapshot | None, state: SessionState | None) -> SessionSnapshot | None:
        if existing is None or existing.status != SnapshotStatus.PENDING:
            return None
        stamp = now_iso()
        update: dict[str, Any] = {"heartbeat_at": stamp}
        if state is not None and state != existing.state:
            update.update(state=state, updated_at=stamp)  # a content change: pollers see it
        return existing.model_copy(update=update)

    me = asyncio.current_task()
    while True:
        await asyncio.sleep(interval)
        with contextlib.suppress(Exception):
            # Read here, in the loop's thread: a store may run `beat` in a worker thread.
            state = progress() if progress is not None else None
            saved = await store.save_snapshot(
                snapshot_id, functools.partial(beat, state=state), context=context
            )
            if saved is None or saved.status != SnapshotStatus.PENDING:
                return
        # On Python 3.11 a store awaiting `asyncio.wait_for` can swallow our cancellation when its
        # own wait ends at the same moment; a cancel still counts, so stop here instead of beating on.
        if me is not None and me.cancelling():
            return
