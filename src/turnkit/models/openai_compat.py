"""OpenAI-compatible chat completions through the official `openai` SDK (install the `openai` extra).

Works with OpenAI and with servers speaking its API: Ollama, vLLM, llama.cpp's servers. Register
models with `OpenAICompat(name="ollama", base_url="http://localhost:11434/v1", models=["llama3.2"])`,
which defines `ollama/llama3.2`.
"""

from __future__ import annotations

import asyncio
import json
import os
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel

from turnkit.errors import TurnkitError
from turnkit.models import ModelContext, ModelInfo
from turnkit.models._errors import http_error
from turnkit.models._support import Abortable, PrefixedModels, until_aborted
from turnkit.types import (
    DocumentData,
    FinishReasonName,
    GenerationUsage,
    Message,
    ModelRequest,
    ModelResponse,
    ModelResponseChunk,
    OutputConfig,
    Part,
    ToolDefinition,
    ToolRequest,
)

__all__ = [
    "MODEL_INFO",
    "OpenAICompat",
    "OpenAICompatModel",
    "config_params",
    "finish_reason",
    "response_format",
    "to_openai_messages",
    "to_openai_tools",
    "to_turnkit_error",
    "tool_choice",
]

StructuredOutput = Literal["json_schema", "json_object"]

MODEL_INFO = ModelInfo(
    label="OpenAI-compatible",
    multiturn=True,
    tools=True,
    system_role=True,
    output=["text", "json"],
    constrained=True,
)

_FINISH: dict[str, FinishReasonName] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "stop",
    "function_call": "stop",
    "content_filter": "blocked",
}
# Genkit's common config keys -> chat completion parameters. Everything else is sent as given.
_CONFIG_KEYS = {
    "temperature": "temperature",
    "maxOutputTokens": "max_tokens",
    "topP": "top_p",
    "topK": "top_k",
    "stopSequences": "stop",
}


# --- pure request / response mapping ----------------------------------------------------------


def _json_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _call_id(req: ToolRequest) -> str:
    # Requests made by other providers may lack a ref; the name keeps request and response paired.
    return req.ref or req.name


def _user_content(parts: list[Part]) -> str | list[dict[str, Any]]:
    """Plain text when the message is all text; content parts when it carries images."""
    if all(p.media is None for p in parts):
        return "\n".join(
            _json_text(p.text if p.text is not None else p.data) for p in parts if p.text or p.data
        )
    out: list[dict[str, Any]] = []
    for p in parts:
        if p.media is not None:
            out.append({"type": "image_url", "image_url": {"url": p.media.url}})
        elif p.text is not None or p.data is not None:
            out.append({"type": "text", "text": _json_text(p.text if p.text is not None else p.data)})
    return out


def to_openai_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Turnkit messages as chat completion messages (roles: system, user, assistant, tool)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "tool":
            # One `tool` message per result, tied to its call by id.
            for p in m.content:
                if p.tool_response is not None:
                    res = p.tool_response
                    call_id = res.ref or res.name
                    out.append({"role": "tool", "tool_call_id": call_id, "content": _json_text(res.output)})
        elif m.role == "model":
            text = "".join(p.text for p in m.content if p.text is not None)
            # Empty content rather than null: some servers (llama-cpp-python's) reject null.
            msg: dict[str, Any] = {"role": "assistant", "content": text}
            calls = [
                {
                    "id": _call_id(p.tool_request),
                    "type": "function",
                    "function": {
                        "name": p.tool_request.name,
                        "arguments": json.dumps(p.tool_request.input or {}),
                    },
                }
                for p in m.content
                if p.tool_request is not None
            ]
            if calls:
                msg["tool_calls"] = calls
            out.append(msg)
        elif m.role == "system":
            out.append({"role": "system", "content": m.text})
        else:
            out.append({"role": "user", "content": _user_content(m.content)})
    return out


def _with_context(messages: list[dict[str, Any]], docs: list[DocumentData]) -> list[dict[str, Any]]:
    """Documents given as context, added to the system message (one system message suits all servers)."""
    if not docs:
        return messages
    context = "Use this context:\n" + "\n\n".join(Message(role="user", content=d.content).text for d in docs)
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": f"{messages[0]['content']}\n\n{context}"}, *messages[1:]]
    return [{"role": "system", "content": context}, *messages]


def to_openai_tools(tools: Sequence[ToolDefinition]) -> list[dict[str, Any]]:
    """Turnkit tool definitions as OpenAI function tools."""
    return [
        {
            "type": "function",
            "function": {
                "name": t.name,
                "description": t.description,
                "parameters": t.input_schema or {"type": "object", "properties": {}},
            },
        }
        for t in tools
    ]


def tool_choice(request: ModelRequest) -> str | dict[str, Any] | None:
    """The `tool_choice` parameter for a request (None: leave it to the server)."""
    choice, tools = request.tool_choice, request.tools or []
    if choice != "required":
        return choice
    if request.messages and request.messages[-1].role == "tool":
        # Forcing a call again after a tool result would loop forever; let the model answer.
        return "auto"
    if len(tools) == 1:
        # Same meaning, and the form servers without "required" support (llama-cpp-python) accept.
        return {"type": "function", "function": {"name": tools[0].name}}
    return "required"


