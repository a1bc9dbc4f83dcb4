"""OpenTelemetry spans for agent turns, generate calls, model calls and tool calls.

Spans go through `opentelemetry-api` only. Without an SDK (no tracer provider set) or with tracing
turned off, every helper here returns a shared no-op scope after one cheap check, so an untraced
turn pays almost nothing.

A turn's tree: `invoke_agent <agent>` (`runTurn-<n>` in a Developer UI run) -> `generate` ->
`chat <model>` per model call and `execute_tool <tool>` per tool call (an agent called from a tool
nests under that tool's span). Attributes follow the OpenTelemetry GenAI semantic conventions (`gen_ai.*`) and carry the
`genkit:*` attributes Genkit's Developer UI reads (name, type, path, input, output, state).

Message contents (`genkit:input` / `genkit:output`) are recorded only when content recording is
on: by default in development (`GENKIT_ENV=dev`), off otherwise, because traces often leave the
trust boundary. `TURNKIT_TRACE_CONTENT=1|0` or `configure(record_content=...)` decide it. With
it off, a failed span keeps the exception's type and status but not its message or stack trace.
`TURNKIT_TRACING=off` or `configure(enabled=False)` turns turnkit's spans off altogether.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from functools import wraps
from typing import Any, Final, ParamSpec, TypeVar
from urllib.parse import quote

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind, StatusCode, Tracer, TracerProvider

from turnkit._tools import Interrupt
from turnkit.errors import TurnkitError
from turnkit.types import GenerationUsage, ModelRequest, ModelResponse, WireModel

__all__ = [
    "CONTENT_ENV",
    "TRACING_ENV",
    "Attr",
    "TurnTrace",
    "add_usage",
    "configure",
    "content_recording",
    "generate_span",
    "model_span",
    "reset_configuration",
    "root_span",
    "tool_span",
    "traced_generate",
    "tracing_active",
]

CONTENT_ENV: Final = "TURNKIT_TRACE_CONTENT"
TRACING_ENV: Final = "TURNKIT_TRACING"
_INSTRUMENTATION: Final = "turnkit"
_FALSE: Final = frozenset({"0", "false", "off", "no"})


class Attr:
    """Span attribute names: OpenTelemetry GenAI conventions, Genkit's, and turnkit's own."""

    OPERATION = "gen_ai.operation.name"
    PROVIDER = "gen_ai.provider.name"
    REQUEST_MODEL = "gen_ai.request.model"
    REQUEST_TEMPERATURE = "gen_ai.request.temperature"
    REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
    FINISH_REASONS = "gen_ai.response.finish_reasons"
    INPUT_TOKENS = "gen_ai.usage.input_tokens"
    OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
    TOOL_NAME = "gen_ai.tool.name"
    TOOL_CALL_ID = "gen_ai.tool.call.id"
    AGENT_NAME = "gen_ai.agent.name"
    CONVERSATION_ID = "gen_ai.conversation.id"
    ERROR_TYPE = "error.type"

    GENKIT_NAME = "genkit:name"
    GENKIT_TYPE = "genkit:type"
    GENKIT_SUBTYPE = "genkit:metadata:subtype"
    GENKIT_PATH = "genkit:path"
    GENKIT_QUALIFIED_PATH = "genkit:qualifiedPath"
    GENKIT_INPUT = "genkit:input"
    GENKIT_OUTPUT = "genkit:output"
    GENKIT_STATE = "genkit:state"
    GENKIT_ERROR = "genkit:error"
    GENKIT_IS_ROOT = "genkit:isRoot"

    SESSION_ID = "turnkit.session.id"
    SNAPSHOT_ID = "turnkit.snapshot.id"
    PARENT_SNAPSHOT_ID = "turnkit.snapshot.parent_id"
    TURN_INDEX = "turnkit.turn.index"
    TURN_FINISH_REASON = "turnkit.turn.finish_reason"
    TURN_DETACHED = "turnkit.turn.detached"
    TOOL_INTERRUPTED = "turnkit.tool.interrupted"
    CANCELLED = "turnkit.cancelled"


class _Settings:
    """What `configure` sets; None means "decide from the environment"."""

    enabled: bool = os.environ.get(TRACING_ENV, "").strip().lower() not in _FALSE
    record_content: bool | None = None
    provider: TracerProvider | None = None


_tracers: dict[int, Tracer] = {}
_UNKNOWN: Final = object()
# The `genkit:path` of the current span, so children can build theirs (Genkit's path format).
_path: ContextVar[str] = ContextVar("turnkit_trace_path", default="")
# The running turn; its generate calls add their token usage to it.
_turn: ContextVar[TurnTrace | None] = ContextVar("turnkit_turn", default=None)


def configure(
    *,
    enabled: bool | None = None,
    record_content: bool | None = None,
    tracer_provider: TracerProvider | None = None,
) -> None:
    """Set how turnkit traces; an argument left out keeps its current setting.

    `enabled=False` stops turnkit's spans. `record_content` records message contents and tool
    arguments/results on spans (default: only under `GENKIT_ENV=dev`). `tracer_provider` uses
    that provider instead of OpenTelemetry's global one.
    """
    if enabled is not None:
        _Settings.enabled = enabled
    if record_content is not None:
        _Settings.record_content = record_content
    if tracer_provider is not None:
        _Settings.provider = tracer_provider
        _tracers.clear()


def reset_configuration() -> None:
    """Forget what `configure` set: back to the environment's settings and the global provider."""
    _Settings.enabled = os.environ.get(TRACING_ENV, "").strip().lower() not in _FALSE
    _Settings.record_content = None
    _Settings.provider = None
    _tracers.clear()


