"""Send finished (and, in real time, started) spans to Genkit's telemetry server.

The server (`$GENKIT_TELEMETRY_SERVER`, started by `genkit start`) stores traces posted to
`/api/traces` as Genkit's TraceData documents: `{traceId, displayName?, startTime?, endTime?,
spans: {spanId: SpanData}}` with times in milliseconds. Posting happens on a worker thread, so a
slow or absent server never holds up a turn. Needs the OpenTelemetry SDK (`turnkit[otel]`).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import urllib.request
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanKind, StatusCode

__all__ = ["TelemetryServerProcessor", "trace_document"]

log = logging.getLogger("turnkit.devui")

_POST_TIMEOUT = 10.0


def _ms(ns: int | None) -> float:
    return ns / 1_000_000 if ns else 0


def _jsonable(attributes: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (attributes or {}).items():
        out[str(key)] = list(value) if isinstance(value, tuple) else value
    return out


def _span_data(span: ReadableSpan) -> dict[str, Any]:
    ctx = span.context
    assert ctx is not None
    data: dict[str, Any] = {
        "spanId": format(ctx.span_id, "016x"),
        "traceId": format(ctx.trace_id, "032x"),
        "startTime": _ms(span.start_time),
        "endTime": _ms(span.end_time),
        "attributes": _jsonable(span.attributes),
        "displayName": span.name,
        "instrumentationLibrary": {
            "name": span.instrumentation_scope.name if span.instrumentation_scope else "turnkit",
            "version": (span.instrumentation_scope.version if span.instrumentation_scope else None) or "",
        },
        "spanKind": SpanKind(span.kind).name,
    }
    if span.parent is not None:
        data["parentSpanId"] = format(span.parent.span_id, "016x")
    if span.links:
        data["links"] = [
            {
                "context": {
                    "traceId": format(link.context.trace_id, "032x"),
                    "spanId": format(link.context.span_id, "016x"),
                    "isRemote": link.context.is_remote,
                    "traceFlags": int(link.context.trace_flags),
                },
                "attributes": _jsonable(link.attributes),
            }
            for link in span.links
        ]
    status = span.status
    if status is not None and status.status_code != StatusCode.UNSET:
        data["status"] = {"code": status.status_code.value, "message": status.description or ""}
    events = [
        {
            "time": _ms(event.timestamp),
            "annotation": {"description": event.name, "attributes": _jsonable(event.attributes)},
        }
        for event in span.events
    ]
    if events:
        data["timeEvents"] = {"timeEvent": events}
    return data


def trace_document(spans: list[ReadableSpan]) -> dict[str, Any]:
    """One TraceData document for spans of the same trace."""
    doc: dict[str, Any] = {"traceId": "", "spans": {}}
    for span in spans:
        data = _span_data(span)
        doc["traceId"] = data["traceId"]
        doc["spans"][data["spanId"]] = data
        if span.parent is None:
            doc["displayName"] = span.name
            doc["startTime"] = data["startTime"]
            doc["endTime"] = data["endTime"]
    return doc


def _is_prompt_preview(span: ReadableSpan) -> bool:
    """A prompt render run by the UI at each keystroke: left out of the trace list, as Genkit does."""
    return (span.attributes or {}).get("genkit:metadata:subtype") == "prompt"


class TelemetryServerProcessor(SpanProcessor):
    """Posts each span to `<server>/api/traces` when it ends (and when it starts, if `realtime`)."""

    def __init__(self, server_url: str, *, realtime: bool = False) -> None:
        self.url = server_url.rstrip("/") + "/api/traces"
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"GENKIT_TELEMETRY_SERVER must be an http(s) URL, not {server_url!r}")
        self.realtime = realtime
        self._queue: queue.Queue[bytes | None] = queue.Queue()
        self._failed = False
        self._worker = threading.Thread(target=self._post_all, name="turnkit-trace-export", daemon=True)
        self._worker.start()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if self.realtime and not _is_prompt_preview(span):
            self._queue.put(json.dumps(trace_document([span])).encode())

    def on_end(self, span: ReadableSpan) -> None:
        if not _is_prompt_preview(span):
            self._queue.put(json.dumps(trace_document([span])).encode())

    def _post_all(self) -> None:
        while (body := self._queue.get()) is not None:
            try:
                request = urllib.request.Request(
                    self.url, data=body, headers={"Content-Type": "application/json"}, method="POST"
                )
                with urllib.request.urlopen(request, timeout=_POST_TIMEOUT) as response:
                    response.read()
                self._failed = False
            except Exception as exc:  # a down server is one warning, not one per span
                if not self._failed:
                    log.warning("could not send a trace to %s: %s", self.url, exc)
                self._failed = True
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        done = threading.Event()

        def wait() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=wait, daemon=True).start()
        return done.wait(timeout_millis / 1000)

    def shutdown(self) -> None:
        self.force_flush(2000)
        self._queue.put(None)
