"""The standard middleware by the names `use=["..."]` and `.prompt` front matter know them by."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from turnkit.middleware._agents import Agents
from turnkit.middleware._artifacts import Artifacts
from turnkit.middleware._fallback import Fallback
from turnkit.middleware._filesystem import Filesystem
from turnkit.middleware._retry import Retry
from turnkit.middleware._skills import Skills
from turnkit.middleware._tool_approval import ToolApproval

__all__ = ["BUILTIN_MIDDLEWARE"]

BUILTIN_MIDDLEWARE: dict[str, Callable[..., Any]] = {
    "retry": Retry,
    "fallback": Fallback,
    "toolApproval": ToolApproval,
    "tool_approval": ToolApproval,
    "artifacts": Artifacts,
    "filesystem": Filesystem,
    "skills": Skills,
    "agents": Agents,
}