def tracing_active() -> bool:
    """True when spans would be recorded: tracing enabled and a real tracer provider set."""
    if not _Settings.enabled:
        return False
    if _Settings.provider is not None:
        return True
    # Called several times per turn, so the common "no SDK" answer is kept cheap: until a global
    # provider is set, opentelemetry-api keeps None here (read through its public getter otherwise).
    provider = getattr(trace, "_TRACER_PROVIDER", _UNKNOWN)
    if provider is None:
        return False
    if provider is _UNKNOWN:
        provider = trace.get_tracer_provider()
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def content_recording() -> bool:
    """Whether spans carry message contents (see the module docstring)."""
    if _Settings.record_content is not None:
        return _Settings.record_content
    env = os.environ.get(CONTENT_ENV)
    if env is not None and env.strip():
        return env.strip().lower() not in _FALSE
    return os.environ.get("GENKIT_ENV") == "dev"


def _tracer() -> Tracer:
    provider = _Settings.provider or trace.get_tracer_provider()
    found = _tracers.get(id(provider))
    if found is None:
        found = _tracers[id(provider)] = provider.get_tracer(_INSTRUMENTATION, "0.1.0")
    return found


def _json(value: Any) -> str:
    if isinstance(value, WireModel):
        return value.to_json()
    try:
        return json.dumps(value, default=_fallback)
    except (TypeError, ValueError):
        return json.dumps(str(value))


def _fallback(value: Any) -> Any:
    if isinstance(value, WireModel):
        return value.to_wire()
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    return str(value)


def _child_path(name: str, type_: str, subtype: str | None) -> str:
    segment = quote(name, safe="")
    segment = f"{segment},t:{type_}"
    if subtype:
        segment = f"{segment},s:{subtype}"
    return f"{_path.get()}/{{{segment}}}"


def add_usage(total: GenerationUsage, more: GenerationUsage | None) -> None:
    """Add `more`'s counts into `total` (fields absent from both stay absent)."""
    if more is None:
        return
    for name in ("input_tokens", "output_tokens", "total_tokens", "input_characters", "output_characters"):
        value = getattr(more, name)
        if value is not None:
            setattr(total, name, (getattr(total, name) or 0) + value)


def _set_usage(span: Span, usage: GenerationUsage | None) -> None:
    if usage is None:
        return
    if usage.input_tokens is not None:
        span.set_attribute(Attr.INPUT_TOKENS, int(usage.input_tokens))
    if usage.output_tokens is not None:
        span.set_attribute(Attr.OUTPUT_TOKENS, int(usage.output_tokens))


def _record_failure(span: Span, exc: BaseException) -> None:
    """Mark a span failed by `exc`; an interrupt or a cancellation is not a failure."""
    if isinstance(exc, Interrupt):
        span.set_attribute(Attr.TOOL_INTERRUPTED, True)
        if exc.data is not None and content_recording():
            span.set_attribute("genkit:metadata:interrupt", _json(exc.data))
        span.set_attribute(Attr.GENKIT_STATE, "success")
        return
    if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt):
        span.set_attribute(Attr.CANCELLED, True)
        return
    _mark_error(span, exc)


