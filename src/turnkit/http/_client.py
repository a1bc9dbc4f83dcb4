"""The HTTP client: `remote_agent(url)` talks to an agent served over the Genkit agent wire protocol.

It has the surface of a local agent (`chat`, `load_chat`, `get_snapshot`, `abort`; chats `send`,
`send_stream`, `resume`, `detach`), built on `HttpTransport`, the HTTP implementation of
`turnkit.agents.AgentTransport`. Turns always stream, so chunks (and custom-state patches) arrive
as the server sends them; aborting a running turn closes its stream, which stops it on the server.
It reads what Genkit's servers send too: flat error bodies, `error:` frames, CRLF delimiters
(the parsing is `turnkit.http._wire`'s).

A chat over HTTP returns the same fields as a local one (messages, custom state, artifacts): a
client-managed agent's output carries its state; for a server-managed one the transport reads the
snapshot the turn wrote (see `HttpTransport.run_turn`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Generic, Literal, overload

import httpx

from turnkit.agents._client import AgentChat, ChunkSink
from turnkit.errors import TurnkitError
from turnkit.http._wire import (
    USAGE_HEADER,
    FrameReader,
    encode_request,
    error_from_response,
    error_from_wire,
    output_from_payload,
)
from turnkit.sessions._state_type import S, StateType
from turnkit.types import (
    AgentAbortResponse,
    AgentFinishReason,
    AgentInit,
    AgentInput,
    AgentOutput,
    AgentStreamChunk,
    Artifact,
    Message,
    SessionSnapshot,
    SessionState,
    SnapshotStatus,
)

__all__ = ["HeadersProvider", "HttpTransport", "RemoteAgent", "remote_agent"]

log = logging.getLogger("turnkit.http")

StateManagement = Literal["server", "client"]
HeadersProvider = Mapping[str, str] | Callable[[], Mapping[str, str] | Awaitable[Mapping[str, str]]] | None

# A turn may think for a long time before its first byte: no read timeout by default.
DEFAULT_TIMEOUT = httpx.Timeout(30.0, read=None)


@contextlib.asynccontextmanager
async def _transport_failures_as_turnkit_errors(url: str) -> AsyncIterator[None]:
    """Turn httpx's transport failures into TurnkitErrors (UNAVAILABLE, DEADLINE_EXCEEDED)."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise TurnkitError("DEADLINE_EXCEEDED", f"{url} timed out: {exc}") from exc
    except httpx.TransportError as exc:
        raise TurnkitError("UNAVAILABLE", f"cannot reach {url}: {exc!r}") from exc


async def _read_stream(text: AsyncIterator[str], on_chunk: ChunkSink | None) -> AgentOutput:
    """Deliver `message` frames to `on_chunk` until the terminal `result` (returned) or `error` (raised)."""
    frames = FrameReader()
    async for piece in text:
        for payload in frames.feed(piece):
            if "message" in payload:
                if on_chunk is not None:
                    on_chunk(AgentStreamChunk.from_wire(payload["message"]))
                continue
            return output_from_payload(payload)
    for payload in frames.finish():
        if "message" not in payload:
            return output_from_payload(payload)
    raise TurnkitError("UNAVAILABLE", "the stream ended before the turn finished")


def _wrote_a_snapshot(output: AgentOutput) -> bool:
    """Whether the output names the snapshot its turn completed (not the last good one of a failed
    turn, not the pending one of a detached turn)."""
    ended = (AgentFinishReason.FAILED, AgentFinishReason.ABORTED, AgentFinishReason.DETACHED)
    return output.snapshot_id is not None and output.finish_reason not in ended


# --- the transport ---------------------------------------------------------------------------------


