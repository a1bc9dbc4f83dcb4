"""The HTTP client: `remote_agent(url)` talks to an agent served over the Genkit agent wire protocol.

It has the surface of a local agent (`chat`, `load_chat`, `get_snapshot`, `abort`; chats `send`,
`send_stream`, `resume`, `detach`), built on `HttpTransport`, the HTTP implementation of
`turnkit.agents.AgentTransport`. Turns always stream, so chunks (and custom-state patches) arrive
as the server sends them; aborting a running turn closes its stream, which stops it on the server.
It reads what Genkit's servers send too: flat error bodies, `error:` frames, CRLF delimiters.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Literal

import httpx

from turnkit.agents.client import AgentChat, ChunkSink, TurnResult
from turnkit.errors import HTTP_STATUS, STATUS_NAMES, TurnkitError
from turnkit.types import (
    AgentAbortResponse,
    AgentInit,
    AgentInput,
    AgentOutput,
    AgentStreamChunk,
    SessionSnapshot,
    SessionState,
    SnapshotStatus,
)

__all__ = [
    "FrameReader",
    "HeadersProvider",
    "HttpTransport",
    "RemoteAgent",
    "error_from_response",
    "remote_agent",
]

StateManagement = Literal["server", "client"]
HeadersProvider = Mapping[str, str] | Callable[[], Mapping[str, str] | Awaitable[Mapping[str, str]]] | None

# A turn may think for a long time before its first byte: no read timeout by default.
DEFAULT_TIMEOUT = httpx.Timeout(30.0, read=None)
_STATUS_OF_HTTP = {code: name for name, code in reversed(HTTP_STATUS.items())} | {
    400: "INVALID_ARGUMENT",
    409: "ABORTED",
    412: "FAILED_PRECONDITION",
    500: "INTERNAL",
}


# --- errors and frames -----------------------------------------------------------------------------


def _status_name(raw: Any, code: int | None) -> str:
    if isinstance(raw, str):
        name = raw.strip().upper().replace(" ", "_")  # Genkit's express handler says "INVALID ARGUMENT"
        if name in STATUS_NAMES:
            return name
    if code is not None:
        return _STATUS_OF_HTTP.get(code, "INTERNAL" if code >= 500 else "UNKNOWN")
    return "UNKNOWN"


def _error_from_wire(error: Any, code: int | None = None) -> TurnkitError:
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
        return _error_from_wire(parsed.get("error", parsed), code)
    return TurnkitError(_status_name(None, code), text.strip()[:1000] or f"HTTP {code}")


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
        rest = self.feed("\n\n") if self._buffer or self._data else []
        return rest

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


# --- the transport ---------------------------------------------------------------------------------


class HttpTransport:
    """The HTTP `AgentTransport`: one streaming POST per turn, plus the snapshot and abort routes.

    With `state_management=None` the mode is inferred: `server` until a response carries client
    state without a snapshot id.
    """

    def __init__(
        self,
        url: str,
        *,
        client: httpx.AsyncClient,
        headers: HeadersProvider = None,
        state_management: StateManagement | None = None,
        get_snapshot_url: str | None = None,
        abort_url: str | None = None,
    ) -> None:
        self.url = url
        self.get_snapshot_url = get_snapshot_url or f"{url}/getSnapshot"
        self.abort_url = abort_url or f"{url}/abort"
        self.client = client
        self.headers = headers
        self._infer = state_management is None
        self.state_management: StateManagement = state_management or "server"
        self._reader: asyncio.Task[TurnResult] | None = None
        self._aborting = False

    async def _headers(self, extra: Mapping[str, str]) -> dict[str, str]:
        provided = self.headers() if callable(self.headers) else self.headers
        if inspect.isawaitable(provided):
            provided = await provided
        return {**dict(provided or {}), **extra}

    async def run_turn(self, init: AgentInit, item: AgentInput, on_chunk: ChunkSink | None) -> TurnResult:
        """Run one turn over a streaming POST; chunks go to `on_chunk` as they arrive."""
        self._aborting = False
        reader = asyncio.ensure_future(self._exchange(init, item, on_chunk))
        self._reader = reader
        try:
            result = await reader
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._aborting and (task is None or task.cancelling() == 0):
                session_id = init.session_id or (init.state.session_id if init.state else None)
                return TurnResult(AgentOutput(session_id=session_id, finish_reason="aborted"), init.state)
            raise
        finally:
            self._reader = None
        out = result.output
        if self._infer and (out.snapshot_id or out.state is not None):
            self.state_management = "client" if out.state is not None and not out.snapshot_id else "server"
        return result

    async def _exchange(self, init: AgentInit, item: AgentInput, on_chunk: ChunkSink | None) -> TurnResult:
        body = {"data": item.to_wire(), "init": init.to_wire()}
        headers = await self._headers({"accept": "text/event-stream", "content-type": "application/json"})
        async with (
            _reach(self.url),
            self.client.stream("POST", self.url, content=json.dumps(body), headers=headers) as resp,
        ):
            if resp.status_code != 200:
                raise error_from_response(resp.status_code, await resp.aread())
            if resp.headers.get("content-type", "").startswith("application/json"):
                output = _result_of(json.loads(await resp.aread()))
            else:
                output = await _read_stream(resp.aiter_text(), on_chunk)
        return TurnResult(output, output.state)

    async def abort_turn(self) -> None:
        """Stop the running turn by closing its stream; the turn ends with finish reason `aborted`."""
        reader = self._reader
        if reader is not None and not reader.done():
            self._aborting = True
            reader.cancel()

    async def _post(self, url: str, data: Mapping[str, Any]) -> Any:
        """POST `{"data": data}`; the result, None on 404, or the error raised."""
        headers = await self._headers({"content-type": "application/json"})
        async with _reach(url):
            resp = await self.client.post(url, content=json.dumps({"data": dict(data)}), headers=headers)
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise error_from_response(resp.status_code, resp.content)
        try:
            payload = resp.json()
        except ValueError:
            raise TurnkitError("INTERNAL", f"{url} answered with invalid JSON") from None
        if isinstance(payload, dict) and "error" in payload and "result" not in payload:
            raise _error_from_wire(payload["error"], resp.status_code)
        return payload.get("result") if isinstance(payload, dict) else None

    async def get_snapshot(
        self, *, snapshot_id: str | None = None, session_id: str | None = None
    ) -> SessionSnapshot | None:
        """A snapshot by id, or a session's latest; None when the server has none (404)."""
        if (snapshot_id is None) == (session_id is None):
            raise TurnkitError("INVALID_ARGUMENT", "give exactly one of snapshot_id and session_id")
        lookup = {"snapshotId": snapshot_id} if snapshot_id is not None else {"sessionId": session_id}
        result = await self._post(self.get_snapshot_url, lookup)
        return None if result is None else SessionSnapshot.from_wire(result)

    async def abort(self, snapshot_id: str) -> SnapshotStatus | None:
        """Abort a detached turn; returns the snapshot's status before the abort."""
        result = await self._post(self.abort_url, {"snapshotId": snapshot_id})
        return None if result is None else AgentAbortResponse.from_wire(result).status


