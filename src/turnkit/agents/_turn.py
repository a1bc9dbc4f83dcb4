"""What a turn handler sees: the TurnContext of one turn and the AgentContext of one invocation."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from turnkit.errors import TurnkitError
from turnkit.models import ModelContext
from turnkit.types import AgentFinishReason, AgentStreamChunk, Artifact, ModelResponseChunk

__all__ = ["AgentContext", "TurnContext"]


@dataclass
class AgentContext:
    """The invocation's context: the caller's context (auth, tenant), the prompt input, if any, and
    `send_chunk` to stream from a custom agent's function (as Genkit's action context does)."""

    context: dict[str, Any] = field(default_factory=dict)
    prompt_input: Any = None
    # Set by the invocation that runs the agent function: where `send_chunk` streams to.
    _stream: Callable[[AgentStreamChunk], None] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def send_chunk(self, chunk: AgentStreamChunk | ModelResponseChunk) -> None:
        """Stream `chunk` to the client: an `AgentStreamChunk` as given, a `ModelResponseChunk`
        as its `model_chunk` (a no-op once the client has detached)."""
        if isinstance(chunk, ModelResponseChunk):
            chunk = AgentStreamChunk(model_chunk=chunk)
        elif not isinstance(chunk, AgentStreamChunk):
            raise TurnkitError(
                "INVALID_ARGUMENT",
                f"send_chunk takes an AgentStreamChunk or a ModelResponseChunk, not {type(chunk).__name__}",
            )
        if self._stream is None:
            raise TurnkitError(
                "FAILED_PRECONDITION", "send_chunk: this context is not running an agent, so nothing listens"
            )
        self._stream(chunk)


class TurnContext:
    """One turn: its snapshot ids and index, a way to stream, and the abort signal."""

    def __init__(
        self,
        *,
        snapshot_id: str | None,
        parent_snapshot_id: str | None,
        turn_index: int,
        emit: Callable[[AgentStreamChunk], None],
        context: dict[str, Any],
    ) -> None:
        self.snapshot_id = snapshot_id
        self.parent_snapshot_id = parent_snapshot_id
        self.turn_index = turn_index
        self.context = context
        self._emit = emit
        # Thread-safe so that a model running in a worker thread can poll it too.
        self.abort_signal = threading.Event()
        self._aborted = asyncio.Event()
        self.finish_reason: AgentFinishReason | None = None
        # Called (on the loop) when the turn is first aborted: how the runtime stops the handler
        # without a watcher task per turn.
        self._on_abort: Callable[[], None] | None = None

    @property
    def aborted(self) -> bool:
        """Whether this turn has been asked to stop."""
        return self.abort_signal.is_set()

    async def wait_aborted(self) -> None:
        """Return once this turn has been asked to stop."""
        await self._aborted.wait()

    def abort(self) -> None:
        """Ask the turn to stop (models and tools see the signal; the runtime cancels the handler)."""
        self.abort_signal.set()
        self._aborted.set()
        callback, self._on_abort = self._on_abort, None
        if callback is not None:
            callback()

    def _call_on_abort(self, callback: Callable[[], None] | None) -> None:
        """Call `callback` once the turn is aborted (at once if it already is); None forgets it."""
        self._on_abort = callback
        if callback is not None and self.aborted:
            self._on_abort = None
            callback()

    def send_chunk(self, chunk: ModelResponseChunk) -> None:
        """Stream a model chunk to the client (a no-op once the turn is detached)."""
        self._emit(AgentStreamChunk(model_chunk=chunk))

    def send_artifact(self, artifact: Artifact) -> None:
        """Stream an artifact without storing it (use the session's add_artifacts to store it)."""
        self._emit(AgentStreamChunk(artifact=artifact))

    def model_context(self) -> ModelContext:
        """A ModelContext for `generate(model_context=...)` that streams to this turn and sees its abort."""
        return ModelContext(self.send_chunk, abort_signal=self.abort_signal, context=self.context)
