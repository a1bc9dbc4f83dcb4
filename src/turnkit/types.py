"""Wire types: Pydantic models of the Genkit schema, camelCase on the wire, snake_case in Python.

Readers are tolerant (unknown fields are ignored); writers omit absent fields instead of
sending `null` (use `to_wire()` / `to_json()`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self, overload

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, model_validator
from pydantic.alias_generators import to_camel

from turnkit.errors import TurnkitError

__all__ = [
    "AgentAbortRequest",
    "AgentAbortResponse",
    "AgentFinishReason",
    "AgentFinishReasonName",
    "AgentInit",
    "AgentInput",
    "AgentOutput",
    "AgentStreamChunk",
    "Artifact",
    "DocumentData",
    "ErrorInfo",
    "FinishReason",
    "FinishReasonName",
    "GenerationUsage",
    "GetSnapshotRequest",
    "JsonPatchOperation",
    "Media",
    "Message",
    "ModelRequest",
    "ModelResponse",
    "ModelResponseChunk",
    "OutputConfig",
    "Part",
    "Resource",
    "Resume",
    "Role",
    "SessionSnapshot",
    "SessionState",
    "SnapshotStatus",
    "SnapshotStatusName",
    "ToolDefinition",
    "ToolRequest",
    "ToolResponse",
    "TurnEnd",
    "TurnkitError",
    "WireModel",
]

Role = Literal["system", "user", "model", "tool"]


class FinishReason(StrEnum):
    """Why a model call ended. Members equal their wire strings (`FinishReason.STOP == "stop"`)."""

    STOP = "stop"
    LENGTH = "length"
    BLOCKED = "blocked"
    ABORTED = "aborted"
    INTERRUPTED = "interrupted"
    OTHER = "other"
    UNKNOWN = "unknown"


class AgentFinishReason(StrEnum):
    """Why an agent turn ended. Members equal their wire strings (`AgentFinishReason.FAILED == "failed"`)."""

    STOP = "stop"
    LENGTH = "length"
    BLOCKED = "blocked"
    INTERRUPTED = "interrupted"
    OTHER = "other"
    UNKNOWN = "unknown"
    ABORTED = "aborted"
    DETACHED = "detached"
    FAILED = "failed"


class SnapshotStatus(StrEnum):
    """Where a snapshot's turn stands. Members equal their wire strings."""

    PENDING = "pending"
    COMPLETED = "completed"
    ABORTED = "aborted"
    FAILED = "failed"
    EXPIRED = "expired"


# The wire strings, for code that writes a literal (`finish_reason="stop"`): fields accept either
# form and always hold the enum member after validation.
FinishReasonName = Literal["stop", "length", "blocked", "aborted", "interrupted", "other", "unknown"]
AgentFinishReasonName = Literal[
    "stop", "length", "blocked", "interrupted", "other", "unknown", "aborted", "detached", "failed"
]
SnapshotStatusName = Literal["pending", "completed", "aborted", "failed", "expired"]


def _wire_field(enum: type[StrEnum], name: Any) -> Any:
    """A field type taking the enum or its wire string, holding the enum member once validated,
    with the plain string enum as JSON schema (as the wire describes it)."""
    schema = {"type": "string", "enum": [m.value for m in enum]}
    return Annotated[enum | name, AfterValidator(enum), WithJsonSchema(schema)]


if TYPE_CHECKING:  # what type checkers see: either form is accepted
    _FinishReasonField = FinishReason | FinishReasonName
    _AgentFinishReasonField = AgentFinishReason | AgentFinishReasonName
    _SnapshotStatusField = SnapshotStatus | SnapshotStatusName
else:
    _FinishReasonField = _wire_field(FinishReason, FinishReasonName)
    _AgentFinishReasonField = _wire_field(AgentFinishReason, AgentFinishReasonName)
    _SnapshotStatusField = _wire_field(SnapshotStatus, SnapshotStatusName)


class WireModel(BaseModel):
    """Base of every wire type: camelCase aliases, tolerant reads, null-free writes."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="ignore",
    )

    def to_wire(self) -> dict[str, Any]:
        """This object as JSON-ready data: camelCase keys, absent fields omitted."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def to_json(self) -> str:
        """This object as one line of JSON, camelCase keys, absent fields omitted."""
        return self.model_dump_json(by_alias=True, exclude_none=True)

    @classmethod
    def from_wire(cls, data: Any) -> Self:
        """Read wire data (a dict, or an instance already); raise INVALID_ARGUMENT when it does not fit."""
        if isinstance(data, cls):
            return data
        try:
            return cls.model_validate(data)
        except ValueError as exc:
            raise TurnkitError("INVALID_ARGUMENT", f"invalid {cls.__name__}: {exc}") from exc


# --- parts -----------------------------------------------------------------------------------


class Media(WireModel):
    """A media reference: a URL (often a data: URL) and its content type."""

    url: str
    content_type: str | None = None


