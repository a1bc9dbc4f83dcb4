"""Genkit's reflection API (v1) over a turnkit app, for the Genkit Developer UI and CLI.

Routes: `/api/__health`, `/api/actions`, `/api/values`, `/api/envs`, `/api/notify`,
`/api/runAction` (streaming with `?stream=true`), `/api/cancelAction`, `/api/__quitquitquit`.
A run answers with `X-Genkit-Trace-Id` / `X-Genkit-Span-Id` headers once its root span exists,
then (streaming) one JSON chunk per line, then `{"result": ..., "telemetry": {...}}` or
`{"error": {...}}` as the last line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import traceback
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from turnkit._devui._actions import Action, RunRequest, list_actions
from turnkit._registry import Registry
from turnkit._tracing import current_trace_ids
from turnkit.errors import TurnkitError

__all__ = ["GENKIT_VERSION_HEADER", "create_reflection_app"]

GENKIT_VERSION_HEADER = "x-genkit-version"
# What the CLI shows as the runtime's library; Genkit's Python runtimes say "py/<version>".
RUNTIME_VERSION = "py/turnkit-0.1.0"
_HEADERS = {GENKIT_VERSION_HEADER: RUNTIME_VERSION}
# gRPC-style numeric codes, as Genkit's error bodies carry them.
_CODES = {
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}


def _error_body(exc: BaseException, trace_id: str | None) -> dict[str, Any]:
    status = exc.status if isinstance(exc, TurnkitError) else "INTERNAL"
    message = exc.message if isinstance(exc, TurnkitError) else f"{type(exc).__name__}: {exc}"
    details: dict[str, Any] = {"stack": "".join(traceback.format_exception(exc))}
    if trace_id:
        details["traceId"] = trace_id
    return {"status": status, "code": _CODES.get(status, 13), "message": message, "details": details}


class _Run:
    """One runAction: the action runs in its own task (cancellable by trace id) under its span."""

    def __init__(self, action: Action, payload: dict[str, Any], stream: bool) -> None:
        self.action = action
        self.payload = payload
        self.stream = stream
        self.lines: asyncio.Queue[str | None] = asyncio.Queue()
        self.ids: asyncio.Future[tuple[str, str]] = asyncio.get_running_loop().create_future()

    def _chunk(self, chunk: Any) -> None:
        self.lines.put_nowait(json.dumps(chunk) + "\n")

    async def execute(self) -> None:
        action, payload = self.action, self.payload
        request = RunRequest(
            input=payload.get("input"),
            init=payload.get("init"),
            context=dict(payload.get("context") or {}),
            on_chunk=self._chunk if self.stream else None,
        )
        trace_id: str | None = None
        span_id = ""
        try:
            with action.span(request.input) as scope:
                ids = current_trace_ids()
                trace_id, span_id = ids if ids is not None else (uuid.uuid4().hex, "")
                self.ids.set_result((trace_id, span_id))
                result = await action.run(request)
                scope.output(result)
            body = {"result": result, "telemetry": {"traceId": trace_id, "spanId": span_id}}
            self.lines.put_nowait(json.dumps(body))
        except asyncio.CancelledError:
            cancelled = TurnkitError("CANCELLED", "cancelled")
            self.lines.put_nowait(json.dumps({"error": _error_body(cancelled, trace_id)}))
            raise
        except Exception as exc:
            self.lines.put_nowait(json.dumps({"error": _error_body(exc, trace_id)}))
        finally:
            if not self.ids.done():
                self.ids.set_result((uuid.uuid4().hex, ""))
            self.lines.put_nowait(None)


def create_reflection_app(
    registry: Registry,
    *,
    on_quit: Callable[[], None] | None = None,
    on_telemetry_server: Callable[[str], object] | None = None,
    envs: tuple[str, ...] = ("dev",),
) -> Starlette:
    """The reflection API for the app whose registry is `registry`.

    `on_quit` is called by `/api/__quitquitquit` (default: SIGTERM to this process);
    `on_telemetry_server` with the telemetry server URL the CLI announces through `/api/notify`
    (how an app started apart from `genkit start` learns where traces go).
    """
    active: dict[str, asyncio.Task[None]] = {}

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "OK"}, headers=_HEADERS)

    async def quit_(_: Request) -> Response:
        loop = asyncio.get_running_loop()
        if on_quit is not None:
            loop.call_soon(on_quit)
        else:
            loop.call_soon(os.kill, os.getpid(), signal.SIGTERM)
        return JSONResponse({"status": "OK"}, headers=_HEADERS)

    async def actions(_: Request) -> Response:
        listed = {key: action.describe() for key, action in list_actions(registry).items()}
        return JSONResponse(listed, headers=_HEADERS)

    async def values(request: Request) -> Response:
        kind = (request.query_params.get("type") or "").strip()
        if not kind:
            return JSONResponse({"error": 'Query parameter "type" is required.'}, 400, headers=_HEADERS)
        if kind == "defaultModel":
            found = {"defaultModel": registry.default_model} if registry.default_model else {}
            return JSONResponse(found, headers=_HEADERS)
        return JSONResponse({}, headers=_HEADERS)  # turnkit registers no other values (middleware...)

    async def envs_(_: Request) -> Response:
        return JSONResponse(list(envs), headers=_HEADERS)

    async def notify(request: Request) -> Response:
        with contextlib.suppress(ValueError):
            body = await request.json()
            url = body.get("telemetryServerUrl") if isinstance(body, dict) else None
            if isinstance(url, str) and url and on_telemetry_server is not None:
                on_telemetry_server(url)
        return JSONResponse({}, headers=_HEADERS)

    async def cancel(request: Request) -> Response:
        try:
            trace_id = (await request.json()).get("traceId")
        except (ValueError, AttributeError):
            trace_id = None
        if not trace_id:
            return JSONResponse({"error": "traceId required"}, 400, headers=_HEADERS)
        task = active.get(trace_id)
        if task is None or task.done():
            return JSONResponse({"message": "Not found"}, 404, headers=_HEADERS)
        task.cancel()
        return JSONResponse({"message": "Cancelled"}, headers=_HEADERS)

    async def run_action(request: Request) -> Response:
        try:
            payload = await request.json()
        except ValueError:
            return JSONResponse({"error": "body must be JSON"}, 400, headers=_HEADERS)
        key = payload.get("key") if isinstance(payload, dict) else None
        action = list_actions(registry).get(key) if isinstance(key, str) else None
        if action is None:
            return JSONResponse({"error": f"Action not found: {key}"}, 404, headers=_HEADERS)
        stream = (
            request.query_params.get("stream") == "true"
            or request.headers.get("accept") == "text/event-stream"
        )
        run = _Run(action, payload, stream)
        task = asyncio.ensure_future(run.execute())
        trace_id, span_id = await run.ids
        active[trace_id] = task
        task.add_done_callback(lambda _: active.pop(trace_id, None))
        headers = {**_HEADERS, "X-Genkit-Trace-Id": trace_id}
        if span_id:
            headers["X-Genkit-Span-Id"] = span_id

        async def body() -> AsyncIterator[str]:
            try:
                while (line := await run.lines.get()) is not None:
                    yield line
            finally:
                if not task.done():  # the caller went away: stop the action
                    task.cancel()

        media = "text/plain" if stream else "application/json"
        return StreamingResponse(body(), media_type=media, headers=headers)

    return Starlette(
        routes=[
            Route("/api/__health", health, methods=["GET"]),
            Route("/api/__quitquitquit", quit_, methods=["GET", "POST"]),
            Route("/api/actions", actions, methods=["GET"]),
            Route("/api/values", values, methods=["GET"]),
            Route("/api/envs", envs_, methods=["GET"]),
            Route("/api/notify", notify, methods=["POST"]),
            Route("/api/runAction", run_action, methods=["POST"]),
            Route("/api/cancelAction", cancel, methods=["POST"]),
        ]
    )
