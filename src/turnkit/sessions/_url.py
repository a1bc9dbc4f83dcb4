"""Open a session store from a URL, so configuration (and other processes) can name one in a string.

    memory:                                   InMemorySessionStore
    file:/path/to/dir                         FileSessionStore
    sqlite:sessions.db                        SqliteSessionStore (a path relative to the working
    sqlite:/path/to/sessions.db                 directory; `sqlite:///path` is absolute too)
    postgresql://host:5432/db?schema=name     PostgresSessionStore (also postgres://)
    redis://host:6379/0?prefix=name:          RedisSessionStore

Engine options ride along as query parameters: `checkpoint_every`, `cache_size`, `expire_after`,
`poll_interval`, `lease_ttl`, `max_state_bytes`, `max_age`, `max_snapshots_per_session`
(e.g. `sqlite:/tmp/s.db?expire_after=0.5`).
"""

from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from turnkit.errors import TurnkitError
from turnkit.sessions._engine import LinearSessionStore

__all__ = ["store_from_url"]

_FLOAT_OPTIONS = ("expire_after", "poll_interval", "lease_ttl", "max_age")
_INT_OPTIONS = (
    "checkpoint_every",
    "cache_size",
    "max_state_bytes",
    "max_attempts",
    "max_snapshots_per_session",
)
# Where each scheme's store lives, imported only when used (its driver is an optional extra).
_STORES = {
    "sqlite": ("turnkit.sessions._sqlite", "SqliteSessionStore"),
    "postgresql": ("turnkit.sessions.postgres", "PostgresSessionStore"),
    "postgres": ("turnkit.sessions.postgres", "PostgresSessionStore"),
    "redis": ("turnkit.sessions.redis_store", "RedisSessionStore"),
}


def _split_options(query: str) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    options: dict[str, Any] = {}
    rest: list[tuple[str, str]] = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        try:
            if key in _FLOAT_OPTIONS:
                options[key] = float(value)
            elif key in _INT_OPTIONS:
                options[key] = int(value)
            else:
                rest.append((key, value))
        except ValueError:
            raise TurnkitError("INVALID_ARGUMENT", f"store option {key}={value!r} is not a number") from None
    return options, rest


def store_from_url(url: str, **overrides: Any) -> LinearSessionStore:
    """The store a URL names; keyword arguments override options given in the URL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    options, rest = _split_options(parts.query)
    options.update(overrides)
    if scheme == "memory":
        from turnkit.sessions._memory import InMemorySessionStore

        return InMemorySessionStore(**options)
    if scheme == "file":
        from turnkit.sessions._file import FileSessionStore

        return FileSessionStore(parts.netloc + parts.path, **options)
    if scheme not in _STORES:
        known = ", ".join(["memory", "file", *sorted(_STORES)])
        raise TurnkitError("INVALID_ARGUMENT", f"unknown store URL scheme {scheme!r} (known: {known})")
    module_name, class_name = _STORES[scheme]
    try:
        store_class = getattr(importlib.import_module(module_name), class_name)
    except ImportError as exc:
        extra = "postgres" if scheme.startswith("postgres") else scheme
        raise TurnkitError(
            "FAILED_PRECONDITION",
            f"{class_name} needs the {extra!r} extra: pip install 'turnkit[{extra}]' ({exc})",
        ) from exc
    if scheme == "sqlite":
        return store_class(parts.netloc + parts.path, **options)  # type: ignore[no-any-return]
    # Driver URLs keep their own query parameters; ours (schema / prefix) become keyword arguments.
    own = {"schema"} if scheme.startswith("postgres") else {"prefix"}
    for key, value in rest:
        if key in own:
            options[key] = value
    driver_query = urlencode([(k, v) for k, v in rest if k not in own])
    driver_url = urlunsplit((parts.scheme, parts.netloc, parts.path, driver_query, parts.fragment))
    return store_class(driver_url, **options)  # type: ignore[no-any-return]
