"""The ASGI server: `create_app(ai)` serves an app's agents, `serve_agent(agent)` one agent, over the
Genkit agent wire protocol (encoded by `turnkit.http._wire`).

`create_app` answers, per agent `NAME`, `POST /agents/NAME` (one turn; JSON, or server-sent events
when the client sends `Accept: text/event-stream` or `?stream=true`), `POST /agents/NAME/getSnapshot`
and `POST /agents/NAME/abort`; it also lists the agents at `GET /agents` and describes itself at
`GET /openapi.json`. `serve_agent` answers the same three routes for one agent under a path of your
choice, like genkit-fastapi's `serve_agent`. Every error is the JSON body
`{"error": {"status", "message", "details"}}` with the HTTP code of its status; once a stream has
started, it is the terminal frame instead.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from turnkit._valid_text import check_request_text
from turnkit.agents._runner import check_context
from turnkit.errors import TurnkitError
from turnkit.http._ai_sdk_route import ai_sdk_routes
from turnkit.http._openapi import openapi_document
from turnkit.http._request_body import HttpError, read_body, replay
from turnkit.http._wire import (
    USAGE_HEADER,
    dumps_json,
    encode_frame,
    error_body,
    http_code_of,
    output_to_wire,
    parse_request_body,
    request_field,
    snapshot_to_wire,
    visible_error,
)
from turnkit.types import (
    AgentAbortRequest,
    AgentAbortResponse,
    AgentInit,
    AgentInput,
    AgentOutput,
    AgentStreamChunk,
    GetSnapshotRequest,
)

if TYPE_CHECKING:
    from turnkit._app import Turnkit
    from turnkit._registry import Registry
    from turnkit.agents import Agent, AgentConnection

__all__ = ["ContextProvider", "create_app", "serve_agent"]

ContextProvider = Callable[[Request], Mapping[str, Any] | Awaitable[Mapping[str, Any] | None] | None]

_STATUS_OF_ROUTING_CODE = {
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    413: "INVALID_ARGUMENT",
    415: "INVALID_ARGUMENT",
}
DEFAULT_MAX_BODY_BYTES = 1_000_000
_SSE_START_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def _error_response(exc: BaseException) -> Response:
    """The JSON error body for `exc` (redacted unless public), with its HTTP code."""
    err = visible_error(exc)
    code = exc.code if isinstance(exc, HttpError) else http_code_of(err.status)
    return Response(dumps_json(error_body(err)), code, media_type="application/json")


def _json(payload: Mapping[str, Any], code: int = 200) -> Response:
    return Response(dumps_json(payload), code, media_type="application/json")


# --- requests ------------------------------------------------------------------------------------


def _wants_stream(request: Request) -> bool:
    if "text/event-stream" in request.headers.get("accept", "").lower():
        return True
    return request.query_params.get("stream", "").lower() in ("true", "1")


def _wants_usage(request: Request) -> bool:
    """Whether the output should carry the turn's usage (Genkit's Python client rejects it unasked)."""
    return request.headers.get(USAGE_HEADER, "").strip().lower() in ("1", "true")


# --- the turn responses ---------------------------------------------------------------------------


async def _until_disconnect(receive: Receive) -> None:
    """Return when the client goes away (the body has been read, so only a disconnect can come)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class _Turn:
    """One running turn: drives the connection, feeding chunks to a sink, and yields its output."""

    def __init__(self, conn: AgentConnection, detach: bool, usage: bool = False) -> None:
        self.conn = conn
        self.detach = detach
        self.usage = usage  # the output carries the turn's token usage

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
            # Nobody is listening any more: an attached turn stops, a detached one goes on.
            await conn.cancel()
            raise

    @property
    def error(self) -> TurnkitError | None:
        """The failure behind a failed output (with its `public` flag), when the runtime kept it."""
        err = self.conn.error
        return err if isinstance(err, TurnkitError) else None

    async def guarded(self, receive: Receive, work: Awaitable[AgentOutput]) -> AgentOutput | None:
        """Await `work`, cancelling it if the client disconnects first (then None).

        `work` runs in this task (one task less per request than racing two); a watcher task
        cancels this one when the disconnect comes, which can only happen while `work` waits.
        """
        current = asyncio.current_task()
        assert current is not None
        gone = False

        async def watch() -> None:
            nonlocal gone
            await _until_disconnect(receive)
            gone = True
            current.cancel()

        watcher = asyncio.ensure_future(watch())
        try:
            return await work
        except asyncio.CancelledError:
            # Ours is consumed here; a cancellation from elsewhere as well still propagates.
            if not gone or current.uncancel() > 0:
                raise
            return None
        finally:
            watcher.cancel()


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
        body = dumps_json({"result": output_to_wire(output, self.turn.error, usage=self.turn.usage)})
        await Response(body, 200, media_type="application/json")(scope, receive, send)


