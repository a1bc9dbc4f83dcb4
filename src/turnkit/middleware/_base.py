"""The middleware interface: up to four optional hooks around one generate call.

- `tools(ctx)`: tools the middleware adds to the call;
- `wrap_generate(params, ctx, next_fn)`: around each iteration of the tool loop's model step (it may
  rewrite the request, e.g. add system text, before the model sees it);
- `wrap_model(params, ctx, next_fn)`: around each model call (retry, fallback);
- `wrap_tool(params, ctx, next_fn)`: around each tool execution (approve, deny, interrupt, time out).

Subclass `BaseMiddleware` and override the hooks you need, or pass any object with some of these
methods. A plain function `async def mw(request, model_ctx, next)` still works as a model hook.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from turnkit._tools import Tool, ToolContext
from turnkit.errors import TurnkitError
from turnkit.models import ModelContext
from turnkit.types import Message, ModelRequest, ModelResponse, ModelResponseChunk, Part

if TYPE_CHECKING:
    from turnkit._registry import Registry
    from turnkit._turn_scope import TurnScope
    from turnkit.sessions import Session

__all__ = [
    "BaseMiddleware",
    "GenerateHookParams",
    "GenerateMiddlewareContext",
    "Middleware",
    "ModelHookParams",
    "ModelMiddleware",
    "Next",
    "NextGenerate",
    "NextModel",
    "NextTool",
    "ToolHookParams",
    "is_middleware",
    "status_of",
    "with_system_text",
]

T = TypeVar("T")

# The original middleware form: a function around one model call.
Next = Callable[[ModelRequest, ModelContext], Awaitable[ModelResponse]]
ModelMiddleware = Callable[[ModelRequest, ModelContext, Next], Awaitable[ModelResponse]]


@dataclass(slots=True)
class GenerateHookParams:
    """What `wrap_generate` sees: the request of this iteration (replace it to rewrite what the
    model gets), the iteration's number from 0, and the model context (chunks, abort)."""

    request: ModelRequest
    iteration: int
    model_context: ModelContext


@dataclass(slots=True)
class ModelHookParams:
    """What `wrap_model` sees: the request for one model call and its model context."""

    request: ModelRequest
    model_context: ModelContext


@dataclass(slots=True)
class ToolHookParams:
    """What `wrap_tool` sees: the tool, the input the model gave it, and the tool's context
    (`tool_context.resumed` holds the client's metadata when an interrupted call is restarted)."""

    tool: Tool
    input: Any
    tool_context: ToolContext

    @property
    def name(self) -> str:
        """The tool's name."""
        return self.tool.name


@dataclass(slots=True, eq=False)
class GenerateMiddlewareContext:
    """One generate call as every middleware in its `use` list sees it.

    `registry` is the app's (look models, agents up by name); `context` the caller's context (auth);
    `session` the current agent session (None outside an agent turn); `turn_scope` the agent turn the
    call belongs to, if any. `state(owner, factory)` keeps per-call state for a middleware, since one
    middleware object serves many concurrent calls.
    """

    registry: Registry
    context: dict[str, Any]
    abort_signal: threading.Event
    on_chunk: Callable[[ModelResponseChunk], None] | None
    session: Session[Any] | None
    turn_scope: TurnScope | None
    _state: dict[int, Any] = field(default_factory=dict, init=False, repr=False)

    @property
    def aborted(self) -> bool:
        """Whether the call has been asked to stop."""
        return self.abort_signal.is_set()

    @property
    def is_streaming(self) -> bool:
        """Whether the caller wants chunks."""
        return self.on_chunk is not None

    def send_chunk(self, chunk: ModelResponseChunk) -> None:
        """Stream a chunk to the caller (a no-op when it does not stream)."""
        if self.on_chunk is not None:
            self.on_chunk(chunk)

    def state(self, owner: object, factory: Callable[[], T]) -> T:
        """`owner`'s state for this call, made by `factory()` on first use."""
        key = id(owner)
        found = self._state.get(key)
        if found is None:
            found = self._state[key] = factory()
        return found


NextGenerate = Callable[[GenerateHookParams, GenerateMiddlewareContext], Awaitable[ModelResponse]]
NextModel = Callable[[ModelHookParams, GenerateMiddlewareContext], Awaitable[ModelResponse]]
NextTool = Callable[[ToolHookParams, GenerateMiddlewareContext], Awaitable[Any]]


class BaseMiddleware:
    """A middleware: override any of `tools`, `wrap_generate`, `wrap_model`, `wrap_tool`.

    Hooks left as they are cost nothing: the chain skips them. One object may serve many calls at
    once, so keep per-call state in `ctx.state(self, factory)`, not on `self`.
    """

    def tools(self, ctx: GenerateMiddlewareContext) -> Sequence[Tool]:
        """Tools to offer the model in this call."""
        return ()

    async def wrap_generate(
        self, params: GenerateHookParams, ctx: GenerateMiddlewareContext, next_fn: NextGenerate
    ) -> ModelResponse:
        """Around each iteration's model step."""
        return await next_fn(params, ctx)

    async def wrap_model(
        self, params: ModelHookParams, ctx: GenerateMiddlewareContext, next_fn: NextModel
    ) -> ModelResponse:
        """Around each model call."""
        return await next_fn(params, ctx)

    async def wrap_tool(
        self, params: ToolHookParams, ctx: GenerateMiddlewareContext, next_fn: NextTool
    ) -> Any:
        """Around each tool execution: return its output, or raise `Interrupt` to pause the turn."""
        return await next_fn(params, ctx)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


# What `use=[...]` takes: a middleware object, a model-middleware function, or a registered
# middleware's name (alone, or `{"name": ..., "config": {...}}` as `.prompt` front matter has it).
Middleware = BaseMiddleware | ModelMiddleware | str | Mapping[str, Any]


_HOOK_NAMES = ("tools", "wrap_generate", "wrap_model", "wrap_tool")


def is_middleware(value: object) -> bool:
    """Whether `use=[...]` can take `value`: an object with a hook, a function, a name or {name, config}."""
    if isinstance(value, BaseMiddleware | str | Mapping) or callable(value):
        return True
    return any(hasattr(value, hook) for hook in _HOOK_NAMES)


def status_of(exc: BaseException) -> str:
    """The canonical status an exception stands for (timeouts and connection errors included)."""
    if isinstance(exc, TurnkitError):
        return exc.status
    if isinstance(exc, TimeoutError):
        return "DEADLINE_EXCEEDED"
    if isinstance(exc, ConnectionError):
        return "UNAVAILABLE"
    return "UNKNOWN"


def with_system_text(request: ModelRequest, text: str, marker: str) -> ModelRequest:
    """The request with `text` as a part of its system message (marked `marker` in the part's
    metadata, replacing an earlier part so marked); the original request is left untouched."""
    part = Part(text=text, metadata={marker: True})
    messages = list(request.messages)
    for i, msg in enumerate(messages):
        if msg.role == "system":
            kept = [p for p in msg.content if not (p.metadata and p.metadata.get(marker))]
            messages[i] = Message(role="system", content=[*kept, part], metadata=msg.metadata)
            break
    else:
        messages.insert(0, Message(role="system", content=[part]))
    return request.model_copy(update={"messages": messages})
