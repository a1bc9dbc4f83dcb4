"""Sessions: `Session` and the current-session context, the `SessionStore` contract, and its stores.

Every store here runs on one linear storage engine (`LinearSessionStore` over a `RecordBackend`):
snapshots are stored as deltas with periodic checkpoints, and messages in append-only logs.
"""

from turnkit.sessions.backend import RecordBackend, StoredRecord
from turnkit.sessions.engine import FORMAT_VERSION, LinearSessionStore, StoreOptions, StoreStats
from turnkit.sessions.file import FileSessionStore
from turnkit.sessions.lease import LeaseBackend, SessionLease
from turnkit.sessions.memory import InMemorySessionStore
from turnkit.sessions.session import (
    ArtifactAdded,
    CustomChanged,
    MessagesAdded,
    MessagesSet,
    Session,
    SessionEvent,
    SessionListener,
    StateSchema,
    get_current_session,
    run_with_session,
)
from turnkit.sessions.sqlite import SqliteSessionStore
from turnkit.sessions.store import (
    TERMINAL_STATUSES,
    SessionStore,
    SessionStoreBase,
    SnapshotMutator,
    TenantOf,
    check_id,
    default_tenant_of,
)
from turnkit.sessions.url import store_from_url

__all__ = [
    "FORMAT_VERSION",
    "TERMINAL_STATUSES",
    "ArtifactAdded",
    "CustomChanged",
    "FileSessionStore",
    "InMemorySessionStore",
    "LeaseBackend",
    "LinearSessionStore",
    "MessagesAdded",
    "MessagesSet",
    "RecordBackend",
    "Session",
    "SessionEvent",
    "SessionLease",
    "SessionListener",
    "SessionStore",
    "SessionStoreBase",
    "SnapshotMutator",
    "SqliteSessionStore",
    "StateSchema",
    "StoreOptions",
    "StoreStats",
    "StoredRecord",
    "TenantOf",
    "check_id",
    "default_tenant_of",
    "get_current_session",
    "run_with_session",
    "store_from_url",
]
