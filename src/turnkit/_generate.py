"""One generate call: build the request, call the model (through middleware), run the tool loop.

Requested tools run concurrently; their results go back to the model until it answers without tool
requests, `max_turns` model calls have asked for tools, or a tool interrupts. An interrupted call ends
with finish reason `interrupted`; `resume=` answers the interrupts (respond / restart) and goes on.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, cast

from pydantic import BaseModel, ValidationError
from typing_extensions import TypeVar

from turnkit._registry import Registry
from turnkit._tools import Interrupt, Tool, ToolContext, ToolInputError
from turnkit._tracing import model_span, tool_span, traced_generate
from turnkit.errors import TurnkitError
from turnkit.middleware import Middleware, MiddlewareChain
from turnkit.models import Model, ModelContext
from turnkit.types import (
    DocumentData,
    FinishReason,
    GenerationUsage,
    Message,
    ModelRequest,
    ModelResponse,
    ModelResponseChunk,
    OutputConfig,
    Part,
    Resume,
    ToolResponse,
)

__all__ = ["GenerateResponse", "GenerateStream", "OutputSpec", "generate", "to_messages", "to_parts"]

DEFAULT_MAX_TURNS = 5

PromptLike = str | Part | Sequence[str | Part]


@dataclass
class OutputSpec:
    """What structured output a call asks for: a JSON schema and, when given, the Pydantic model."""

    schema: dict[str, Any] | None = None
    model: type[BaseModel] | None = None
    format: str = "json"

    @classmethod
    def of(cls, output: Any) -> OutputSpec | None:
        """Read `output=`: a Pydantic model class, a JSON schema dict, an OutputSpec, or None."""
        if output is None or isinstance(output, OutputSpec):
            return output
        if isinstance(output, type) and issubclass(output, BaseModel):
            return cls(schema=output.model_json_schema(), model=output)
        if isinstance(output, dict):
            return cls(schema=output)
        raise TurnkitError(
            "INVALID_ARGUMENT", f"output must be a Pydantic model class or a JSON schema, not {output!r}"
        )

    def parse(self, text: str) -> Any:
        """Parse the model's text as JSON (fenced or bare) and validate it against the schema."""
        try:
            value = json.loads(_strip_fences(text))
        except ValueError as exc:
            raise TurnkitError("INVALID_ARGUMENT", f"model output is not valid JSON: {exc}") from exc
        if self.model is not None:
            try:
                return self.model.model_validate(value)
            except ValidationError as exc:
                raise TurnkitError(
                    "INVALID_ARGUMENT", f"model output does not match the schema: {exc}"
                ) from exc
        if self.schema is not None:
            _validate_json_schema(value, self.schema)
        return value


def _strip_fences(text: str) -> str:
    match = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    return (match.group(1) if match else text).strip()


def _validate_json_schema(value: Any, schema: dict[str, Any]) -> None:
    try:
        import jsonschema
    except ImportError:  # validation is best effort without the optional dependency
        return
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as exc:
        raise TurnkitError(
            "INVALID_ARGUMENT", f"model output does not match the schema: {exc.message}"
        ) from exc


# The type of `GenerateResponse.output`: the `output=` model class, else Any (JSON).
OutputT = TypeVar("OutputT", default=Any)


@dataclass
class GenerateResponse(Generic[OutputT]):
    """The result of `generate`: the final message, the full history, usage and structured output.

    Generic in the output type: `ai.generate(output=MyModel)` gives a `GenerateResponse[MyModel]`.
    """

    message: Message | None
    messages: list[Message]
    finish_reason: FinishReason
    finish_message: str | None = None
    usage: GenerationUsage = field(default_factory=GenerationUsage)
    request: ModelRequest | None = None
    output_spec: OutputSpec | None = None
    _output: Any = field(default=None, repr=False)
    _parsed: bool = field(default=False, repr=False)

    @property
    def text(self) -> str:
        """The text of the final message."""
        return self.message.text if self.message else ""

    @property
    def output(self) -> OutputT | None:
        """The structured output, parsed and validated (a model instance when `output=` was a model)."""
        if not self._parsed:
            if self.output_spec is None:
                data = [p.data for p in (self.message.content if self.message else []) if p.data is not None]
                self._output = data[0] if data else None
            else:
                self._output = self.output_spec.parse(self.text)
            self._parsed = True
        return cast("OutputT | None", self._output)

    @property
    def interrupts(self) -> list[Part]:
        """The tool requests that paused this call, waiting for respond or restart."""
        return self.message.interrupts if self.message else []

    @property
    def tool_requests(self) -> list[Part]:
        """The tool request parts of the final message."""
        return self.message.tool_requests if self.message else []


