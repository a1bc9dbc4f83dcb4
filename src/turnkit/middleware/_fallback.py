"""`Fallback`: when a model call fails, try other models in turn.

The fallback models' names are checked at the first call in each app: a name that no model has
fails that call with NOT_FOUND at once, rather than being skipped, unnoticed, when it is needed.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

from turnkit._suggest import did_you_mean
from turnkit.errors import RETRYABLE, TurnkitError
from turnkit.middleware._base import (
    BaseMiddleware,
    GenerateMiddlewareContext,
    ModelHookParams,
    NextModel,
    status_of,
)
from turnkit.models import Model
from turnkit.types import ModelResponse

__all__ = ["Fallback", "fallback"]

log = logging.getLogger("turnkit.middleware")

DEFAULT_FALLBACK_STATUSES = (*RETRYABLE, "UNKNOWN", "UNIMPLEMENTED", "NOT_FOUND", "PERMISSION_DENIED")


class Fallback(BaseMiddleware):
    """On a failure whose status is in `statuses`, try each model of `models` (registered names) in
    turn; the last failure is raised when all fail, and a failure of another status at once."""

    def __init__(self, *, models: Sequence[str], statuses: Iterable[str] = DEFAULT_FALLBACK_STATUSES) -> None:
        if isinstance(models, str) or not all(isinstance(m, str) and m for m in models):
            raise TurnkitError(
                "INVALID_ARGUMENT", f"Fallback: models must be a list of model names, not {models!r}"
            )
        self.models = list(models)
        self.statuses = frozenset(statuses)
        self._checked: weakref.WeakSet[Any] = weakref.WeakSet()  # registries whose names were found

    def _check_names(self, registry: Any) -> None:
        if registry in self._checked:
            return
        for name in self.models:
            try:
                registry.lookup("model", name)
            except TurnkitError as exc:
                if exc.status != "NOT_FOUND":
                    continue  # found, but not usable yet (e.g. no API key): a failure when needed
                hint = did_you_mean(name, registry.names("model"))
                raise TurnkitError("NOT_FOUND", f"Fallback: no model named {name!r}{hint}") from None
        self._checked.add(registry)

    async def wrap_model(
        self, params: ModelHookParams, ctx: GenerateMiddlewareContext, next_fn: NextModel
    ) -> ModelResponse:
        """Call the model; on a matching failure, each fallback model directly."""
        self._check_names(ctx.registry)
        try:
            return await next_fn(params, ctx)
        except Exception as first:
            if status_of(first) not in self.statuses:
                raise
            last: Exception = first
            for name in self.models:
                if ctx.aborted:
                    break
                log.info("model call failed with %s; falling back to %s", status_of(last), name)
                try:
                    model: Model = ctx.registry.lookup("model", name)
                    return await model(params.request, params.model_context)
                except Exception as exc:
                    if status_of(exc) not in self.statuses:
                        raise
                    last = exc
            raise last from None

    def __repr__(self) -> str:
        return f"Fallback(models={self.models!r})"


def fallback(
    registry_owner: Any = None, *, models: Sequence[str], statuses: Iterable[str] = DEFAULT_FALLBACK_STATUSES
) -> Fallback:
    """`Fallback` (turnkit's original spelling). `registry_owner` is no longer needed: the models
    are looked up in the app the call runs in."""
    return Fallback(models=models, statuses=statuses)
