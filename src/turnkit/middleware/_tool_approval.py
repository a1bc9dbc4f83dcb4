"""`ToolApproval`: tools not on an allow list pause the turn until a human approves the call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from turnkit._tools import Interrupt
from turnkit.errors import TurnkitError
from turnkit.middleware._base import BaseMiddleware, GenerateMiddlewareContext, NextTool, ToolHookParams

__all__ = ["ToolApproval"]

# Where a restart's metadata says yes or no: Genkit's key, its snake_case twin, and the shorter
# `approved` that the AI SDK mapping, the REPL and the examples send.
_APPROVAL_KEYS = ("toolApproved", "tool_approved", "approved")


class ToolApproval(BaseMiddleware):
    """Every call of a tool not in `allowed_tools` interrupts, with `{"message", "toolApproval"}`.

    The client answers as for any interrupt: `restart` the call to approve it (a plain restart, or
    resumed metadata `{"toolApproved": true}` or `{"approved": true}`), `restart` with
    `{"toolApproved": false}` or `{"approved": false}` (any value but `true`) to deny it (the model is told it
    was denied), or `respond` with the output the model should see instead. Only the JSON value
    `true` approves.
    """

    def __init__(self, *, allowed_tools: Sequence[str] = ()) -> None:
        if isinstance(allowed_tools, str) or not all(isinstance(t, str) for t in allowed_tools):
            raise TurnkitError(
                "INVALID_ARGUMENT",
                f"ToolApproval: allowed_tools must be a list of tool names, not {allowed_tools!r}",
            )
        self.allowed_tools = frozenset(allowed_tools)

    async def wrap_tool(
        self, params: ToolHookParams, ctx: GenerateMiddlewareContext, next_fn: NextTool
    ) -> Any:
        """Run allowed or approved calls; interrupt the others."""
        if params.name in self.allowed_tools:
            return await next_fn(params, ctx)
        verdict = _verdict(params.tool_context.resumed)
        if verdict is True:
            return await next_fn(params, ctx)
        if verdict is False:
            return f"error: the user denied the call of tool {params.name!r}"
        raise Interrupt({"message": f"tool {params.name!r} needs approval", "toolApproval": True})

    def __repr__(self) -> str:
        return f"ToolApproval(allowed_tools={sorted(self.allowed_tools)!r})"


def _verdict(resumed: Any) -> bool | None:
    """True when the restart approves the call, False when it denies it, None when not resumed.

    A restart approves unless its metadata has an approval key; then only the value `True`
    approves, and anything else (`False`, `"false"`, `0`, `None`) denies. Bare metadata other than
    `True` (e.g. `"no"`) denies too.
    """
    if resumed is None or resumed is False:
        return None
    if isinstance(resumed, dict):
        for key in _APPROVAL_KEYS:
            if key in resumed:
                return resumed[key] is True
        return True
    return resumed is True  # `true` (a plain restart) approves; another bare value does not
