"""The middleware of one generate call, composed once and consulted by the generate loop.

`MiddlewareChain.build` returns None when a call has no middleware (the common case costs one
context-variable read); otherwise it resolves names, sorts each middleware's hooks into the four
chains (first in the list outermost), and wraps the model and every tool.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from turnkit._tools import Tool, ToolContext
from turnkit._turn_scope import current_turn_scope, leave_turn, restore
from turnkit.errors import TurnkitError
from turnkit.middleware._base import (
    BaseMiddleware,
    GenerateHookParams,
    GenerateMiddlewareContext,
    Middleware,
    ModelHookParams,
    NextGenerate,
    NextModel,
    NextTool,
    ToolHookParams,
)
from turnkit.middleware._builtin import BUILTIN_MIDDLEWARE
from turnkit.models import ModelContext
from turnkit.sessions import get_current_session
from turnkit.types import ModelRequest, ModelResponse, ModelResponseChunk

if TYPE_CHECKING:
    from turnkit._registry import Registry

__all__ = ["MiddlewareChain", "check_use", "define_middleware", "resolve_middleware"]

ModelCall = Callable[[ModelRequest, ModelContext], Awaitable[ModelResponse]]
MiddlewareFactory = Callable[..., Any]

_HOOKS = ("tools", "wrap_generate", "wrap_model", "wrap_tool")


def define_middleware(registry_owner: Any, name: str, factory: MiddlewareFactory) -> None:
    """Register `factory` (a middleware class, or a function returning a middleware) as `name`,
    so `use=["name"]` and `.prompt` front matter (`use: [{name: ..., config: {...}}]`) find it."""
    registry: Registry = getattr(registry_owner, "registry", registry_owner)
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise TurnkitError("INVALID_ARGUMENT", f"a middleware name must be a non-empty word, not {name!r}")
    if not callable(factory):
        raise TurnkitError("INVALID_ARGUMENT", f"middleware {name!r}: factory must be callable")
    registry.register("middleware", name, factory)


def check_use(use: Any) -> None:
    """INVALID_ARGUMENT unless `use` is a list (sequence) of entries: a bare name or a single
    middleware is refused, rather than, say, a string read as one-letter names."""
    if isinstance(use, str | bytes | Mapping) or not isinstance(use, Sequence):
        raise TurnkitError("INVALID_ARGUMENT", f"use must be a list of middleware, not {use!r}")


def resolve_middleware(registry: Registry, entry: Any) -> Any:
    """A `use` entry as a middleware object: names are looked up and their factory called."""
    if isinstance(entry, BaseMiddleware):
        return entry
    config: Any = None
    name: Any
    if isinstance(entry, str):
        name = entry
    elif isinstance(entry, Mapping):
        name, config = entry.get("name"), entry.get("config")
        if not isinstance(name, str) or (config is not None and not isinstance(config, Mapping)):
            raise TurnkitError(
                "INVALID_ARGUMENT",
                f"a middleware reference is {{name, config}} with a config object, not {entry!r}",
            )
    else:
        return entry  # a function or an object with hooks
    factory = registry.get("middleware", name) or BUILTIN_MIDDLEWARE.get(name)
    if factory is None:
        known = sorted({*registry.names("middleware"), *BUILTIN_MIDDLEWARE})
        raise TurnkitError("NOT_FOUND", f"unknown middleware {name!r} (known: {', '.join(known)})")
    try:
        return factory(**dict(config or {}))
    except TypeError as exc:
        raise TurnkitError("INVALID_ARGUMENT", f"bad config for middleware {name!r}: {exc}") from exc


def _hook(mw: Any, name: str) -> Any:
    """`mw`'s hook `name`, or None when it has none (or inherits BaseMiddleware's pass-through)."""
    if isinstance(mw, BaseMiddleware):
        if getattr(type(mw), name) is getattr(BaseMiddleware, name):
            return None
        return getattr(mw, name)
    return getattr(mw, name, None)


def _function_hook(fn: Callable[..., Awaitable[ModelResponse]]) -> Any:
    """A model-middleware function `fn(request, model_ctx, next)` as a `wrap_model` hook."""

    async def wrap_model(
        params: ModelHookParams, ctx: GenerateMiddlewareContext, next_fn: NextModel
    ) -> ModelResponse:
        async def nxt(request: ModelRequest, model_ctx: ModelContext) -> ModelResponse:
            return await next_fn(ModelHookParams(request, model_ctx), ctx)

        return await fn(params.request, params.model_context, nxt)

    return wrap_model


class MiddlewareChain:
    """The composed middleware of one generate call."""

    __slots__ = ("_generate", "_iteration", "_model", "_tool", "_tools", "_wrap_tools", "ctx")

    def __init__(self, ctx: GenerateMiddlewareContext, middleware: Sequence[Any], wrap_tools: bool) -> None:
        self.ctx = ctx
        self._generate: list[Any] = []
        self._model: list[Any] = []
        self._tool: list[Any] = []
        self._tools: list[Any] = []
        for mw in middleware:
            hooks = [_hook(mw, h) for h in _HOOKS]
            if not any(hooks):
                if not callable(mw):
                    raise TurnkitError(
                        "INVALID_ARGUMENT",
                        f"{mw!r} is not middleware: it has none of {', '.join(_HOOKS)} and is not a function",
                    )
                hooks = [None, None, _function_hook(mw), None]
            for chain, hook in zip(
                (self._tools, self._generate, self._model, self._tool), hooks, strict=True
            ):
                if hook is not None:
                    chain.append(hook)
        self._wrap_tools = wrap_tools or bool(self._tool)
        self._iteration = 0

    @classmethod
    def build(
        cls,
        registry: Registry,
        use: Sequence[Middleware],
        model_context: ModelContext,
        on_chunk: Callable[[ModelResponseChunk], None] | None,
    ) -> MiddlewareChain | None:
        """The chain for one call: the running agent's own middleware (outermost), then `use`.

        None when there is none, so that a call without middleware pays nothing more.
        """
        scope = current_turn_scope()
        agent_use: Sequence[Any] = getattr(scope.agent, "use", ()) if scope is not None else ()
        if not use and not agent_use:
            return None
        check_use(use)
        check_use(agent_use)
        entries = [*agent_use, *use]
        ctx = GenerateMiddlewareContext(
            registry=registry,
            context=model_context.context,
            abort_signal=model_context.abort_signal,
            on_chunk=on_chunk,
            session=_session_or_none(),
            turn_scope=scope,
        )
        # An agent's middleware applies to its own turns' calls, not to calls its tools make.
        return cls(ctx, [resolve_middleware(registry, e) for e in entries], wrap_tools=bool(agent_use))

    def model_call(self, model: ModelCall) -> ModelCall:
        """`model` wrapped in the model hooks, inside the generate hooks; counts the iterations."""
        ctx = self.ctx

        async def call_model(params: ModelHookParams, _ctx: GenerateMiddlewareContext) -> ModelResponse:
            return await model(params.request, params.model_context)

        model_step: NextModel = call_model
        for hook in reversed(self._model):
            model_step = _bind(hook, model_step)

        async def generate_step(params: GenerateHookParams, _ctx: GenerateMiddlewareContext) -> ModelResponse:
            return await model_step(ModelHookParams(params.request, params.model_context), ctx)

        step: NextGenerate = generate_step
        for hook in reversed(self._generate):
            step = _bind(hook, step)

        async def call(request: ModelRequest, model_ctx: ModelContext) -> ModelResponse:
            iteration = self._iteration
            self._iteration += 1
            return await step(GenerateHookParams(request, iteration, model_ctx), ctx)

        return call

    def tools(self, tools: dict[str, Tool]) -> dict[str, Tool]:
        """The call's tools plus the middleware's, each wrapped in the tool hooks."""
        out = dict(tools)
        for provide in self._tools:
            for tool in provide(self.ctx):
                if not isinstance(tool, Tool):
                    raise TurnkitError(
                        "INVALID_ARGUMENT", f"middleware tools(ctx) must return Tools, not {tool!r}"
                    )
                if tool.name in out:
                    raise TurnkitError(
                        "INVALID_ARGUMENT",
                        f"middleware tool {tool.name!r} clashes with another tool of that name",
                    )
                out[tool.name] = tool
        if not self._wrap_tools:
            return out
        run: NextTool = _run_tool
        for hook in reversed(self._tool):
            run = _bind(hook, run)
        return {name: _ChainedTool(tool, run, self.ctx) for name, tool in out.items()}


def _session_or_none() -> Any:
    try:
        return get_current_session()
    except TurnkitError:  # outside an agent turn: middleware that needs a session degrades
        return None


def _bind(hook: Any, nxt: Any) -> Any:
    async def bound(params: Any, ctx: GenerateMiddlewareContext) -> Any:
        return await hook(params, ctx, nxt)

    return bound


async def _run_tool(params: ToolHookParams, _ctx: GenerateMiddlewareContext) -> Any:
    return await params.tool.run(params.input, params.tool_context)


class _ChainedTool(Tool):
    """A tool whose runs go through the call's tool hooks (the model sees the same definition)."""

    def __init__(self, tool: Tool, run: NextTool, ctx: GenerateMiddlewareContext) -> None:
        self.__dict__.update(tool.__dict__)
        self._inner = tool
        self._chain_run = run
        self._chain_ctx = ctx

    async def run(self, raw_input: Any, ctx: ToolContext | None = None) -> Any:
        """Run the tool through the hooks, outside the agent turn's scope (see `build`)."""
        token = leave_turn()
        try:
            return await self._chain_run(
                ToolHookParams(self._inner, raw_input, ctx or ToolContext()), self._chain_ctx
            )
        finally:
            restore(token)
