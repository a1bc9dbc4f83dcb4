"""ChunkBuffer: a connection's undelivered chunks, bounded however slowly its reader reads.

A turn never waits for its reader: it runs at its own pace and its snapshot is complete. While the
reader keeps up, chunks wait one by one (the only cost is a length check). Once `limit` chunks are
waiting, the buffer coalesces new chunks into a few merged ones until the reader has caught up with
half of them, keeping what the reader builds from the stream exact:

- consecutive text (or reasoning) deltas of one message become one delta with the joined text;
- custom-state patches become one `replace` of the whole custom state (the state after the last
  patch); a patch whose resulting state is unknown (reshaped by a `chunk_transform`, or emitted by
  the agent itself) is appended to the merged patch instead;
- a named artifact replaces a waiting artifact of the same name (the later one wins anyway).

Nothing is merged across a turn's end, and chunks of other kinds (tool requests, media, unnamed
artifacts) still wait one by one. So a slow reader costs at most `limit` chunks plus one merged
chunk per kind and message of each turn, plus the not yet delivered text itself, and it still ends
with the same final text, custom state and artifacts as a fast one.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Final

from turnkit.types import AgentStreamChunk, Artifact, JsonPatchOperation, ModelResponseChunk, Part

__all__ = ["MAX_QUEUED_CHUNKS", "UNKNOWN_STATE", "ChunkBuffer"]

# How many chunks wait one by one before the buffer starts coalescing (stated in the README).
MAX_QUEUED_CHUNKS: Final = 256


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN_STATE"


# Passed with a custom-patch chunk whose resulting custom state is not known.
UNKNOWN_STATE: Final[Any] = _Unknown()


class _Merged:
    """A chunk being coalesced: text deltas of one message, custom patches, or a named artifact."""

    __slots__ = ("artifact", "first", "kind", "ops", "texts", "value")

    def __init__(self, kind: str, first: AgentStreamChunk) -> None:
        self.kind = kind  # "text", "reasoning", "patch" or "artifact"
        self.first = first
        self.texts: list[str] = []
        self.value: Any = UNKNOWN_STATE  # the custom state after the merged patches, when known
        self.ops: list[JsonPatchOperation] = []  # patches to apply after `value` (or alone)
        self.artifact: Artifact | None = None

    def chunk(self) -> AgentStreamChunk:
        """The one chunk that stands for everything merged here."""
        if self.kind == "patch":
            ops = list(self.ops)
            if self.value is not UNKNOWN_STATE:
                ops.insert(0, JsonPatchOperation(op="replace", path="", value=self.value))
            return AgentStreamChunk(custom_patch=ops)
        if self.kind == "artifact":
            return AgentStreamChunk(artifact=self.artifact)
        model = self.first.model_chunk
        assert model is not None
        text = "".join(self.texts)
        part = Part(text=text) if self.kind == "text" else Part(reasoning=text)
        return AgentStreamChunk(model_chunk=model.model_copy(update={"content": [part]}))


def _delta_kind(model: ModelResponseChunk) -> str | None:
    """'text' or 'reasoning' when the model chunk is a bare delta of that kind, else None."""
    if len(model.content) != 1 or model.custom is not None or model.aggregated:
        return None
    part = model.content[0]
    if part.metadata is not None:
        return None
    if part.text is not None:
        return "text"
    if part.reasoning is not None:
        return "reasoning"
    return None


class ChunkBuffer:
    """The chunks one connection has produced and its reader has not yet taken (one reader)."""

    def __init__(self, limit: int = MAX_QUEUED_CHUNKS) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        self.limit = limit
        self._low = max(limit // 2, 1)  # coalescing stops once fewer than this wait
        self._items: deque[AgentStreamChunk | _Merged] = deque()
        self._closed = False
        self._waiter: asyncio.Future[None] | None = None
        self._coalescing = False
        # While coalescing: the merged chunks of the current turn still waiting, by what they take.
        self._delta: _Merged | None = None  # the text/reasoning delta merged last (no model chunk after it)
        self._patch: _Merged | None = None
        self._named: dict[str, _Merged] = {}

    def __len__(self) -> int:
        return len(self._items)

    @property
    def ready(self) -> bool:
        """Whether `get()` returns at once (a chunk waits, or the buffer is closed)."""
        return bool(self._items) or self._closed

    @property
    def coalescing(self) -> bool:
        """Whether new chunks are being merged (the reader is `limit` chunks behind)."""
        return self._coalescing

    def put(self, chunk: AgentStreamChunk, custom_after: Any = UNKNOWN_STATE) -> None:
        """Queue a chunk; `custom_after` is the custom state after a patch chunk, when known."""
        if self._coalescing or len(self._items) >= self.limit:
            self._coalescing = True
            self._coalesce(chunk, custom_after)
        else:
            self._items.append(chunk)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def close(self) -> None:
        """No more chunks: `get()` returns None once the waiting ones are taken."""
        self._closed = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> AgentStreamChunk | None:
        """The next chunk, waiting for one; None once closed and empty."""
        while not self._items:
            if self._closed:
                return None
            if self._waiter is None or self._waiter.done():
                # (A reader cancelled while waiting cancels this future: `put` skips a done one,
                # and the next `get` makes a new one, so no shield is needed.)
                self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        item = self._items.popleft()
        if self._coalescing and len(self._items) < self._low:
            self._stop_coalescing()
        if isinstance(item, _Merged):
            self._forget(item)
            return item.chunk()
        return item

    # --- coalescing ------------------------------------------------------------------------------

    def _coalesce(self, chunk: AgentStreamChunk, custom_after: Any) -> None:
        if chunk.turn_end is not None:
            self._items.append(chunk)
            self._stop_coalescing_refs()  # nothing merges across a turn's end
        elif chunk.model_chunk is not None:
            self._add_model_chunk(chunk, chunk.model_chunk)
        elif chunk.custom_patch is not None:
            self._add_patch(chunk, chunk.custom_patch, custom_after)
        elif chunk.artifact is not None and chunk.artifact.name is not None:
            self._add_named_artifact(chunk, chunk.artifact.name, chunk.artifact)
        else:
            self._items.append(chunk)

    def _add_model_chunk(self, chunk: AgentStreamChunk, model: ModelResponseChunk) -> None:
        kind = _delta_kind(model)
        last = self._delta
        if kind is None:
            self._items.append(chunk)
            self._delta = None  # later text must not jump ahead of this chunk
            return
        if last is not None:
            first = last.first.model_chunk
            assert first is not None
            if last.kind == kind and first.role == model.role and first.index == model.index:
                last.texts.append(_delta_text(model))
                return
        merged = _Merged(kind, chunk)
        merged.texts.append(_delta_text(model))
        self._items.append(merged)
        self._delta = merged

    def _add_patch(self, chunk: AgentStreamChunk, ops: list[JsonPatchOperation], custom_after: Any) -> None:
        merged = self._patch
        if merged is None:
            merged = self._patch = _Merged("patch", chunk)
            self._items.append(merged)
        if custom_after is not UNKNOWN_STATE:
            merged.value = custom_after  # the whole state after this patch supersedes earlier ones
            merged.ops = []
        else:
            merged.ops.extend(ops)

    def _add_named_artifact(self, chunk: AgentStreamChunk, name: str, artifact: Artifact) -> None:
        merged = self._named.get(name)
        if merged is None:
            merged = self._named[name] = _Merged("artifact", chunk)
            self._items.append(merged)
        merged.artifact = artifact

    def _forget(self, merged: _Merged) -> None:
        """A merged chunk has been taken: later chunks start a new one."""
        if merged is self._delta:
            self._delta = None
        elif merged is self._patch:
            self._patch = None
        elif merged.artifact is not None and self._named.get(merged.artifact.name or "") is merged:
            del self._named[merged.artifact.name or ""]

    def _stop_coalescing_refs(self) -> None:
        self._delta = None
        self._patch = None
        self._named = {}

    def _stop_coalescing(self) -> None:
        self._coalescing = False
        self._stop_coalescing_refs()


def _delta_text(model: ModelResponseChunk) -> str:
    part = model.content[0]
    text = part.text if part.text is not None else part.reasoning
    assert text is not None
    return text
