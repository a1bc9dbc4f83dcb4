"""The Genkit agent wire protocol over HTTP, both directions: what the server writes and the client reads.

- Request bodies: `{"data": ..., "init": ...}` encoded by the client (`encode_request`), parsed and
  validated by the server (`parse_request_body`, `request_field`).
- Stream frames: `data: <one line of JSON>` + a blank line (`encode_frame`), read back tolerantly
  (`FrameReader`, which also takes Genkit's `error:` frames, CRLF and comments).
- Error bodies: `{"error": {"status", "message", "details"}}` (`error_body`), read back from that,
  a flat `{status, message}`, or plain text (`error_from_wire`, `error_from_response`).
- Outputs and snapshots as sent (`output_to_wire`, with the turn's usage only when the request
  sends `USAGE_HEADER: 1`) and as read (`output_from_payload`), with the redaction of errors
  that are not public: a client never sees the message of an internal failure (`visible_error`,
  `public_error`, `public_error_info`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from turnkit.agents._snapshots import INTERNAL_MARK
from turnkit.errors import HTTP_STATUS, STATUS_NAMES, TurnkitError
from turnkit.types import AgentInit, AgentOutput, ErrorInfo, SessionSnapshot, WireModel

__all__ = [
    "MAX_DEPTH",
    "USAGE_HEADER",
    "FrameReader",
    "dumps_json",
    "encode_frame",
    "encode_request",
    "error_body",
    "error_from_response",
    "error_from_wire",
    "http_code_of",
    "output_from_payload",
    "output_to_wire",
    "parse_request_body",
    "public_error",
    "public_error_info",
    "request_field",
    "snapshot_to_wire",
    "visible_error",
]

log = logging.getLogger("turnkit.http")

# Statuses of failures on the server's side, whose messages may hold its internals: hidden when we
# cannot tell whether they are public (a stored snapshot's error keeps no `public` flag).
_PRIVATE_STATUSES = frozenset({"INTERNAL", "UNKNOWN", "DATA_LOSS", "UNAVAILABLE", "DEADLINE_EXCEEDED"})
# Deeper request bodies are refused: every layer below (validation, stores, encoders) then stays far
# from Python's recursion limit.
MAX_DEPTH = 100
# The request header by which a client asks for the turn's token usage on the output (`"usage"`).
USAGE_HEADER = "turnkit-usage"
# HTTP codes to statuses, for answers that carry no status name (the inverse of HTTP_STATUS, plus
# the codes other servers use).
_STATUS_OF_HTTP = {code: name for name, code in reversed(HTTP_STATUS.items())} | {
    400: "INVALID_ARGUMENT",
    409: "ABORTED",
    412: "FAILED_PRECONDITION",
    500: "INTERNAL",
}


# --- JSON and frames -----------------------------------------------------------------------------


# Built once: `json.dumps` with options builds a new encoder on every call (a hot path cost per frame).
_STRICT_JSON = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), allow_nan=False).encode
_LENIENT_JSON = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode


def dumps_json(value: Any) -> str:
    """One line of strict JSON (ASCII only, so no client's line splitting can break a frame)."""
    try:
        return _STRICT_JSON(value)
    except ValueError:  # NaN or infinity somewhere: JSON has no such numbers
        return _LENIENT_JSON(_finite(value))


def _finite(value: Any) -> Any:
    """`value` with NaN and infinities replaced by None."""
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def encode_frame(payload: Mapping[str, Any]) -> bytes:
    """One stream frame: `data: <one line of JSON>` and a blank line, LF only."""
    return b"data: " + dumps_json(payload).encode("ascii") + b"\n\n"


class FrameReader:
    """Splits a server-sent-event byte stream into the JSON payloads of its `data:` frames.

    Tolerant: LF, CRLF or CR line ends, a missing space after `data:`, comment and `event:` lines,
    multi-line data, and Genkit's `error:` frames.
    """

    def __init__(self) -> None:
        self._buffer = ""
        self._data: list[str] = []

    def feed(self, text: str) -> list[dict[str, Any]]:
        """Add received text; return the payloads of the frames it completed."""
        self._buffer += text
        out: list[dict[str, Any]] = []
        while True:
            cut = _line_end(self._buffer)
            if cut is None:
                return out
            line, self._buffer = self._buffer[: cut[0]], self._buffer[cut[1] :]
            payload = self._line(line)
            if payload is not None:
                out.append(payload)

    def finish(self) -> list[dict[str, Any]]:
        """The last frame, if the stream ended without its blank line."""
        return self.feed("\n\n") if self._buffer or self._data else []

    def _line(self, line: str) -> dict[str, Any] | None:
        if line == "":
            if not self._data:
                return None
            data, self._data = "\n".join(self._data), []
            try:
                value = json.loads(data)
            except ValueError:
                raise TurnkitError("INTERNAL", f"malformed stream frame: {data[:200]!r}") from None
            if not isinstance(value, dict):
                raise TurnkitError("INTERNAL", f"unexpected stream frame: {data[:200]!r}")
            return value
        field, _, value = line.partition(":")
        if field in ("data", "error"):
            self._data.append(value[1:] if value.startswith(" ") else value)
        return None


def _line_end(buffer: str) -> tuple[int, int] | None:
    """Where the first line of `buffer` ends and the next begins (a trailing CR waits for more)."""
    for i, ch in enumerate(buffer):
        if ch == "\n":
            return i, i + 1
        if ch == "\r":
            if i + 1 == len(buffer):
                return None
            return i, i + 2 if buffer[i + 1] == "\n" else i + 1
    return None


# --- request bodies ------------------------------------------------------------------------------


def encode_request(data: WireModel | Mapping[str, Any], init: AgentInit | None = None) -> str:
    """A request body: `{"data": ...}`, with `"init"` for a turn."""
    body: dict[str, Any] = {"data": data.to_wire() if isinstance(data, WireModel) else dict(data)}
    if init is not None:
        body["init"] = init.to_wire()
    return json.dumps(body)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_request_body(raw: bytes) -> dict[str, Any]:
    """The JSON object of a request body; INVALID_ARGUMENT for anything else."""
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = "too deeply nested" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise TurnkitError("INVALID_ARGUMENT", f"the request body is not valid JSON: {reason}") from None
    if not isinstance(value, dict):
        raise TurnkitError("INVALID_ARGUMENT", 'the request body must be a JSON object {"data": ...}')
    # Each level opens with a bracket, so a body with few brackets cannot nest deeply: skip the walk.
    if raw.count(b"{") + raw.count(b"[") > MAX_DEPTH and _nesting_depth(value) > MAX_DEPTH:
        raise TurnkitError("INVALID_ARGUMENT", f"the request body nests deeper than {MAX_DEPTH} levels")
    return value


def _nesting_depth(value: Any) -> int:
    """How deeply arrays and objects nest in `value` (iteratively: no recursion limit to hit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return deepest


def request_field(body: Mapping[str, Any], key: str, model: type[BaseModel], *, required: bool) -> Any:
    """Validate `body[key]` as `model`; INVALID_ARGUMENT naming each bad field otherwise."""
    value = body.get(key)
    if value is None:
        if required:
            raise TurnkitError("INVALID_ARGUMENT", f"the request body needs a {key!r} object")
        value = {}
    if not isinstance(value, dict):
        raise TurnkitError("INVALID_ARGUMENT", f"{key!r} must be a JSON object")
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        problems = [
            {"path": ".".join([key, *(str(p) for p in e["loc"])]), "message": e["msg"]}
            for e in exc.errors(include_url=False, include_input=False)
        ]
        first = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise TurnkitError(
            "INVALID_ARGUMENT",
            f"invalid {first['path']}: {first['message']}{more}",
            details={"errors": problems},
        ) from None
    except RecursionError:
        raise TurnkitError("INVALID_ARGUMENT", f"{key!r} is too deeply nested") from None


# --- errors --------------------------------------------------------------------------------------


def error_body(err: TurnkitError) -> dict[str, Any]:
    """`{"error": {"status", "message", "details"}}`; `details` is always there (`{}` when none)."""
    details = err.details if err.details is not None else {}
    return {"error": {"status": err.status, "message": err.message, "details": details}}


def http_code_of(status: str) -> int:
    """The HTTP code an error status is answered with before a response has started."""
    return HTTP_STATUS.get(status, 500)


def _status_name(raw: Any, code: int | None) -> str:
    """A canonical status from what a server sent, else from its HTTP code."""
    if isinstance(raw, str):
        name = raw.strip().upper().replace(" ", "_")  # Genkit's express handler says "INVALID ARGUMENT"
        if name in STATUS_NAMES:
            return name
    if code is not None:
        return _STATUS_OF_HTTP.get(code, "INTERNAL" if code >= 500 else "UNKNOWN")
    return "UNKNOWN"


def error_from_wire(error: Any, code: int | None = None) -> TurnkitError:
    """A TurnkitError from `{status, message, details}` (also nested once more, or a bare string)."""
    if isinstance(error, dict) and isinstance(error.get("error"), dict):
        error = error["error"]
    if not isinstance(error, dict):
        return TurnkitError(_status_name(None, code), str(error) or f"HTTP {code}")
    details = error.get("details")
    message = error.get("message")
    return TurnkitError(
        _status_name(error.get("status"), code),
        message if isinstance(message, str) and message else f"HTTP {code}",
        details=None if details == {} else details,
    )


def error_from_response(code: int, body: bytes) -> TurnkitError:
    """The error a non-200 answer carries: `{"error": {...}}`, a flat `{status, message}`, or text."""
    text = body.decode("utf-8", errors="replace")
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and ("error" in parsed or "message" in parsed):
        return error_from_wire(parsed.get("error", parsed), code)
    return TurnkitError(_status_name(None, code), text.strip()[:1000] or f"HTTP {code}")


def _hidden() -> TurnkitError:
    return TurnkitError("INTERNAL", "internal error")


# Non-public errors whose status (not text) a client is told: they say "try again later" and
# reveal nothing of the server, e.g. a store that is unreachable (UNAVAILABLE) or full.
_TOLD_STATUSES = {
    "UNAVAILABLE": "the service is unavailable; try again later",
    "RESOURCE_EXHAUSTED": "the server is out of resources; try again later",
    "DEADLINE_EXCEEDED": "the server did not answer in time",
}


def public_error(err: TurnkitError) -> TurnkitError:
    """The error as a remote client may see it: a non-public one becomes INTERNAL "internal error"
    (or keeps a retryable status, with a generic message), and is logged in full here, the only
    place its text still shows."""
    if not err.public:
        log.error("turnkit.http: non-public error hidden from the client: %s", err)
        told = _TOLD_STATUSES.get(err.status)
        return _hidden() if told is None else TurnkitError(err.status, told)
    if not err.message or err.message == "None":
        return TurnkitError(err.status, err.status.replace("_", " ").lower(), details=err.details)
    return err


def public_error_info(info: ErrorInfo) -> TurnkitError:
    """A carried error (an output's or snapshot's) as a remote client may see it.

    It has no `public` flag: errors the runtime marked internal, and statuses of server-side
    failures, are hidden."""
    status = info.status if info.status in STATUS_NAMES else "UNKNOWN"
    details = info.details
    internal = isinstance(details, dict) and details.get(INTERNAL_MARK) is True
    if internal or status in _PRIVATE_STATUSES:
        return _hidden()
    return TurnkitError(status, info.message or status.replace("_", " ").lower(), details=details)


def visible_error(exc: BaseException) -> TurnkitError:
    """What the client is told about an exception (logged in full when it is not public)."""
    if isinstance(exc, TurnkitError):
        return public_error(exc)
    log.error("turnkit.http: unexpected server error", exc_info=exc)
    return _hidden()


# --- outputs and snapshots -----------------------------------------------------------------------


def output_to_wire(output: AgentOutput, err: TurnkitError | None, *, usage: bool = False) -> dict[str, Any]:
    """The output as sent: a failed turn's error is redacted unless it is public.

    `err` is the failure behind it when the runtime kept it (with its `public` flag); without
    it, the output's carried error is judged by `public_error_info`. `usage` adds the turn's
    token usage (`"usage"`), for requests that asked for it: Genkit's Python client rejects
    fields its AgentOutput lacks, so it is never sent unasked."""
    if output.error is not None:
        shown = public_error(err) if err is not None else public_error_info(output.error)
        output = output.model_copy(update={"error": ErrorInfo.of(shown)})
    out = output.to_wire()
    if usage and output.usage is not None:
        out["usage"] = output.usage.to_wire()
    return out


def snapshot_to_wire(snap: SessionSnapshot) -> dict[str, Any]:
    """The snapshot as sent: its error (a failed turn's) redacted unless it is public."""
    if snap.error is not None:
        snap = snap.model_copy(update={"error": ErrorInfo.of(public_error_info(snap.error))})
    return snap.to_wire()


def output_from_payload(payload: Any) -> AgentOutput:
    """The output of a terminal frame or JSON answer: `{"result": ...}`, or `{"error": ...}` raised."""
    if isinstance(payload, dict) and "result" in payload:
        return AgentOutput.from_wire(payload["result"])
    if isinstance(payload, dict) and "error" in payload:
        raise error_from_wire(payload["error"])
    raise TurnkitError("INTERNAL", f"unknown frame: {json.dumps(payload)[:200]}")