class GenerateStream(Generic[OutputT]):
    """A streaming generate call: iterate it for chunks, then await it (or `.response`) for the
    `GenerateResponse[OutputT]`, as an agent's streamed turn works.

    Also unpacks as `stream, response = ai.generate_stream(...)`.
    """

    def __init__(self, run: Callable[[Callable[[ModelResponseChunk], None]], Any]) -> None:
        self._queue: asyncio.Queue[ModelResponseChunk | None] = asyncio.Queue()
        self._task: asyncio.Task[GenerateResponse[OutputT]] = asyncio.ensure_future(self._drive(run))

    async def _drive(
        self, run: Callable[[Callable[[ModelResponseChunk], None]], Any]
    ) -> GenerateResponse[OutputT]:
        try:
            result: GenerateResponse[OutputT] = await run(self._queue.put_nowait)
            return result
        finally:
            self._queue.put_nowait(None)

    @property
    def stream(self) -> GenerateStream[OutputT]:
        """The chunk iterator (this object)."""
        return self

    @property
    def response(self) -> asyncio.Task[GenerateResponse[OutputT]]:
        """An awaitable of the final response; it raises the call's error, if any."""
        return self._task

    def __await__(self) -> Generator[Any, None, GenerateResponse[OutputT]]:
        return self._task.__await__()

    async def __aiter__(self) -> AsyncIterator[ModelResponseChunk]:
        while (chunk := await self._queue.get()) is not None:
            yield chunk
        if self._task.done() and not self._task.cancelled() and self._task.exception():
            raise self._task.exception()  # type: ignore[misc]

    def __iter__(self) -> Generator[Any, None, None]:
        yield self
        yield self._task


def to_parts(content: PromptLike, what: str = "prompt") -> list[Part]:
    """Normalise a string, a Part, or a list of them (parts may be wire dicts) into parts;
    INVALID_ARGUMENT naming `what` for anything else."""
    if isinstance(content, str):
        return [Part(text=content)]
    if isinstance(content, Part):
        return [content]
    if isinstance(content, Sequence) and not isinstance(content, bytes | bytearray):
        return [Part(text=c) if isinstance(c, str) else Part.from_wire(c) for c in content]
    if isinstance(content, Mapping):  # one part in its wire form
        return [Part.from_wire(content)]
    raise TurnkitError(
        "INVALID_ARGUMENT",
        f"{what} must be a string, a Part, or a list of parts, not {type(content).__name__}: {content!r:.80}",
    )


def to_messages(messages: Sequence[Message | dict[str, Any]] | None) -> list[Message]:
    """Normalise messages given as models or wire dicts."""
    if not messages:
        return []
    if set(map(type, messages)) == {Message}:  # the common case, checked in C: nothing to convert
        return list(messages)  # type: ignore[arg-type]
    return [Message.from_wire(m) for m in messages]


def _with_system(history: list[Message], system: PromptLike | None) -> list[Message]:
    if system is None:
        return history
    sys_msg = Message(role="system", content=to_parts(system, "system"))
    if history and history[0].role == "system":
        return [sys_msg, *history[1:]]
    return [sys_msg, *history]


def _output_instruction(spec: OutputSpec) -> Part:
    if spec.schema is None:
        return Part(text="Output should be in JSON format.\n", metadata={"purpose": "output"})
    schema = json.dumps(spec.schema, separators=(",", ":"))
    return Part(
        text=f"Output should be in JSON format and conform to the following schema:\n```\n{schema}\n```\n",
        metadata={"purpose": "output"},
    )


