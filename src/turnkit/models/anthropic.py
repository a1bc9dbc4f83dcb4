"""Claude through the official `anthropic` SDK (install the `anthropic` extra).

`Anthropic()` serves any `anthropic/<model>` name (key from `api_key=` or `ANTHROPIC_API_KEY`; the
SDK's `ANTHROPIC_BASE_URL` points it at another server). Request config takes Genkit's keys
(`maxOutputTokens`, `temperature`, `topP`, `topK`, `stopSequences`), `thinking` as the API spells it
or `thinkingBudget` as a shortcut, `version` to pick another model id, and passes anything else
through in the request body.

Thinking blocks come back as reasoning parts with their signature in the part's metadata, and are
sent back unchanged on the next call, as the API requires during a tool loop. Structured output
uses a tool the model is made to call, whose input is the JSON answer.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import os
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from turnkit.errors import TurnkitError
from turnkit.models import ModelContext, ModelInfo
from turnkit.models._errors import http_error, transport_error
from turnkit.models._support import (
    Abortable,
    PrefixedModels,
    data_url,
    forced_tool_loops,
    json_text,
    missing_sdk,
    parse_json,
    until_aborted,
    wants_json,
)
from turnkit.types import (
    FinishReasonName,
    GenerationUsage,
    Message,
    ModelRequest,
    ModelResponse,
    ModelResponseChunk,
    Part,
    ToolDefinition,
    ToolRequest,
)

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "MODEL_INFO",
    "OUTPUT_TOOL",
    "Anthropic",
    "AnthropicModel",
    "finish_reason",
    "to_anthropic_messages",
    "to_anthropic_tools",
    "to_turnkit_error",
]

MODEL_INFO = ModelInfo(
    label="Anthropic Claude",
    multiturn=True,
    tools=True,
    system_role=True,
    output=["text", "json"],
    constrained=True,
)
OUTPUT_TOOL = "json_output"  # the tool whose input is the structured answer
DEFAULT_MAX_TOKENS = 4096  # the API requires max_tokens; Genkit's `maxOutputTokens` overrides it

_FINISH: dict[str, FinishReasonName] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "refusal": "blocked",
    "pause_turn": "other",
}
_CONFIG_KEYS = {
    "maxOutputTokens": "max_tokens",
    "stopSequences": "stop_sequences",
    "topP": "top_p",
    "topK": "top_k",
}
# Error types the API sends inside a stream (after a 200), as the HTTP codes they stand for.
_ERROR_TYPES = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
    "timeout_error": 504,
}
_SIGNATURE = "signature"  # part metadata: the thinking block's signature
_REDACTED = "redactedThinking"  # part metadata: a redacted thinking block's opaque data


# --- request mapping -----------------------------------------------------------------------------


def _media_block(part: Part) -> dict[str, Any]:
    assert part.media is not None
    inline = data_url(part.media)
    kind = "document" if (part.media.content_type or "").endswith("pdf") else "image"
    if inline is not None:
        mime, data = inline
        kind = "document" if mime.endswith("pdf") else "image"
        source = {"type": "base64", "media_type": mime, "data": base64.b64encode(data).decode("ascii")}
        return {"type": kind, "source": source}
    return {"type": kind, "source": {"type": "url", "url": part.media.url}}


def _block(part: Part) -> dict[str, Any] | None:
    meta = part.metadata or {}
    if part.text is not None:
        return {"type": "text", "text": part.text} if part.text else None  # the API rejects empty text
    if part.reasoning is not None:
        if _REDACTED in meta:
            return {"type": "redacted_thinking", "data": meta[_REDACTED]}
        if _SIGNATURE not in meta:
            return None  # thinking from another provider cannot be verified: leave it out
        return {"type": "thinking", "thinking": part.reasoning, "signature": meta[_SIGNATURE]}
    if part.media is not None:
        return _media_block(part)
    if part.tool_request is not None:
        req = part.tool_request
        tool_input = req.input if isinstance(req.input, dict) else {}
        return {"type": "tool_use", "id": req.ref or req.name, "name": req.name, "input": tool_input}
    if part.tool_response is not None:
        res = part.tool_response
        return {"type": "tool_result", "tool_use_id": res.ref or res.name, "content": json_text(res.output)}
    if part.data is not None:
        return {"type": "text", "text": json_text(part.data)}
    return None


def to_anthropic_messages(messages: Sequence[Message]) -> tuple[list[dict[str, Any]], str | None]:
    """Turnkit messages as Anthropic messages and a system prompt.

    Tool results travel in a user turn; consecutive turns of one role are joined, since the API
    wants user and assistant turns to alternate.
    """
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            system.append(m.text)
            continue
        role = "assistant" if m.role == "model" else "user"
        blocks = [b for b in (_block(p) for p in m.content) if b is not None]
        if not blocks:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return out, "\n\n".join(system) if system else None


def to_anthropic_tools(tools: Sequence[ToolDefinition]) -> list[dict[str, Any]]:
    """Turnkit tool definitions as Anthropic tools (the input schema must describe an object)."""
    return [
        {
            "name": t.name,
            "description": t.description,
            "input_schema": t.input_schema or {"type": "object", "properties": {}},
        }
        for t in tools
    ]


def _output_tool(schema: dict[str, Any] | None) -> tuple[dict[str, Any], bool]:
    """The structured-output tool, and whether the answer is wrapped (non-object schemas are)."""
    wrapped = bool(schema) and schema.get("type") != "object"  # type: ignore[union-attr]
    if not schema:
        schema = {"type": "object"}
    elif wrapped:
        schema = {"type": "object", "properties": {"value": schema}, "required": ["value"]}
    tool = {"name": OUTPUT_TOOL, "description": "Give the final answer in this form.", "input_schema": schema}
    return tool, wrapped


def _named_parameters() -> set[str]:
    from anthropic.resources.messages import AsyncMessages

    params = set(inspect.signature(AsyncMessages.create).parameters)
    return params - {"self", "messages", "model", "stream", "system", "tools", "tool_choice"}


def _config(config: Any, default_max_tokens: int) -> tuple[dict[str, Any], dict[str, Any], str | None]:
    """Request config as (named SDK arguments, extra body fields, model version)."""
    if isinstance(config, BaseModel):
        config = config.model_dump(by_alias=True, exclude_none=True)
    named: dict[str, Any] = {"max_tokens": default_max_tokens}
    extra: dict[str, Any] = {}
    version = None
    if not isinstance(config, Mapping):
        return named, extra, version
    known = _named_parameters()
    for key, value in config.items():
        if value is None:
            continue
        name = _CONFIG_KEYS.get(str(key), str(key))
        if name == "version":
            version = str(value)
        elif name == "thinkingBudget":  # shortcut for thinking={"type": "enabled", ...}
            named["thinking"] = {"type": "enabled", "budget_tokens": value}
        elif name in known:
            named[name] = value
        else:
            extra[name] = value  # temperature, top_p, top_k and newer API fields travel in the body
    return named, extra, version


# --- response mapping ----------------------------------------------------------------------------


def finish_reason(reason: str | None) -> FinishReasonName:
    """An Anthropic stop reason as a turnkit finish reason."""
    if reason is None:
        return "unknown"
    return _FINISH.get(reason, "other")


def _tool_part(block_id: str, name: str, tool_input: Any, wrapped: bool) -> Part:
    if name == OUTPUT_TOOL:  # the structured answer, as JSON text
        value = tool_input.get("value") if wrapped and isinstance(tool_input, dict) else tool_input
        return Part(text=json.dumps(value))
    return Part(tool_request=ToolRequest(name=name, ref=block_id, input=tool_input))


def _part(block: Any, wrapped: bool) -> Part | None:
    kind = block.type
    if kind == "text":
        return Part(text=block.text) if block.text else None
    if kind == "thinking":
        return Part(reasoning=block.thinking, metadata={_SIGNATURE: block.signature})
    if kind == "redacted_thinking":
        return Part(reasoning="", metadata={_REDACTED: block.data})
    if kind == "tool_use":
        return _tool_part(block.id, block.name, block.input, wrapped)
    return None  # server-side tool blocks: nothing turnkit can act on


def _usage(usage: Any, input_tokens: int | None = None) -> GenerationUsage | None:
    if usage is None:
        return None
    inp = getattr(usage, "input_tokens", None) or input_tokens
    out = usage.output_tokens
    return GenerationUsage(
        input_tokens=inp,
        output_tokens=out,
        total_tokens=(inp or 0) + (out or 0),
        cached_content_tokens=getattr(usage, "cache_read_input_tokens", None),
    )


def to_turnkit_error(exc: BaseException) -> TurnkitError:
    """An `anthropic` SDK (or transport) error as a TurnkitError with the canonical status."""
    import anthropic

    if isinstance(exc, anthropic.APITimeoutError):
        return TurnkitError("DEADLINE_EXCEEDED", f"Anthropic request timed out: {exc}", public=False)
    if isinstance(exc, anthropic.APIConnectionError):
        return TurnkitError("UNAVAILABLE", f"cannot reach Anthropic: {exc}", public=False)
    if isinstance(exc, anthropic.APIStatusError):
        code = exc.status_code
        if code < 400:  # an error event inside a stream: its type says what went wrong
            code = _ERROR_TYPES.get(str(exc.type), 500)
        message = exc.api_message or exc.message
        return http_error("Anthropic", code, message, headers=exc.response.headers, body=exc.body)
    return transport_error("Anthropic", exc) or TurnkitError(
        "UNKNOWN", f"Anthropic call failed: {exc}", public=False
    )


# --- the model -----------------------------------------------------------------------------------


class AnthropicModel:
    """A model function `async (request, ctx) -> ModelResponse` calling one Claude model."""

    def __init__(self, model_id: str, client: Any, *, max_tokens: int = DEFAULT_MAX_TOKENS) -> None:
        self.model_id = model_id
        self.client = client  # a callable returning the SDK's `AsyncAnthropic`
        self.max_tokens = max_tokens

    def _kwargs(self, request: ModelRequest) -> tuple[dict[str, Any], bool]:
        messages, system = to_anthropic_messages(request.messages)
        named, extra, version = _config(request.config, self.max_tokens)
        if request.docs:
            context = "Use this context:\n" + "\n\n".join(
                Message(role="user", content=d.content).text for d in request.docs
            )
            system = f"{system}\n\n{context}" if system else context
        kwargs: dict[str, Any] = {"model": version or self.model_id, "messages": messages, **named}
        if system:
            kwargs["system"] = system
        tools = to_anthropic_tools(request.tools or []) if request.tool_choice != "none" else []
        choice: dict[str, Any] | None = None
        if request.tool_choice == "required" and tools:
            choice = {"type": "auto"} if forced_tool_loops(request) else {"type": "any"}
        elif request.tool_choice == "auto" and tools:
            choice = {"type": "auto"}
        wrapped = False
        if wants_json(request):
            tool, wrapped = _output_tool(request.output.schema_ if request.output else None)
            if not tools:  # nothing else to call: the answer must come through the output tool
                choice = {"type": "tool", "name": OUTPUT_TOOL}
            tools.append(tool)
        if tools:
            kwargs["tools"] = tools
        if choice is not None:
            kwargs["tool_choice"] = choice
        if extra:
            kwargs["extra_body"] = extra
        return kwargs, wrapped

    async def __call__(self, request: ModelRequest, ctx: ModelContext) -> ModelResponse:
        """Run one Messages API call, streaming when the caller streams."""
        import anthropic

        kwargs, wrapped = self._kwargs(request)
        client = self.client()
        if ctx.retried_by_middleware:  # turnkit's retry middleware owns retries: one attempt here
            client = client.with_options(max_retries=0)
        try:
            if ctx.is_streaming:
                return await self._stream(client.messages, kwargs, wrapped, ctx)
            message = await until_aborted(ctx, client.messages.create(**kwargs))
        except anthropic.AnthropicError as exc:
            raise to_turnkit_error(exc) from exc
        if message is None:
            return ModelResponse(message=Message(role="model", content=[]), finish_reason="aborted")
        parts = [p for p in (_part(b, wrapped) for b in message.content) if p is not None]
        return ModelResponse(
            message=Message(role="model", content=parts),
            finish_reason=finish_reason(message.stop_reason),
            usage=_usage(message.usage),
        )

    async def _stream(
        self, messages: Any, kwargs: dict[str, Any], wrapped: bool, ctx: ModelContext
    ) -> ModelResponse:
        """Stream text and thinking deltas; tool calls are sent once their input is complete."""
        stream = await messages.create(**kwargs, stream=True)
        blocks: dict[int, dict[str, Any]] = {}
        reason: FinishReasonName = "unknown"
        usage = None
        input_tokens = None
        events = Abortable(ctx, stream)
        try:
            async for event in events:
                kind = event.type
                if kind == "message_start":
                    input_tokens = event.message.usage.input_tokens
                    usage = _usage(event.message.usage)
                elif kind == "content_block_start":
                    blocks[event.index] = _start(event.content_block)
                elif kind == "content_block_delta":
                    _delta(blocks.setdefault(event.index, {"type": "text", "text": ""}), event.delta, ctx)
                elif kind == "content_block_stop":
                    block = blocks.get(event.index)
                    if block is not None and block["type"] == "tool_use":
                        part = _finish_tool(block, wrapped)
                        ctx.send_chunk(ModelResponseChunk(role="model", index=0, content=[part]))
                elif kind == "message_delta":
                    reason = finish_reason(event.delta.stop_reason)
                    usage = _usage(event.usage, input_tokens)
        finally:
            await stream.close()
        if events.aborted:
            reason = "aborted"
        parts = [p for p in (_assembled(blocks[i], wrapped) for i in sorted(blocks)) if p is not None]
        return ModelResponse(message=Message(role="model", content=parts), finish_reason=reason, usage=usage)


def _start(block: Any) -> dict[str, Any]:
    """The accumulating state of a streamed content block."""
    kind = block.type
    if kind == "tool_use":
        return {"type": kind, "id": block.id, "name": block.name, "json": ""}
    if kind == "thinking":
        return {"type": kind, "thinking": block.thinking or "", "signature": block.signature or ""}
    if kind == "redacted_thinking":
        return {"type": kind, "data": block.data}
    if kind == "text":
        return {"type": kind, "text": block.text or ""}
    return {"type": kind}


def _delta(block: dict[str, Any], delta: Any, ctx: ModelContext) -> None:
    kind = delta.type
    if kind == "text_delta":
        block["text"] = block.get("text", "") + delta.text
        ctx.send_chunk(ModelResponseChunk(role="model", index=0, content=[Part(text=delta.text)]))
    elif kind == "thinking_delta":
        block["thinking"] = block.get("thinking", "") + delta.thinking
        ctx.send_chunk(ModelResponseChunk(role="model", index=0, content=[Part(reasoning=delta.thinking)]))
    elif kind == "signature_delta":
        block["signature"] = block.get("signature", "") + delta.signature
    elif kind == "input_json_delta":
        block["json"] = block.get("json", "") + delta.partial_json


def _finish_tool(block: dict[str, Any], wrapped: bool) -> Part:
    return _tool_part(block["id"], block["name"], parse_json(block["json"]), wrapped)


def _assembled(block: dict[str, Any], wrapped: bool) -> Part | None:
    kind = block["type"]
    if kind == "text":
        return Part(text=block["text"]) if block["text"] else None
    if kind == "thinking":
        return Part(reasoning=block["thinking"], metadata={_SIGNATURE: block["signature"]})
    if kind == "redacted_thinking":
        return Part(reasoning="", metadata={_REDACTED: block["data"]})
    if kind == "tool_use":
        return _finish_tool(block, wrapped)
    return None


class Anthropic(PrefixedModels):
    """Plugin serving `anthropic/<model>` for any Claude model id.

    `models` lists ids to register up front; any other id is created on first lookup. `max_retries`
    sets the SDK's own retries when turnkit's `retry` middleware is not in use (under it the SDK
    makes one attempt); None keeps the SDK's default.
    """

    _info = MODEL_INFO
    _label_prefix = "Claude"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        models: Sequence[str] = (),
        timeout: float | None = None,
        max_retries: int | None = None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        name: str = "anthropic",
        client: Any = None,
    ) -> None:
        self.name = name
        self.models = list(models)
        self.max_tokens = max_tokens
        self._client = client
        self._options: dict[str, Any] = {}
        key = api_key or os.environ.get("ANTHROPIC_API_KEY")
        if key:
            self._options["api_key"] = key
        if base_url:
            self._options["base_url"] = base_url
        if timeout is not None:
            self._options["timeout"] = timeout
        if max_retries is not None:
            self._options["max_retries"] = max_retries
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()

    def client(self) -> Any:
        """The injected client, or an `AsyncAnthropic` for the running event loop (made on first use)."""
        if self._client is not None:
            return self._client
        loop = asyncio.get_running_loop()  # a connection pool belongs to one event loop
        if loop not in self._clients:
            try:
                import anthropic
            except ImportError as exc:
                raise missing_sdk("anthropic", "anthropic") from exc
            if "api_key" not in self._options and not os.environ.get("ANTHROPIC_AUTH_TOKEN"):
                raise TurnkitError(
                    "FAILED_PRECONDITION",
                    "Anthropic needs an API key: set ANTHROPIC_API_KEY or pass api_key=",
                )
            try:
                self._clients[loop] = anthropic.AsyncAnthropic(**self._options)
            except anthropic.AnthropicError as exc:
                raise TurnkitError(
                    "FAILED_PRECONDITION", f"cannot start the Anthropic client: {exc}"
                ) from exc
        return self._clients[loop]

    def model(self, model_id: str) -> AnthropicModel:
        """The model function for one model id."""
        return AnthropicModel(model_id, self.client, max_tokens=self.max_tokens)
