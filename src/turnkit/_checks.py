"""Checks of the options given to `define_*`: each returns the value checked (or converted) or raises
INVALID_ARGUMENT naming the call and the option, so a mistake fails where it is made, not at the
first turn.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

from pydantic import BaseModel

from turnkit._registry import Registry
from turnkit._tools import Tool
from turnkit.errors import TurnkitError
from turnkit.middleware._base import is_middleware
from turnkit.models import Model
from turnkit.types import Message, Part

__all__ = ["Options", "is_async_callable", "positional_arity"]

T = TypeVar("T")

# What an agent name may hold: it is one path segment of the URLs that serve the agent.
_URL_SEGMENT = re.compile(r"[\w.~:@-]+")


class Options:
    """Checks the options of one call, e.g. `Options("define_agent")`; errors name the call."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, option: str, problem: str, value: Any) -> TurnkitError:
        """The error for `option` having a bad `value`: `define_agent(max_turns=...): must be ..., got 'x'`."""
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        return TurnkitError("INVALID_ARGUMENT", f"{self.where}({option}=...): {problem}, got {shown}")

    def name(self, value: Any, option: str = "name") -> str:
        """A non-empty string."""
        if not isinstance(value, str) or not value:
            raise self.fail(option, "must be a non-empty string", value)
        return value

    def agent_name(self, registry: Registry, value: Any) -> str:
        """A name usable as one URL path segment (`/agents/{name}`) that no agent of `registry` has:
        ALREADY_EXISTS for a taken one, so a second definition cannot silently replace the first."""
        name = self.name(value)
        if not _URL_SEGMENT.fullmatch(name) or name in (".", ".."):
            raise self.fail(
                "name",
                "must be usable in a URL path: letters, digits and - _ . ~ : @ (no spaces or '/')",
                value,
            )
        if name in registry.names("agent"):
            raise TurnkitError(
                "ALREADY_EXISTS",
                f"{self.where}(name=...): an agent named {name!r} is already defined; each needs its own name",
            )
        return name

    def optional_str(self, option: str, value: Any) -> str | None:
        """None or a string."""
        if value is not None and not isinstance(value, str):
            raise self.fail(option, "must be a string or None", value)
        return value

    def model(self, value: Any) -> str | Model | None:
        """None, a model name, or a `Model`."""
        if value is not None and not isinstance(value, str | Model):
            raise self.fail("model", "must be a model name, a Model, or None", value)
        return value

    def count(self, option: str, value: Any, *, minimum: int = 1) -> int | None:
        """None or an int of at least `minimum` (not a bool)."""
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(option, "must be an int", value)
        if value < minimum:
            raise self.fail(option, f"must be at least {minimum}", value)
        return value

    def seconds(self, option: str, value: Any, *, positive: bool) -> float:
        """A number of seconds: greater than 0 when `positive`, else at least 0."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(option, "must be a number of seconds", value)
        if value < 0 or (positive and value == 0) or value != value:  # value != value: NaN
            raise self.fail(option, "must be greater than 0" if positive else "must be 0 or more", value)
        return float(value)

    def choice(self, option: str, value: Any, choices: Sequence[str]) -> Any:
        """One of `choices`."""
        if value not in choices:
            raise self.fail(option, "must be one of " + ", ".join(map(repr, choices)), value)
        return value

    def callable_or_none(self, option: str, value: T) -> T:
        """None or a function."""
        if value is not None and not callable(value):
            raise self.fail(option, "must be a function or None", value)
        return value

    def function(self, option: str, value: T) -> T:
        """A function."""
        if not callable(value):
            raise self.fail(option, "must be a function", value)
        return value

    def async_function(self, option: str, value: T, params: Sequence[str]) -> T:
        """An async function (or an object with an async `__call__`) that can be called with the
        positional arguments named in `params`, e.g. `("sess", "ctx")`."""
        shape = f"async def {option}({', '.join(params)})"
        self.function(option, value)
        if not is_async_callable(value):
            raise self.fail(option, f"must be an async function ({shape}: ...)", value)
        arity = positional_arity(cast(Callable[..., Any], value))
        if arity is not None:
            required, most = arity
            if required > len(params) or (most is not None and most < len(params)):
                raise self.fail(option, f"must take {len(params)} positional arguments ({shape})", value)
        return value

    def mapping(self, option: str, value: Any) -> Mapping[str, Any] | None:
        """None or a mapping with string keys (a Pydantic model is dumped to its JSON form)."""
        if value is None:
            return None
        if isinstance(value, BaseModel):
            dumped: dict[str, Any] = value.model_dump(mode="json", by_alias=True, exclude_none=True)
            return dumped
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise self.fail(option, "must be a dict with string keys (or a Pydantic model)", value)
        return value

    def config(self, value: Any) -> Any:
        """None, a dict of model settings, or a Pydantic model of them (kept as given)."""
        if value is not None and not isinstance(value, Mapping | BaseModel):
            raise self.fail("config", "must be a dict or a Pydantic model", value)
        return value

    def tools(self, value: Any) -> list[str | Tool] | None:
        """None or a list of tool names and Tools."""
        if value is None:
            return None
        if isinstance(value, str | Tool) or not isinstance(value, Sequence):
            raise self.fail("tools", "must be a list of tool names or Tools", value)
        bad = [t for t in value if not isinstance(t, str | Tool)]
        if bad:
            raise self.fail("tools", "must hold tool names or Tools (use ai.tool to make one)", bad[0])
        return list(value)

    def middleware(self, value: Any) -> list[Any]:
        """A list of middleware: objects with hooks, model-middleware functions, or registered names."""
        if callable(value) or not isinstance(value, Sequence) or isinstance(value, str):
            raise self.fail("use", "must be a list of middleware", value)
        bad = [m for m in value if not is_middleware(m)]
        if bad:
            raise self.fail("use", "must hold middleware objects, middleware functions or names", bad[0])
        return list(value)

    def prompt_text(self, option: str, value: Any) -> str | Part | list[str | Part] | None:
        """None, a string (a template), a Part, or a list of strings and Parts."""
        if value is None or isinstance(value, str | Part):
            return value
        if isinstance(value, Sequence) and all(isinstance(p, str | Part) for p in value):
            return list(value)
        raise self.fail(option, "must be a string, a Part, or a list of them", value)

    def prompt_source(self, option: str, value: Any) -> Any:
        """What `define_prompt` renders for `system` / `prompt`: None, a template string, a Part, a
        list of strings and Parts (or part dicts), or a function of the input returning one."""
        if value is None or isinstance(value, str | Part) or callable(value):
            return value
        if isinstance(value, Sequence) and all(isinstance(p, str | Part | Mapping) for p in value):
            try:
                return [p if isinstance(p, str | Part) else Part.from_wire(p) for p in value]
            except TurnkitError as exc:
                raise self.fail(option, f"holds an invalid part ({exc.message})", value) from exc
        raise self.fail(option, "must be a string, a Part, a list of them, or a function of the input", value)

    def messages_source(self, value: Any) -> Any:
        """What `define_prompt` takes as `messages`: None, a template string, a list of Messages (or
        message dicts), or a function of the input returning one."""
        if isinstance(value, str) or callable(value):
            return value
        return self.messages(value)

    def messages(self, value: Any) -> list[Message] | None:
        """None or a list of Messages (or their wire dicts)."""
        if value is None:
            return None
        if isinstance(value, str | Message | Mapping) or not isinstance(value, Sequence):
            raise self.fail("messages", "must be a list of Messages or message dicts", value)
        try:
            return [m if isinstance(m, Message) else Message.from_wire(m) for m in value]
        except Exception as exc:
            raise self.fail("messages", f"holds an invalid message ({exc})", value) from exc

    def converted(self, option: str, convert: Callable[[], T]) -> T:
        """The result of `convert()`, its TurnkitError re-raised naming the call and the option."""
        try:
            return convert()
        except TurnkitError as exc:
            raise TurnkitError(exc.status, f"{self.where}({option}=...): {exc.message}") from exc


def is_async_callable(fn: Any) -> bool:
    """Whether calling `fn` gives a coroutine, as far as can be told without calling it: an
    `async def` (also behind functools.partial or a functools.wraps decorator) or an object whose
    `__call__` is one."""
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(inspect.unwrap(fn)):
        return True
    # The class's `__call__`: an instance with `async def __call__(self, ...)` is awaited when called.
    return inspect.iscoroutinefunction(getattr(type(fn), "__call__", None))  # noqa: B004


def positional_arity(fn: Callable[..., Any]) -> tuple[int, int | None] | None:
    """`(required, most)`: how many positional arguments `fn` needs and takes at most (None with
    *args; -1 when it has a required keyword-only parameter, which no positional call satisfies).
    None when its signature cannot be read."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = sum(1 for p in params if p.kind in positional and p.default is p.empty)
    if any(p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is p.empty for p in params):
        return required, -1  # a call with positional arguments alone can never satisfy it
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return required, None
    return required, sum(1 for p in params if p.kind in positional)
