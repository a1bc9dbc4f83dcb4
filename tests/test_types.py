"""Wire types: serialized examples validate against Genkit's JSON schema; readers are tolerant."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from conftest import require_reference
from turnkit.errors import TurnkitError, as_turnkit_error
from turnkit.types import (
    AgentInit,
    AgentInput,
    AgentOutput,
    AgentStreamChunk,
    Artifact,
    ErrorInfo,
    GenerationUsage,
    JsonPatchOperation,
    Media,
    Message,
    ModelRequest,
    ModelResponse,
    ModelResponseChunk,
    OutputConfig,
    Part,
    Resource,
    Resume,
    SessionSnapshot,
    SessionState,
    ToolDefinition,
    ToolRequest,
    ToolResponse,
    TurnEnd,
    WireModel,
)


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return json.loads(require_reference("genkit-schema.json").read_text())


def validate(schema: dict[str, Any], name: str, value: Any) -> None:
    doc = {"$defs": schema["$defs"], "$ref": f"#/$defs/{name}"}
    jsonschema.validate(value, doc)


PARTS = [
    ("TextPart", Part(text="hi", metadata={"k": 1})),
    ("MediaPart", Part(media=Media(url="data:image/png;base64,AA==", content_type="image/png"))),
    ("ToolRequestPart", Part(tool_request=ToolRequest(name="t", ref="1", input={"a": 1}))),
    ("ToolResponsePart", Part(tool_response=ToolResponse(name="t", ref="1", output={"x": 1}))),
    ("DataPart", Part(data={"any": ["json"]})),
    ("CustomPart", Part(custom={"kind": "x"})),
    ("ReasoningPart", Part(reasoning="because")),
    ("ResourcePart", Part(resource=Resource(uri="file:///a"))),
]


@pytest.mark.parametrize(("name", "part"), PARTS, ids=[n for n, _ in PARTS])
def test_each_part_kind_matches_its_schema(schema: dict[str, Any], name: str, part: Part) -> None:
    wire = part.to_wire()
    validate(schema, name, wire)
    validate(schema, "Part", wire)
    assert Part.from_wire(wire) == part


MSG = Message(role="model", content=[p for _, p in PARTS], metadata={"m": True})
EXAMPLES: list[tuple[str, WireModel]] = [
    ("Message", MSG),
    (
        "ModelRequest",
        ModelRequest(
            messages=[MSG],
            config={"temperature": 0.1},
            tools=[ToolDefinition(name="t", description="d", input_schema={"type": "object"})],
            tool_choice="auto",
            output=OutputConfig(format="json", schema={"type": "object"}, constrained=True),
        ),
    ),
    (
        "ModelResponse",
        ModelResponse(
            message=MSG,
            finish_reason="stop",
            usage=GenerationUsage(input_tokens=3, output_tokens=4, total_tokens=7),
            latency_ms=1.5,
        ),
    ),
    ("ModelResponseChunk", ModelResponseChunk(role="model", index=0, content=[Part(text="x")])),
    ("Artifact", Artifact(name="doc", parts=[Part(text="v1")])),
    ("SessionState", SessionState(session_id="s", messages=[MSG], custom={"n": 1}, artifacts=[])),
    ("AgentInit", AgentInit(snapshot_id="a", session_id="b")),
    (
        "AgentInput",
        AgentInput(
            message=Message(role="user", content=[Part(text="hi")]),
            resume=Resume(respond=[PARTS[3][1]], restart=[PARTS[2][1]]),
            detach=True,
        ),
    ),
    ("AgentStreamChunk", AgentStreamChunk(turn_end=TurnEnd(snapshot_id="s", finish_reason="stop"))),
    (
        "AgentStreamChunk",
        AgentStreamChunk(custom_patch=[JsonPatchOperation(op="replace", path="", value={"a": 1})]),
    ),
    (
        "AgentOutput",
        AgentOutput(
            session_id="s",
            snapshot_id="x",
            finish_reason="failed",
            error=ErrorInfo(status="INTERNAL", message="boom", details={"k": 1}),
            # Not in Genkit's schema (additionalProperties: false): `to_wire` must leave it out.
            usage=GenerationUsage(input_tokens=1, output_tokens=2),
        ),
    ),
    (
        "SessionSnapshot",
        SessionSnapshot(
            snapshot_id="x",
            created_at="2026-01-01T00:00:00Z",
            status="pending",
            state=SessionState(messages=[]),
        ),
    ),
]


@pytest.mark.parametrize(("name", "value"), EXAMPLES, ids=[n for n, _ in EXAMPLES])
def test_examples_match_schema_and_round_trip(schema: dict[str, Any], name: str, value: WireModel) -> None:
    wire = value.to_wire()
    validate(schema, name, wire)
    assert "null" not in value.to_json()
    assert type(value).from_wire(json.loads(value.to_json())).to_wire() == wire


def test_wire_is_camel_case_and_python_is_snake_case() -> None:
    snap = SessionSnapshot.from_wire({"snapshotId": "a", "createdAt": "t", "parentId": "p"})
    assert snap.parent_id == "p"
    assert set(snap.to_wire()) == {"snapshotId", "createdAt", "parentId"}


def test_unknown_fields_are_ignored() -> None:
    msg = Message.from_wire({"role": "user", "content": [{"text": "a", "future": 1}], "newField": {}})
    assert msg.to_wire() == {"role": "user", "content": [{"text": "a"}]}


def test_no_nulls_emitted_but_null_json_values_kept() -> None:
    part = Part(tool_request=ToolRequest(name="t", input={"a": None}))
    assert part.to_wire() == {"toolRequest": {"name": "t", "input": {"a": None}}}
    patch = AgentStreamChunk(custom_patch=[JsonPatchOperation(op="replace", path="/x", value=None)])
    assert patch.to_wire() == {"customPatch": [{"op": "replace", "path": "/x", "value": None}]}


@pytest.mark.parametrize(
    "bad",
    [{"text": "a", "media": {"url": "u"}}, {}, {"text": "a", "data": 1}, {"toolRequest": {"input": {}}}],
)
def test_invalid_parts_raise_invalid_argument(bad: dict[str, Any]) -> None:
    with pytest.raises(TurnkitError) as err:
        Part.from_wire(bad)
    assert err.value.status == "INVALID_ARGUMENT"


def test_bad_role_rejected() -> None:
    with pytest.raises(TurnkitError, match="INVALID_ARGUMENT"):
        Message.from_wire({"role": "robot", "content": []})


def test_message_helpers() -> None:
    msg = Message(
        role="model",
        content=[
            Part(text="a"),
            Part(tool_request=ToolRequest(name="t"), metadata={"interrupt": True}),
            Part(text="b"),
            Part(tool_request=ToolRequest(name="u")),
        ],
    )
    assert msg.text == "ab"
    assert [p.tool_request.name for p in msg.tool_requests if p.tool_request] == ["t", "u"]
    assert [p.tool_request.name for p in msg.interrupts if p.tool_request] == ["t"]


def test_error_statuses() -> None:
    err = TurnkitError("NOT_FOUND", "nope", details={"id": 1})
    assert err.http_status == 404
    assert err.to_wire() == {"status": "NOT_FOUND", "message": "nope", "details": {"id": 1}}
    assert not err.retryable
    assert TurnkitError("UNAVAILABLE", "x").retryable
    with pytest.raises(ValueError, match="unknown status"):
        TurnkitError("NOPE", "x")
    wrapped = as_turnkit_error(RuntimeError("secret"))
    assert wrapped.status == "INTERNAL" and not wrapped.public
