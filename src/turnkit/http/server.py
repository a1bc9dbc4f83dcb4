"""The ASGI server: `create_app(ai)` serves an app's agents over the Genkit agent wire protocol.

Per agent `NAME` it answers `POST /agents/NAME` (one turn; JSON, or server-sent events when the
client sends `Accept: text/event-stream` or `?stream=true`), `POST /agents/NAME/getSnapshot` and
`POST /agents/NAME/abort`; it also lists the agents at `GET /agents` and describes itself at
`GET /openapi.json`. Every error is the JSON body `{"error": {"status", "message", "details"}}`
with the HTTP code of its status; once a stream has started, it is the terminal frame instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message as AsgiMessage
from starlette.types import Receive, Scope, Send

from turnkit.agents.runner import INTERNAL_MARK
from turnkit.errors import HTTP_STATUS, STATUS_NAMES, TurnkitError
from turnkit.types import (
    AgentAbortRequest,
    AgentAbortResponse,
    AgentInit,
    AgentInput,
    AgentOutput,
    AgentStreamChunk,
    ErrorInfo,
    GetSnapshotRequest,
    SessionSnapshot,
)

if TYPE_CHECKING:
    from turnkit.agents import Agent, AgentConnection
    from turnkit.app import Turnkit

__all__ = ["ContextProvider", "create_app", "encode_frame", "error_body"]

log = logging.getLogger("turnkit.http")

ContextProvider = Callable[[Request], Mapping[str, Any] | Awaitable[Mapping[str, Any] | None] | None]

# Statuses of failures on the server's side, whose messages may hold its internals: hidden when we
# cannot tell whether they are public (a stored snapshot's error keeps no `public` flag).
_PRIVATE_STATUSES = frozenset({"INTERNAL", "UNKNOWN", "DATA_LOSS", "UNAVAILABLE", "DEADLINE_EXCEEDED"})
_HTTP_NAMES = {404: "NOT_FOUND", 405: "UNIMPLEMENTED", 413: "INVALID_ARGUMENT", 415: "INVALID_ARGUMENT"}
# Deeper bodies are refused: every layer below (validation, stores, encoders) then stays far from
# Python's recursion limit.
MAX_DEPTH = 100
# How much of a refused body is read and dropped before answering (beyond that, the connection closes).
DRAIN_BYTES = 8 * 1024 * 1024
_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class _HttpError(TurnkitError):
    """A TurnkitError answered with a specific HTTP code (413, 415) instead of its status's."""

    def __init__(self, code: int, status: str, message: str) -> None:
        super().__init__(status, message)
        self.code = code


# --- wire encoding -----------------------------------------------------------------------------


