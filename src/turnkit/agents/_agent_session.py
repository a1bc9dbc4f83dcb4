"""`AgentSession`: the handle an agent function drives (history, state, artifacts, the turn loop)."""

from __future__ import annotations

import inspect
import types
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic

from turnkit.agents._turn import TurnContext
from turnkit.errors import TurnkitError
from turnkit.sessions import Session
from turnkit.sessions._state_type import S
from turnkit.types import AgentFinishReason, AgentInput, Artifact, Message

if TYPE_CHECKING:
    from turnkit.agents._runner import Invocation

__all__ = [
    "AgentResult",
    "AgentSession",
    "CustomUpdate",
    "TurnHandler",
    "TwoArgumentTurnHandler",
    "call_with_turn",
]

# What `update_custom` takes: old state in, new state (an `S` or its JSON form) out, maybe awaited.
CustomUpdate = Callable[[S], S | Mapping[str, Any] | Awaitable[S | Mapping[str, Any] | None] | None]

# A turn handler takes the input and, if it wants them, the turn's context (ids, streaming, abort).
TwoArgumentTurnHandler = Callable[[AgentInput, TurnContext], Awaitable[Any]]
TurnHandler = TwoArgumentTurnHandler | Callable[[AgentInput], Awaitable[Any]]


@dataclass
class AgentResult:
    """What an agent function returns: the final message, the artifacts, and the finish reason."""

    message: Message | None = None
    artifacts: list[Artifact] | None = None
    finish_reason: AgentFinishReason | None = None


class AgentSession(Generic[S]):
    """The session handle an agent function drives: history, state, artifacts, and the turn loop.

    `S` is the custom state's type (the agent's `state_schema`).
    """

    def __init__(self, invocation: Invocation, session: Session[S]) -> None:
        self._invocation = invocation
        self.session = session
        self.last_message: Message | None = None
        self.finish_reason: AgentFinishReason | None = None

    @property
    def id(self) -> str:
        """The session id."""
        return self.session.id

    async def get_messages(self) -> list[Message]:
        """The conversation history."""
        return await self.session.get_messages()

    async def add_messages(self, messages: Message | list[Message]) -> None:
        """Append one message or several to the history."""
        await self.session.add_messages(messages)

    async def set_messages(self, messages: list[Message]) -> None:
        """Replace the history."""
        await self.session.set_messages(messages)

    async def get_custom(self) -> S:
        """The custom state as an `S` (None only while unset when the schema has a field without a
        default, or without a schema; see `Session.get_custom`)."""
        return await self.session.get_custom()

    async def update_custom(self, fn: CustomUpdate[S]) -> S:
        """Atomically replace the custom state with `fn(old)` (an `S`, or its JSON form); streamed to
        the client as a patch. See `Session.update_custom`."""
        return await self.session.update_custom(fn)

    async def get_artifacts(self) -> list[Artifact]:
        """The artifacts."""
        return await self.session.get_artifacts()

    async def add_artifacts(self, artifacts: Artifact | list[Artifact]) -> None:
        """Add artifacts (a named one replaces its namesake); each is streamed to the client."""
        await self.session.add_artifacts(artifacts)

    async def run(self, handle_turn: TurnHandler) -> None:
        """Run `handle_turn(input)` or `handle_turn(input, turn)` for each input until the client
        closes or detaches."""
        call = call_with_turn(handle_turn)
        while (item := await self._invocation.next_input()) is not None:
            if not await self._invocation.run_turn(self, item, call):
                return

    async def result(self) -> AgentResult:
        """The default result: the last model message and all artifacts."""
        messages = await self.session.get_messages()
        last = next((m for m in reversed(messages) if m.role == "model"), self.last_message)
        return AgentResult(
            message=last, artifacts=await self.session.get_artifacts(), finish_reason=self.finish_reason
        )


def call_with_turn(handle_turn: TurnHandler) -> TwoArgumentTurnHandler:
    """`handle_turn` as a two-argument handler: one taking only the input gets only the input."""
    capacity = _positional_capacity(handle_turn)
    if _required_positionals(handle_turn) > 2:
        raise TurnkitError(
            "INVALID_ARGUMENT",
            f"handle_turn {getattr(handle_turn, '__name__', handle_turn)!r} must take the input "
            "(and optionally the turn context), not more required arguments",
        )
    if capacity >= 2:
        return handle_turn  # type: ignore[return-value]
    if capacity == 0:
        raise TurnkitError(
            "INVALID_ARGUMENT",
            f"handle_turn {getattr(handle_turn, '__name__', handle_turn)!r} must take the input "
            "(and optionally the turn context) as positional arguments",
        )

    def call(item: AgentInput, _turn: TurnContext) -> Awaitable[Any]:
        return handle_turn(item)  # type: ignore[call-arg]

    return call


def _plain_positionals(fn: Callable[..., Any]) -> tuple[int, int] | None:
    """(accepted, required) positional arguments of a plain function, read off its code object, or
    None for anything else. Every invocation of an agent passes a new closure here, and
    `inspect.signature` would cost more than the rest of a cheap turn."""
    if type(fn) is not types.FunctionType or hasattr(fn, "__wrapped__") or hasattr(fn, "__signature__"):
        return None
    code = fn.__code__
    accepted = 2 if code.co_flags & inspect.CO_VARARGS else code.co_argcount
    return accepted, code.co_argcount - len(fn.__defaults__ or ())


def _positional_capacity(fn: Callable[..., Any]) -> int:
    """How many positional arguments `fn` accepts (2 when it takes *args or cannot be inspected)."""
    plain = _plain_positionals(fn)
    if plain is not None:
        return plain[0]
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 2
    count = 0
    for p in params:
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            return 2
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            count += 1
    return count


def _required_positionals(fn: Callable[..., Any]) -> int:
    """How many positional arguments `fn` requires (0 when it cannot be inspected)."""
    plain = _plain_positionals(fn)
    if plain is not None:
        return plain[1]
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 0
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(1 for p in params if p.kind in positional and p.default is p.empty)
