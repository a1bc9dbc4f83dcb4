"""The registry: named models, tools, prompts and agents of one app, looked up by kind and name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from turnkit.errors import TurnkitError

Kind = Literal["model", "tool", "prompt", "agent", "partial", "middleware"]

# A resolver may create an object on first lookup (e.g. a plugin that serves any model name).
Resolver = Callable[[Kind, str], Any | None]


class Registry:
    """Holds what an app defines; names are unique per kind.

    It also carries the app's default model, so that prompts and agents, which take the registry
    rather than the app, see a default set or changed after they were defined.
    """

    def __init__(self, *, default_model: str | None = None) -> None:
        self.default_model = default_model
        self._entries: dict[Kind, dict[str, Any]] = {}
        self._resolvers: list[Resolver] = []

    def register(self, kind: Kind, name: str, obj: Any) -> None:
        """Add `obj` under `kind`/`name`; a second definition of the same name replaces the first."""
        if not name:
            raise TurnkitError("INVALID_ARGUMENT", f"a {kind} needs a non-empty name")
        self._entries.setdefault(kind, {})[name] = obj

    def add_resolver(self, resolver: Resolver) -> None:
        """Consult `resolver` for names that are not registered yet."""
        self._resolvers.append(resolver)

    def get(self, kind: Kind, name: str) -> Any | None:
        """The object registered under `kind`/`name`, or None."""
        found = self._entries.get(kind, {}).get(name)
        if found is None:
            for resolve in self._resolvers:
                found = resolve(kind, name)
                if found is not None:
                    self.register(kind, name, found)
                    break
        return found

    def lookup(self, kind: Kind, name: str) -> Any:
        """The object registered under `kind`/`name`; NOT_FOUND naming the registered ones otherwise."""
        found = self.get(kind, name)
        if found is None:
            known = ", ".join(sorted(self.names(kind))) or "none"
            raise TurnkitError("NOT_FOUND", f"unknown {kind} {name!r} (registered: {known})")
        return found

    def names(self, kind: Kind) -> list[str]:
        """The names registered under `kind`."""
        return list(self._entries.get(kind, {}))