class HttpTransport(Generic[S]):
    """The HTTP `AgentTransport`: one streaming POST per turn, plus the snapshot and abort routes.

    With `state_management=None` the mode is inferred: `server` until a response carries client
    state without a snapshot id. `state_type` types the custom state for the chats on top.
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
        state_type: StateType[S] | None = None,
    ) -> None:
        self.url = url
        self.get_snapshot_url = get_snapshot_url or f"{url}/getSnapshot"
        self.abort_url = abort_url or f"{url}/abort"
        self.client = client
        self.headers = headers
        self.state_type: StateType[S] = state_type if state_type is not None else StateType()
        self._infer = state_management is None
        self.state_management: StateManagement = state_management or "server"
        self._reader: asyncio.Task[AgentOutput] | None = None
        self._aborting = False

    async def _headers(self, extra: Mapping[str, str]) -> dict[str, str]:
        provided = self.headers() if callable(self.headers) else self.headers
        if inspect.isawaitable(provided):
            provided = await provided
        return {**dict(provided or {}), **extra}

    async def run_turn(self, init: AgentInit, item: AgentInput, on_chunk: ChunkSink | None) -> AgentOutput:
        """Run one turn over a streaming POST; chunks go to `on_chunk` as they arrive.

        The output carries the session's whole state after the turn, as a local chat has it. A
        client-managed agent's output has it already. A server-managed agent's does not, and the
        chunks cannot rebuild it (a chat continuing a snapshot never saw the earlier turns, a
        resumed interrupt rewrites the message that paused, a custom agent may add messages it
        does not stream, a `state_transform` reshapes it), so the transport reads the snapshot the
        turn wrote: one small POST by an id that names an immutable snapshot (no race with later
        turns). A detached or failed turn has no new state to read.
        """
        self._aborting = False
        reader = asyncio.ensure_future(self._exchange(init, item, on_chunk))
        self._reader = reader
        try:
            output = await reader
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._aborting and (task is None or task.cancelling() == 0):
                session_id = init.session_id or (init.state.session_id if init.state else None)
                return AgentOutput(session_id=session_id, finish_reason=AgentFinishReason.ABORTED)
            raise
        finally:
            self._reader = None
        if self._infer and (output.snapshot_id or output.state is not None):
            client_held = output.state is not None and not output.snapshot_id
            self.state_management = "client" if client_held else "server"
        if output.state is None and _wrote_a_snapshot(output):
            output = output.model_copy(update={"state": await self._state_of(output.snapshot_id)})
        return output

    async def _state_of(self, snapshot_id: str | None) -> SessionState | None:
        """The state a turn's snapshot holds (None when it cannot be read)."""
        try:
            snap = await self.get_snapshot(snapshot_id=snapshot_id)
        except TurnkitError as exc:
            # The turn itself is done: raising would invite the caller to run it again. The chat
            # falls back to what the streamed chunks tell.
            log.warning("turnkit.http: could not read the state after a turn from %s: %s", self.url, exc)
            return None
        return snap.state if snap is not None else None

    async def _exchange(self, init: AgentInit, item: AgentInput, on_chunk: ChunkSink | None) -> AgentOutput:
        # USAGE_HEADER: turnkit's server then puts the turn's usage on the output (Genkit's ignores it).
        headers = await self._headers(
            {"accept": "text/event-stream", "content-type": "application/json", USAGE_HEADER: "1"}
        )
        body = encode_request(item, init)
        async with (
            _transport_failures_as_turnkit_errors(self.url),
            self.client.stream("POST", self.url, content=body, headers=headers) as resp,
        ):
            if resp.status_code != 200:
                raise error_from_response(resp.status_code, await resp.aread())
            if resp.headers.get("content-type", "").startswith("application/json"):
                return output_from_payload(json.loads(await resp.aread()))
            return await _read_stream(resp.aiter_text(), on_chunk)

    async def abort_turn(self) -> None:
        """Stop the running turn by closing its stream; the turn ends with finish reason `aborted`."""
        reader = self._reader
        if reader is not None and not reader.done():
            self._aborting = True
            reader.cancel()

    async def _post(self, url: str, data: Mapping[str, Any]) -> Any:
        """POST `{"data": data}`; the result, None on 404, or the error raised."""
        headers = await self._headers({"content-type": "application/json"})
        async with _transport_failures_as_turnkit_errors(url):
            resp = await self.client.post(url, content=encode_request(data), headers=headers)
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise error_from_response(resp.status_code, resp.content)
        try:
            payload = resp.json()
        except ValueError:
            raise TurnkitError("INTERNAL", f"{url} answered with invalid JSON") from None
        if isinstance(payload, dict) and "error" in payload and "result" not in payload:
            raise error_from_wire(payload["error"], resp.status_code)
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
        status = None if result is None else AgentAbortResponse.from_wire(result).status
        return None if status is None else SnapshotStatus(status)


