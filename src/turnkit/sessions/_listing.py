"""Listing a tenant's sessions a page at a time: `store.list_sessions(limit=..., cursor=...)`.

Order: by session id, comparing code points (which is also the byte order of their UTF-8, the
order SQLite, PostgreSQL's "C" collation and Redis's lexicographic ranges use), so every store
lists the same sessions in the same order. The cursor is keyset-based: it names the last session
id of the page (opaquely encoded), and the next page holds the sessions after it. Sessions created
or deleted between pages therefore never shift the others: a session that exists throughout a walk
is listed exactly once, whatever else changes meanwhile. A new session appears in a walk that has
not yet passed its id.
"""

from __future__ import annotations

import base64
import binascii
import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Protocol, runtime_checkable

from turnkit.errors import TurnkitError
from turnkit.sessions._store import check_id

__all__ = [
    "MAX_LIST_LIMIT",
    "ListingBackend",
    "SessionListing",
    "SessionPage",
    "decode_cursor",
    "encode_cursor",
    "first_after",
    "list_page",
]

MAX_LIST_LIMIT: Final = 1000


@dataclass(frozen=True, slots=True)
class SessionListing:
    """One session of a tenant: its id and the id of its latest snapshot (read that for details)."""

    session_id: str
    snapshot_id: str


@dataclass(frozen=True, slots=True)
class SessionPage:
    """A page of sessions in id order; `next_cursor` fetches the next page (None: this was the last)."""

    sessions: list[SessionListing]
    next_cursor: str | None


@runtime_checkable
class ListingBackend(Protocol):
    """What a backend provides so that its sessions can be listed (every store here does)."""

    async def list_heads(self, tenant: str, after: str | None, limit: int) -> list[tuple[str, str]]:
        """Up to `limit` (session id, head snapshot id) pairs of `tenant` with a session id greater
        than `after` (all when None), in ascending code-point order of the session id."""
        ...


def encode_cursor(session_id: str) -> str:
    """The cursor that continues a listing after `session_id`."""
    return base64.urlsafe_b64encode(session_id.encode("utf-8")).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The session id a cursor continues after; INVALID_ARGUMENT when it is not one of ours."""
    try:
        if not isinstance(cursor, str):
            raise ValueError("not a string")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return check_id(raw.decode("utf-8"), "cursor")
    except (ValueError, binascii.Error, UnicodeDecodeError, TurnkitError):
        raise TurnkitError(
            "INVALID_ARGUMENT", "cursor is not a cursor from list_sessions (pass next_cursor as given)"
        ) from None


def first_after(session_ids: Iterable[str], after: str | None, limit: int) -> list[str]:
    """The `limit` smallest ids greater than `after`, sorted (for backends that keep heads in memory)."""
    if after is None:
        return heapq.nsmallest(limit, session_ids)
    return heapq.nsmallest(limit, (s for s in session_ids if s > after))


async def list_page(backend: object, tenant: str, limit: int, cursor: str | None) -> SessionPage:
    """One page of a tenant's sessions from a `ListingBackend`: checks `limit` and `cursor`."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST_LIMIT:
        raise TurnkitError(
            "INVALID_ARGUMENT", f"limit must be an integer from 1 to {MAX_LIST_LIMIT}, not {limit!r}"
        )
    after = None if cursor is None else decode_cursor(cursor)
    if not isinstance(backend, ListingBackend):
        raise TurnkitError("UNIMPLEMENTED", f"{type(backend).__name__} cannot list sessions")
    # One more than asked tells whether another page follows, without a second query.
    rows = await backend.list_heads(tenant, after, limit + 1)
    sessions = [SessionListing(session_id=s, snapshot_id=k) for s, k in rows[:limit]]
    more = len(rows) > limit
    return SessionPage(
        sessions=sessions, next_cursor=encode_cursor(sessions[-1].session_id) if more else None
    )
