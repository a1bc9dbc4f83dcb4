"""What a turn handler sees: the TurnContext of one turn and the AgentContext of one invocation."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from turnkit.models import ModelContext
from turnkit.types import AgentFinishReason, AgentStreamChunk, Artifact, ModelResponseChunk

__all__ = ["AgentContext", "TurnContext"]


@dataclass
class AgentContext:
    """The invocation's context: the caller's context (auth, tenant) and the prompt input, if any."""

    context: dict[str, Any] = field(default_factory=dict)
    prompt_input: Any = None


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

    def send_chunk(self, chunk: ModelResponseChunk) -> None:
        """Stream a model chunk to the client (a no-op once the turn is detached)."""
        self._emit(AgentStreamChunk(model_chunk=chunk))

    def send_artifact(self, artifact: Artifact) -> None:
        """Stream an artifact without storing it (use the session's add_artifacts to store it)."""
        self._emit(AgentStreamChunk(artifact=artifact))

    def model_context(self) -> ModelContext:
        """A ModelContext for `generate(model_context=...)` that streams to this turn and sees its abort."""
        return ModelContext(self.send_chunk, abort_signal=self.abort_signal, context=self.context)
