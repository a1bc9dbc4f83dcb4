"""The Vercel AI SDK's UI message stream protocol (npm `ai` 6.x), as data: no HTTP here.

The SDK's `DefaultChatTransport` (what `useChat` uses) posts `{id, messages, trigger, messageId}`
and reads server-sent events, each `data: <UIMessageChunk JSON>`, ending with `data: [DONE]`, from
a response carrying the header `x-vercel-ai-ui-message-stream: v1`. This module reads that
request (`ChatRequest`, `UIMessage`), turns UI messages into turnkit messages and interrupt
answers (`to_messages`, `answers`), and turns a turn's stream into UI message chunks
(`UIChunkEncoder`). How it maps:

- text and reasoning stream as `text-*` and `reasoning-*` parts; each model step is a
  `start-step` ... `finish-step` pair;
- a tool request is `tool-input-start` + `tool-input-available`, its result `tool-output-available`
  (the tool call id is the request's `ref`);
- an interrupt is a `tool-approval-request` (its data in `approvalDescriptor`); the SDK's approval
  answers the interrupt: approved restarts the tool (`ctx.resumed == {"approved": True}`),
  denied responds `{"approved": False, "reason": ...}` and streams `tool-output-denied`; an output
  given by the client (`addToolOutput`) responds with that output;
- custom state is the data part `data-state` (id `state`, the whole value after each change);
  an artifact is `data-artifact` (id: its name), so both live in the message;
- a failed turn ends with `error`, an aborted one with `abort`; `finish` carries `finishReason`
  and `messageMetadata: {sessionId, snapshotId, finishReason}` (turnkit's reason).
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Mapping
from typing import Any, Literal

import jsonpatch
from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import to_jsonable_python

from turnkit.errors import TurnkitError
from turnkit.http._wire import dumps_json
from turnkit.types import (
    AgentOutput,
    AgentStreamChunk,
    Artifact,
    JsonPatchOperation,
    Media,
    Message,
    Part,
    ToolRequest,
    ToolResponse,
)

__all__ = [
    "DONE",
    "HEADERS",
    "ChatRequest",
    "UIChunkEncoder",
    "UIMessage",
    "answers",
    "artifacts_of",
    "custom_of",
    "encode_chunk",
    "new_message_id",
    "to_messages",
    "user_parts",
]

# What marks the response as a UI message stream for the SDK's transport.
HEADERS = {"x-vercel-ai-ui-message-stream": "v1", "cache-control": "no-cache", "x-accel-buffering": "no"}
DONE = b"data: [DONE]\n\n"
STATE_PART = "data-state"
ARTIFACT_PART = "data-artifact"
# The SDK's finish reasons, from turnkit's.
_FINISH = {
    "stop": "stop",
    "length": "length",
    "blocked": "content-filter",
    "interrupted": "tool-calls",
    "failed": "error",
}


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class UIMessage(_Loose):
    """One message of the SDK's chat: `{id, role, parts}`; parts stay plain dicts (many kinds)."""

    id: str = ""
    role: Literal["system", "user", "assistant"]
    parts: list[dict[str, Any]] = Field(default_factory=list)
    metadata: Any = None


class ChatRequest(_Loose):
    """The body `DefaultChatTransport` posts: the chat id, its messages, and why it was sent.

    `snapshotId` (sent through the transport's `body` option) is a turnkit extension: a
    server-managed agent continues from that snapshot instead of the session's latest.
    """

    id: str = Field(min_length=1)
    messages: list[UIMessage] = Field(min_length=1)
    trigger: Literal["submit-message", "regenerate-message"] = "submit-message"
    message_id: str | None = Field(default=None, alias="messageId")
    snapshot_id: str | None = Field(default=None, alias="snapshotId")


# --- UI messages -> turnkit ---------------------------------------------------------------------


def _tool_name(part: Mapping[str, Any]) -> str | None:
    kind = str(part.get("type", ""))
    if kind == "dynamic-tool":
        name = part.get("toolName")
        return name if isinstance(name, str) else None
    return kind[len("tool-") :] if kind.startswith("tool-") else None


def _is_pending(part: Mapping[str, Any], answering: bool) -> bool:
    """Whether a tool part is an interrupt the server has not settled: still waiting, or answered
    in the message that `answering` says carries this request's answers (`addToolOutput` gives
    such a part its output; in older messages an output means the server took it)."""
    approval = part.get("approval")
    if not isinstance(approval, dict):
        return False
    state = part.get("state")
    if state in ("approval-requested", "approval-responded"):
        return True
    return answering and state == "output-available" and approval.get("approved") is None


