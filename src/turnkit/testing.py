"""Test models: an echo model and a programmable model whose responses and stream chunks are scripted.

They stand in for paid providers in tests, examples and benchmarks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from turnkit.errors import TurnkitError
from turnkit.models import Model, ModelContext, ModelInfo
from turnkit.types import Message, ModelRequest, ModelResponse, ModelResponseChunk, Part

if TYPE_CHECKING:
    from turnkit._app import Turnkit

__all__ = ["ProgrammableModel", "define_echo_model", "define_programmable_model"]


class ProgrammableModel:
    """A model whose i-th call streams `chunks[i]` (if any) and returns `responses[i]`.

    Assigning `responses` (or calling `program`) starts the script again from the first call. A
    `handler(request, ctx)` may be set instead to compute responses. Every request is recorded.
    """

    def __init__(self) -> None:
        self._responses: list[ModelResponse] = []
        self._chunks: list[list[ModelResponseChunk]] = []
        self.requests: list[ModelRequest] = []
        self.calls = 0
        self.handler: Callable[[ModelRequest, ModelContext], Any] | None = None
        self.model: Model | None = None
        # When set, each call waits on it before answering (for tests that need a turn in flight).
        self.gate: asyncio.Event | None = None
        self._called = asyncio.Condition() if _has_loop() else None

    @property
    def responses(self) -> list[ModelResponse]:
        """The scripted responses, one per call."""
        return self._responses

    @responses.setter
    def responses(self, value: Sequence[ModelResponse | dict[str, Any]]) -> None:
        self._responses = [ModelResponse.from_wire(r) for r in value]
        self.calls = 0

    @property
    def chunks(self) -> list[list[ModelResponseChunk]]:
        """The scripted stream chunks, one list per call."""
        return self._chunks

    @chunks.setter
    def chunks(self, value: Sequence[Sequence[ModelResponseChunk | dict[str, Any]]]) -> None:
        self._chunks = [[ModelResponseChunk.from_wire(c) for c in call] for call in value]

    def program(
        self,
        responses: Sequence[ModelResponse | dict[str, Any]],
        chunks: Sequence[Sequence[ModelResponseChunk | dict[str, Any]]] = (),
    ) -> None:
        """Script the next calls from the start: responses and optional per-call stream chunks."""
        self.responses = responses
        self.chunks = chunks

    def reset(self) -> None:
        """Forget the script and the recorded requests."""
        self._responses, self._chunks, self.requests, self.calls = [], [], [], 0

    async def wait_for_calls(self, n: int) -> None:
        """Return once the model has received `n` calls in all (TimeoutError after 10 s, so no test hangs)."""
        if self._called is None:
            self._called = asyncio.Condition()
        async with asyncio.timeout(10), self._called:
            await self._called.wait_for(lambda: len(self.requests) >= n)

    async def __call__(self, request: ModelRequest, ctx: ModelContext) -> ModelResponse:
        self.requests.append(request)
        i = self.calls
        self.calls += 1
        if self._called is not None:
            async with self._called:
                self._called.notify_all()
        if self.gate is not None:
            await self.gate.wait()
        if self.handler is not None:
            result = self.handler(request, ctx)
            if asyncio.iscoroutine(result):
                result = await result
            return ModelResponse.from_wire(result)
        if i >= len(self._responses):
            raise TurnkitError(
                "FAILED_PRECONDITION", f"programmable model has no response scripted for call {i + 1}"
            )
        if i < len(self._chunks):
            for chunk in self._chunks[i]:
                ctx.send_chunk(chunk)
        return self._responses[i]


def _has_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def define_programmable_model(ai: Turnkit, name: str = "programmableModel") -> ProgrammableModel:
    """Register a programmable model on `ai` and return its handle."""
    pm = ProgrammableModel()
    pm.model = ai.define_model(name=name, fn=pm, info=ModelInfo(label="Programmable test model"))
    return pm


def define_echo_model(ai: Turnkit, name: str = "echoModel") -> Model:
    """Register a model that answers with the text of the last user message, streamed word by word."""

    async def echo(request: ModelRequest, ctx: ModelContext) -> ModelResponse:
        last = next((m for m in reversed(request.messages) if m.role == "user"), None)
        text = f"Echo: {last.text if last else ''}"
        if ctx.is_streaming:
            for i, word in enumerate(text.split(" ")):
                ctx.send_chunk(
                    ModelResponseChunk(
                        role="model", index=0, content=[Part(text=word if i == 0 else f" {word}")]
                    )
                )
        return ModelResponse(message=Message(role="model", content=[Part(text=text)]), finish_reason="stop")

    return ai.define_model(name=name, fn=echo, info=ModelInfo(label="Echo test model"))