@traced_generate
async def generate(
    registry: Registry,
    *,
    model: str | Model | None,
    prompt: PromptLike | None = None,
    system: PromptLike | None = None,
    messages: Sequence[Message | dict[str, Any]] | None = None,
    tools: Sequence[str | Tool] | None = None,
    output: Any = None,
    config: Any = None,
    max_turns: int = DEFAULT_MAX_TURNS,
    resume: Resume | dict[str, Any] | None = None,
    docs: Sequence[DocumentData] | None = None,
    tool_choice: str | None = None,
    return_tool_requests: bool = False,
    use: Sequence[Middleware] = (),
    on_chunk: Callable[[ModelResponseChunk], None] | None = None,
    context: dict[str, Any] | None = None,
    model_context: ModelContext | None = None,
) -> GenerateResponse:
    """Run one generate call with its tool loop; see `Turnkit.generate` for the options."""
    if max_turns < 1:
        raise TurnkitError("INVALID_ARGUMENT", "max_turns must be at least 1")
    history = _with_system(to_messages(messages), system)
    if prompt is not None:
        history.append(Message(role="user", content=to_parts(prompt)))
    if not history:
        raise TurnkitError("INVALID_ARGUMENT", "generate needs a prompt or messages")
    resolved = _resolve_model(registry, model)
    tool_map = _resolve_tools(registry, tools or ())
    spec = OutputSpec.of(output)
    if spec is not None and not resolved.info.constrained:
        _add_output_instruction(history, spec)

    mctx = model_context or ModelContext(context=context)
    if on_chunk is None:
        on_chunk = mctx.on_chunk
    call: Any = resolved.__call__
    middleware = MiddlewareChain.build(registry, use, mctx, on_chunk)
    if middleware is not None:  # built once per call: its tools, and the model wrapped in its hooks
        tool_map = middleware.tools(tool_map)
        call = middleware.model_call(call)
    tctx = ToolContext(context=mctx.context, abort_signal=mctx.abort_signal)
    usage = GenerationUsage()
    index = 0  # index of the message being streamed, as in the chunks' `index`

    def sink(idx: int, role: str) -> Callable[[ModelResponseChunk], None] | None:
        if on_chunk is None:
            return None

        def send(chunk: ModelResponseChunk) -> None:
            if chunk.index is None or chunk.role is None:
                chunk = chunk.model_copy(update={"index": idx, "role": chunk.role or role})
            on_chunk(chunk)

        return send

    if resume is not None:
        outcome = await _resume(
            Resume.from_wire(resume), history, tool_map, tctx, _announcer(on_chunk, index)
        )
        if outcome is not None:  # a restarted tool interrupted again
            return GenerateResponse(outcome, history, FinishReason.INTERRUPTED, usage=usage, output_spec=spec)
        if on_chunk is not None:
            on_chunk(ModelResponseChunk(role="tool", index=index, content=history[-1].content))
        index += 1

    request = None
    turns = 0
    while True:
        if mctx.aborted:
            raise TurnkitError("CANCELLED", "generate was aborted")
        request = ModelRequest(
            messages=list(history),
            config=_config(config),
            tools=[t.definition for t in tool_map.values()] or None,
            tool_choice=tool_choice,  # type: ignore[arg-type]
            output=_output_config(spec, resolved),
            docs=list(docs) if docs else None,
        )
        with model_span(resolved.name, request) as traced:
            response: ModelResponse = await call(request, mctx.derive(sink(index, "model")))
            traced.finish_model(response)
        _add_usage(usage, response.usage)
        index += 1
        turns += 1
        msg = response.message or Message(role="model", content=[])
        requests = msg.tool_requests
        if not requests or return_tool_requests or response.finish_reason not in ("stop", "other", "unknown"):
            history.append(msg)
            finish = FinishReason(response.finish_reason)
            return GenerateResponse(msg, history, finish, response.finish_message, usage, request, spec)
        if turns >= max_turns + 1:
            raise TurnkitError(
                "RESOURCE_EXHAUSTED", f"exceeded max_turns ({max_turns}): the model kept requesting tools"
            )
        if mctx.aborted:
            raise TurnkitError("CANCELLED", "generate was aborted")
        results = await _run_tools(requests, tool_map, tctx, _announcer(on_chunk, index - 1))
        if mctx.aborted:  # a tool may have finished after the abort: do not go on
            raise TurnkitError("CANCELLED", "generate was aborted")
        if any(isinstance(r, Interrupt) for r in results):
            paused = _mark_interrupts(msg, requests, results)
            history.append(paused)
            return GenerateResponse(paused, history, FinishReason.INTERRUPTED, None, usage, request, spec)
        history.append(msg)
        tool_msg = Message(
            role="tool", content=[_response_part(p, out) for p, out in zip(requests, results, strict=True)]
        )
        history.append(tool_msg)
        if on_chunk is not None:
            on_chunk(ModelResponseChunk(role="tool", index=index, content=tool_msg.content))
        index += 1


