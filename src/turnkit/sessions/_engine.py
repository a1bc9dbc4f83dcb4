"""The linear storage engine behind every turnkit store: deltas, checkpoints and message logs.

A store is this engine plus a `RecordBackend`, which keeps three kinds of data per tenant:
- snapshot records: key -> (rev, JSON text), replaced with compare-and-set on `rev`;
- session heads: session id -> id of the snapshot most recently created in that session;
- message logs: append-only lists of message JSON, appended with compare-and-set on length.

Messages live in logs rather than in records: a full checkpoint of the history every K snapshots
would store each message about N/K times (about 7x the history after 200 turns with K=16), while
a log stores it once and still lets any snapshot be read in a bounded number of reads. A snapshot
names its messages as segments `[[log, count], ...]` (the first `count` entries of each log, in
order). A child that extends its parent appends to the parent's last log, if that log still ends
where the parent does; otherwise (a branch) it starts a new log, and after K segments it starts
over with one log holding a full copy (only deep branching ever pays that); see
`turnkit.sessions._message_logs`.

A record's JSON (format version 1):
    {"v": 1, "srev": n, "meta": <SessionSnapshot wire fields but state>, "state": null | S}
`srev` counts rewrites of the snapshot's state. S is
    {"msgs": segments | null, "depth": d, "sid": state's session id (omitted when it is the snapshot's), ...}
with, for a checkpoint (d == 0), `"custom": value, "arts": [artifact, ...] | null`, and for a delta
from the parent (0 < d < K), `"base": parent id, "psrev": the parent's srev`, the custom change as
`"cpatch": [RFC 6902 ops]` or `"cval": value` (neither: unchanged), and the artifact change as
`"aset": [[index, artifact], ...]`, `"aadd": [artifact, ...]`, `"anull": true` (artifacts None).
When a snapshot's state is rewritten, the superseded state is kept under `<id>\\x1f<srev>` (ids
cannot hold control characters, so that key is free), so deltas made against it still read back.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import inspect
import json
import random
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Final, Self

from pydantic_core import to_jsonable_python

from turnkit.errors import TurnkitError
from turnkit.sessions._backend import RecordBackend
from turnkit.sessions._deltas import (
    Node,
    apply_artifacts,
    apply_custom,
    artifacts_delta,
    custom_delta,
    data_loss,
    dumps,
    is_prefix,
    same_state,
)
from turnkit.sessions._lease import DEFAULT_LEASE_TTL, LeaseBackend, SessionLease, held_lease
from turnkit.sessions._listing import SessionPage, list_page
from turnkit.sessions._message_logs import read_messages, write_messages
from turnkit.sessions._options import StoreOptions, StoreStats
from turnkit.sessions._retention import Retention, check_keep, check_max_age
from turnkit.sessions._store import (
    TERMINAL_STATUSES,
    SessionStoreBase,
    SnapshotMutator,
    TenantOf,
    check_id,
)
from turnkit.types import Artifact, Message, SessionSnapshot, SessionState, SnapshotStatus, SnapshotStatusName

__all__ = ["FORMAT_VERSION", "LinearSessionStore", "StoreOptions", "StoreStats"]

FORMAT_VERSION: Final = 1
_SPILL_SEP: Final = "\x1f"


@dataclass(frozen=True, slots=True)
class _Loaded:
    """One snapshot record as read: revision, metadata, raw state, and materialised state."""

    rev: int
    srev: int
    meta: dict[str, Any]
    state: dict[str, Any] | None
    node: Node | None


class LinearSessionStore(Retention, SessionStoreBase):
    """A `SessionStore` that stores each snapshot as a delta (or periodic checkpoint) on a `RecordBackend`.

    `checkpoint_every` (K) bounds a read to K records and K message logs; `cache_size` is how many
    materialised states the LRU cache keeps; `max_attempts` bounds retries of a contended save.
    `expire_after` (seconds), `tenant_of`, `poll_interval` and `clock` are as in `SessionStoreBase`.
    `lease_ttl` (seconds) is how long a session lease outlives its holder (renewed while held).
    `max_age` (seconds) and `max_snapshots_per_session` are what `prune()` removes by default:
    sessions untouched for longer, and a session's oldest snapshots beyond that many.
    Messages, once saved, are shared with the cache and with everything read back, so they must
    never be mutated in place.
    """

    def __init__(
        self,
        backend: RecordBackend,
        *,
        checkpoint_every: int = 16,
        cache_size: int = 256,
        max_attempts: int = 1000,
        expire_after: float = 60.0,
        tenant_of: TenantOf | None = None,
        poll_interval: float = 0.25,
        clock: Callable[[], datetime] | None = None,
        lease_ttl: float = DEFAULT_LEASE_TTL,
        max_state_bytes: int | None = None,
        max_age: float | None = None,
        max_snapshots_per_session: int | None = None,
    ) -> None:
        super().__init__(
            expire_after=expire_after, tenant_of=tenant_of, poll_interval=poll_interval, clock=clock
        )
        if checkpoint_every < 1:
            raise ValueError("checkpoint_every must be at least 1")
        self.backend = backend
        self.checkpoint_every = checkpoint_every
        self.cache_size = cache_size
        self.max_attempts = max_attempts
        self.lease_ttl = lease_ttl
        self.max_state_bytes = max_state_bytes
        self.max_age = check_max_age(max_age, "max_age")
        self.max_snapshots_per_session = check_keep(max_snapshots_per_session, "max_snapshots_per_session")
        self.stats = StoreStats()
        put_params = inspect.signature(backend.put_record).parameters
        self._fences, self._guards_parent = "fence" in put_params, "requires" in put_params
        self._seen_sessions: OrderedDict[tuple[str, str], str] = OrderedDict()  # -> store epoch seen
        self._cache: OrderedDict[tuple[str, str], Node] = OrderedDict()
        self._signals: weakref.WeakValueDictionary[tuple[str, str], asyncio.Event] = (
            weakref.WeakValueDictionary()
        )

    # --- the SessionStore contract ---------------------------------------------------------------

    def session_lease(
        self, session_id: str, *, context: Mapping[str, Any] | None = None, wait: float = 30.0
    ) -> SessionLease:
        """The lease of a session's head: hold it to continue the session without forking it.

        Entering waits up to `wait` seconds for another holder, then raises ABORTED (`wait=0`:
        at once). The lease lives `lease_ttl` seconds unless renewed, which happens while held.
        While held, this context's saves to the session are fenced by the lease's token: once
        another holder has taken the lease, they fail with ABORTED.
        """
        check_id(session_id, "session id")
        if not isinstance(self.backend, LeaseBackend):
            raise TurnkitError("UNIMPLEMENTED", f"{type(self.backend).__name__} has no leases")
        return SessionLease(self.backend, self.tenant_key(context), session_id, ttl=self.lease_ttl, wait=wait)

    async def list_sessions(
        self, *, limit: int = 100, cursor: str | None = None, context: Mapping[str, Any] | None = None
    ) -> SessionPage:
        """A page of the caller's tenant's sessions, in session id order (code points), each with its
        latest snapshot id; pass the page's `next_cursor` back for the next page (see `_listing`)."""
        return await list_page(self.backend, self.tenant_key(context), limit, cursor)

    async def get_snapshot(
        self,
        *,
        snapshot_id: str | None = None,
        session_id: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> SessionSnapshot | None:
        """The snapshot with this id, or the latest snapshot of this session; None when absent."""
        if (snapshot_id is None) == (session_id is None):
            raise TurnkitError("INVALID_ARGUMENT", "give exactly one of snapshot_id and session_id")
        tenant = self.tenant_key(context)
        if session_id is not None:
            snapshot_id = await self.backend.get_head(tenant, check_id(session_id, "session id"))
            if snapshot_id is None:
                await self.check_not_lost(tenant, session_id)
                return None
            await self.saw_session(tenant, session_id)
        loaded = await self._load(tenant, check_id(snapshot_id, "snapshot id"))
        if loaded is None or (session_id is not None and loaded.meta.get("sessionId") != session_id):
            return None
        return self._view(loaded)

    async def save_snapshot(
        self,
        snapshot_id: str,
        fn: SnapshotMutator,
        *,
        context: Mapping[str, Any] | None = None,
    ) -> SessionSnapshot | None:
        """Atomically replace the snapshot with `fn(existing)`, retrying `fn` on a concurrent change.

        `fn` may run more than once, so it must not have side effects. Returning None skips the
        write; a save that would move a terminal status elsewhere is ignored; `expired` is saved
        as `pending` (it is only ever computed on read). The stored snapshot is returned.
        """
        check_id(snapshot_id, "snapshot id")
        tenant = self.tenant_key(context)
        existed = False
        for attempt in range(self.max_attempts):
            loaded = await self._load(tenant, snapshot_id)
            if loaded is None and existed:  # deleted meanwhile: writing it again would undo that
                raise TurnkitError("NOT_FOUND", f"snapshot {snapshot_id!r} was deleted; nothing was saved")
            existed = loaded is not None
            existing = None if loaded is None else self._view(loaded)
            proposed = fn(existing)
            if proposed is None:
                return existing
            if loaded is not None:
                stored_status = loaded.meta.get("status")
                if stored_status in TERMINAL_STATUSES and proposed.status != stored_status:
                    return existing
            snapshot = self._normalize(snapshot_id, proposed, loaded)
            saved = await self._commit(tenant, snapshot, loaded)
            if saved is not None:
                return saved
            self.stats.conflicts += 1
            # Yield at once (the winner is usually done); back off a little if it keeps happening.
            await asyncio.sleep(0 if attempt < 3 else random.uniform(0, min(0.05, attempt / 1000)))
        raise TurnkitError("ABORTED", f"gave up saving snapshot after {self.max_attempts} conflicts")

    async def read_status(
        self, snapshot_id: str, *, context: Mapping[str, Any] | None = None
    ) -> SnapshotStatus | SnapshotStatusName | None:
        """The reported status of one snapshot, read from its record alone (no state is materialised)."""
        record = await self._read(self.tenant_key(context), check_id(snapshot_id, "snapshot id"))
        return None if record is None else self.status_of(SessionSnapshot.model_validate(record[1]["meta"]))

    def change_waiter(
        self, snapshot_id: str, *, context: Mapping[str, Any] | None = None
    ) -> Callable[[], Awaitable[None]]:
        """Wake on a write through this store instance at once, on anything else after a poll interval."""
        key = (self.tenant_key(context), snapshot_id)
        event = self._signals.get(key)
        if event is None:
            event = self._signals[key] = asyncio.Event()

        async def wait() -> None:
            # The closure holds the event, which keeps it in the weak map while someone waits.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), self.poll_interval)

        return wait

    async def close(self) -> None:
        """Release what the store holds (threads, connections, files); calls after this fail."""
        closer = getattr(self.backend, "close", None)
        if closer is not None:
            await closer()

    async def aclose(self) -> None:
        """The same as `close`."""
        await self.close()

    async def __aenter__(self) -> Self:
        """The store itself; leaving the block closes it."""
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def clear_cache(self) -> None:
        """Forget every materialised state (the next reads go to the backend)."""
        self._cache.clear()

    # --- reading ---------------------------------------------------------------------------------

    async def _read(self, tenant: str, key: str) -> tuple[int, dict[str, Any]] | None:
        stored = await self.backend.get_record(tenant, key)
        self.stats.records_read += 1
        if stored is None:
            return None
        record = json.loads(stored.data)
        if record.get("v") != FORMAT_VERSION:
            raise data_loss(f"record {key!r} has unsupported format version {record.get('v')!r}")
        # Records leave out what they would repeat: their own id, and a delta's base when it is
        # the parent (spilled states, which have no metadata, always keep their base).
        meta, state = record["meta"], record["state"]
        if meta is not None:
            meta.setdefault("snapshotId", key)
            if meta.pop("u=c", None):  # "updated when created", written for short
                meta["updatedAt"] = meta["createdAt"]
            if state is not None and state["depth"] > 0:
                state.setdefault("base", meta.get("parentId"))
        return stored.rev, record

    async def _load(self, tenant: str, key: str) -> _Loaded | None:
        got = await self._read(tenant, key)
        if got is None:
            return None
        rev, record = got
        state = record["state"]
        node = None
        if state is not None:
            sid = state["sid"] if "sid" in state else record["meta"].get("sessionId")
            node = await self._materialize(tenant, key, record["srev"], state, sid)
        return _Loaded(rev, record["srev"], record["meta"], state, node)

    async def _state_at(self, tenant: str, key: str, srev: int) -> dict[str, Any]:
        """The raw state of snapshot `key` as it was at state revision `srev`."""
        for candidate in (key, f"{key}{_SPILL_SEP}{srev}"):
            got = await self._read(tenant, candidate)
            if got is not None and got[1]["srev"] == srev and got[1]["state"] is not None:
                state: dict[str, Any] = got[1]["state"]
                return state
        raise data_loss(f"snapshot {key!r} at state revision {srev} is missing")

    async def _materialize(
        self, tenant: str, key: str, srev: int, state: dict[str, Any], session_id: str | None
    ) -> Node:
        hit = self._cached(tenant, key, srev)
        if hit is not None:
            return hit
        # Walk up to a checkpoint or to an ancestor already in the cache: at most K records.
        deltas = [state]
        base: Node | None = None
        current = state
        while current["depth"] > 0:
            base = self._cached(tenant, current["base"], current["psrev"])
            if base is not None:
                break
            parent = await self._state_at(tenant, current["base"], current["psrev"])
            if parent["depth"] != current["depth"] - 1:
                raise data_loss(f"broken delta chain below snapshot {current['base']!r}")
            deltas.append(parent)
            current = parent
        if base is None:
            top = deltas.pop()
            custom = top["custom"]
            artifacts = None if top["arts"] is None else [Artifact.model_validate(a) for a in top["arts"]]
        else:
            custom = copy.deepcopy(base.custom)
            artifacts = None if base.artifacts is None else list(base.artifacts)
        for delta in reversed(deltas):
            custom = apply_custom(custom, delta)
            artifacts = apply_artifacts(artifacts, delta)
        segments = None if state["msgs"] is None else tuple((s[0], s[1]) for s in state["msgs"])
        hint = base or self._cached(tenant, key)
        node = Node(
            srev=srev,
            depth=state["depth"],
            session_id=session_id,
            segments=segments,
            messages=await read_messages(self.backend, self.stats, tenant, segments, hint),
            custom=custom,
            custom_text=dumps(custom),
            artifacts=None if artifacts is None else tuple(artifacts),
        )
        self._remember(tenant, key, node)
        return node

    def _view(self, loaded: _Loaded) -> SessionSnapshot:
        """A fresh snapshot for a caller: new lists, shared messages, a copy of custom state."""
        snapshot = SessionSnapshot.model_validate(loaded.meta)
        snapshot.status = self.status_of(snapshot)
        node = loaded.node
        if node is not None:
            snapshot.state = SessionState.model_construct(
                session_id=node.session_id,
                messages=None if node.messages is None else list(node.messages),
                custom=copy.deepcopy(node.custom),
                artifacts=None if node.artifacts is None else list(node.artifacts),
            )
        return snapshot

    # --- writing ---------------------------------------------------------------------------------

    def _normalize(
        self, snapshot_id: str, proposed: SessionSnapshot, loaded: _Loaded | None
    ) -> SessionSnapshot:
        updates: dict[str, Any] = {"snapshot_id": snapshot_id}
        if proposed.status == "expired":
            updates["status"] = "pending"
        snapshot = proposed.model_copy(update=updates)
        if snapshot.session_id is not None:
            check_id(snapshot.session_id, "session id")
        if snapshot.parent_id is not None:
            check_id(snapshot.parent_id, "parent id")
            if snapshot.parent_id == snapshot_id:
                raise TurnkitError("INVALID_ARGUMENT", "a snapshot cannot be its own parent")
        if loaded is not None and loaded.meta.get("sessionId") != snapshot.session_id:
            raise TurnkitError("INVALID_ARGUMENT", "a snapshot cannot move to another session")
        return snapshot

    async def _commit(
        self,
        tenant: str,
        snapshot: SessionSnapshot,
        loaded: _Loaded | None,
    ) -> SessionSnapshot | None:
        """Encode and compare-and-set one snapshot; None when another writer got there first."""
        key = snapshot.snapshot_id
        state = snapshot.state
        old_node = None if loaded is None else loaded.node
        if state is None or old_node is None:
            unchanged = state is None and loaded is not None and loaded.state is None
        else:
            # Compared, not assumed from identity: `fn` may have edited the copy it was given in place.
            unchanged = same_state(state, old_node)
        if loaded is not None and unchanged:
            srev, raw, node = loaded.srev, loaded.state, old_node
        else:
            srev = 1 if loaded is None else loaded.srev + 1
            raw, node = (
                (None, None) if state is None else await self._encode(tenant, snapshot, srev, old_node)
            )
            if loaded is not None and loaded.state is not None:
                # Children may hold deltas against the old state: keep it (a no-op if a retry kept it).
                spill = {"v": FORMAT_VERSION, "srev": loaded.srev, "meta": None, "state": loaded.state}
                await self.backend.put_record(
                    tenant, f"{key}{_SPILL_SEP}{loaded.srev}", dumps(spill), expected_rev=0
                )
        meta = snapshot.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"state"})
        # Left out: the id (the key says it) and an update time that is the creation time.
        stored_meta = {k: v for k, v in meta.items() if k != "snapshotId"}
        if "updatedAt" in stored_meta and stored_meta["updatedAt"] == stored_meta.get("createdAt"):
            del stored_meta["updatedAt"]
            stored_meta["u=c"] = 1
        stored_raw = raw
        if raw is not None and raw.get("base") is not None and raw["base"] == meta.get("parentId"):
            stored_raw = {k: v for k, v in raw.items() if k != "base"}
        text = dumps({"v": FORMAT_VERSION, "srev": srev, "meta": stored_meta, "state": stored_raw})
        rev = 0 if loaded is None else loaded.rev
        head_of = snapshot.session_id if loaded is None else None
        lease = held_lease(self.backend, tenant, snapshot.session_id) if self._fences else None
        guard: dict[str, Any] = {} if lease is None else {"fence": (lease.name, lease.owner)}
        if loaded is None and snapshot.parent_id is not None and self._guards_parent:
            guard["requires"] = snapshot.parent_id  # a deleted session's turn cannot write it back
        if not await self.backend.put_record(tenant, key, text, expected_rev=rev, head_of=head_of, **guard):
            return None
        if head_of is not None:
            await self.saw_session(tenant, head_of)
        self.stats.records_written += 1
        if node is not None:
            self._remember(tenant, key, node)
            if loaded is None and snapshot.parent_id is not None:
                # A session reads its newest snapshot next, not the one this supersedes: dropping
                # that keeps about one state per active session cached instead of one per turn
                # (with one per turn, more active sessions than half the cache thrash it).
                self._cache.pop((tenant, snapshot.parent_id), None)
        event = self._signals.pop((tenant, key), None)
        if event is not None:
            event.set()
        return self._view(_Loaded(rev + 1, srev, meta, raw, node))

    async def _encode(
        self, tenant: str, snapshot: SessionSnapshot, srev: int, old: Node | None
    ) -> tuple[dict[str, Any], Node]:
        """The raw state of a snapshot (a delta when the parent allows it) and its cache node."""
        state = snapshot.state
        assert state is not None
        parent: Node | None = None
        if snapshot.parent_id is not None:
            # Trusting a cached parent is safe even if it was rewritten since: deltas name its srev.
            parent = self._cached(tenant, snapshot.parent_id)
            if parent is None:
                loaded = await self._load(tenant, snapshot.parent_id)
                parent = None if loaded is None else loaded.node
            if parent is not None and parent.session_id != state.session_id:
                parent = None  # a session's records and logs never serve another (it is deleted alone)
        messages = None if state.messages is None else tuple(state.messages)
        custom = to_jsonable_python(state.custom)  # new containers: the cache owns them
        custom_text = dumps(custom)
        artifacts = None if state.artifacts is None else tuple(state.artifacts)
        if self.max_state_bytes is not None:
            self._check_size(snapshot.snapshot_id, messages, custom_text, artifacts, parent)
        segments = (
            None
            if messages is None
            else await write_messages(
                self.backend, self.stats, tenant, messages, (old, parent), self.checkpoint_every
            )
        )
        raw: dict[str, Any] = {"msgs": None if segments is None else [list(s) for s in segments]}
        if state.session_id != snapshot.session_id:  # usually equal: then the record's meta says it
            raw["sid"] = state.session_id
        if (
            parent is None
            or parent.depth + 1 >= self.checkpoint_every
            or len(artifacts or ()) < len(parent.artifacts or ())
        ):
            raw["depth"] = 0
            raw["custom"] = custom
            raw["arts"] = None if artifacts is None else [a.to_wire() for a in artifacts]
        else:
            raw.update(depth=parent.depth + 1, base=snapshot.parent_id, psrev=parent.srev)
            raw.update(custom_delta(parent, custom, custom_text))
            raw.update(artifacts_delta(parent.artifacts or (), artifacts))
        node = Node(
            srev=srev,
            depth=raw["depth"],
            session_id=state.session_id,
            segments=segments,
            messages=messages,
            custom=custom,
            custom_text=custom_text,
            artifacts=artifacts,
        )
        return raw, node

    def _check_size(
        self,
        key: str,
        messages: tuple[Message, ...] | None,
        custom_text: str,
        artifacts: tuple[Artifact, ...] | None,
        parent: Node | None,
    ) -> None:
        """Refuse a snapshot whose custom state and artifacts, or whose new messages, exceed the limit."""
        limit = self.max_state_bytes
        assert limit is not None
        held = len(custom_text) + sum(len(a.to_json()) for a in artifacts or ())
        new = messages or ()
        if parent is not None and parent.messages is not None and is_prefix(parent.messages, new):
            new = new[len(parent.messages) :]
        added = sum(len(m.to_json()) for m in new)
        for what, size in (("custom state and artifacts", held), ("new messages", added)):
            if size > limit:
                raise TurnkitError(
                    "INVALID_ARGUMENT",
                    f"snapshot {key!r}: its {what} take {size} bytes, over the store's limit of {limit} (max_state_bytes)",
                )

    # --- cache -----------------------------------------------------------------------------------

    def _cached(self, tenant: str, key: str, srev: int | None = None) -> Node | None:
        node = self._cache.get((tenant, key))
        if node is None or (srev is not None and node.srev != srev):
            return None
        self._cache.move_to_end((tenant, key))
        self.stats.cache_hits += 1
        return node

    def _remember(self, tenant: str, key: str, node: Node) -> None:
        if self.cache_size <= 0:
            return
        self._cache[(tenant, key)] = node
        self._cache.move_to_end((tenant, key))
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
