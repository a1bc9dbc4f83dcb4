"""Gemini through the official `google-genai` SDK (install the `google` extra).

`GoogleAI()` serves any `googleai/<model>` name (the Gemini Developer API; key from `api_key=`,
else `GOOGLE_API_KEY`, else `GEMINI_API_KEY`: the SDK's own order, so that turnkit and the SDK never
pick different keys when both are set); `GoogleAI(vertexai=True, project=..., location=...)` (or
`VertexAI(...)`) serves `vertexai/<model>`. The SDK's own environment variables apply too, among
them `GOOGLE_GEMINI_BASE_URL` / `GOOGLE_VERTEX_BASE_URL` to point it at another server.

Request config takes Genkit's keys (`temperature`, `maxOutputTokens`, `topP`, `topK`,
`stopSequences`, `safetySettings`, `thinkingConfig`, and `thinkingBudget` as a shortcut), any other
field of the SDK's `GenerateContentConfig` (camelCase or snake_case), and `version` to pick another
model id; keys the SDK does not know are sent as they are inside `generationConfig`.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
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
    as_data_url,
    content_type,
    data_url,
    forced_tool_loops,
    json_text,
    missing_sdk,
    until_aborted,
    wants_json,
)
from turnkit.types import (
    FinishReasonName,
    GenerationUsage,
    Media,
    Message,
    ModelRequest,
    ModelResponse,
    ModelResponseChunk,
    Part,
    ToolDefinition,
    ToolRequest,
)

__all__ = [
    "MODEL_INFO",
    "GeminiModel",
    "GoogleAI",
    "VertexAI",
    "finish_reason",
    "to_gemini_contents",
    "to_gemini_tools",
    "to_turnkit_error",
]

MODEL_INFO = ModelInfo(
    label="Google Gemini",
    multiturn=True,
    tools=True,
    system_role=True,
    output=["text", "json"],
    constrained=True,
)

_FINISH: dict[str, FinishReasonName] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "blocked",
    "RECITATION": "blocked",
    "BLOCKLIST": "blocked",
    "PROHIBITED_CONTENT": "blocked",
    "SPII": "blocked",
    "IMAGE_SAFETY": "blocked",
    "IMAGE_PROHIBITED_CONTENT": "blocked",
    "IMAGE_RECITATION": "blocked",
    "MODEL_ARMOR": "blocked",
}
# Config keys that turnkit sets from the request itself, never from `config`.
_RESERVED = {"system_instruction", "tools", "tool_config", "http_options", "automatic_function_calling"}
_SIGNATURE = "thoughtSignature"  # part metadata key: Gemini wants thought signatures sent back


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


# --- request mapping -----------------------------------------------------------------------------


def _signature(part: Part) -> str | None:
    value = (part.metadata or {}).get(_SIGNATURE)
    return value if isinstance(value, str) else None


def _media_part(media: Media) -> dict[str, Any]:
    inline = data_url(media)
    if inline is not None:
        mime, data = inline
        return {"inline_data": {"mime_type": mime, "data": data}}
    # http(s) and gs:// URLs, and Files API URIs, are references the service fetches itself.
    return {"file_data": {"file_uri": media.url, "mime_type": content_type(media)}}


def _function_response(output: Any) -> dict[str, Any]:
    # The API takes an object; other values are wrapped so nothing is lost.
    return output if isinstance(output, dict) else {"output": output}


def _gemini_part(part: Part) -> dict[str, Any] | None:
    out: dict[str, Any]
    if part.text is not None:
        out = {"text": part.text}
    elif part.reasoning is not None:
        out = {"text": part.reasoning, "thought": True}
    elif part.media is not None:
        out = _media_part(part.media)
    elif part.tool_request is not None:
        req = part.tool_request
        call: dict[str, Any] = {"name": req.name, "args": req.input if isinstance(req.input, dict) else {}}
        if req.ref:
            call["id"] = req.ref
        out = {"function_call": call}
    elif part.tool_response is not None:
        res = part.tool_response
        response: dict[str, Any] = {"name": res.name, "response": _function_response(res.output)}
        if res.ref:
            response["id"] = res.ref
        out = {"function_response": response}
    elif part.data is not None:
        out = {"text": json_text(part.data)}
    else:
        return None  # custom parts and resources have no Gemini form
    if (sig := _signature(part)) is not None:
        out["thought_signature"] = base64.b64decode(sig)
    return out


def to_gemini_contents(messages: Sequence[Message]) -> tuple[list[dict[str, Any]], str | None]:
    """Turnkit messages as Gemini contents and a system instruction.

    System messages become the system instruction; tool results travel as `function_response` parts
    of a user turn, as the API expects.
    """
    system: list[str] = []
    contents: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            system.append(m.text)
            continue
        parts = [p for p in (_gemini_part(part) for part in m.content) if p is not None]
        if parts:
            contents.append({"role": "model" if m.role == "model" else "user", "parts": parts})
    return contents, "\n\n".join(system) if system else None


def to_gemini_tools(tools: Sequence[ToolDefinition]) -> list[dict[str, Any]]:
    """Turnkit tool definitions as one Gemini tool of function declarations (JSON schemas as given)."""
    declarations = []
    for t in tools:
        decl: dict[str, Any] = {"name": t.name, "description": t.description}
        if t.input_schema:
            decl["parameters_json_schema"] = t.input_schema
        declarations.append(decl)
    return [{"function_declarations": declarations}]


def _tool_mode(request: ModelRequest) -> str | None:
    choice = request.tool_choice
    if choice == "required":
        return "AUTO" if forced_tool_loops(request) else "ANY"
    return {"auto": "AUTO", "none": "NONE"}.get(choice or "")


def _user_config(config: Any) -> tuple[dict[str, Any], dict[str, Any], str | None]:
    """Request config as (GenerateContentConfig fields, unknown generationConfig keys, model version)."""
    from google.genai import types

    if isinstance(config, BaseModel):
        config = config.model_dump(by_alias=True, exclude_none=True)
    if not isinstance(config, Mapping):
        return {}, {}, None
    known = set(types.GenerateContentConfig.model_fields) - _RESERVED
    fields: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    version = None
    budget: Any = None
    for key, value in config.items():
        if value is None:
            continue
        name = _snake(str(key))
        if name == "version":
            version = str(value)
        elif name == "thinking_budget":  # Genkit's shortcut for thinkingConfig.thinkingBudget
            budget = value
        elif name == "thinking_config":
            fields[name] = _snake_keys(value)
        elif name in known:
            fields[name] = value
        else:
            extra[str(key)] = value
    if budget is not None:  # merged into thinkingConfig, whatever the order; the shortcut wins
        fields["thinking_config"] = {**fields.get("thinking_config", {}), "thinking_budget": budget}
    return fields, extra, version


def _snake_keys(value: Any) -> Any:
    """A `thinkingConfig` (a mapping or the SDK's model) with snake_case keys, so the `thinkingBudget`
    shortcut merges into it rather than sitting beside a camelCase twin."""
    if isinstance(value, BaseModel):
        value = value.model_dump(exclude_none=True)
    if not isinstance(value, Mapping):
        return value  # not an object: the SDK's validation names what is wrong
    return {_snake(str(k)): v for k, v in value.items()}


def _build_config(request: ModelRequest, system: str | None, ctx: ModelContext) -> tuple[Any, str | None]:
    """The SDK's `GenerateContentConfig` for a request, and the model version it names (if any)."""
    from google.genai import types

    fields, extra, version = _user_config(request.config)
    if request.docs:
        context = "Use this context:\n" + "\n\n".join(
            Message(role="user", content=d.content).text for d in request.docs
        )
        system = f"{system}\n\n{context}" if system else context
    if system:
        fields["system_instruction"] = system
    if request.tools and request.tool_choice != "none":
        fields["tools"] = to_gemini_tools(request.tools)
        if (mode := _tool_mode(request)) is not None:
            fields["tool_config"] = {"function_calling_config": {"mode": mode}}
    if wants_json(request):
        fields["response_mime_type"] = "application/json"
        if request.output is not None and request.output.schema_:
            fields["response_json_schema"] = request.output.schema_
    # turnkit runs the tool loop itself; the SDK must not call functions on its own.
    fields["automatic_function_calling"] = {"disable": True}
    http: dict[str, Any] = {}
    if extra:
        http["extra_body"] = {"generationConfig": extra}
    if ctx.retried_by_middleware:  # turnkit's retry middleware owns retries: one attempt here
        http["retry_options"] = {"attempts": 1}
    if http:
        fields["http_options"] = http
    try:
        return types.GenerateContentConfig.model_validate(fields), version
    except ValueError as exc:
        raise TurnkitError("INVALID_ARGUMENT", f"invalid Gemini config: {exc}") from exc


# --- response mapping ----------------------------------------------------------------------------


def finish_reason(reason: Any) -> FinishReasonName:
    """A Gemini finish reason (enum or string) as a turnkit one."""
    if reason is None:
        return "unknown"
    name = str(getattr(reason, "value", reason))
    return _FINISH.get(name, "other")


def _metadata(part: Any) -> dict[str, Any] | None:
    sig = getattr(part, "thought_signature", None)
    return {_SIGNATURE: base64.b64encode(sig).decode("ascii")} if sig else None


def _turnkit_part(part: Any) -> Part | None:
    meta = _metadata(part)
    if part.function_call is not None:
        call = part.function_call
        req = ToolRequest(name=call.name or "", ref=call.id, input=call.args or {})
        return Part(tool_request=req, metadata=meta)
    if part.text is not None:
        if part.thought:
            return Part(reasoning=part.text, metadata=meta)
        if part.text or meta:
            return Part(text=part.text, metadata=meta)
        return None
    if part.inline_data is not None and part.inline_data.data is not None:
        mime = part.inline_data.mime_type or "application/octet-stream"
        return Part(
            media=Media(url=as_data_url(mime, part.inline_data.data), content_type=mime), metadata=meta
        )
    if part.file_data is not None and part.file_data.file_uri:
        return Part(media=Media(url=part.file_data.file_uri, content_type=part.file_data.mime_type))
    if part.executable_code is not None or part.code_execution_result is not None:
        return Part(custom=part.model_dump(mode="json", exclude_none=True, by_alias=True))
    return None


def _candidate_parts(response: Any) -> list[Part]:
    candidate = (response.candidates or [None])[0]
    if candidate is None or candidate.content is None:
        return []
    return [p for p in (_turnkit_part(x) for x in candidate.content.parts or []) if p is not None]


def _usage(meta: Any) -> GenerationUsage | None:
    if meta is None:
        return None
    return GenerationUsage(
        input_tokens=meta.prompt_token_count,
        output_tokens=meta.candidates_token_count,
        total_tokens=meta.total_token_count,
        thoughts_tokens=meta.thoughts_token_count,
        cached_content_tokens=meta.cached_content_token_count,
    )


def _ending(response: Any) -> tuple[FinishReasonName | None, str | None]:
    """The finish reason and message a response carries, if it carries one."""
    candidate = (response.candidates or [None])[0]
    if candidate is not None and candidate.finish_reason is not None:
        return finish_reason(candidate.finish_reason), candidate.finish_message
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason is not None:  # the prompt itself was blocked
        message = feedback.block_reason_message or f"prompt blocked: {feedback.block_reason}"
        return "blocked", message
    return None, None


def _merge(parts: list[Part], new: Part) -> None:
    """Append a streamed part, joining text (and reasoning) pieces into one part."""
    last = parts[-1] if parts else None
    for kind in ("text", "reasoning"):
        piece = getattr(new, kind)
        if piece is not None and last is not None and getattr(last, kind) is not None:
            meta = {**(last.metadata or {}), **(new.metadata or {})} or None
            parts[-1] = last.model_copy(update={kind: getattr(last, kind) + piece, "metadata": meta})
            return
    parts.append(new)


def to_turnkit_error(exc: BaseException) -> TurnkitError:
    """A `google-genai` SDK (or transport) error as a TurnkitError with the canonical status."""
    from google.genai import errors

    if isinstance(exc, errors.APIError):
        code = exc.code if isinstance(exc.code, int) else 0
        headers = getattr(exc.response, "headers", None)
        message = exc.message or str(exc.details)
        return http_error("Gemini", code, message, headers=headers, body=exc.details)
    return transport_error("Gemini", exc) or TurnkitError(
        "UNKNOWN", f"Gemini call failed: {exc}", public=False
    )


def _is_sdk_error(exc: BaseException) -> bool:
    from google.genai import errors

    return isinstance(exc, errors.APIError) or transport_error("Gemini", exc) is not None


# --- the model -----------------------------------------------------------------------------------


class GeminiModel:
    """A model function `async (request, ctx) -> ModelResponse` calling one Gemini model."""

    def __init__(self, model_id: str, client: Any) -> None:
        self.model_id = model_id
        self.client = client  # a callable returning the SDK's async client (`genai.Client(...).aio`)

    async def __call__(self, request: ModelRequest, ctx: ModelContext) -> ModelResponse:
        """Run one generateContent call, streaming when the caller streams."""
        contents, system = to_gemini_contents(request.messages)
        config, version = _build_config(request, system, ctx)
        kwargs = {"model": version or self.model_id, "contents": contents, "config": config}
        models = self.client().models
        try:
            if ctx.is_streaming:
                return await self._stream(models, kwargs, ctx)
            response = await until_aborted(ctx, models.generate_content(**kwargs))
        except Exception as exc:
            if _is_sdk_error(exc):
                raise to_turnkit_error(exc) from exc
            raise
        if response is None:
            return ModelResponse(message=Message(role="model", content=[]), finish_reason="aborted")
        reason, message = _ending(response)
        return ModelResponse(
            message=Message(role="model", content=_candidate_parts(response)),
            finish_reason=reason or "unknown",
            finish_message=message,
            usage=_usage(response.usage_metadata),
        )

    async def _stream(self, models: Any, kwargs: dict[str, Any], ctx: ModelContext) -> ModelResponse:
        stream = await models.generate_content_stream(**kwargs)
        parts: list[Part] = []
        reason: FinishReasonName = "unknown"
        message = usage = None
        chunks = Abortable(ctx, stream)
        try:
            async for chunk in chunks:
                new = _candidate_parts(chunk)
                if new:
                    ctx.send_chunk(ModelResponseChunk(role="model", index=0, content=new))
                for part in new:
                    _merge(parts, part)
                usage = _usage(chunk.usage_metadata) or usage
                ended, said = _ending(chunk)
                if ended is not None:
                    reason, message = ended, said
        finally:
            await stream.aclose()
        if chunks.aborted:
            reason = "aborted"
        return ModelResponse(
            message=Message(role="model", content=parts),
            finish_reason=reason,
            finish_message=message,
            usage=usage,
        )


class GoogleAI(PrefixedModels):
    """Plugin serving `googleai/<model>` (or `vertexai/<model>` with `vertexai=True`) for any model id.

    `models` lists ids to register up front (they show in the registry); any other id is created on
    first lookup. `max_retries` sets the SDK's own retries when turnkit's `retry` middleware is not
    in use (under it the SDK makes one attempt); None keeps the SDK's default.
    """

    _info = MODEL_INFO
    _label_prefix = "Gemini"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        vertexai: bool = False,
        project: str | None = None,
        location: str | None = None,
        base_url: str | None = None,
        models: Sequence[str] = (),
        timeout: float | None = None,
        max_retries: int | None = None,
        name: str | None = None,
        client: Any = None,
    ) -> None:
        self.vertexai = vertexai
        self.name = name or ("vertexai" if vertexai else "googleai")
        self.models = list(models)
        self._client = client
        self._options: dict[str, Any] = {"vertexai": vertexai}
        # Vertex AI authenticates with Google Cloud credentials (or an express-mode key given here).
        key = api_key or (
            None if vertexai else os.environ.get("GOOGLE_API_KEY") or os.environ.get("GEMINI_API_KEY")
        )
        if key:
            self._options["api_key"] = key
        if project:
            self._options["project"] = project
        if location:
            self._options["location"] = location
        http: dict[str, Any] = {}
        if base_url:
            http["base_url"] = base_url
        if timeout is not None:
            http["timeout"] = int(timeout * 1000)  # the SDK counts milliseconds
        if max_retries is not None:
            http["retry_options"] = {"attempts": max_retries + 1}
        if http:
            self._options["http_options"] = http
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()

    def client(self) -> Any:
        """The injected client, or the SDK's async client for the running event loop (made on first use)."""
        if self._client is not None:
            return self._client
        # An async HTTP connection pool belongs to one event loop, so each loop gets its own client.
        loop = asyncio.get_running_loop()
        if loop not in self._clients:
            try:
                from google import genai
            except ImportError as exc:
                raise missing_sdk("google-genai", "google") from exc
            if not self.vertexai and "api_key" not in self._options:
                raise TurnkitError(
                    "FAILED_PRECONDITION",
                    "GoogleAI needs an API key: set GEMINI_API_KEY (or GOOGLE_API_KEY, which wins when both "
                    "are set) or pass api_key=",
                )
            try:
                # The whole client is kept: dropping it would close its (sync) connection pool.
                self._clients[loop] = genai.Client(**self._options)
            except ValueError as exc:  # e.g. Vertex AI without project and location
                raise TurnkitError("FAILED_PRECONDITION", f"cannot start the Gemini client: {exc}") from exc
        return self._clients[loop].aio

    def model(self, model_id: str) -> GeminiModel:
        """The model function for one model id."""
        return GeminiModel(model_id, self.client)


class VertexAI(GoogleAI):
    """Gemini on Vertex AI: `vertexai/<model>`, with the project and location (or the SDK's
    `GOOGLE_CLOUD_PROJECT` / `GOOGLE_CLOUD_LOCATION`) and Google Cloud credentials."""

    def __init__(self, *, project: str | None = None, location: str | None = None, **options: Any) -> None:
        super().__init__(vertexai=True, project=project, location=location, **options)