def _denial(reason: Any) -> dict[str, Any]:
    return {"approved": False, "reason": reason if isinstance(reason, str) and reason else "denied"}


def _settled_output(part: Mapping[str, Any]) -> tuple[bool, Any]:
    """(has a result, the result) of a finished tool part, as its tool response's output."""
    state = part.get("state")
    if state == "output-available":
        return True, part.get("output")
    if state == "output-error":
        return True, {"error": part.get("errorText")}
    if state == "output-denied":
        approval = part.get("approval")
        return True, _denial(approval.get("reason") if isinstance(approval, dict) else None)
    return False, None


def user_parts(message: UIMessage) -> list[Part]:
    """The text and file parts of a user (or system) message."""
    parts: list[Part] = []
    for part in message.parts:
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append(Part(text=part["text"]))
        elif kind == "file" and isinstance(part.get("url"), str):
            parts.append(Part(media=Media(url=part["url"], content_type=part.get("mediaType"))))
    return parts


def _assistant_messages(message: UIMessage, answering: bool) -> list[Message]:
    """One UI assistant message as model (and tool) messages, a pair per step."""
    out: list[Message] = []
    model: list[Part] = []
    results: list[Part] = []

    def flush() -> None:
        nonlocal model, results
        if model:
            out.append(Message(role="model", content=model))
        if results:
            out.append(Message(role="tool", content=results))
        model, results = [], []

    for part in message.parts:
        kind = part.get("type")
        name = _tool_name(part)
        if kind == "step-start":
            flush()
        elif kind == "text" and isinstance(part.get("text"), str) and part["text"]:
            model.append(Part(text=part["text"]))
        elif kind == "reasoning" and isinstance(part.get("text"), str) and part["text"]:
            model.append(Part(reasoning=part["text"]))
        elif name is not None and isinstance(part.get("toolCallId"), str):
            request = ToolRequest(name=name, ref=part["toolCallId"], input=part.get("input"))
            if _is_pending(part, answering):
                approval = part.get("approval") or {}
                marker = approval.get("descriptor", True) if isinstance(approval, dict) else True
                model.append(Part(tool_request=request, metadata={"interrupt": marker}))
                continue
            done, output = _settled_output(part)
            if done:  # a request without its result would leave the model's history dangling
                model.append(Part(tool_request=request))
                results.append(Part(tool_response=ToolResponse(name=name, ref=request.ref, output=output)))
    flush()
    return out


def to_messages(messages: list[UIMessage], *, answering: bool = False) -> list[Message]:
    """The SDK's chat as turnkit's history (system, user, model and tool messages); `answering`
    when the last message is the assistant's carrying answers to its interrupts."""
    out: list[Message] = []
    for i, message in enumerate(messages):
        if message.role == "assistant":
            out.extend(_assistant_messages(message, answering and i == len(messages) - 1))
            continue
        parts = user_parts(message)
        if parts:
            out.append(Message(role=message.role if message.role == "system" else "user", content=parts))
    return out


def _latest_data(messages: list[UIMessage], kind: str) -> dict[str, Any]:
    """The last data part of `kind` per id, across all messages (later ones replace earlier)."""
    found: dict[str, Any] = {}
    for message in messages:
        for part in message.parts:
            if part.get("type") == kind:
                found[str(part.get("id", ""))] = part.get("data")
    return found


def custom_of(messages: list[UIMessage]) -> Any:
    """The custom state the chat last saw (its latest `data-state` part), None when none."""
    return _latest_data(messages, STATE_PART).get("state")


def artifacts_of(messages: list[UIMessage]) -> list[Artifact]:
    """The artifacts the chat last saw (`data-artifact` parts, the latest of each name)."""
    return [
        Artifact.from_wire(v) for v in _latest_data(messages, ARTIFACT_PART).values() if isinstance(v, dict)
    ]


def _same_call(interrupt: Part, part: Mapping[str, Any]) -> bool:
    request = interrupt.tool_request
    assert request is not None
    if request.ref is not None:
        return request.ref == part.get("toolCallId")
    return request.name == _tool_name(part) and request.input == part.get("input")


