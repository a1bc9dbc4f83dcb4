"""Sessions: `Session` and the current-session context, the `SessionStore` contract, and its stores.

Every store here runs on one linear storage engine (`LinearSessionStore` over a `RecordBackend`):
snapshots are stored as deltas with periodic checkpoints, and messages in append-only logs.
"""

from turnkit.sessions._backend import RecordBackend, StoredRecord
from turnkit.sessions._engine import FORMAT_VERSION, LinearSessionStore, StoreOptions, StoreStats
from turnkit.sessions._file import FileSessionStore
from turnkit.sessions._lease import LeaseBackend, SessionLease
from turnkit.sessions._listing import ListingBackend, SessionListing, SessionPage
from turnkit.sessions._memory import InMemorySessionStore, MemoryBackend
from turnkit.sessions._retention import MaintenanceBackend
from turnkit.sessions._session import (
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
from turnkit.sessions._sqlite import SqliteSessionStore
from turnkit.sessions._state_type import StateType
from turnkit.sessions._store import (
    TERMINAL_STATUSES,
    Pruned,
    SessionStore,
    SessionStoreBase,
    SnapshotMutator,
    SnapshotStoreLike,
    TenantOf,
    as_session_store,
    check_id,
    default_tenant_of,
)
from turnkit.sessions._url import store_from_url

__all__ = [
    "FORMAT_VERSION",
    "TERMINAL_STATUSES",
    "ArtifactAdded",
    "CustomChanged",
    "FileSessionStore",
    "InMemorySessionStore",
    "LeaseBackend",
    "LinearSessionStore",
    "ListingBackend",
    "MaintenanceBackend",
    "MemoryBackend",
    "MessagesAdded",
    "MessagesSet",
    "Pruned",
    "RecordBackend",
    "Session",
    "SessionEvent",
    "SessionLease",
    "SessionListener",
    "SessionListing",
    "SessionPage",
    "SessionStore",
    "SessionStoreBase",
    "SnapshotMutator",
    "SnapshotStoreLike",
    "SqliteSessionStore",
    "StateSchema",
    "StateType",
    "StoreOptions",
    "StoreStats",
    "StoredRecord",
    "TenantOf",
    "as_session_store",
    "check_id",
    "default_tenant_of",
    "get_current_session",
    "run_with_session",
    "store_from_url",
]
