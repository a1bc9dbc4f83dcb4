"""Models: anything that turns a ModelRequest into streamed chunks and a final ModelResponse.

A model function has the shape `fn(request, ctx) -> ModelResponse` (sync or async). It streams
by calling `ctx.send_chunk(chunk)`, which is safe from any thread. Sync functions run in a worker
thread so that blocking inference never stalls the event loop. Providers live in submodules
(`turnkit.models.llamacpp`, `turnkit.models.openai_compat`) and register themselves as plugins.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast, runtime_checkable

from turnkit.types import ModelRequest, ModelResponse, ModelResponseChunk

__all__ = ["Model", "ModelContext", "ModelFn", "ModelInfo", "Plugin"]

ChunkCallback = Callable[[ModelResponseChunk], None]


class ModelContext:
    """What a model function gets besides the request: a chunk sink, an abort signal, the caller's context."""

    def __init__(
        self,
        on_chunk: ChunkCallback | None = None,
        *,
        abort_signal: threading.Event | None = None,
        context: dict[str, Any] | None = None,
    ) -> None:
        self._on_chunk = on_chunk
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        # A threading.Event so that a model running in a worker thread can poll it too.
        self.abort_signal = abort_signal or threading.Event()
        self.context: dict[str, Any] = context or {}
        # Set by turnkit's `retry` middleware: providers then turn their SDK's own retries off,
        # so that one failed call is never retried by both (calls would multiply).
        self.retried_by_middleware = False

    @property
    def on_chunk(self) -> ChunkCallback | None:
        """The caller's chunk sink, if it streams."""
        return self._on_chunk

    @property
    def is_streaming(self) -> bool:
        """Whether the caller wants chunks; a model may skip streaming work when it does not."""
        return self._on_chunk is not None

    @property
    def aborted(self) -> bool:
        """Whether the caller has asked this call to stop."""
        return self.abort_signal.is_set()

    def bind_loop(self) -> None:
        """Remember the running loop so chunks sent from worker threads are delivered on it."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()

    def send_chunk(self, chunk: ModelResponseChunk) -> None:
        """Deliver one streamed chunk to the caller (a no-op when the caller does not stream)."""
        if self._on_chunk is None:
            return
        if self._loop is not None and threading.get_ident() != self._loop_thread:
            self._loop.call_soon_threadsafe(self._on_chunk, chunk)
        else:
            self._on_chunk(chunk)

    def derive(self, on_chunk: ChunkCallback | None) -> ModelContext:
        """A context sharing this one's abort signal and caller context, with another chunk sink."""
        ctx = ModelContext(on_chunk, abort_signal=self.abort_signal, context=self.context)
        ctx._loop, ctx._loop_thread = self._loop, self._loop_thread
        ctx.retried_by_middleware = self.retried_by_middleware
        return ctx


ModelFn = Callable[[ModelRequest, ModelContext], ModelResponse | Awaitable[ModelResponse]]


@dataclass
class ModelInfo:
    """What a model supports, so generate can adapt requests (e.g. tools, system role, JSON output)."""

    label: str = ""
    multiturn: bool = True
    tools: bool = True
    system_role: bool = True
    output: list[str] = field(default_factory=lambda: ["text", "json"])
    constrained: bool = False


class Model:
    """A registered model: a name, its function, and what it supports."""

    def __init__(self, name: str, fn: ModelFn, info: ModelInfo | None = None) -> None:
        self.name = name
        self.fn = fn
        self.info = info or ModelInfo()
        self._is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
        )

    async def __call__(self, request: ModelRequest, ctx: ModelContext) -> ModelResponse:
        """Run one model call; sync functions run in a worker thread."""
        ctx.bind_loop()
        if self._is_async:
            result = self.fn(request, ctx)
            assert inspect.isawaitable(result)
            response = await result
        else:
            response = await asyncio.to_thread(cast(Callable[..., Any], self.fn), request, ctx)
            if inspect.isawaitable(response):  # a sync callable that returned a coroutine
                response = await response
        if not isinstance(response, ModelResponse):
            response = ModelResponse.from_wire(response)
        return response

    def __repr__(self) -> str:
        return f"Model({self.name!r})"


@runtime_checkable
class Plugin(Protocol):
    """A provider of models (and anything else) registered on a Turnkit app at start-up."""

    name: str

    def initialize(self, ai: Any) -> None:
        """Register this plugin's models, tools or prompts on the app `ai`."""
        ...