def _dumps(value: Any) -> str:
    """One line of strict JSON (ASCII only, so no client's line splitting can break a frame)."""
    try:
        return json.dumps(value, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    except ValueError:  # NaN or infinity somewhere: JSON has no such numbers
        return json.dumps(_finite(value), ensure_ascii=True, separators=(",", ":"))


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def encode_frame(payload: Mapping[str, Any]) -> bytes:
    """One stream frame: `data: <one line of JSON>` and a blank line, LF only."""
    return b"data: " + _dumps(payload).encode("ascii") + b"\n\n"


def _public(err: TurnkitError | None, info: ErrorInfo | None = None) -> TurnkitError:
    """The error as a remote client may see it; non-public ones become INTERNAL "internal error"."""
    if err is None:
        assert info is not None
        status = info.status if info.status in STATUS_NAMES else "UNKNOWN"
        details = info.details
        internal = isinstance(details, dict) and details.get(INTERNAL_MARK) is True
        if internal or status in _PRIVATE_STATUSES:
            return TurnkitError("INTERNAL", "internal error")
        return TurnkitError(status, info.message or status.replace("_", " ").lower(), details=details)
    if not err.public:
        log.error("turnkit.http: non-public error hidden from the client: %s", err)
        return TurnkitError("INTERNAL", "internal error")
    if not err.message or err.message == "None":
        return TurnkitError(err.status, err.status.replace("_", " ").lower(), details=err.details)
    return err


def error_body(err: TurnkitError) -> dict[str, Any]:
    """`{"error": {"status", "message", "details"}}`; `details` is always there (`{}` when none)."""
    details = err.details if err.details is not None else {}
    return {"error": {"status": err.status, "message": err.message, "details": details}}


def _shown(exc: BaseException) -> TurnkitError:
    """What the client is told about an exception (logged in full when it is not public)."""
    if isinstance(exc, TurnkitError):
        return _public(exc)
    log.error("turnkit.http: unexpected server error", exc_info=exc)
    return TurnkitError("INTERNAL", "internal error")


def _error_response(exc: BaseException) -> Response:
    err = _shown(exc)
    code = exc.code if isinstance(exc, _HttpError) else HTTP_STATUS.get(err.status, 500)
    return Response(_dumps(error_body(err)), code, media_type="application/json")


def _output_wire(output: AgentOutput, err: TurnkitError | None) -> dict[str, Any]:
    """The output as sent: a failed turn's error is redacted unless it is public."""
    if output.error is not None:
        shown = _public(err, output.error)
        output = output.model_copy(update={"error": ErrorInfo.of(shown)})
    return output.to_wire()


def _snapshot_wire(snap: SessionSnapshot) -> dict[str, Any]:
    if snap.error is not None:
        snap = snap.model_copy(update={"error": ErrorInfo.of(_public(None, snap.error))})
    return snap.to_wire()


# --- requests ------------------------------------------------------------------------------------


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than `limit` bytes whatever Content-Length says."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json" and not ctype.endswith("+json"):
        await _drain(request, 0)
        raise _HttpError(
            415, "INVALID_ARGUMENT", "the request body must be JSON (Content-Type: application/json)"
        )
    too_large = _HttpError(413, "INVALID_ARGUMENT", f"request body exceeds {limit} bytes")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        await _drain(request, 0)
        raise too_large
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            await _drain(request, len(body))
            raise too_large
    return bytes(body)


async def _drain(request: Request, seen: int) -> None:
    """Read and drop the rest of a refused body (up to DRAIN_BYTES more), so that the client,
    still sending, gets to read the answer instead of a reset connection."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) - seen > DRAIN_BYTES:
        return  # too much to swallow: the connection closes after the answer
    with contextlib.suppress(RuntimeError):  # the body may have ended already ("stream consumed")
        async for piece in request.stream():
            seen += len(piece)
            if seen > DRAIN_BYTES:
                return


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse_envelope(raw: bytes) -> dict[str, Any]:
    """The JSON object of a request body; INVALID_ARGUMENT for anything else."""
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = "too deeply nested" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise TurnkitError("INVALID_ARGUMENT", f"the request body is not valid JSON: {reason}") from None
    if not isinstance(value, dict):
        raise TurnkitError("INVALID_ARGUMENT", 'the request body must be a JSON object {"data": ...}')
    if _depth(value) > MAX_DEPTH:
        raise TurnkitError("INVALID_ARGUMENT", f"the request body nests deeper than {MAX_DEPTH} levels")
    return value


def _depth(value: Any) -> int:
    """How deeply arrays and objects nest in `value` (iteratively: no recursion limit to hit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return deepest


def _field(envelope: Mapping[str, Any], key: str, model: type[BaseModel], *, required: bool) -> Any:
    """Validate `envelope[key]` as `model`; INVALID_ARGUMENT naming each bad field otherwise."""
    value = envelope.get(key)
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


def _wants_stream(request: Request) -> bool:
    if "text/event-stream" in request.headers.get("accept", "").lower():
        return True
    return request.query_params.get("stream", "").lower() in ("true", "1")


# --- the turn responses ---------------------------------------------------------------------------


async def _until_disconnect(receive: Receive) -> None:
    """Return when the client goes away (the body has been read, so only a disconnect can come)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class _Turn:
    """One running turn: drives the connection, feeding chunks to a sink, and yields its output."""

    def __init__(self, conn: AgentConnection, detach: bool) -> None:
        self.conn = conn
        self.detach = detach

    async def run(self, sink: Callable[[AgentStreamChunk], Awaitable[None]] | None) -> AgentOutput:
        conn = self.conn
        if sink is None:
            conn.discard_chunks()  # a plain JSON answer: the chunks are not sent anywhere
        try:
            if sink is not None and not self.detach:
                while True:
                    async for chunk in conn.receive():
                        await sink(chunk)
                    if conn.finished:
                        break
            return await conn.output()
        except BaseException:
            await (
                conn.cancel()
            )  # nobody is listening any more: an attached turn stops, a detached one goes on
            raise

    @property
    def error(self) -> TurnkitError | None:
        """The failure behind a failed output (with its `public` flag), when the runtime kept it."""
        err = self.conn.error
        return err if isinstance(err, TurnkitError) else None

    async def guarded(self, receive: Receive, work: Awaitable[AgentOutput]) -> AgentOutput | None:
        """Await `work`, cancelling it if the client disconnects first (then None)."""
        task = asyncio.ensure_future(work)
        gone = asyncio.ensure_future(_until_disconnect(receive))
        try:
            await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                return None
            return task.result()
        finally:
            gone.cancel()
            if not task.done():
                task.cancel()


class _JsonTurnResponse(Response):
    """`{"result": AgentOutput}`, or an error body with its HTTP code."""

    def __init__(self, turn: _Turn) -> None:
        super().__init__(status_code=200)
        self.turn = turn

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            output = await self.turn.guarded(receive, self.turn.run(None))
        except Exception as exc:
            await _error_response(exc)(scope, receive, send)
            return
        if output is None:
            return  # the client is gone
        body = _dumps({"result": _output_wire(output, self.turn.error)})
        await Response(body, 200, media_type="application/json")(scope, receive, send)


class _StreamTurnResponse(Response):
    """Server-sent events: a `{"message": chunk}` frame per chunk, then one terminal frame."""

    def __init__(self, open_turn: Callable[[], Awaitable[_Turn]]) -> None:
        super().__init__(status_code=200)
        self.open_turn = open_turn

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"text/event-stream; charset=utf-8")]
        headers += [(k.encode(), v.encode()) for k, v in _SSE_HEADERS.items()]
        await send({"type": "http.response.start", "status": 200, "headers": headers})

        async def frame(payload: Mapping[str, Any], more: bool = True) -> None:
            message: AsgiMessage = {
                "type": "http.response.body",
                "body": encode_frame(payload),
                "more_body": more,
            }
            await send(message)

        async def sink(chunk: AgentStreamChunk) -> None:
            await frame({"message": chunk.to_wire()})

        try:
            turn = await self.open_turn()
            output = await turn.guarded(receive, turn.run(sink))
        except Exception as exc:
            await frame(error_body(_shown(exc)), more=False)
            return
        if output is None:
            return
        await frame({"result": _output_wire(output, turn.error)}, more=False)


# --- the app -------------------------------------------------------------------------------------


class _Server:
    """The request handlers of one app, sharing its agents, context provider and limits."""

    def __init__(
        self,
        ai: Turnkit,
        agents: Sequence[str | Agent] | None,
        context_provider: ContextProvider | None,
        max_body_bytes: int,
        title: str,
    ) -> None:
        self.ai = ai
        self.fixed: dict[str, Agent] | None = None
        if agents is not None:
            found = [ai.agent(a) if isinstance(a, str) else a for a in agents]
            self.fixed = {a.name: a for a in found}
        self.context_provider = context_provider
        self.max_body_bytes = max_body_bytes
        self.title = title

    def agents(self) -> dict[str, Agent]:
        """The served agents by name (all registered ones, looked up now, unless a list was given)."""
        if self.fixed is not None:
            return self.fixed
        return {n: self.ai.agent(n) for n in self.ai.registry.names("agent")}

    def agent(self, name: str) -> Agent:
        found = self.agents().get(name)
        if found is None:
            raise TurnkitError("NOT_FOUND", f"no agent named {name!r} is served here")
        return found

    async def context(self, request: Request) -> dict[str, Any]:
        if self.context_provider is None:
            return {}
        value = self.context_provider(request)
        if inspect.isawaitable(value):
            value = await value
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise TypeError(f"context_provider returned {type(value).__name__}, not a mapping")
        return dict(value)

    async def prepare(self, request: Request) -> tuple[Agent, dict[str, Any], dict[str, Any]]:
        """Read the body (bounded), run the context provider on a replay of it, find the agent."""
        raw = await _read_body(request, self.max_body_bytes)
        replayed = Request(request.scope, _replay(raw, request.receive))
        context = await self.context(replayed)
        agent = self.agent(request.path_params["name"])
        return agent, context, _parse_envelope(raw)

    # --- endpoints -------------------------------------------------------------------------------

    async def turn(self, request: Request) -> Response:
        """POST /agents/{name}: one turn."""
        agent, context, envelope = await self.prepare(request)
        item: AgentInput = _field(envelope, "data", AgentInput, required=True)
        init: AgentInit = _field(envelope, "init", AgentInit, required=False)

        async def open_turn() -> _Turn:
            conn = await agent.stream_bidi(init, context=context)  # init misuse raises here
            try:
                await conn.send(item)
                await conn.close()
            except BaseException:
                await conn.cancel()
                raise
            return _Turn(conn, detach=bool(item.detach))

        if _wants_stream(request):
            # A well-formed, authorised request gets its stream at once, so misuse of the agent
            # (bad init) arrives as the terminal error frame: Genkit's clients read an error's
            # status only from a frame. Request errors above keep their HTTP codes.
            return _StreamTurnResponse(open_turn)
        return _JsonTurnResponse(await open_turn())

    async def get_snapshot(self, request: Request) -> Response:
        """POST /agents/{name}/getSnapshot: a snapshot by id or a session's latest; 404 when none."""
        agent, context, envelope = await self.prepare(request)
        lookup: GetSnapshotRequest = _field(envelope, "data", GetSnapshotRequest, required=True)
        snap = await agent.get_snapshot(lookup.snapshot_id, session_id=lookup.session_id, context=context)
        if snap is None:
            what = (
                f"snapshot {lookup.snapshot_id!r}" if lookup.snapshot_id else f"session {lookup.session_id!r}"
            )
            raise TurnkitError("NOT_FOUND", f"{what} not found for agent {agent.name!r}")
        return _json({"result": _snapshot_wire(snap)})

    async def abort(self, request: Request) -> Response:
        """POST /agents/{name}/abort: abort a detached turn; answers the status it had before."""
        agent, context, envelope = await self.prepare(request)
        req: AgentAbortRequest = _field(envelope, "data", AgentAbortRequest, required=True)
        status = await agent.abort(req.snapshot_id, context=context)
        return _json({"result": AgentAbortResponse(snapshot_id=req.snapshot_id, status=status).to_wire()})

    async def list_agents(self, request: Request) -> Response:
        """GET /agents: the served agents with their metadata."""
        await self.context(request)
        listed = []
        for name, agent in sorted(self.agents().items()):
            entry: dict[str, Any] = {"name": name, "metadata": agent.metadata}
            if agent.description:
                entry["description"] = agent.description
            listed.append(entry)
        return _json({"agents": listed})

    async def openapi(self, request: Request) -> Response:
        """GET /openapi.json: an OpenAPI 3.1 description of the routes served."""
        await self.context(request)
        return _json(openapi_document(self.title, sorted(self.agents()), request.scope.get("root_path", "")))


def _json(payload: Mapping[str, Any], code: int = 200) -> Response:
    return Response(_dumps(payload), code, media_type="application/json")


def _replay(raw: bytes, receive: Receive) -> Receive:
    """A receive that yields the already-read body once, then passes through (to a disconnect)."""
    sent = False

    async def replay() -> AsgiMessage:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        return await receive()

    return replay


def _endpoint(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a handler so every failure becomes the JSON error body (and a disconnect, nothing)."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except ClientDisconnect:
            return Response(status_code=499)  # nobody is listening
        except Exception as exc:
            return _error_response(exc)

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint


async def _http_exception(request: Request, exc: Exception) -> Response:
    """Routing errors (unknown path 404, wrong method 405) as the JSON error body."""
    assert isinstance(exc, HTTPException)
    status = _HTTP_NAMES.get(exc.status_code, "INVALID_ARGUMENT" if exc.status_code < 500 else "INTERNAL")
    message = {404: f"no route {request.url.path}", 405: f"method {request.method} not allowed here"}.get(
        exc.status_code, exc.detail
    )
    return JSONResponse(error_body(TurnkitError(status, message)), exc.status_code, headers=exc.headers)


def create_app(
    ai: Turnkit,
    agents: Sequence[str | Agent] | None = None,
    context_provider: ContextProvider | None = None,
    *,
    max_body_bytes: int = 1_000_000,
    title: str = "turnkit agents",
    debug: bool = False,
) -> Starlette:
    """A Starlette app serving `agents` (default: every agent of `ai`, looked up per request).

    `context_provider(request)` (sync or async) returns the context of the call (e.g.
    `{"auth": {...}, "tenant": "acme"}`), which reaches the turn, its tools and the store, or
    raises `TurnkitError("UNAUTHENTICATED" | "PERMISSION_DENIED", ...)` to refuse it (401/403).
    Request bodies over `max_body_bytes` are refused with 413. Mount the result anywhere, e.g.
    `Mount("/api", app=create_app(ai))` in a FastAPI or Starlette app.
    """
    server = _Server(ai, agents, context_provider, max_body_bytes, title)
    routes = [
        Route("/agents", _endpoint(server.list_agents), methods=["GET"]),
        Route("/openapi.json", _endpoint(server.openapi), methods=["GET"]),
        Route("/agents/{name}/getSnapshot", _endpoint(server.get_snapshot), methods=["POST"]),
        Route("/agents/{name}/abort", _endpoint(server.abort), methods=["POST"]),
        Route("/agents/{name}", _endpoint(server.turn), methods=["POST"]),
    ]
    return Starlette(debug=debug, routes=routes, exception_handlers={HTTPException: _http_exception})


# --- OpenAPI ---------------------------------------------------------------------------------------

_MODELS: list[type[BaseModel]] = [
    AgentInput,
    AgentInit,
    AgentOutput,
    AgentStreamChunk,
    SessionSnapshot,
    GetSnapshotRequest,
    AgentAbortRequest,
    AgentAbortResponse,
    ErrorInfo,
]


def _components() -> dict[str, Any]:
    _, top = models_json_schema(
        [(m, "validation") for m in _MODELS], by_alias=True, ref_template="#/components/schemas/{model}"
    )
    schemas: dict[str, Any] = top.get("$defs", {})
    schemas["ErrorBody"] = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["status", "message", "details"],
                "properties": {"status": {"type": "string"}, "message": {"type": "string"}, "details": {}},
            }
        },
    }
    return schemas


