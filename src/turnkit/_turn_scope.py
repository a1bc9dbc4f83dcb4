"""Which agent turn the running code belongs to: set by the agent runtime, read by middleware.

The runtime sets it at the start of each turn's handler task (a task has its own copy of the
context, so nothing needs resetting); generate reads it to apply the agent's own middleware, and
delegation reads it to link a sub-agent's turn to its parent. It knows neither module's types.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

__all__ = ["TurnScope", "current_turn_scope", "enter_turn", "leave_turn", "restore"]


class TurnScope:
    """The agent running this turn and the turn's context (snapshot id, abort signal)."""

    __slots__ = ("agent", "turn")

    def __init__(self, agent: Any, turn: Any) -> None:
        self.agent = agent
        self.turn = turn


_scope: ContextVar[TurnScope | None] = ContextVar("turnkit_turn_scope", default=None)


def enter_turn(agent: Any, turn: Any) -> None:
    """Mark the current task (and the tasks it starts) as running `turn` of `agent`."""
    _scope.set(TurnScope(agent, turn))


def leave_turn() -> Any:
    """Forget the turn for code that must not act as part of it; returns a token for `restore`."""
    return _scope.set(None)


def restore(token: Any) -> None:
    """Undo `leave_turn`."""
    _scope.reset(token)


def current_turn_scope() -> TurnScope | None:
    """The turn the running code belongs to, if any."""
    return _scope.get()