class _StreamTurnResponse(Response):
    """Server-sent events: a `{"message": chunk}` frame per chunk, then one terminal frame.

    Frames that are ready together go out in one ASGI message (one socket write): a chunk is held
    back only while the connection already has the next one queued, so nothing waits for later
    work, and the bytes on the wire are the same as one message per frame.
    """

    def __init__(self, open_turn: Callable[[], Awaitable[_Turn]]) -> None:
        super().__init__(status_code=200)
        self.open_turn = open_turn

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_START_HEADERS})
        held: list[bytes] = []

        async def write(last: bytes | None = None) -> None:
            if last is not None:
                held.append(last)
            body = held[0] if len(held) == 1 else b"".join(held)
            held.clear()
            await send({"type": "http.response.body", "body": body, "more_body": last is None})

        turn: _Turn | None = None

        async def sink(chunk: AgentStreamChunk) -> None:
            held.append(encode_frame({"message": chunk.to_wire()}))
            assert turn is not None
            if not turn.conn.chunk_ready:
                await write()

        try:
            turn = await self.open_turn()
            output = await turn.guarded(receive, turn.run(sink))
        except Exception as exc:
            await write(encode_frame(error_body(visible_error(exc))))
            return
        if output is None:
            return
        await write(encode_frame({"result": output_to_wire(output, turn.error, usage=turn.usage)}))


# --- the routes of one agent -----------------------------------------------------------------------


class _AgentRoutes:
    """The three routes of an agent (turn, getSnapshot, abort), for whichever agent `find_agent`
    picks from the request, with a context provider and a body limit."""

    def __init__(
        self,
        find_agent: Callable[[Request], Agent],
        context_provider: ContextProvider | None,
        max_body_bytes: int,
    ) -> None:
        self.find_agent = find_agent
        self.context_provider = context_provider
        self.max_body_bytes = max_body_bytes

    async def context(self, request: Request) -> dict[str, Any]:
        """The call's context from the provider (`{}` without one)."""
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
        raw = await read_body(request, self.max_body_bytes)
        context: dict[str, Any] = {}
        if self.context_provider is not None:  # it may read the body too: give it a replay
            context = await self.context(Request(request.scope, replay(raw, request.receive)))
        agent = self.find_agent(request)
        if agent.store is not None:  # a context the store refuses is refused here, on every route
            check_context(agent.store, context)
        body = parse_request_body(raw)
        check_request_text(raw, body)  # a lone surrogate: 400 naming the field, not a failed turn
        return agent, context, body

    async def turn(self, request: Request) -> Response:
        """POST {agent}: one turn."""
        agent, context, body = await self.prepare(request)
        item: AgentInput = request_field(body, "data", AgentInput, required=True)
        init: AgentInit = request_field(body, "init", AgentInit, required=False)

        async def open_turn() -> _Turn:
            conn = await agent.stream_bidi(init, context=context)  # init misuse raises here
            try:
                await conn.send(item)
                await conn.close()
            except BaseException:
                await conn.cancel()
                raise
            return _Turn(conn, detach=bool(item.detach), usage=_wants_usage(request))

        if _wants_stream(request):
            # A well-formed, authorised request gets its stream at once, so misuse of the agent
            # (bad init) arrives as the terminal error frame: Genkit's clients read an error's
            # status only from a frame. Request errors above keep their HTTP codes.
            return _StreamTurnResponse(open_turn)
        return _JsonTurnResponse(await open_turn())

    async def get_snapshot(self, request: Request) -> Response:
        """POST {agent}/getSnapshot: a snapshot by id or a session's latest; 404 when none."""
        agent, context, body = await self.prepare(request)
        lookup: GetSnapshotRequest = request_field(body, "data", GetSnapshotRequest, required=True)
        snap = await agent.get_snapshot(lookup.snapshot_id, session_id=lookup.session_id, context=context)
        if snap is None:
            what = (
                f"snapshot {lookup.snapshot_id!r}" if lookup.snapshot_id else f"session {lookup.session_id!r}"
            )
            raise TurnkitError("NOT_FOUND", f"{what} not found for agent {agent.name!r}")
        return _json({"result": snapshot_to_wire(snap)})

    async def abort(self, request: Request) -> Response:
        """POST {agent}/abort: abort a detached turn; answers the status it had before."""
        agent, context, body = await self.prepare(request)
        req: AgentAbortRequest = request_field(body, "data", AgentAbortRequest, required=True)
        status = await agent.abort(req.snapshot_id, context=context)
        return _json({"result": AgentAbortResponse(snapshot_id=req.snapshot_id, status=status).to_wire()})

    def routes(self, base: str) -> list[Route]:
        """The three routes under `base` (the turn's path)."""
        return [
            Route(f"{base}/getSnapshot", _endpoint(self.get_snapshot), methods=["POST"]),
            Route(f"{base}/abort", _endpoint(self.abort), methods=["POST"]),
            *ai_sdk_routes(self, _endpoint, base),  # {base}/uiMessageStream: the Vercel AI SDK's chat
            Route(base, _endpoint(self.turn), methods=["POST"]),
        ]


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