def answers(last: UIMessage, interrupts: list[Part]) -> tuple[list[Part], list[Part], list[str]]:
    """The answers the chat's last (assistant) message gives to `interrupts`, the server's pending
    tool requests: `(restart, respond, denied tool call ids)`. INVALID_ARGUMENT when it answers none."""
    restart: list[Part] = []
    respond: list[Part] = []
    denied: list[str] = []
    for part in last.parts:
        name, call_id = _tool_name(part), part.get("toolCallId")
        if name is None or not isinstance(call_id, str):
            continue
        interrupt = next((i for i in interrupts if _same_call(i, part)), None)
        if interrupt is None or interrupt.tool_request is None:
            continue
        request = interrupt.tool_request
        raw = part.get("approval")
        approval: dict[str, Any] = raw if isinstance(raw, dict) else {}
        state = part.get("state")
        if state == "approval-responded" and approval.get("approved") is True:
            restart.append(
                Part(
                    tool_request=ToolRequest(name=request.name, ref=request.ref, input=request.input),
                    metadata={"resumed": {"approved": True}},
                )
            )
        elif state == "approval-responded":
            respond.append(_response(request, _denial(approval.get("reason"))))
            denied.append(call_id)
        elif state == "output-available":
            respond.append(_response(request, part.get("output")))
    if not restart and not respond:
        raise TurnkitError(
            "INVALID_ARGUMENT",
            "the last message is the assistant's but answers no pending tool approval "
            "(approve or deny one with addToolApprovalResponse, or give its output with addToolOutput)",
        )
    return restart, respond, denied


def _response(request: ToolRequest, output: Any) -> Part:
    return Part(tool_response=ToolResponse(name=request.name, ref=request.ref, output=output))


# --- turnkit stream -> UI message chunks ---------------------------------------------------------


def encode_chunk(chunk: Mapping[str, Any]) -> bytes:
    """One server-sent event of the stream: `data: <one line of strict JSON>` and a blank line.

    Tool inputs and outputs may be Python objects (Pydantic models, say): they go as JSON."""
    return b"data: " + dumps_json(to_jsonable_python(chunk, fallback=str)).encode("ascii") + b"\n\n"


