"""How a chat builds its view of the session: the state a new chat starts from (checked against
the agent's mode and state type), and what a turn changes in it (messages rebuilt from the stream,
custom-state patches, artifacts replaced by name)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jsonpatch

from turnkit.errors import TurnkitError
from turnkit.sessions._state_type import StateType
from turnkit.sessions._store import check_id
from turnkit.types import AgentStreamChunk, Artifact, Message, Part, Role, SessionState

__all__ = ["StreamedMessages", "custom_json", "initial_state", "merge_artifacts", "patched"]


class StreamedMessages:
    """Rebuilds a turn's messages from its model chunks: consecutive chunks of one role and index
    make one message (adjacent text merged); used when the transport does not send the state."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._key: tuple[Role, int | None] | None = None
        self._parts: list[Part] = []

    def add(self, chunk: AgentStreamChunk) -> None:
        mc = chunk.model_chunk
        if mc is None:
            return
        key = (mc.role or "model", mc.index)
        if key != self._key:
            self._flush()
            self._key = key
        self._parts.extend(mc.content)

    def _flush(self) -> None:
        if self._key is None:
            return
        merged: list[Part] = []
        for part in self._parts:
            if part.text is not None and part.metadata is None and merged and _plain_text(merged[-1]):
                merged[-1] = Part(text=(merged[-1].text or "") + part.text)
            else:
                merged.append(part)
        if merged:
            self.messages.append(Message(role=self._key[0], content=merged))
        self._key, self._parts = None, []

    def finish(self, final: Message | None) -> list[Message]:
        """The turn's messages, the final one taken from the output (it carries the metadata a
        resume needs, such as interrupt marks) in place of its streamed copy."""
        self._flush()
        out = self.messages
        if final is None:
            return out
        if out and out[-1].role == "model":
            out = out[:-1]
        return [*out, final]


def _plain_text(part: Part) -> bool:
    return part.text is not None and part.metadata is None


# SessionState's fields: a custom state whose schema drops these was meant as a whole state.
_SESSION_STATE_KEYS = frozenset({"sessionId", "session_id", "messages", "custom", "artifacts"})


def initial_state(
    state_management: str,
    state_type: StateType[Any],
    session_id: str | None,
    snapshot_id: str | None,
    messages: Sequence[Message | dict[str, Any]] | None,
    artifacts: Sequence[Artifact | dict[str, Any]] | None,
    state: Any,
    session_state: SessionState | Mapping[str, Any] | None,
) -> SessionState:
    """The session a new chat starts from, after checking what it was given fits the agent's mode."""
    for value, what in ((session_id, "session id"), (snapshot_id, "snapshot id")):
        if value is not None:
            check_id(value, what)
    given = {"messages": messages, "artifacts": artifacts, "state": state, "session_state": session_state}
    seeds = [name for name, value in given.items() if value is not None]
    if state_management == "server":
        if seeds:
            raise TurnkitError(
                "FAILED_PRECONDITION",
                f"Cannot send {', '.join(repr(n) for n in seeds)} to a server-managed agent (one "
                "with a store); use session_id or snapshot_id",
            )
        return SessionState()
    if session_id or snapshot_id:
        raise TurnkitError(
            "FAILED_PRECONDITION",
            "Cannot use 'sessionId' or 'snapshotId' with a client-managed agent; pass messages, "
            "artifacts and state (or a whole session_state)",
        )
    if session_state is not None:
        if len(seeds) > 1:
            raise TurnkitError(
                "INVALID_ARGUMENT", "give session_state, or messages / artifacts / state, not both"
            )
        return SessionState.from_wire(session_state).model_copy(deep=True)
    return SessionState(
        messages=None if messages is None else [Message.from_wire(m) for m in messages],
        artifacts=None
        if artifacts is None
        else merge_artifacts(None, [Artifact.from_wire(a) for a in artifacts]),
        custom=None if state is None else custom_json(state_type, state),
    )


def custom_json(state_type: StateType[Any], state: Any) -> Any:
    """`chat(state=...)` as JSON: an `S` or its JSON form, checked against the agent's schema."""
    if isinstance(state, SessionState):
        raise TurnkitError(
            "INVALID_ARGUMENT",
            "state= is the custom state; pass a whole SessionState as session_state=",
        )
    value = state_type.validate(state)
    if isinstance(state, Mapping) and isinstance(value, Mapping):
        dropped = _SESSION_STATE_KEYS & (set(state) - set(value))
        if dropped:  # the schema ignored them: most likely a whole session state in the wrong place
            raise TurnkitError(
                "INVALID_ARGUMENT",
                f"state= is the custom state, and {sorted(dropped)} are not fields of it; pass a "
                "whole session state as session_state=",
            )
    return value


def patched(custom: Any, ops: list[dict[str, Any]]) -> Any:
    """Custom state after a patch; a whole-document replace may start from nothing."""
    if custom is None and not ops[0]["path"]:
        custom, ops = ops[0].get("value"), ops[1:]
    return jsonpatch.apply_patch(custom, ops) if ops else custom


def merge_artifacts(current: list[Artifact] | None, new: Sequence[Artifact]) -> list[Artifact]:
    """Artifacts with `new` added; a named one replaces an earlier one of that name."""
    out = list(current or [])
    for art in new:
        at = next((i for i, a in enumerate(out) if art.name is not None and a.name == art.name), None)
        if at is None:
            out.append(art)
        else:
            out[at] = art
    return out
