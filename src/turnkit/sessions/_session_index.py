"""Which session each stored record belongs to, worked out from the records themselves: what a
backend that indexes records by session (for `delete_session`) fills that index with when it opens
data written before it had one."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Final

__all__ = ["SPILL_SEP", "owner_of", "sessions_of_records"]

SPILL_SEP: Final = "\x1f"  # in the key of a superseded (spilled) state, after its snapshot's id


def owner_of(key: str) -> str:
    """The snapshot a record belongs to: itself, or the one a spilled state was kept for."""
    return key.split(SPILL_SEP, 1)[0]


def sessions_of_records(rows: Iterable[tuple[str, str, str]]) -> dict[tuple[str, str], str]:
    """(tenant, key) -> session id, for records given as (tenant, key, JSON text): a snapshot's is
    its metadata's, a spilled state's that of its snapshot; records of no session are left out."""
    owners: dict[tuple[str, str], str] = {}
    spills: list[tuple[str, str]] = []
    for tenant, key, text in rows:
        if SPILL_SEP in key:
            spills.append((tenant, key))
            continue
        meta = json.loads(text).get("meta")
        if isinstance(meta, dict) and isinstance(meta.get("sessionId"), str):
            owners[(tenant, key)] = meta["sessionId"]
    for tenant, key in spills:
        session = owners.get((tenant, owner_of(key)))
        if session is not None:
            owners[(tenant, key)] = session
    return owners
