"""Middleware for generate calls, prompts and agents (`use=[...]`), and delegation to sub-agents.

A middleware has up to four hooks (`tools`, `wrap_generate`, `wrap_model`, `wrap_tool`; see
`BaseMiddleware`); a `use` list composes them in order, the first outermost. The standard set:
`Retry`, `Fallback`, `ToolApproval`, `Artifacts`, `Filesystem`, `Skills`, and `Agents` (delegation).
`retry(...)` and `fallback(...)` are the original spellings of the first two. Middleware can be
named with `define_middleware` and then used by name (`use=["name"]`, `.prompt` front matter).
"""

from __future__ import annotations

from turnkit.middleware._agents import Agents
from turnkit.middleware._artifacts import Artifacts
from turnkit.middleware._base import (
    BaseMiddleware,
    GenerateHookParams,
    GenerateMiddlewareContext,
    Middleware,
    ModelHookParams,
    ModelMiddleware,
    Next,
    NextGenerate,
    NextModel,
    NextTool,
    ToolHookParams,
    status_of,
)
from turnkit.middleware._builtin import BUILTIN_MIDDLEWARE
from turnkit.middleware._chain import MiddlewareChain, define_middleware
from turnkit.middleware._compaction import HistoryCompaction
from turnkit.middleware._fallback import Fallback, fallback
from turnkit.middleware._filesystem import Filesystem
from turnkit.middleware._retry import Retry, retry
from turnkit.middleware._skills import Skills
from turnkit.middleware._tool_approval import ToolApproval

__all__ = [
    "BUILTIN_MIDDLEWARE",
    "Agents",
    "Artifacts",
    "BaseMiddleware",
    "Fallback",
    "Filesystem",
    "GenerateHookParams",
    "GenerateMiddlewareContext",
    "HistoryCompaction",
    "Middleware",
    "MiddlewareChain",
    "ModelHookParams",
    "ModelMiddleware",
    "Next",
    "NextGenerate",
    "NextModel",
    "NextTool",
    "Retry",
    "Skills",
    "ToolApproval",
    "ToolHookParams",
    "define_middleware",
    "fallback",
    "retry",
    "status_of",
]