def _mark_error(span: Span, exc: BaseException) -> None:
    """Fail the span with `exc`. Its message and stack trace go on the span only when content is
    recorded: an error's text often quotes what the model or a tool was given."""
    error_type = exc.status if isinstance(exc, TurnkitError) else type(exc).__name__
    span.set_attribute(Attr.GENKIT_STATE, "error")
    span.set_attribute(Attr.ERROR_TYPE, error_type)
    if content_recording():
        message = exc.message if isinstance(exc, TurnkitError) else str(exc)
        span.set_attribute(Attr.GENKIT_ERROR, message)
        span.set_status(StatusCode.ERROR, message)
        span.record_exception(exc)
        return
    span.set_attribute(Attr.GENKIT_ERROR, error_type)
    span.set_status(StatusCode.ERROR, error_type)
    # The exception event as `record_exception` writes it, less its message and stack trace.
    span.add_event("exception", {"exception.type": type(exc).__name__, "exception.escaped": False})


class Scope:
    """A span made current for a `with` block; the shared no-op scope has no span.

    On exit it records the outcome (success, error with the exception, interrupt, cancellation)
    and ends the span. `output` and `finish_*` add what is known only at the end.
    """

    __slots__ = ("_ctx_token", "_path", "_path_token", "span")

    def __init__(self, span: Span | None, path: str = "") -> None:
        self.span = span
        self._path = path
        self._ctx_token: object = None
        self._path_token: Any = None

    def __enter__(self) -> Scope:
        if self.span is not None:
            self._ctx_token = otel_context.attach(trace.set_span_in_context(self.span))
            self._path_token = _path.set(self._path)
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        span = self.span
        if span is None:
            return
        try:
            if exc is not None:
                _record_failure(span, exc)
            elif Attr.GENKIT_STATE not in (getattr(span, "attributes", None) or {}):
                span.set_attribute(Attr.GENKIT_STATE, "success")
        finally:
            _path.reset(self._path_token)
            otel_context.detach(self._ctx_token)  # type: ignore[arg-type]
            span.end()

    def output(self, value: Any) -> None:
        """Record `value` as the span's output (when content recording is on)."""
        if self.span is not None and content_recording():
            self.span.set_attribute(Attr.GENKIT_OUTPUT, _json(value))

    def finish_model(self, response: ModelResponse) -> None:
        """Record a model call's finish reason, token usage and (content recording) response."""
        span = self.span
        if span is None:
            return
        if response.finish_reason:
            span.set_attribute(Attr.FINISH_REASONS, [str(response.finish_reason)])
        _set_usage(span, response.usage)
        self.output(response)

    def finish_generate(self, finish_reason: str, usage: GenerationUsage, message: Any) -> None:
        """Record a generate call's finish reason, summed usage and (content recording) message."""
        span = self.span
        if span is None:
            return
        span.set_attribute(Attr.FINISH_REASONS, [str(finish_reason)])
        _set_usage(span, usage)
        if message is not None:
            self.output(message)


_NOOP: Final = Scope(None)


def _start(
    name: str,
    attributes: dict[str, Any],
    *,
    genkit_name: str,
    type_: str,
    subtype: str | None,
    input_: Any = None,
    kind: SpanKind = SpanKind.INTERNAL,
) -> Scope:
    path = _child_path(genkit_name, type_, subtype)
    attributes[Attr.GENKIT_NAME] = genkit_name
    attributes[Attr.GENKIT_TYPE] = type_
    attributes[Attr.GENKIT_PATH] = path
    attributes[Attr.GENKIT_QUALIFIED_PATH] = path
    if subtype:
        attributes[Attr.GENKIT_SUBTYPE] = subtype
    if not trace.get_current_span().get_span_context().is_valid:
        attributes[Attr.GENKIT_IS_ROOT] = True
    if input_ is not None and content_recording():
        attributes[Attr.GENKIT_INPUT] = _json(input_)
    span = _tracer().start_span(name, kind=kind, attributes=attributes)
    return Scope(span, path)


def model_span(model: str, request: ModelRequest) -> Scope:
    """The span of one model call (`chat <model>`): enter it around the call, then `finish_model`."""
    if not tracing_active():
        return _NOOP
    attrs: dict[str, Any] = {Attr.OPERATION: "chat", Attr.REQUEST_MODEL: model}
    if "/" in model:
        attrs[Attr.PROVIDER] = model.split("/", 1)[0]
    config = request.config
    if isinstance(config, dict):
        if isinstance(config.get("temperature"), int | float):
            attrs[Attr.REQUEST_TEMPERATURE] = config["temperature"]
        if isinstance(config.get("maxOutputTokens"), int):
            attrs[Attr.REQUEST_MAX_TOKENS] = config["maxOutputTokens"]
    return _start(f"chat {model}", attrs, genkit_name=model, type_="action", subtype="model", input_=request)