def _resolve_model(registry: Registry, model: str | Model | None) -> Model:
    if isinstance(model, Model):
        return model
    if not model:
        raise TurnkitError("INVALID_ARGUMENT", "no model given and the app has no default model")
    found: Model = registry.lookup("model", model)
    return found


def _resolve_tools(registry: Registry, tools: Sequence[str | Tool]) -> dict[str, Tool]:
    out: dict[str, Tool] = {}
    for t in tools:
        tool = t if isinstance(t, Tool) else registry.lookup("tool", t)
        out[tool.name] = tool
    return out


def _config(config: Any) -> Any:
    if isinstance(config, BaseModel):
        return config.model_dump(mode="json", by_alias=True, exclude_none=True)
    return config


def _output_config(spec: OutputSpec | None, model: Model) -> OutputConfig | None:
    if spec is None:
        return None
    return OutputConfig(format=spec.format, schema=spec.schema, constrained=model.info.constrained or None)


def _add_output_instruction(history: list[Message], spec: OutputSpec) -> None:
    for i in range(len(history) - 1, -1, -1):
        if history[i].role == "user":
            msg = history[i]
            history[i] = Message(
                role="user", content=[*msg.content, _output_instruction(spec)], metadata=msg.metadata
            )
            return


def _add_usage(total: GenerationUsage, more: GenerationUsage | None) -> None:
    if more is None:
        return
    for name in ("input_tokens", "output_tokens", "total_tokens", "input_characters", "output_characters"):
        value = getattr(more, name)
        if value is not None:
            setattr(total, name, (getattr(total, name) or 0) + value)


# Streams one interrupted tool request (marked with metadata `interrupt`) the moment its tool
# interrupts, so a UI can ask for approval while other tools still run and before the call ends.
Announce = Callable[[Part], None]


def _announcer(on_chunk: Callable[[ModelResponseChunk], None] | None, index: int) -> Announce | None:
    """Announce interrupts as model chunks with the index of the model message that requested them."""
    if on_chunk is None:
        return None
    return lambda part: on_chunk(ModelResponseChunk(role="model", index=index, content=[part]))


async def _run_tool(
    part: Part, tools: dict[str, Tool], ctx: ToolContext, announce: Announce | None = None
) -> Any:
    req = part.tool_request
    assert req is not None
    tool = tools.get(req.name)
    if tool is None:
        # The model asked for a tool it was not given: tell it, as with bad input.
        return f"error: no tool named {req.name!r}; available: {', '.join(tools) or 'none'}"
    try:
        with tool_span(req.name, req.ref, req.input) as traced:
            output = await tool.run(req.input, ctx)
            traced.output(output)
        return output
    except Interrupt as intr:
        if announce is not None:
            announce(_interrupt_part(part, intr))
        return intr
    except ToolInputError as exc:
        return f"error: {exc.message}"
    except TurnkitError:
        raise
    except Exception as exc:
        raise TurnkitError("INTERNAL", f"tool {req.name!r} failed: {exc}", public=False) from exc


async def _run_tools(
    requests: list[Part], tools: dict[str, Tool], ctx: ToolContext, announce: Announce | None = None
) -> list[Any]:
    if len(requests) == 1:
        return [await _run_tool(requests[0], tools, ctx, announce)]
    tasks = [asyncio.ensure_future(_run_tool(p, tools, ctx, announce)) for p in requests]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        return [t.result() for t in tasks]  # raises the first failure
    finally:
        # A failure (or cancellation) stops the other tools, and they finish before the call ends.
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _response_part(request: Part, output: Any) -> Part:
    req = request.tool_request
    assert req is not None
    return Part(tool_response=ToolResponse(name=req.name, ref=req.ref, output=output))


def _interrupt_part(part: Part, intr: Interrupt) -> Part:
    """The tool request part marked as interrupted, with the data the tool gave the client."""
    return part.model_copy(update={"metadata": {**(part.metadata or {}), "interrupt": intr.data or True}})