async def _routing_error(request: Request, exc: Exception) -> Response:
    """Routing errors (unknown path 404, wrong method 405) as the JSON error body."""
    assert isinstance(exc, HTTPException)
    code = exc.status_code
    status = _STATUS_OF_ROUTING_CODE.get(code, "INVALID_ARGUMENT" if code < 500 else "INTERNAL")
    message = {404: f"no route {request.url.path}", 405: f"method {request.method} not allowed here"}.get(
        code, exc.detail
    )
    return JSONResponse(error_body(TurnkitError(status, message)), code, headers=exc.headers)


def _route_path(scope: Scope) -> str:
    """The request path below the app's mount point (`root_path`), as Starlette's router sees it."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if not root or not path.startswith(root):
        return path
    if path == root:
        return ""
    return path[len(root) :] if path[len(root)] == "/" else path


class _AgentsApp(Starlette):
    """The Starlette app of `create_app` / `serve_agent`, with a direct lane for turn requests.

    A turn (`POST` on the turn path) is the request served most; while no middleware has been
    added to this app, it goes straight to its endpoint instead of through Starlette's error and
    exception middleware and router, which answer it the same way (the endpoint turns every
    failure into the JSON error body itself). So exception handlers added to this app
    (`add_exception_handler`) are skipped for turns until a middleware is added to it. Every other
    request takes the usual way.
    """

    def __init__(
        self,
        routes: list[Route],
        debug: bool,
        turn_params: Callable[[str], dict[str, str] | None],
        turn: Callable[[Request], Awaitable[Response]],
    ) -> None:
        super().__init__(debug=debug, routes=routes, exception_handlers={HTTPException: _routing_error})
        self._turn_params = turn_params
        self._turn = turn

    def _contains_router(self, *_args: Any) -> bool:
        """FastAPI's `include_router` calls this first; it takes an APIRouter, which this app is not."""
        raise TurnkitError(
            "INVALID_ARGUMENT",
            "serve_agent() and create_app() return an ASGI app, not an APIRouter: instead of "
            "app.include_router(...), mount it: app.mount('/api', serve_agent(agent))",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not self.user_middleware:
            params = self._turn_params(_route_path(scope))
            if params is not None:
                scope["app"] = self
                scope["router"] = self.router
                scope["endpoint"] = self._turn
                scope["path_params"] = {**scope.get("path_params", {}), **params}
                response = await self._turn(Request(scope, receive, send))
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _named_turn(path: str) -> dict[str, str] | None:
    """`/agents/{name}`'s parameters when `path` is a turn path of `create_app`, else None."""
    if path.startswith("/agents/"):
        name = path[8:]
        if name and "/" not in name:
            return {"name": name}
    return None


# --- the apps --------------------------------------------------------------------------------------


class _AgentCatalog:
    """The agents an app serves: a fixed list, or every agent of a registry looked up per request."""

    def __init__(self, registry: Registry, agents: Sequence[str | Agent] | None) -> None:
        self.registry = registry
        self.fixed: dict[str, Agent] | None = None
        if agents is not None:
            found = [registry.lookup("agent", a) if isinstance(a, str) else a for a in agents]
            self.fixed = {a.name: a for a in found}

    def agents(self) -> dict[str, Agent]:
        """The served agents by name (all registered ones, looked up now, unless a list was given)."""
        if self.fixed is not None:
            return self.fixed
        return {n: self.registry.lookup("agent", n) for n in self.registry.names("agent")}

    def agent_of(self, request: Request) -> Agent:
        """The agent the path names; NOT_FOUND when it is not served."""
        name = request.path_params["name"]
        found = self.agents().get(name)
        if found is None:
            raise TurnkitError("NOT_FOUND", f"no agent named {name!r} is served here")
        return found


def create_app(
    ai: Turnkit,
    agents: Sequence[str | Agent] | None = None,
    context_provider: ContextProvider | None = None,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    title: str = "turnkit agents",
    debug: bool = False,
) -> Starlette:
    """A Starlette app serving `agents` (default: every agent of `ai`, looked up per request).

    `context_provider(request)` (sync or async) returns the context of the call (e.g.
    `{"auth": {...}, "tenant": "acme"}`), which reaches the turn, its tools and the store, or
    raises `TurnkitError("UNAUTHENTICATED" | "PERMISSION_DENIED", ...)` to refuse it (401/403).
    Request bodies over `max_body_bytes` are refused with 413. Mount the result anywhere, e.g.
    `Mount("/api", app=create_app(ai))` in a FastAPI or Starlette app; to serve one agent under
    a path of your choice, see `serve_agent`.
    """
    return app_for_registry(
        ai.registry,
        agents,
        context_provider,
        max_body_bytes=max_body_bytes,
        title=title,
        debug=debug,
    )


def app_for_registry(
    registry: Registry,
    agents: Sequence[str | Agent] | None = None,
    context_provider: ContextProvider | None = None,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    title: str = "turnkit agents",
    debug: bool = False,
) -> Starlette:
    """`create_app` for the agents of a registry (`turnkit serve FILE.py:AGENT` has no app object)."""
    catalog = _AgentCatalog(registry, agents)
    per_agent = _AgentRoutes(catalog.agent_of, context_provider, max_body_bytes)

    async def list_agents(request: Request) -> Response:
        """GET /agents: the served agents with their metadata."""
        await per_agent.context(request)
        listed = []
        for name, agent in sorted(catalog.agents().items()):
            entry: dict[str, Any] = {"name": name, "metadata": agent.metadata}
            if agent.description:
                entry["description"] = agent.description
            listed.append(entry)
        return _json({"agents": listed})

    async def openapi(request: Request) -> Response:
        """GET /openapi.json: an OpenAPI 3.1 description of the routes served."""
        await per_agent.context(request)
        root_path = request.scope.get("root_path", "")
        return _json(openapi_document(title, sorted(catalog.agents()), root_path))

    routes = [
        Route("/agents", _endpoint(list_agents), methods=["GET"]),
        Route("/openapi.json", _endpoint(openapi), methods=["GET"]),
        *per_agent.routes("/agents/{name}"),
    ]
    return _AgentsApp(routes, debug, _named_turn, _endpoint(per_agent.turn))


def serve_agent(
    agent: Agent,
    *,
    base_path: str | None = None,
    context_provider: ContextProvider | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    debug: bool = False,
) -> Starlette:
    """An ASGI app serving one agent: `POST {base_path}` (a turn), `{base_path}/getSnapshot` and
    `{base_path}/abort`; `base_path` defaults to `/{agent.name}`.

    As with genkit-fastapi's `serve_agent`, mount it under any prefix: with
    `Mount("/api", app=serve_agent(weather_agent))` (Starlette) or
    `app.mount("/api", serve_agent(weather_agent))` (FastAPI) the agent answers at
    `/api/weatherAgent`, which is the URL to give `remote_agent`. `context_provider` and
    `max_body_bytes` work as in `create_app`.
    """
    base = f"/{agent.name}" if base_path is None else base_path
    if not base.startswith("/") or base.rstrip("/") == "" or "{" in base:
        raise TurnkitError(
            "INVALID_ARGUMENT",
            f"base_path must be a path like '/{agent.name}' (starting with '/', no '{{'), not {base_path!r}",
        )
    per_agent = _AgentRoutes(lambda _request: agent, context_provider, max_body_bytes)
    base = base.rstrip("/")
    no_params: dict[str, str] = {}
    return _AgentsApp(
        per_agent.routes(base),
        debug,
        lambda path: no_params if path == base else None,
        _endpoint(per_agent.turn),
    )
