"""`Retry`: retry a failed model call with exponential backoff and jitter, honouring Retry-After."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from turnkit.errors import RETRYABLE, TurnkitError
from turnkit.middleware._base import (
    BaseMiddleware,
    GenerateMiddlewareContext,
    ModelHookParams,
    NextModel,
    status_of,
)
from turnkit.types import ModelResponse

__all__ = ["Retry", "retry"]

log = logging.getLogger("turnkit.middleware")

Sleep = Callable[[float], Awaitable[Any]]


class Retry(BaseMiddleware):
    """Retry a failed model call whose status is in `statuses`, waiting longer each time.

    The wait before retry n (from 0) is `min(max_delay_ms, initial_delay_ms * backoff_factor**n)`,
    with full jitter (a uniform draw from [0, wait]) unless `no_jitter`, so many clients do not retry
    in step. When the provider said how long to wait (`Retry-After`, carried as
    `details["retryAfter"]` in seconds, e.g. on RESOURCE_EXHAUSTED), that wait is used instead; a wait
    longer than `max_delay_ms` is not retried. Providers turn their SDK's own retries off under this
    middleware (`ModelContext.retried_by_middleware`). `sleep` is for tests.
    """

    def __init__(
        self,
        *,
        max_retries: int = 3,
        statuses: Iterable[str] = RETRYABLE,
        initial_delay_ms: float = 1000,
        max_delay_ms: float = 60000,
        backoff_factor: float = 2.0,
        no_jitter: bool = False,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not isinstance(max_retries, int) or max_retries < 0:
            raise TurnkitError(
                "INVALID_ARGUMENT", f"Retry: max_retries must be an int >= 0, not {max_retries!r}"
            )
        for option, value in (("initial_delay_ms", initial_delay_ms), ("max_delay_ms", max_delay_ms)):
            if not isinstance(value, int | float) or value < 0:
                raise TurnkitError(
                    "INVALID_ARGUMENT", f"Retry: {option} must be a number >= 0, not {value!r}"
                )
        self.max_retries = max_retries
        self.statuses = frozenset(statuses)
        self.initial_delay = initial_delay_ms / 1000
        self.max_delay = max_delay_ms / 1000
        self.backoff_factor = backoff_factor
        self.jitter = not no_jitter
        self.sleep = sleep

    async def wrap_model(
        self, params: ModelHookParams, ctx: GenerateMiddlewareContext, next_fn: NextModel
    ) -> ModelResponse:
        """Call the model, retrying retryable failures until `max_retries` is used up."""
        attempt = 0
        params.model_context.retried_by_middleware = True
        while True:
            try:
                return await next_fn(params, ctx)
            except Exception as exc:
                status = status_of(exc)
                if attempt >= self.max_retries or status not in self.statuses or ctx.aborted:
                    raise
                delay = min(self.max_delay, self.initial_delay * self.backoff_factor**attempt)
                if self.jitter:
                    delay = random.uniform(0, delay)
                if (asked := _retry_after(exc)) is not None:
                    if asked > self.max_delay:
                        raise
                    delay = asked
                log.info("model call failed with %s; retry %d in %.3fs", status, attempt + 1, delay)
                attempt += 1
                await self.sleep(delay)

    def __repr__(self) -> str:
        return f"Retry(max_retries={self.max_retries})"


def _retry_after(exc: BaseException) -> float | None:
    """The wait in seconds a provider asked for before a retry (its `Retry-After`), if any."""
    details = exc.details if isinstance(exc, TurnkitError) else None
    value = details.get("retryAfter") if isinstance(details, dict) else None
    return float(value) if isinstance(value, int | float) and value >= 0 else None


def retry(
    *,
    max_retries: int = 3,
    statuses: Iterable[str] = RETRYABLE,
    initial_delay: float = 0.5,
    max_delay: float = 30.0,
    backoff_factor: float = 2.0,
    jitter: bool = True,
    sleep: Sleep = asyncio.sleep,
) -> Retry:
    """`Retry` with delays in seconds (turnkit's original spelling; same behaviour)."""
    return Retry(
        max_retries=max_retries,
        statuses=statuses,
        initial_delay_ms=initial_delay * 1000,
        max_delay_ms=max_delay * 1000,
        backoff_factor=backoff_factor,
        no_jitter=not jitter,
        sleep=sleep,
    )