# --- the remote agent ------------------------------------------------------------------------------


class RemoteAgent(Generic[S]):
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
        state_type: StateType[S] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.headers = headers
        self.state_management = state_management
        self.get_snapshot_url = get_snapshot_url
        self.abort_url = abort_url
        self.state_type: StateType[S] = state_type if state_type is not None else StateType()
        self._owns_client = client is None
        self.client = client or httpx.AsyncClient(timeout=DEFAULT_TIMEOUT)

    def transport(self, state_management: StateManagement | None = None) -> HttpTransport[S]:
        """A fresh transport (one per chat, so that aborting one chat's turn leaves the others)."""
        return HttpTransport(
            self.url,
            client=self.client,
            headers=self.headers,
            state_management=state_management or self.state_management,
            get_snapshot_url=self.get_snapshot_url,
            abort_url=self.abort_url,
            state_type=self.state_type,
        )

    def chat(
        self,
        *,
        session_id: str | None = None,
        snapshot_id: str | None = None,
        messages: Sequence[Message | dict[str, Any]] | None = None,
        artifacts: Sequence[Artifact | dict[str, Any]] | None = None,
        state: S | Mapping[str, Any] | None = None,
        session_state: SessionState | Mapping[str, Any] | None = None,
    ) -> AgentChat[S]:
        """A conversation, new or continuing one: as `Agent.chat` (a session or snapshot id for a
        server-managed agent; messages, artifacts, custom state or a whole session state for a
        client-managed one)."""
        implied: StateManagement | None = None
        if self.state_management is None:
            seeded = any(v is not None for v in (messages, artifacts, state, session_state))
            implied = "client" if seeded else "server" if (session_id or snapshot_id) else None
        return AgentChat(
            self.transport(implied),
            session_id=session_id,
            snapshot_id=snapshot_id,
            messages=messages,
            artifacts=artifacts,
            state=state,
            session_state=session_state,
        )

    async def load_chat(
        self, *, session_id: str | None = None, snapshot_id: str | None = None
    ) -> AgentChat[S]:
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

    async def __aenter__(self) -> RemoteAgent[S]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"RemoteAgent({self.url!r})"


@overload
def remote_agent(
    url: str,
    *,
    headers: HeadersProvider = None,
    state_management: StateManagement | None = None,
    client: httpx.AsyncClient | None = None,
    get_snapshot_url: str | None = None,
    abort_url: str | None = None,
    state_schema: Mapping[str, Any] | None = None,
) -> RemoteAgent[Any]: ...


@overload
def remote_agent(
    url: str,
    *,
    headers: HeadersProvider = None,
    state_management: StateManagement | None = None,
    client: httpx.AsyncClient | None = None,
    get_snapshot_url: str | None = None,
    abort_url: str | None = None,
    state_schema: type[S],
) -> RemoteAgent[S]: ...


def remote_agent(
    url: str,
    *,
    headers: HeadersProvider = None,
    state_management: StateManagement | None = None,
    client: httpx.AsyncClient | None = None,
    get_snapshot_url: str | None = None,
    abort_url: str | None = None,
    state_schema: type[Any] | Mapping[str, Any] | None = None,
) -> RemoteAgent[Any]:
    """A client for the agent served at `url` (its turn route; snapshots and aborts go below it).

    `headers` is a dict or a (sync or async) function called per request, e.g. for rotating
    tokens. `state_management` declares "server" or "client"; left out, it is inferred from the
    chat's arguments and responses. `state_schema` (a Pydantic model class, a TypedDict or a JSON
    schema dict) types the custom state the chats hand back, as `state_schema=` does on a local
    agent: `RemoteAgent[MyState]`, or `RemoteAgent[Any]` for a JSON schema (the state stays JSON,
    which need not be an object). `client` is an `httpx.AsyncClient` to share (the default one has no read timeout,
    since a turn may take long before its first byte).
    """
    return RemoteAgent(
        url,
        headers=headers,
        state_management=state_management,
        client=client,
        get_snapshot_url=get_snapshot_url,
        abort_url=abort_url,
        state_type=StateType(state_schema),
    )
