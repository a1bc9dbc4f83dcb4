"""Middleware around model calls: `retry` with exponential backoff and jitter, and `fallback` to other models.

A middleware is `async def mw(request, ctx, next) -> ModelResponse`; generate chains them in order,
the first given being the outermost.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from turnkit.errors import RETRYABLE, TurnkitError
from turnkit.models import ModelContext
from turnkit.types import ModelRequest, ModelResponse

if TYPE_CHECKING:
    from turnkit.registry import Registry

__all__ = ["Middleware", "Next", "chain", "fallback", "retry"]

log = logging.getLogger("turnkit.middleware")

Next = Callable[[ModelRequest, ModelContext], Awaitable[ModelResponse]]
Middleware = Callable[[ModelRequest, ModelContext, Next], Awaitable[ModelResponse]]


def status_of(exc: BaseException) -> str:
    """The canonical status an exception stands for (timeouts and connection errors included)."""
    if isinstance(exc, TurnkitError):
        return exc.status
    if isinstance(exc, TimeoutError):
        return "DEADLINE_EXCEEDED"
    if isinstance(exc, ConnectionError):
        return "UNAVAILABLE"
    return "UNKNOWN"


def chain(middleware: Sequence[Middleware], call: Next) -> Next:
    """Wrap `call` in `middleware`, the first one outermost."""
    for mw in reversed(middleware):
        call = _bind(mw, call)
    return call


def _bind(mw: Middleware, nxt: Next) -> Next:
    async def bound(request: ModelRequest, ctx: ModelContext) -> ModelResponse:
        return await mw(request, ctx, nxt)

    return bound


def retry(
    *,
    max_retries: int = 3,
    statuses: Iterable[str] = RETRYABLE,
    initial_delay: float = 0.5,
    max_delay: float = 30.0,
    backoff_factor: float = 2.0,
    jitter: bool = True,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> Middleware:
    """Retry a failed model call whose status is in `statuses`, waiting longer each time.

    The wait before retry n (from 0) is `min(max_delay, initial_delay * backoff_factor**n)`, with full
    jitter (a uniform draw from [0, wait]) when `jitter` is set, so many clients do not retry in step.
    """
    if max_retries < 0:
        raise ValueError("max_retries must be >= 0")
    retry_on = frozenset(statuses)

    async def retry_mw(request: ModelRequest, ctx: ModelContext, nxt: Next) -> ModelResponse:
        attempt = 0
        while True:
            try:
                return await nxt(request, ctx)
            except Exception as exc:
                status = status_of(exc)
                if attempt >= max_retries or status not in retry_on or ctx.aborted:
                    raise
                delay = min(max_delay, initial_delay * backoff_factor**attempt)
                if jitter:
                    delay = random.uniform(0, delay)
                log.info("model call failed with %s; retry %d in %.3fs", status, attempt + 1, delay)
                attempt += 1
                await sleep(delay)

    return retry_mw


def fallback(
    registry_owner: Registry | Any,
    *,
    models: Sequence[str],
    statuses: Iterable[str] = (*RETRYABLE, "UNKNOWN", "UNIMPLEMENTED", "NOT_FOUND", "PERMISSION_DENIED"),
) -> Middleware:
    """On a failure whose status is in `statuses`, try each model in `models` in turn.

    `registry_owner` is the app (or its registry), used to look the fallback models up by name.
    """
    registry: Registry = getattr(registry_owner, "registry", registry_owner)
    fall_on = frozenset(statuses)

    async def fallback_mw(request: ModelRequest, ctx: ModelContext, nxt: Next) -> ModelResponse:
        try:
            return await nxt(request, ctx)
        except Exception as first:
            if status_of(first) not in fall_on:
                raise
            last: Exception = first
            for name in models:
                if ctx.aborted:
                    break
                log.info("model call failed with %s; falling back to %s", status_of(last), name)
                try:
                    model = registry.lookup("model", name)
                    return await model(request, ctx)  # type: ignore[no-any-return]
                except Exception as exc:
                    if status_of(exc) not in fall_on:
                        raise
                    last = exc
            raise last from None

    return fallback_mw