class ToolRequest(WireModel):
    """A model's request to call a tool."""

    name: str
    ref: str | None = None
    input: Any = None
    partial: bool | None = None


class ToolResponse(WireModel):
    """The result of a tool call, sent back to the model."""

    name: str
    ref: str | None = None
    output: Any = None
    content: list[Any] | None = None


class Resource(WireModel):
    """A reference to a resource by URI."""

    uri: str


_KINDS = ("text", "media", "tool_request", "tool_response", "reasoning", "resource")


class Part(WireModel):
    """One piece of message content: exactly one of text, media, tool request, tool response,
    reasoning, resource, or data/custom; any part may carry metadata."""

    text: str | None = None
    media: Media | None = None
    tool_request: ToolRequest | None = None
    tool_response: ToolResponse | None = None
    data: Any = None
    custom: dict[str, Any] | None = None
    reasoning: str | None = None
    resource: Resource | None = None
    metadata: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Part:
        kinds = [k for k in _KINDS if getattr(self, k) is not None]
        if len(kinds) > 1:
            raise ValueError(f"a part holds exactly one kind of content, got {', '.join(kinds)}")
        if not kinds and self.data is None and self.custom is None:
            raise ValueError("a part needs content: text, media, toolRequest, toolResponse, data, ...")
        if kinds and self.data is not None:
            raise ValueError(f"a part holds exactly one kind of content, got {kinds[0]} and data")
        return self

    @property
    def is_interrupt(self) -> bool:
        """Whether this is a tool request that paused the turn for a human (metadata.interrupt)."""
        return self.tool_request is not None and bool((self.metadata or {}).get("interrupt"))


class Message(WireModel):
    """A message in a conversation: a role and a list of parts.

    Built from keywords (`Message(role="user", content=[...])`) or, as in Genkit, from one wire
    dict or another Message (`Message({"role": "user", "content": [{"text": "hi"}]})`).
    """

    role: Role
    content: list[Part]
    metadata: dict[str, Any] | None = None

    @overload
    def __init__(self, data: Message | Mapping[str, Any], /) -> None: ...

    @overload
    def __init__(
        self,
        *,
        role: Role,
        content: Sequence[Part | Mapping[str, Any]],
        metadata: dict[str, Any] | None = None,
    ) -> None: ...

    # mypy wrongly reports that `**fields` misses the keyword overload's parameters.
    def __init__(self, data: Message | Mapping[str, Any] | None = None, /, **fields: Any) -> None:  # type: ignore[misc]
        if data is not None:
            if fields:
                raise TypeError("Message() takes a wire dict or keywords, not both")
            if isinstance(data, Message):
                fields = {"role": data.role, "content": data.content, "metadata": data.metadata}
            elif isinstance(data, Mapping):
                fields = dict(data)
            else:
                raise TypeError(f"Message() takes a wire dict or a Message, not {type(data).__name__}")
        super().__init__(**fields)

    @property
    def text(self) -> str:
        """The concatenated text of all text parts."""
        return "".join(p.text for p in self.content if p.text is not None)

    @property
    def tool_requests(self) -> list[Part]:
        """The tool request parts, in order."""
        return [p for p in self.content if p.tool_request is not None]

    @property
    def interrupts(self) -> list[Part]:
        """The tool request parts marked as interrupts."""
        return [p for p in self.content if p.is_interrupt]


class DocumentData(WireModel):
    """A document given to the model as context."""

    content: list[Part]
    metadata: dict[str, Any] | None = None


# --- model calls -----------------------------------------------------------------------------


class ToolDefinition(WireModel):
    """A tool as the model sees it: name, description and JSON schemas."""

    name: str
    description: str
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None


class OutputConfig(WireModel):
    """What output the model is asked for: format, JSON schema, whether to constrain decoding."""

    format: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    constrained: bool | None = None
    content_type: str | None = None


class GenerationUsage(WireModel):
    """Token and character counts of a model call."""

    input_tokens: float | None = None
    output_tokens: float | None = None
    total_tokens: float | None = None
    input_characters: float | None = None
    output_characters: float | None = None
    input_images: float | None = None
    output_images: float | None = None
    thoughts_tokens: float | None = None
    cached_content_tokens: float | None = None
    custom: dict[str, float] | None = None


class ModelRequest(WireModel):
    """What a model receives: messages, config, tools, output format."""

    messages: list[Message]
    config: Any = None
    tools: list[ToolDefinition] | None = None
    tool_choice: Literal["auto", "required", "none"] | None = None
    output: OutputConfig | None = None
    docs: list[DocumentData] | None = None


class ModelResponse(WireModel):
    """What a model returns for one call."""

    message: Message | None = None
    finish_reason: _FinishReasonField = FinishReason.STOP
    finish_message: str | None = None
    latency_ms: float | None = None
    usage: GenerationUsage | None = None
    custom: Any = None
    raw: Any = None
    request: ModelRequest | None = None

    @property
    def text(self) -> str:
        """The text of the response message ('' when there is none)."""
        return self.message.text if self.message else ""