@contextlib.asynccontextmanager
async def _reach(url: str) -> AsyncIterator[None]:
    """Turn transport failures into TurnkitErrors (UNAVAILABLE, DEADLINE_EXCEEDED)."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise TurnkitError("DEADLINE_EXCEEDED", f"{url} timed out: {exc}") from exc
    except httpx.TransportError as exc:
        raise TurnkitError("UNAVAILABLE", f"cannot reach {url}: {exc!r}") from exc


def _result_of(payload: Any) -> AgentOutput:
    if isinstance(payload, dict) and "result" in payload:
        return AgentOutput.from_wire(payload["result"])
    if isinstance(payload, dict) and "error" in payload:
        raise _error_from_wire(payload["error"])
    raise TurnkitError("INTERNAL", f"unknown frame: {json.dumps(payload)[:200]}")


async def _read_stream(text: AsyncIterator[str], on_chunk: ChunkSink | None) -> AgentOutput:
    """Deliver `message` frames to `on_chunk` until the terminal `result` (returned) or `error` (raised)."""
    frames = FrameReader()
    async for piece in text:
        for payload in frames.feed(piece):
            if "message" in payload:
                if on_chunk is not None:
                    on_chunk(AgentStreamChunk.from_wire(payload["message"]))
                continue
            return _result_of(payload)
    for payload in frames.finish():
        if "message" not in payload:
            return _result_of(payload)
    raise TurnkitError("UNAVAILABLE", "the stream ended before the turn finished")


# --- the remote agent ------------------------------------------------------------------------------


class RemoteAgent:
    """An agent served over HTTP, with the client surface of a local agent."""

    def __init__(
        self,
        url: str,
        *,
        headers: HeadersProvider = None,
        state_management: StateManagement | None = None,
        client: httpx.AsyncClient | None = None,
        get_snapshot_url: str | None = None,
        abort_url: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.headers = headers
        self.state_management = state_management
        self.get_snapshot_url = get_snapshot_url
        self.abort_url = abort_url
        self._owns_client = client is None
        self.client = client or httpx.AsyncClient(timeout=DEFAULT_TIMEOUT)

    def transport(self, state_management: StateManagement | None = None) -> HttpTransport:
        """A fresh transport (one per chat, so that aborting one chat's turn leaves the others)."""
        return HttpTransport(
            self.url,
            client=self.client,
            headers=self.headers,
            state_management=state_management or self.state_management,
            get_snapshot_url=self.get_snapshot_url,
            abort_url=self.abort_url,
        )

    def chat(
        self,
        *,
        session_id: str | None = None,
        snapshot_id: str | None = None,
        state: SessionState | dict[str, Any] | None = None,
    ) -> AgentChat:
        """A conversation, new or continuing a session, a snapshot, or client-held state."""
        implied: StateManagement | None = None
        if self.state_management is None:
            implied = "client" if state is not None else "server" if (session_id or snapshot_id) else None
        return AgentChat(self.transport(implied), session_id=session_id, snapshot_id=snapshot_id, state=state)

    async def load_chat(self, *, session_id: str | None = None, snapshot_id: str | None = None) -> AgentChat:
        """A chat continuing an existing session or snapshot; NOT_FOUND when the server has none."""
        snap = await self.get_snapshot(snapshot_id, session_id=session_id)
        if snap is None:
            what = f"session {session_id!r}" if session_id else f"snapshot {snapshot_id!r}"
            raise TurnkitError("NOT_FOUND", f"no snapshot for {what}")
        chat = self.chat(session_id=session_id, snapshot_id=snapshot_id or snap.snapshot_id)
        chat.loaded = snap
        return chat

    async def get_snapshot(
        self, snapshot_id: str | None = None, *, session_id: str | None = None
    ) -> SessionSnapshot | None:
        """A snapshot by id, or the latest of a session; None when there is none."""
        return await self.transport("server").get_snapshot(snapshot_id=snapshot_id, session_id=session_id)

    async def abort(self, snapshot_id: str) -> SnapshotStatus | None:
        """Abort a detached turn by its snapshot id; returns the status it had before."""
        return await self.transport("server").abort(snapshot_id)

    async def aclose(self) -> None:
        """Close the HTTP client, if this agent created it."""
        if self._owns_client:
            await self.client.aclose()

    async def __aenter__(self) -> RemoteAgent:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"RemoteAgent({self.url!r})"


def remote_agent(
    url: str,
    *,
    headers: HeadersProvider = None,
    state_management: StateManagement | None = None,
    client: httpx.AsyncClient | None = None,
    get_snapshot_url: str | None = None,
    abort_url: str | None = None,
) -> RemoteAgent:
    """A client for the agent served at `url` (its turn route; snapshots and aborts go below it).

    `headers` is a dict or a (sync or async) function called per request, e.g. for rotating
    tokens. `state_management` declares "server" or "client"; left out, it is inferred from the
    chat's arguments and responses. `client` is an `httpx.AsyncClient` to share (the default one
    has no read timeout, since a turn may take long before its first byte).
    """
    return RemoteAgent(
        url,
        headers=headers,
        state_management=state_management,
        client=client,
        get_snapshot_url=get_snapshot_url,
        abort_url=abort_url,
    )
