"""`HistoryCompaction`: send the model a bounded history; the session keeps every message.

A long session's model request carries the whole conversation, so its size (and the model's cost)
grows with every turn. This middleware rewrites each model request (not the session): beyond a
budget of messages and/or characters, the oldest turns are dropped, or replaced by a summary that
goes into the system message. The store still holds the full history, so the session can be read,
replayed or compacted differently later.

Turns are cut only where a user message starts one, so a tool request is never separated from its
response, and the latest turn is always sent whole, even when it alone is over the budget. System
messages are never dropped, counted or moved: each stays where it was among the kept turns.
"""

from __future__ import annotations

import hashlib
import inspect
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal

from turnkit.errors import TurnkitError
from turnkit.middleware._base import (
    BaseMiddleware,
    GenerateHookParams,
    GenerateMiddlewareContext,
    NextGenerate,
    with_system_text,
)
from turnkit.types import Message, ModelResponse

__all__ = ["HistoryCompaction", "Summarizer"]

Summarizer = Callable[[Sequence[Message]], str | Awaitable[str]]
_MARKER = "historyCompaction"
_CACHE_SIZE = 256


def _is_turn_start(message: Message) -> bool:
    """A user message that is not a tool response: a turn may begin here."""
    return message.role == "user" and not any(p.tool_response is not None for p in message.content)


def _without_first(messages: Sequence[Message], count: int) -> list[Message]:
    """`messages` less their first `count` non-system ones. System messages stay where they were:
    one between turns is an instruction about what follows it, so it is not moved to the front."""
    kept: list[Message] = []
    for message in messages:
        if message.role != "system" and count > 0:
            count -= 1
            continue
        kept.append(message)
    return kept


class HistoryCompaction(BaseMiddleware):
    """Keep the history the model sees within `max_messages` and/or `max_chars` (the compact JSON
    size of the messages; system messages are not counted and always kept, in their places).

    `strategy="drop"` leaves the older turns out; `strategy="summarize"` puts
    `summarizer(dropped_messages)` (sync or async, returning text) into the system message in
    their place. Summaries are remembered by the content they cover, so a turn that drops the same
    messages as the previous one does not summarize them again.
    """

    def __init__(
        self,
        *,
        max_messages: int | None = None,
        max_chars: int | None = None,
        strategy: Literal["drop", "summarize"] = "drop",
        summarizer: Summarizer | None = None,
    ) -> None:
        for name, value in (("max_messages", max_messages), ("max_chars", max_chars)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise TurnkitError(
                    "INVALID_ARGUMENT", f"HistoryCompaction: {name} must be an int >= 1, not {value!r}"
                )
        if max_messages is None and max_chars is None:
            raise TurnkitError("INVALID_ARGUMENT", "HistoryCompaction: give max_messages and/or max_chars")
        if strategy not in ("drop", "summarize"):
            raise TurnkitError(
                "INVALID_ARGUMENT",
                f"HistoryCompaction: strategy must be 'drop' or 'summarize', not {strategy!r}",
            )
        if strategy == "summarize" and not callable(summarizer):
            raise TurnkitError(
                "INVALID_ARGUMENT",
                "HistoryCompaction: strategy='summarize' needs a summarizer(messages) -> str",
            )
        self.max_messages = max_messages
        self.max_chars = max_chars
        self.strategy = strategy
        self.summarizer = summarizer
        self._summaries: OrderedDict[str, str] = OrderedDict()

    def split(self, messages: Sequence[Message]) -> int:
        """How many of the (non-system) `messages` to leave out: the fewest whole turns from the
        start that bring the rest within budget, never the latest turn."""
        starts = [0, *(i for i, m in enumerate(messages) if i > 0 and _is_turn_start(m))]
        sizes = [len(m.to_json()) for m in messages] if self.max_chars is not None else []
        kept_chars = sum(sizes)
        cut, passed = 0, 0
        for start in starts:
            kept_chars -= sum(sizes[passed:start])  # the characters of the turn just left out
            passed = start
            cut = start
            within_messages = self.max_messages is None or len(messages) - start <= self.max_messages
            if within_messages and (self.max_chars is None or kept_chars <= self.max_chars):
                break
        return cut

    async def wrap_generate(
        self, params: GenerateHookParams, ctx: GenerateMiddlewareContext, next_fn: NextGenerate
    ) -> ModelResponse:
        """Send the model the request with its history compacted to the budget."""
        request = params.request
        history = [m for m in request.messages if m.role != "system"]
        cut = self.split(history)
        if cut == 0:
            return await next_fn(params, ctx)
        dropped = history[:cut]
        compacted = request.model_copy(update={"messages": _without_first(request.messages, cut)})
        if self.strategy == "summarize":
            summary = await self._summary(dropped)
            compacted = with_system_text(
                compacted, f"Summary of the earlier conversation:\n{summary}", _MARKER
            )
        params.request = compacted
        return await next_fn(params, ctx)

    async def _summary(self, dropped: Sequence[Message]) -> str:
        key = hashlib.sha256("\n".join(m.to_json() for m in dropped).encode("utf-8")).hexdigest()
        found = self._summaries.get(key)
        if found is not None:
            self._summaries.move_to_end(key)
            return found
        assert self.summarizer is not None
        made = self.summarizer(dropped)
        text = await made if inspect.isawaitable(made) else made
        if not isinstance(text, str):
            raise TurnkitError(
                "INVALID_ARGUMENT", f"HistoryCompaction: summarizer returned {type(text).__name__}, not str"
            )
        self._summaries[key] = text
        while len(self._summaries) > _CACHE_SIZE:
            self._summaries.popitem(last=False)
        return text

    def __repr__(self) -> str:
        return (
            f"HistoryCompaction(max_messages={self.max_messages!r}, max_chars={self.max_chars!r}, "
            f"strategy={self.strategy!r})"
        )