class ModelResponseChunk(WireModel):
    """A streamed piece of a model response."""

    role: Role | None = None
    index: int | None = None
    content: list[Part] = Field(default_factory=list)
    custom: Any = None
    aggregated: bool | None = None

    @property
    def text(self) -> str:
        """The concatenated text of the chunk's text parts."""
        return "".join(p.text for p in self.content if p.text is not None)


# --- agents and sessions -------------------------------------------------------------------


class ErrorInfo(WireModel):
    """An error as carried in outputs, snapshots and error frames."""

    status: str | None = None
    message: str
    details: Any = None

    @classmethod
    def of(cls, exc: TurnkitError) -> ErrorInfo:
        """The wire form of a TurnkitError."""
        return cls(status=exc.status, message=exc.message, details=exc.details)


class Artifact(WireModel):
    """A named (or unnamed) output of an agent; a named one replaces an earlier one of that name."""

    name: str | None = None
    parts: list[Part]
    metadata: dict[str, Any] | None = None


class SessionState(WireModel):
    """Everything a session holds: id, messages, custom state, artifacts."""

    session_id: str | None = None
    messages: list[Message] | None = None
    custom: Any = None
    artifacts: list[Artifact] | None = None


class JsonPatchOperation(WireModel):
    """One RFC 6902 JSON Patch operation."""

    op: Literal["add", "remove", "replace", "move", "copy", "test"]
    path: str
    from_: str | None = Field(default=None, alias="from")
    value: Any = None

    def to_wire(self) -> dict[str, Any]:
        """The operation as data; `value` is kept even when it is null, where the op carries one."""
        out: dict[str, Any] = {"op": self.op, "path": self.path}
        if self.from_ is not None:
            out["from"] = self.from_
        if self.op in ("add", "replace", "test"):
            out["value"] = self.value
        return out


class TurnEnd(WireModel):
    """Marks the end of a turn in an agent stream."""

    snapshot_id: str | None = None
    finish_reason: _AgentFinishReasonField | None = None


class AgentStreamChunk(WireModel):
    """One streamed item of an agent turn: a model chunk, a custom-state patch, an artifact, or turn end."""

    model_chunk: ModelResponseChunk | None = None
    custom_patch: list[JsonPatchOperation] | None = None
    artifact: Artifact | None = None
    turn_end: TurnEnd | None = None

    def to_wire(self) -> dict[str, Any]:
        """The chunk as data, with patch values kept exactly (null included)."""
        out = self.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"custom_patch"})
        if self.custom_patch is not None:
            out["customPatch"] = [op.to_wire() for op in self.custom_patch]
        return out


class AgentInit(WireModel):
    """How a connection starts: a new chat, a session id, a snapshot id, or client-held state."""

    session_id: str | None = None
    snapshot_id: str | None = None
    state: SessionState | None = None


class Resume(WireModel):
    """Answers to the interrupts of the previous turn."""

    respond: list[Part] | None = None
    restart: list[Part] | None = None


class AgentInput(WireModel):
    """One input to an agent turn: a user message, interrupt answers, and/or a request to detach."""

    message: Message | None = None
    resume: Resume | None = None
    detach: bool | None = None


class AgentOutput(WireModel):
    """The result of an agent turn (or of a whole connection)."""

    session_id: str | None = None
    snapshot_id: str | None = None
    state: SessionState | None = None
    message: Message | None = None
    artifacts: list[Artifact] | None = None
    finish_reason: _AgentFinishReasonField | None = None
    error: ErrorInfo | None = None
    # The turn's token usage, summed over its model calls. Genkit's AgentOutput has no such field
    # and its Python client rejects unknown ones, so `to_wire` leaves it out; turnkit's server adds
    # it only for a request that asks (`output_to_wire(..., usage=True)`), and `from_wire` reads it.
    usage: GenerationUsage | None = Field(default=None, exclude=True)


class SessionSnapshot(WireModel):
    """A persisted point in a session's history, with its turn status."""

    snapshot_id: str
    session_id: str | None = None
    parent_id: str | None = None
    created_at: str
    updated_at: str | None = None
    heartbeat_at: str | None = None
    status: _SnapshotStatusField | None = None
    finish_reason: _AgentFinishReasonField | None = None
    error: ErrorInfo | None = None
    state: SessionState | None = None


class GetSnapshotRequest(WireModel):
    """Look up a snapshot by id, or the latest of a session."""

    snapshot_id: str | None = None
    session_id: str | None = None


class AgentAbortRequest(WireModel):
    """Abort the turn that writes this snapshot."""

    snapshot_id: str


class AgentAbortResponse(WireModel):
    """The snapshot's status before the abort."""

    snapshot_id: str
    status: _SnapshotStatusField | None = None
