"""Tracing settings: turnkit's OpenTelemetry spans for turns, generate, model and tool calls.

turnkit records spans through `opentelemetry-api`; install an SDK (`pip install 'turnkit[otel]'`) and
set a tracer provider to export them (README, "Tracing and the Developer UI"). Message contents are
recorded only in development (`GENKIT_ENV=dev`) unless `TURNKIT_TRACE_CONTENT` or `configure` says
otherwise; `TURNKIT_TRACING=off` turns turnkit's spans off. `Attr` names the span attributes.
"""

from turnkit._tracing import CONTENT_ENV, TRACING_ENV, Attr, configure, content_recording, tracing_active

__all__ = ["CONTENT_ENV", "TRACING_ENV", "Attr", "configure", "content_recording", "tracing_active"]