def _op(summary: str, data: str, result: str, init: bool = False, stream: bool = False) -> dict[str, Any]:
    ref = "#/components/schemas/"
    props: dict[str, Any] = {"data": {"$ref": ref + data}}
    if init:
        props["init"] = {"$ref": ref + "AgentInit"}
    ok: dict[str, Any] = {
        "application/json": {"schema": {"type": "object", "properties": {"result": {"$ref": ref + result}}}}
    }
    if stream:
        ok["text/event-stream"] = {"schema": {"type": "string", "description": "data: frames, LF-delimited"}}
    error = {"description": "error", "content": {"application/json": {"schema": {"$ref": ref + "ErrorBody"}}}}
    op: dict[str, Any] = {
        "summary": summary,
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"type": "object", "required": ["data"], "properties": props}}
            },
        },
        "responses": {"200": {"description": "ok", "content": ok}, "4XX": error, "5XX": error},
    }
    if stream:
        op["parameters"] = [
            {
                "name": "stream",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "enum": ["true", "false"]},
            }
        ]
    return op


def openapi_document(title: str, names: Sequence[str], root_path: str = "") -> dict[str, Any]:
    """The OpenAPI 3.1 document of the routes serving the agents `names`."""
    paths: dict[str, Any] = {
        "/agents": {"get": {"summary": "List the served agents", "responses": {"200": {"description": "ok"}}}}
    }
    for name in names:
        base = f"/agents/{name}"
        paths[base] = {
            "post": _op(f"Run one turn of {name}", "AgentInput", "AgentOutput", init=True, stream=True)
        }
        paths[base + "/getSnapshot"] = {
            "post": _op(f"Read a snapshot of {name}", "GetSnapshotRequest", "SessionSnapshot")
        }
        paths[base + "/abort"] = {
            "post": _op(f"Abort a detached turn of {name}", "AgentAbortRequest", "AgentAbortResponse")
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1"},
        "servers": [{"url": root_path or "/"}],
        "paths": paths,
        "components": {"schemas": _components()},
    }