def _mark_interrupts(msg: Message, requests: list[Part], results: list[Any]) -> Message:
    """The model message with each interrupted request marked and each finished one's output kept."""
    outcome = dict(zip(map(id, requests), results, strict=True))
    content: list[Part] = []
    for part in msg.content:
        if id(part) not in outcome:
            content.append(part)
            continue
        result = outcome[id(part)]
        if isinstance(result, Interrupt):
            content.append(_interrupt_part(part, result))
        else:
            content.append(
                part.model_copy(update={"metadata": {**(part.metadata or {}), "pendingOutput": result}})
            )
    return Message(role=msg.role, content=content, metadata=msg.metadata)


async def _resume(
    resume: Resume,
    history: list[Message],
    tools: dict[str, Tool],
    ctx: ToolContext,
    announce: Announce | None = None,
) -> Message | None:
    """Answer the interrupts of the last model message; append the tool message to `history`.

    Returns the re-marked model message when a restarted tool interrupts again, else None.
    """
    last = history[-1] if history else None
    if last is None or last.role != "model" or not last.tool_requests:
        raise TurnkitError(
            "INVALID_ARGUMENT", "nothing to resume: the last message has no pending tool requests"
        )
    requests = last.tool_requests
    respond = {
        (p.tool_response.name, p.tool_response.ref): p for p in resume.respond or () if p.tool_response
    }
    restart = {(p.tool_request.name, p.tool_request.ref): p for p in resume.restart or () if p.tool_request}
    if len(respond) != len(resume.respond or ()) or len(restart) != len(resume.restart or ()):
        raise TurnkitError(
            "INVALID_ARGUMENT",
            "resume entries must be toolResponse (respond) / toolRequest (restart) parts, one per tool request",
        )
    pending = {(p.tool_request.name, p.tool_request.ref): p for p in requests if p.tool_request}
    for key in [*respond, *restart]:
        if key not in pending or "interrupt" not in (pending[key].metadata or {}):
            raise TurnkitError(
                "INVALID_ARGUMENT", f"tool request {key[0]!r} (ref {key[1]!r}) not found in session history"
            )

    results: list[Any] = []
    for part in requests:
        req = part.tool_request
        assert req is not None
        key = (req.name, req.ref)
        meta = part.metadata or {}
        if key in respond:
            results.append(respond[key].tool_response.output)  # type: ignore[union-attr]
        elif key in restart:
            new = restart[key]
            if new.tool_request.input != req.input:  # type: ignore[union-attr]
                raise TurnkitError(
                    "INVALID_ARGUMENT", f"restart of tool {req.name!r} (ref {req.ref!r}) has modified inputs"
                )
            # A restart means "run it again, approved": Genkit's clients send no `resumed` with it.
            resumed = (new.metadata or {}).get("resumed", True)
            restarted = ToolContext(context=ctx.context, resumed=resumed, abort_signal=ctx.abort_signal)
            results.append(await _run_tool(part, tools, restarted, announce))
        elif "pendingOutput" in meta:
            results.append(meta["pendingOutput"])
        elif "interrupt" in meta:
            raise TurnkitError(
                "INVALID_ARGUMENT",
                f"interrupt of tool {req.name!r} (ref {req.ref!r}) has no respond or restart entry",
            )
        else:
            results.append(await _run_tool(part, tools, ctx, announce))
    if any(isinstance(r, Interrupt) for r in results):
        cleared = _clear_marks(last)
        again = _mark_interrupts(cleared, cleared.tool_requests, results)
        history[-1] = again
        return again
    history[-1] = _clear_marks(last)
    history.append(
        Message(
            role="tool", content=[_response_part(p, out) for p, out in zip(requests, results, strict=True)]
        )
    )
    return None


def _clear_marks(msg: Message) -> Message:
    """The model message without the interrupt bookkeeping, as it stays in history once answered."""
    content = []
    for part in msg.content:
        meta = part.metadata
        if part.tool_request is not None and meta and ("interrupt" in meta or "pendingOutput" in meta):
            rest = {k: v for k, v in meta.items() if k not in ("interrupt", "pendingOutput")}
            part = part.model_copy(update={"metadata": rest or None})
        content.append(part)
    return Message(role=msg.role, content=content, metadata=msg.metadata)