def tool_span(tool: str, call_id: str | None, tool_input: Any) -> Scope:
    """The span of one tool call (`execute_tool <tool>`); an interrupt marks it, not fails it."""
    if not tracing_active():
        return _NOOP
    attrs: dict[str, Any] = {Attr.OPERATION: "execute_tool", Attr.TOOL_NAME: tool}
    if call_id:
        attrs[Attr.TOOL_CALL_ID] = call_id
    return _start(
        f"execute_tool {tool}", attrs, genkit_name=tool, type_="action", subtype="tool", input_=tool_input
    )


def generate_span(model: str | None, input_: Any) -> Scope:
    """The span of one generate call with its tool loop (`generate`, Genkit's util span)."""
    if not tracing_active():
        return _NOOP
    attrs: dict[str, Any] = {}
    if model:
        attrs[Attr.REQUEST_MODEL] = model
    return _start("generate", attrs, genkit_name="generate", type_="util", subtype=None, input_=input_)


def root_span(name: str, subtype: str, input_: Any, attributes: dict[str, Any] | None = None) -> Scope:
    """A Genkit action span for a run started from the Developer UI (a model, tool, prompt...)."""
    if not tracing_active():
        return _NOOP
    return _start(
        name, dict(attributes or {}), genkit_name=name, type_="action", subtype=subtype, input_=input_
    )


P = ParamSpec("P")
R = TypeVar("R")