def response_format(
    output: OutputConfig | None, style: StructuredOutput = "json_schema"
) -> dict[str, Any] | None:
    """The `response_format` for the requested output: a JSON schema, any JSON object, or none.

    `style="json_object"` sends the schema as `{"type": "json_object", "schema": ...}`, the form
    llama-cpp-python's server understands (it rejects `json_schema`).
    """
    if output is None or output.format != "json" or output.constrained is False:
        return None
    if not output.schema_:
        return {"type": "json_object"}
    if style == "json_object":
        return {"type": "json_object", "schema": output.schema_}
    return {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": output.schema_, "strict": False},
    }


def config_params(config: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Request config as (named SDK arguments, extra body fields passed through unchanged)."""
    if isinstance(config, BaseModel):
        config = config.model_dump(by_alias=True, exclude_none=True)
    if not isinstance(config, Mapping):
        return {}, {}
    named: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in config.items():
        if value is None or key == "version":  # `version` picks the model; see OpenAICompatModel
            continue
        name = _CONFIG_KEYS.get(str(key), str(key))
        if name in ("temperature", "max_tokens", "top_p", "stop", "seed"):
            named[name] = value
        else:
            extra[name] = value  # top_k and server-specific keys travel in the request body
    return named, extra


def finish_reason(reason: str | None) -> FinishReasonName:
    """An OpenAI finish reason as a turnkit one."""
    if reason is None:
        return "unknown"
    return _FINISH.get(reason, "other")


def _tool_part(call_id: str | None, name: str, arguments: str | None) -> Part:
    try:
        value: Any = json.loads(arguments) if arguments else {}
    except ValueError:
        value = arguments  # not JSON: hand the raw text to the tool's validation
    return Part(tool_request=ToolRequest(name=name, ref=call_id, input=value))


def _usage(usage: Any) -> GenerationUsage | None:
    if usage is None:
        return None
    return GenerationUsage(
        input_tokens=usage.prompt_tokens,
        output_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
    )


def to_turnkit_error(exc: Exception) -> TurnkitError:
    """An `openai` SDK error as a TurnkitError with the matching canonical status."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return TurnkitError("DEADLINE_EXCEEDED", f"model request timed out: {exc}", public=False)
    if isinstance(exc, openai.APIConnectionError):
        return TurnkitError("UNAVAILABLE", f"cannot reach the model server: {exc}", public=False)
    if isinstance(exc, openai.APIStatusError):
        return http_error(
            "model server",
            exc.status_code,
            exc.message,
            headers=exc.response.headers,
            body=exc.body,
        )
    if isinstance(exc, openai.APIError) and (code := _stream_error_code(exc)) is not None:
        # An error chunk inside a 200 stream: its code (or type) says what went wrong.
        return http_error("model server", code, exc.message, body=exc.body)
    return TurnkitError("UNKNOWN", f"model call failed: {exc}", public=False)


# Error codes and types servers send inside a stream (after a 200), as the HTTP codes they stand for.
_STREAM_ERRORS = {
    "invalid_request_error": 400,
    "context_length_exceeded": 400,
    "authentication_error": 401,
    "invalid_api_key": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "model_not_found": 404,
    "rate_limit": 429,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "insufficient_quota": 429,
    "tokens": 429,
    "server_error": 500,
    "api_error": 500,
    "overloaded": 503,
    "overloaded_error": 503,
    "service_unavailable": 503,
    "timeout": 504,
}


def _stream_error_code(exc: Any) -> int | None:
    """The HTTP code an in-stream error stands for: its numeric `code`, else its code or type by name."""
    code = getattr(exc, "code", None)
    if isinstance(code, str) and code.isdigit() and 400 <= int(code) <= 599:
        return int(code)
    for name in (code, getattr(exc, "type", None)):
        if isinstance(name, str) and name.lower() in _STREAM_ERRORS:
            return _STREAM_ERRORS[name.lower()]
    return None


# --- the model ---------------------------------------------------------------------------------


class OpenAICompatModel:
    """A model function `async (request, ctx) -> ModelResponse` calling one chat completions model."""

    def __init__(
        self, model_id: str, client: Callable[[], Any], *, structured_output: StructuredOutput = "json_schema"
    ) -> None:
        self.model_id = model_id
        self.client = client
        self.structured_output = structured_output

    async def __call__(self, request: ModelRequest, ctx: ModelContext) -> ModelResponse:
        """Run one chat completion, streaming when the caller streams."""
        from openai import OpenAIError  # the SDK is an optional extra: imported on use

        named, extra = config_params(request.config)
        cfg = request.config if isinstance(request.config, Mapping) else {}
        kwargs: dict[str, Any] = {
            "model": cfg.get("version") or self.model_id,
            "messages": _with_context(to_openai_messages(request.messages), request.docs or []),
            **named,
        }
        if request.tools and request.tool_choice != "none":
            kwargs["tools"] = to_openai_tools(request.tools)
            if (choice := tool_choice(request)) is not None:
                kwargs["tool_choice"] = choice
        if (fmt := response_format(request.output, self.structured_output)) is not None:
            kwargs["response_format"] = fmt
        if extra:
            kwargs["extra_body"] = extra
        client = self.client()
        if ctx.retried_by_middleware:  # turnkit's retry middleware owns retries: one attempt here
            client = client.with_options(max_retries=0)
        completions = client.chat.completions
        try:
            if ctx.is_streaming:
                return await self._stream(completions, kwargs, ctx)
            completion = await until_aborted(ctx, completions.create(**kwargs))
        except OpenAIError as exc:
            raise to_turnkit_error(exc) from exc
        if completion is None:
            return ModelResponse(message=Message(role="model", content=[]), finish_reason="aborted")
        choice = completion.choices[0]
        parts = [Part(text=choice.message.content)] if choice.message.content else []
        for call in choice.message.tool_calls or []:
            parts.append(_tool_part(call.id, call.function.name, call.function.arguments))
        return ModelResponse(
            message=Message(role="model", content=parts),
            finish_reason=finish_reason(choice.finish_reason),
            usage=_usage(completion.usage),
        )

    async def _stream(self, completions: Any, kwargs: dict[str, Any], ctx: ModelContext) -> ModelResponse:
        """Stream text deltas to the caller and assemble the final message, tool calls included."""
        stream = await completions.create(**kwargs, stream=True, stream_options={"include_usage": True})
        text: list[str] = []
        calls: dict[int, dict[str, str]] = {}
        reason: FinishReasonName = "unknown"
        usage = None
        chunks = Abortable(ctx, stream)
        try:
            async for chunk in chunks:
                usage = _usage(chunk.usage) or usage
                for choice in chunk.choices[:1]:
                    delta = choice.delta
                    if delta.content:
                        text.append(delta.content)
                        ctx.send_chunk(
                            ModelResponseChunk(role="model", index=0, content=[Part(text=delta.content)])
                        )
                    for tc in delta.tool_calls or []:
                        slot = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                        # Ids and names arrive whole (some servers repeat them); arguments arrive in pieces.
                        slot["id"] = slot["id"] or (tc.id or "")
                        if tc.function is not None:
                            slot["name"] = slot["name"] or (tc.function.name or "")
                            slot["arguments"] += tc.function.arguments or ""
                    if choice.finish_reason:
                        reason = finish_reason(choice.finish_reason)
        finally:
            await stream.close()
        if chunks.aborted:
            reason = "aborted"
        parts = [Part(text="".join(text))] if text else []
        tool_parts = [
            _tool_part(c["id"] or None, c["name"], c["arguments"]) for _, c in sorted(calls.items())
        ]
        if tool_parts and reason != "aborted":
            ctx.send_chunk(ModelResponseChunk(role="model", index=0, content=tool_parts))
            parts.extend(tool_parts)
        return ModelResponse(message=Message(role="model", content=parts), finish_reason=reason, usage=usage)


class OpenAICompat(PrefixedModels):
    """Plugin registering `<name>/<model>` for each model id served by an OpenAI-compatible API.

    `max_retries` is the SDK's own retries, used only when turnkit's `retry` middleware is not in
    use: under it the SDK makes one attempt, so calls never multiply.
    """

    _info = MODEL_INFO  # labelled `<name> <model id>`

    def __init__(
        self,
        name: str = "openai",
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        models: Sequence[str] = (),
        client: Any = None,
        structured_output: StructuredOutput = "json_schema",
        timeout: float | None = None,
        max_retries: int = 2,
    ) -> None:
        self.name = name
        self.models = list(models)
        self.structured_output = structured_output
        self._client = client
        self._options: dict[str, Any] = {"base_url": base_url, "max_retries": max_retries}
        # Local servers need no key, but the SDK insists on one.
        key = api_key or os.environ.get("OPENAI_API_KEY") or ("unused" if base_url else None)
        if key is not None:
            self._options["api_key"] = key
        if timeout is not None:
            self._options["timeout"] = timeout
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()

    def client(self) -> Any:
        """The injected client, or an `AsyncOpenAI` for the running event loop (created on first use)."""
        if self._client is not None:
            return self._client
        # An async HTTP connection pool belongs to one event loop, so each loop gets its own client.
        loop = asyncio.get_running_loop()
        if loop not in self._clients:
            try:
                from openai import AsyncOpenAI, OpenAIError
            except ImportError as exc:
                raise TurnkitError(
                    "FAILED_PRECONDITION", "the openai SDK is missing: pip install 'turnkit[openai]'"
                ) from exc
            try:
                self._clients[loop] = AsyncOpenAI(**self._options)
            except OpenAIError as exc:  # no API key
                raise TurnkitError("FAILED_PRECONDITION", str(exc)) from exc
        return self._clients[loop]

    def model(self, model_id: str) -> OpenAICompatModel:
        """The model function for one model id on this server."""
        return OpenAICompatModel(model_id, self.client, structured_output=self.structured_output)