class UIChunkEncoder:
    """Turns one turn's `AgentStreamChunk`s and output into UI message chunks (dicts), keeping
    the protocol's order: parts opened before their deltas, closed before other parts, steps paired.

    `custom` is the custom state before the turn (patches apply to it); `denied` are the tool calls
    the request denied (their re-sent results are not shown as outputs).
    """

    def __init__(self, message_id: str, *, custom: Any = None, denied: list[str] | None = None) -> None:
        self.message_id = message_id
        self.custom = copy.deepcopy(custom)
        self.denied = set(denied or ())
        self._open: tuple[str, str] | None = None  # ("text" | "reasoning", part id)
        self._in_step = False
        self._after_tool = False
        self._counter = 0
        self._calls: dict[str, ToolRequest] = {}  # tool calls sent as tool-input-available, by id
        self._approved: set[str] = set()  # tool calls sent as tool-approval-request

    def _id(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}-{self._counter}"

    def start(self, metadata: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """The first chunks: `start` (the message id), then the denials the request made."""
        first: dict[str, Any] = {"type": "start", "messageId": self.message_id}
        if metadata:
            first["messageMetadata"] = dict(metadata)
        return [first, *({"type": "tool-output-denied", "toolCallId": c} for c in sorted(self.denied))]

    def _close(self) -> list[dict[str, Any]]:
        if self._open is None:
            return []
        kind, part_id = self._open
        self._open = None
        return [{"type": f"{kind}-end", "id": part_id}]

    def _step(self) -> list[dict[str, Any]]:
        """Chunks that open a model step (closing the tool step before it)."""
        out: list[dict[str, Any]] = []
        if self._after_tool:
            out += self._end_step()
            self._after_tool = False
        if not self._in_step:
            self._in_step = True
            out.append({"type": "start-step"})
        return out

    def _end_step(self) -> list[dict[str, Any]]:
        if not self._in_step:
            return []
        self._in_step = False
        return [*self._close(), {"type": "finish-step"}]

    def _delta(self, kind: str, text: str) -> list[dict[str, Any]]:
        out = self._step()
        if self._open is None or self._open[0] != kind:
            out += self._close()
            self._open = (kind, self._id(kind))
            out.append({"type": f"{kind}-start", "id": self._open[1]})
        out.append({"type": f"{kind}-delta", "id": self._open[1], "delta": text})
        return out

    def call_id(self, request: ToolRequest) -> str:
        """The SDK's tool call id of a request: its `ref`, else the id made up when it was first
        seen (the same name and input), else a new one."""
        if request.ref is not None:
            return request.ref
        for call_id, seen in self._calls.items():
            if seen.ref is None and seen.name == request.name and seen.input == request.input:
                return call_id
        return self._id(f"call-{request.name}")

    def _tool_request(self, part: Part) -> list[dict[str, Any]]:
        request = part.tool_request
        assert request is not None
        if request.partial:
            return []  # input still streaming: announce it once it is whole
        call_id = self.call_id(request)
        out: list[dict[str, Any]] = []
        if call_id not in self._calls:
            self._calls[call_id] = request
            out = [*self._step(), *self._close()]
            base = {"toolCallId": call_id, "toolName": request.name}
            out.append({"type": "tool-input-start", **base})
            out.append({"type": "tool-input-available", **base, "input": request.input})
        if part.is_interrupt:
            out += self._approval(part, call_id)
        return out

    def _approval(self, part: Part, call_id: str) -> list[dict[str, Any]]:
        if call_id in self._approved:
            return []
        self._approved.add(call_id)
        chunk: dict[str, Any] = {"type": "tool-approval-request", "approvalId": f"approval-{call_id}"}
        chunk["toolCallId"] = call_id
        data = (part.metadata or {}).get("interrupt")
        if data is not None and data is not True:
            chunk["approvalDescriptor"] = data
        return [chunk]

    def _tool_response(self, part: Part) -> list[dict[str, Any]]:
        response = part.tool_response
        assert response is not None
        call_id = response.ref
        if call_id is None:  # a made-up id: the latest request of that name without a ref
            named = [c for c, r in self._calls.items() if r.ref is None and r.name == response.name]
            call_id = named[-1] if named else None
        if call_id is None or call_id in self.denied:
            return []
        self._after_tool = True
        return [
            *self._close(),
            {"type": "tool-output-available", "toolCallId": call_id, "output": response.output},
        ]

    def chunk(self, chunk: AgentStreamChunk) -> list[dict[str, Any]]:
        """The UI message chunks for one turnkit stream chunk."""
        out: list[dict[str, Any]] = []
        if chunk.model_chunk is not None:
            role = chunk.model_chunk.role
            for part in chunk.model_chunk.content:
                if part.tool_response is not None:
                    out += self._tool_response(part)
                elif role == "tool":
                    continue
                elif part.text:
                    out += self._delta("text", part.text)
                elif part.reasoning:
                    out += self._delta("reasoning", part.reasoning)
                elif part.tool_request is not None:
                    out += self._tool_request(part)
        if chunk.custom_patch:
            out += self._patch(chunk.custom_patch)
        if chunk.artifact is not None:
            artifact = chunk.artifact
            out.append(
                {
                    "type": ARTIFACT_PART,
                    "id": artifact.name or self._id("artifact"),
                    "data": artifact.to_wire(),
                }
            )
        return out

    def _patch(self, ops: list[JsonPatchOperation]) -> list[dict[str, Any]]:
        try:
            self.custom = jsonpatch.apply_patch(self.custom, [op.to_wire() for op in ops])
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException):
            return []  # a patch against a state we did not see: skip it, the next one may fit
        return [{"type": STATE_PART, "id": "state", "data": self.custom}]

    def finish(self, output: AgentOutput, error_text: str | None = None) -> list[dict[str, Any]]:
        """The last chunks: pending approvals, then `error` or `abort` when the turn did not
        complete, then `finish` with turnkit's ids in its metadata."""
        out: list[dict[str, Any]] = []
        for part in output.message.interrupts if output.message else []:
            out += self._tool_request(part)
        out += self._end_step()
        reason = str(output.finish_reason or "other")
        if reason == "failed":
            out.append({"type": "error", "errorText": error_text or "the turn failed"})
        elif reason == "aborted":
            out.append({"type": "abort", "reason": "the turn was aborted"})
        metadata = {"sessionId": output.session_id, "snapshotId": output.snapshot_id, "finishReason": reason}
        finish: dict[str, Any] = {"type": "finish", "finishReason": _FINISH.get(reason, "other")}
        finish["messageMetadata"] = {k: v for k, v in metadata.items() if v is not None}
        out.append(finish)
        return out


def new_message_id() -> str:
    """A fresh id for the assistant message a turn streams."""
    return f"msg-{uuid.uuid4().hex}"