def traced_generate(fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Wrap the generate function: a `generate` span, and its usage added to the running turn's."""

    @wraps(fn)
    async def run(*args: P.args, **kwargs: P.kwargs) -> R:
        turn = _turn.get()
        if not tracing_active():
            result = await fn(*args, **kwargs)
            if turn is not None:
                turn.add(getattr(result, "usage", None))
            return result
        model = kwargs.get("model")
        name = model if isinstance(model, str) else getattr(model, "name", None)
        given = {k: kwargs[k] for k in ("prompt", "system", "messages") if kwargs.get(k) is not None}
        with generate_span(name, given or None) as scope:
            result = await fn(*args, **kwargs)
            usage = getattr(result, "usage", None) or GenerationUsage()
            if turn is not None:
                turn.add(usage)
            scope.finish_generate(
                str(getattr(result, "finish_reason", "")), usage, getattr(result, "message", None)
            )
            return result

    return run


class TurnTrace:
    """One agent turn's span and token usage.

    Started before the turn's handler task is created and made current (`active`) while it is, so
    the handler's generate, model and tool spans nest under it and its usage is summed here; ended
    once the turn's outcome is known. A turn that detaches from the start gets a trace of its own,
    linked to the request that started it, so that request's trace can end while the turn runs on.
    The span is `invoke_agent <agent>`, or `runTurn-<n>` (Genkit's flow step) directly under the
    agent's own action span, as in a Developer UI run.
    """

    __slots__ = ("_ctx_token", "_path", "_path_token", "_usage", "_usage_token", "span")

    def __init__(self, span: Span | None, path: str) -> None:
        self.span = span
        self._path = path
        self._usage: GenerationUsage | None = None
        self._ctx_token: object = None
        self._path_token: Any = None
        self._usage_token: Any = None

    @property
    def usage(self) -> GenerationUsage:
        """The token usage summed so far over the turn's generate calls."""
        if self._usage is None:
            self._usage = GenerationUsage()
        return self._usage

    def add(self, more: GenerationUsage | None) -> None:
        """Add a generate call's usage to the turn's."""
        if more is not None and more.model_fields_set:
            add_usage(self.usage, more)

    @classmethod
    def start(
        cls,
        agent: str,
        *,
        session_id: str | None,
        snapshot_id: str | None,
        parent_snapshot_id: str | None,
        turn_index: int,
        turn_input: Any,
        detached: bool = False,
    ) -> TurnTrace:
        """Start the span of a turn (or only its usage counter when tracing is off)."""
        if not tracing_active():
            return cls(None, "")
        attrs: dict[str, Any] = {
            Attr.OPERATION: "invoke_agent",
            Attr.AGENT_NAME: agent,
            Attr.TURN_INDEX: turn_index,
            Attr.GENKIT_NAME: agent,
            Attr.GENKIT_TYPE: "action",
            Attr.GENKIT_SUBTYPE: "agent",
        }
        if session_id:
            attrs[Attr.SESSION_ID] = session_id
            attrs[Attr.CONVERSATION_ID] = session_id
        if snapshot_id:
            attrs[Attr.SNAPSHOT_ID] = snapshot_id
        if parent_snapshot_id:
            attrs[Attr.PARENT_SNAPSHOT_ID] = parent_snapshot_id
        if turn_input is not None and content_recording():
            attrs[Attr.GENKIT_INPUT] = _json(turn_input)
        requester = trace.get_current_span().get_span_context()
        links: list[Link] = []
        parent: otel_context.Context | None = None
        if detached:
            attrs[Attr.TURN_DETACHED] = True
            parent = otel_context.Context()  # a new trace, linked below to the request
            if requester.is_valid:
                links.append(Link(requester, {"turnkit.link": "started_by"}))
        outer = _path.get() if not detached else ""
        own_action = "/{" + quote(agent, safe="") + ",t:action,s:agent}"
        name = f"invoke_agent {agent}"
        if outer.endswith(own_action):
            # Run as its own action (the Developer UI's runAction opened the agent's span): named as
            # Genkit names a turn under its agent action, so the trace holds one agent-named span.
            name = f"runTurn-{turn_index + 1}"
            attrs[Attr.GENKIT_NAME] = name
            attrs[Attr.GENKIT_TYPE] = "flowStep"
            del attrs[Attr.GENKIT_SUBTYPE]
            path = f"{outer}/{{{name},t:flowStep}}"
        else:
            path = outer + own_action
        attrs[Attr.GENKIT_PATH] = path
        attrs[Attr.GENKIT_QUALIFIED_PATH] = path
        if detached or not requester.is_valid:
            attrs[Attr.GENKIT_IS_ROOT] = True
        span = _tracer().start_span(name, context=parent, attributes=attrs, links=links)
        return cls(span, path)

    def active(self) -> TurnTrace:
        """Make the turn current for the tasks created in a `with` block (they copy the context)."""
        return self

    def __enter__(self) -> TurnTrace:
        self._usage_token = _turn.set(self)
        if self.span is not None:
            self._ctx_token = otel_context.attach(trace.set_span_in_context(self.span))
            self._path_token = _path.set(self._path)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.span is not None:
            _path.reset(self._path_token)
            otel_context.detach(self._ctx_token)  # type: ignore[arg-type]
        _turn.reset(self._usage_token)

    def detached(self) -> None:
        """Note that the client detached while the turn ran (the runtime calls it as it detaches)."""
        if self.span is not None:
            self.span.set_attribute(Attr.TURN_DETACHED, True)
            self.span.add_event("detached")

    def end_with(self, outcome: Any, finish_reason: str | None) -> GenerationUsage | None:
        """End the span from a turn's outcome: the handler's result, or what its ending raised (an
        error fails the span, a cancellation marks it). Return the turn's usage."""
        if isinstance(outcome, asyncio.CancelledError | KeyboardInterrupt):
            self.end(finish_reason=None, cancelled=True)
        else:
            error = outcome if isinstance(outcome, BaseException) else None
            self.end(finish_reason=finish_reason, error=error, output=getattr(outcome, "message", None))
        return self._usage

    def end(
        self,
        *,
        finish_reason: str | None,
        error: BaseException | None = None,
        output: Any = None,
        cancelled: bool = False,
    ) -> None:
        """End the span with the turn's outcome (idempotent)."""
        span = self.span
        if span is None:
            return
        self.span = None
        try:
            if finish_reason:
                span.set_attribute(Attr.TURN_FINISH_REASON, str(finish_reason))
                span.set_attribute(Attr.FINISH_REASONS, [str(finish_reason)])
            _set_usage(span, self._usage)
            if cancelled:
                span.set_attribute(Attr.CANCELLED, True)
            elif error is not None:
                _mark_error(span, error)
            else:
                span.set_attribute(Attr.GENKIT_STATE, "success")
                if output is not None and content_recording():
                    span.set_attribute(Attr.GENKIT_OUTPUT, _json(output))
        finally:
            span.end()


def current_trace_ids() -> tuple[str, str] | None:
    """The (trace id, span id) of the current span as hex, or None when there is none."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
