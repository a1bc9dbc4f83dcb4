"""What a chat hands back: a turn's response, its streamed chunks, its interrupts, and its failure.

All are generic in the agent's custom state type `S` (from `state_schema`; Any without one). One
rule for the custom state across chunk, response, chat and error: `.state` is it as an `S` (loaded
from the JSON the wire and the stores keep, defaults applied), and `.custom` is the same `S` under
Genkit's chunk name. The JSON form is `session_state.custom` (and `raw` on the wire).

`.state` is typed `S`, not `S | None`, as `Session.get_custom()` is: it reads as None only while
the state is unset and the schema has a field without a default, or when there is no schema.

Errors: everything that goes wrong while a chat runs a turn (`send`, `resume`, a streamed turn's
response) raises `AgentError` carrying a `failed` response, as Genkit does: the agent failing the
turn, a snapshot it cannot continue from, or a server it cannot reach. What fails before any turn is
sent (a bad `agent.chat(...)` call, `load_chat` finding nothing, `detach` without a store) raises a
plain `TurnkitError`. `AgentError` is a `TurnkitError`, so `except TurnkitError` catches both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, cast

from turnkit.errors import STATUS_NAMES, TurnkitError
from turnkit.sessions._state_type import S, StateType
from turnkit.types import (
    AgentFinishReason,
    AgentOutput,
    AgentStreamChunk,
    Artifact,
    ErrorInfo,
    GenerationUsage,
    Media,
    Message,
    Part,
    SessionState,
    ToolRequest,
    ToolResponse,
)

__all__ = ["AgentChunk", "AgentError", "AgentInterrupt", "AgentResponse"]


class AgentInterrupt:
    """An interrupted tool request, with helpers to answer it."""

    def __init__(self, part: Part) -> None:
        if part.tool_request is None:
            raise TurnkitError("INVALID_ARGUMENT", "an interrupt is a tool request part")
        self.part = part
        self.name = part.tool_request.name
        self.ref = part.tool_request.ref
        self.input = part.tool_request.input
        self.data = (part.metadata or {}).get("interrupt")

    def respond(self, output: Any, *, metadata: dict[str, Any] | None = None) -> Part:
        """A tool response that answers this interrupt with `output` (for `resume(respond=...)`)."""
        return Part(
            tool_response=ToolResponse(name=self.name, ref=self.ref, output=output), metadata=metadata
        )

    def restart(self, resumed: Any = True, *, resumed_metadata: dict[str, Any] | None = None) -> Part:
        """The same tool request, to run the tool again (for `resume(restart=...)`); the tool sees
        `resumed_metadata` (Genkit's spelling) or else `resumed` as `ctx.resumed`."""
        return Part(
            tool_request=ToolRequest(name=self.name, ref=self.ref, input=self.input),
            metadata={"resumed": resumed_metadata if resumed_metadata is not None else resumed},
        )

    def __repr__(self) -> str:
        return f"AgentInterrupt({self.name!r}, ref={self.ref!r})"


def _interrupts(content: Sequence[Part]) -> list[AgentInterrupt]:
    return [AgentInterrupt(p) for p in content if p.is_interrupt]


class AgentResponse(Generic[S]):
    """The result of one turn as a client sees it.

    `output` (also `raw`) is the turn's output as the wire carries it; `session_state` is the whole
    session after the turn as this client knows it (custom state as JSON); `state` (also `custom`)
    is its custom state as an `S`.
    """

    def __init__(
        self,
        output: AgentOutput,
        session_state: SessionState | Callable[[], SessionState],
        state_type: StateType[S] | None = None,
    ) -> None:
        self.output = output
        # A chat passes a function making its copy of the state: most responses are never asked
        # for it, and the copy (new lists of the whole history) would grow with the conversation.
        self._session_state: SessionState | None = None
        self._make_session_state: Callable[[], SessionState] | None = None
        if isinstance(session_state, SessionState):
            self._session_state = session_state
        else:
            self._make_session_state = session_state
        self._state_type: StateType[Any] = state_type if state_type is not None else StateType()

    @property
    def session_state(self) -> SessionState:
        """The whole session after this turn as this client knows it (custom state as JSON)."""
        state = self._session_state
        if state is None:
            assert self._make_session_state is not None
            state = self._session_state = self._make_session_state()
            self._make_session_state = None
        return state

    @session_state.setter
    def session_state(self, value: SessionState) -> None:
        self._session_state, self._make_session_state = value, None

    @property
    def raw(self) -> AgentOutput:
        """The turn's output as the wire carries it (Genkit's name for `output`)."""
        return self.output

    @property
    def state(self) -> S:
        """The custom state after this turn, as the agent's state type (defaults applied; None only
        when unset and the schema has a field without a default, or without a schema)."""
        return cast(S, self._state_type.load(self.session_state.custom))

    @property
    def custom(self) -> S:
        """The custom state after this turn as an `S`: the same as `state` (Genkit's chunk name).
        Its JSON form is `session_state.custom`."""
        return self.state

    @property
    def message(self) -> Message | None:
        """The turn's final message."""
        return self.output.message

    @property
    def text(self) -> str:
        """The text of the final message."""
        return self.output.message.text if self.output.message else ""

    @property
    def data(self) -> Any:
        """The first structured-data part of the final message, if any."""
        content = self.output.message.content if self.output.message else []
        return next((p.data for p in content if p.data is not None), None)

    @property
    def usage(self) -> GenerationUsage | None:
        """The turn's token usage, summed over its model calls (None when no model reported any,
        and through remote clients: Genkit's wire format does not carry it)."""
        return self.output.usage

    @property
    def tool_requests(self) -> list[Part]:
        """The tool request parts of the final message."""
        return self.output.message.tool_requests if self.output.message else []

    @property
    def messages(self) -> list[Message]:
        """The whole history after this turn, as this client knows it."""
        return list(self.session_state.messages or [])

    @property
    def artifacts(self) -> list[Artifact]:
        """The session's artifacts after this turn."""
        return list(self.session_state.artifacts or self.output.artifacts or [])

    @property
    def finish_reason(self) -> AgentFinishReason | None:
        """Why the turn ended: stop, interrupted, failed, aborted, detached, ... (equal to the wire string)."""
        reason = self.output.finish_reason
        return None if reason is None else AgentFinishReason(reason)

    @property
    def finish_message(self) -> str | None:
        """The error message of a failed turn."""
        return self.output.error.message if self.output.error else None

    @property
    def snapshot_id(self) -> str | None:
        """The snapshot this turn wrote (server-managed agents)."""
        return self.output.snapshot_id

    @property
    def session_id(self) -> str | None:
        """The session id."""
        return self.output.session_id or self.session_state.session_id

    @property
    def error(self) -> TurnkitError | None:
        """The failure of a failed turn."""
        err = self.output.error
        return TurnkitError(err.status or "UNKNOWN", err.message, details=err.details) if err else None

    @property
    def interrupts(self) -> list[AgentInterrupt]:
        """The tool requests waiting for the client (finish reason `interrupted`)."""
        return _interrupts(self.output.message.content) if self.output.message else []

    def assert_valid(self) -> AgentResponse[S]:
        """Raise the turn's error when it failed; return self otherwise."""
        if self.error is not None:
            raise self.error
        return self

    def __repr__(self) -> str:
        return f"AgentResponse(finish_reason={self.finish_reason!r}, text={self.text[:40]!r})"


class AgentError(TurnkitError, Generic[S]):
    """A turn that went wrong, raised by `chat.send`, `resume` and a streaming turn's response: the
    agent failed it, or it could not run (its snapshot missing or not resumable, the server
    unreachable: status NOT_FOUND, UNAVAILABLE, ...), as Genkit raises it. Errors before a turn is
    sent are plain `TurnkitError`s (see the module docs).

    `str(err)` is the message alone, as in Genkit (a plain `TurnkitError` reads "STATUS: message").
    Carries the failure (`status`, `message`, `details`), the chat's last good custom `state` (an
    `S`) and `snapshot_id` (the chat goes on from there), and the turn's `response` (finish reason
    `failed`).
    """

    def __init__(
        self,
        status: str,
        message: str,
        *,
        details: Any = None,
        state: S | None = None,
        snapshot_id: str | None = None,
        response: AgentResponse[S],
    ) -> None:
        super().__init__(status, message, details=details)
        # Typed `S` as `chat.state` is (None only when no state was good, or without a schema).
        self.state: S = cast(S, state)
        self.snapshot_id = snapshot_id
        self.response = response

    @classmethod
    def of(
        cls,
        output: AgentOutput,
        session_state: SessionState,
        state_type: StateType[S],
        snapshot_id: str | None,
    ) -> AgentError[S]:
        """The error of a failed turn's output, with the chat's last good state."""
        err = output.error or ErrorInfo(status="UNKNOWN", message="the turn failed")
        status = err.status if err.status in STATUS_NAMES else "UNKNOWN"
        response = AgentResponse(output, session_state, state_type)
        state: S | None
        try:
            state = response.state
        except TurnkitError:  # the state the turn was given did not fit the schema: none was good
            state = None
        return cls(
            status,
            err.message,
            details=err.details,
            state=state,
            snapshot_id=snapshot_id,
            response=response,
        )

    def __str__(self) -> str:
        # As Genkit's AgentError: the message alone (the status is `.status`).
        return self.message

    def __repr__(self) -> str:
        return f"AgentError({self.status!r}, {self.message!r})"


class AgentChunk(Generic[S]):
    """A streamed chunk of a turn, with what the client has accumulated so far.

    `raw` is the chunk as the wire carries it; `custom` (Genkit's name, also `state`) is the custom
    state after this chunk as an `S`; `accumulated_text` is the turn's model text so far.
    """

    def __init__(self, raw: AgentStreamChunk, accumulated_text: str, custom: S) -> None:
        self.raw = raw
        self.accumulated_text = accumulated_text
        self.custom: S = custom

    @property
    def state(self) -> S:
        """The custom state after this chunk as an `S`: the same as `custom`."""
        return self.custom

    @property
    def _content(self) -> list[Part]:
        return self.raw.model_chunk.content if self.raw.model_chunk else []

    @property
    def text(self) -> str:
        """This chunk's model text."""
        return self.raw.model_chunk.text if self.raw.model_chunk else ""

    @property
    def reasoning(self) -> str:
        """This chunk's reasoning text."""
        return "".join(p.reasoning for p in self._content if p.reasoning is not None)

    @property
    def data(self) -> Any:
        """The first structured-data part of this chunk, if any."""
        return next((p.data for p in self._content if p.data is not None), None)

    @property
    def media(self) -> Media | None:
        """The first media part of this chunk, if any."""
        return next((p.media for p in self._content if p.media is not None), None)

    @property
    def artifact(self) -> Artifact | None:
        """The artifact this chunk carries."""
        return self.raw.artifact

    @property
    def tool_requests(self) -> list[Part]:
        """Tool requests in this chunk's model content."""
        return [p for p in self._content if p.tool_request is not None]

    @property
    def interrupts(self) -> list[AgentInterrupt]:
        """Tool requests in this chunk that paused the turn for the client (metadata `interrupt`):
        they stream as they happen, so a UI can ask for approval before the turn ends."""
        return _interrupts(self._content)

    @property
    def turn_end(self) -> bool:
        """Whether this chunk ends the turn."""
        return self.raw.turn_end is not None

    def __repr__(self) -> str:
        return f"AgentChunk({self.raw.to_wire()!r})"
