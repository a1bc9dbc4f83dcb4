"""The wire module both ways: what the server encodes, the client reads back unchanged (and what
must not reach a client, does not)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from typing import Any

import pytest

from turnkit import TurnkitError
from turnkit.agents._snapshots import INTERNAL_MARK
from turnkit.http._wire import (
    MAX_DEPTH,
    FrameReader,
    encode_frame,
    encode_request,
    error_body,
    error_from_wire,
    output_from_payload,
    output_to_wire,
    parse_request_body,
    request_field,
    snapshot_to_wire,
    visible_error,
)
from turnkit.types import (
    AgentInit,
    AgentInput,
    AgentOutput,
    ErrorInfo,
    Message,
    Part,
    SessionSnapshot,
    SessionState,
)


def test_frames_round_trip_byte_exact() -> None:
    payloads: list[dict[str, Any]] = [
        {"message": {"modelChunk": {"content": [{"text": "héllo\nworld \u2028 🌍"}]}}},
        {"result": {"finishReason": "stop", "score": float("nan"), "big": float("inf")}},
    ]
    encoded = b"".join(encode_frame(p) for p in payloads)
    assert encoded.isascii() and encoded.count(b"\n\n") == 2 and b"\r" not in encoded
    reader = FrameReader()
    read = [f for i in range(len(encoded)) for f in reader.feed(encoded[i : i + 1].decode())]
    assert read[0] == payloads[0]
    assert read[1] == {"result": {"finishReason": "stop", "score": None, "big": None}}  # JSON has no NaN


def test_error_bodies_round_trip() -> None:
    err = TurnkitError("PERMISSION_DENIED", "no", details={"why": "policy"})
    body = error_body(err)
    assert body == {"error": {"status": "PERMISSION_DENIED", "message": "no", "details": {"why": "policy"}}}
    back = error_from_wire(json.loads(json.dumps(body)))
    assert (back.status, back.message, back.details) == ("PERMISSION_DENIED", "no", {"why": "policy"})
    bare = error_body(TurnkitError("NOT_FOUND", "gone"))
    assert bare["error"]["details"] == {} and error_from_wire(bare).details is None


def test_outputs_round_trip_and_redact_what_is_not_public(caplog: pytest.LogCaptureFixture) -> None:
    output = AgentOutput(
        session_id="s",
        snapshot_id="p",
        message=Message(role="model", content=[Part(text="hi")]),
        finish_reason="stop",
    )
    assert output_from_payload({"result": output_to_wire(output, None)}) == output

    failed = output.model_copy(
        update={"finish_reason": "failed", "error": ErrorInfo(status="INTERNAL", message="password=x")}
    )
    secret = TurnkitError("INVALID_ARGUMENT", "password=x", public=False)
    with caplog.at_level(logging.ERROR, logger="turnkit.http"):
        sent = output_to_wire(failed, secret)
    assert sent["error"] == {"status": "INTERNAL", "message": "internal error"}
    assert "password=x" in caplog.text  # logged on the server, never sent
    public = TurnkitError("PERMISSION_DENIED", "not yours", details={"why": "policy"})
    assert output_to_wire(failed, public)["error"]["message"] == "not yours"
    # Without the exception (a stored output), the carried error decides by its status and mark.
    assert output_to_wire(failed, None)["error"]["message"] == "internal error"
    marked = ErrorInfo(status="INVALID_ARGUMENT", message="password=x", details={INTERNAL_MARK: True})
    snap = SessionSnapshot(snapshot_id="p", created_at="t", status="failed", error=marked)
    assert snapshot_to_wire(snap)["error"]["message"] == "internal error"
    with pytest.raises(TurnkitError) as caught:
        output_from_payload({"error": sent["error"]})
    assert caught.value.status == "INTERNAL"


def test_visible_error_hides_exceptions_that_are_not_turnkit_errors() -> None:
    shown = visible_error(RuntimeError("db at 10.0.0.1"))
    assert (shown.status, shown.message) == ("INTERNAL", "internal error")
    assert visible_error(TurnkitError("NOT_FOUND", "")).message == "not found"


def test_requests_round_trip_and_bad_ones_are_named() -> None:
    item = AgentInput(message=Message(role="user", content=[Part(text="x")]))
    init = AgentInit(state=SessionState(custom={"n": 1}))
    body = parse_request_body(encode_request(item, init).encode())
    assert request_field(body, "data", AgentInput, required=True) == item
    assert request_field(body, "init", AgentInit, required=False) == init
    assert json.loads(encode_request({"snapshotId": "p"})) == {"data": {"snapshotId": "p"}}

    for raw, says in (
        (b"[1]", "must be a JSON object"),
        (b'{"data": NaN}', "not valid JSON"),
        (b"\xff", "not valid JSON"),
        (b'{"a":' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1), "deeper than"),
    ):
        with pytest.raises(TurnkitError) as caught:
            parse_request_body(raw)
        assert caught.value.status == "INVALID_ARGUMENT" and says in caught.value.message
    with pytest.raises(TurnkitError) as caught:
        request_field({"data": {"message": {"role": "nobody"}}}, "data", AgentInput, required=True)
    assert caught.value.message.startswith("invalid data.message.")
    assert caught.value.details["errors"]


def test_the_client_side_needs_no_server_packages() -> None:
    """`remote_agent` and the wire module load without Starlette (a client-only install)."""
    code = (
        "import sys\n"
        "from turnkit.http import remote_agent\n"
        "import turnkit.http._wire\n"
        "assert 'starlette' not in sys.modules and 'uvicorn' not in sys.modules, 'server packages loaded'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
