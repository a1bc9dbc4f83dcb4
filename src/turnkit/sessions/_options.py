"""The options every engine-based store takes, and the counters it keeps (see `LinearSessionStore`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import TypedDict

from turnkit.sessions._store import TenantOf

__all__ = ["StoreOptions", "StoreStats"]


class StoreOptions(TypedDict, total=False):
    """The options every engine-based store accepts (see `LinearSessionStore`)."""

    checkpoint_every: int
    cache_size: int
    max_attempts: int
    expire_after: float
    tenant_of: TenantOf | None
    poll_interval: float
    clock: Callable[[], datetime] | None
    lease_ttl: float
    max_state_bytes: int | None
    max_age: float | None
    max_snapshots_per_session: int | None


@dataclass
class StoreStats:
    """Counters of backend traffic, for tests and benchmarks."""

    records_read: int = 0
    records_written: int = 0
    logs_read: int = 0
    logs_appended: int = 0
    conflicts: int = 0
    cache_hits: int = 0

    def reset(self) -> None:
        """Set every counter back to zero."""
        for f in fields(self):
            setattr(self, f.name, 0)
