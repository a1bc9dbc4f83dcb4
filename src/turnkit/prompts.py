"""Prompts: reusable generate calls defined in code or in Dotprompt `.prompt` files.

A prompt bundles a model, config, tools, an input schema, an output schema and Handlebars templates
for its system, history and user messages. `ai.prompt(name)` returns an `ExecutablePrompt`:
`await p(input)` generates, `p.stream(input)` streams, `await p.render(input)` returns the options
it would generate with. dotpromptz parses front matter, converts picoschema and renders templates;
this module validates input, places the caller's history, and hands the result to `ai.generate`.
"""

from __future__ import annotations

import inspect
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema  # type: ignore[import-untyped, unused-ignore]
from dotpromptz import DataArgument, Dotprompt, FrontmatterError, HelperFn, ParsedPrompt, PromptFunction
from dotpromptz import Message as DpMessage
from dotpromptz import Role as DpRole
from dotpromptz import TextPart as DpTextPart
from pydantic import BaseModel, ValidationError

from turnkit.errors import TurnkitError
from turnkit.generate import GenerateResponse, GenerateStream, OutputSpec, to_messages, to_parts
from turnkit.middleware import Middleware
from turnkit.models import Model
from turnkit.registry import Registry
from turnkit.tools import Tool
from turnkit.types import DocumentData, Message, ModelResponseChunk, Part

if TYPE_CHECKING:
    from turnkit.app import Turnkit

__all__ = [
    "ExecutablePrompt",
    "GenerateOptions",
    "define_helper",
    "define_partial",
    "define_prompt",
    "define_schema",
    "load_prompt_folder",
    "lookup_prompt",
]

# `system=` / `prompt=`: a Handlebars template, literal parts, or `fn(input)` returning either.
TemplateSource = str | Part | Sequence[str | Part] | Callable[[Any], Any]
# `messages=`: a Handlebars template with `{{role}}` markers, literal messages, or `fn(input)`.
MessagesSource = str | Sequence[Message | dict[str, Any]] | Callable[[Any], Any]

# Marks the stand-in message through which dotpromptz tells us where the history goes.
_HISTORY_SLOT = "turnkit.historySlot"


@dataclass
class GenerateOptions:
    """A rendered prompt: everything `ai.generate` needs, with the messages fully rendered."""

    model: str | Model | None
    messages: list[Message]
    config: Any = None
    tools: list[str | Tool] = field(default_factory=list)
    output: OutputSpec | None = None
    max_turns: int | None = None
    tool_choice: str | None = None
    return_tool_requests: bool | None = None
    docs: list[DocumentData] | None = None
    use: list[Middleware] = field(default_factory=list)

    def to_generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `ai.generate(**kwargs)` that run exactly these options."""
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": self.messages,
            "config": self.config,
            "tools": self.tools or None,
            "output": self.output,
            "tool_choice": self.tool_choice,
            "docs": self.docs,
            "use": self.use,
        }
        # These have non-None defaults in generate, so pass them only when set.
        if self.max_turns is not None:
            kwargs["max_turns"] = self.max_turns
        if self.return_tool_requests is not None:
            kwargs["return_tool_requests"] = self.return_tool_requests
        return kwargs


@dataclass
class _Spec:
    """A prompt's settings before rendering: what front matter or `define_prompt` declared."""

    model: str | Model | None = None
    config: Any = None
    tools: list[str | Tool] = field(default_factory=list)
    output: OutputSpec | None = None
    max_turns: int | None = None
    tool_choice: str | None = None
    return_tool_requests: bool | None = None
    input_model: type[BaseModel] | None = None
    input_schema: dict[str, Any] | None = None
    input_default: dict[str, Any] = field(default_factory=dict)
    use: list[Middleware] = field(default_factory=list)


class _Env:
    """One app's Dotprompt engine (helpers, partials) and its named schemas."""

    def __init__(self, registry: Registry) -> None:
        self.schemas: dict[str, type[BaseModel] | dict[str, Any]] = {}
        self._compiled: dict[str, PromptFunction[Any]] = {}
        # Weak, because _ENVS holds this env strongly and it must not keep the app alive.
        self._registry = weakref.ref(registry)
        self.dotprompt = Dotprompt(schema_resolver=self._json_schema, partial_resolver=self._partial)

    def _partial(self, name: str) -> str | None:
        registry = self._registry()
        source = registry.get("partial", name) if registry is not None else None
        return source if isinstance(source, str) else None

    def _json_schema(self, name: str) -> dict[str, Any] | None:
        schema = self.schemas.get(name)
        if isinstance(schema, type):
            return schema.model_json_schema()
        return schema

    async def render(
        self, source: str, data: dict[str, Any], history: list[Message], context: dict[str, Any], label: str
    ) -> list[Message]:
        """Render a template (front matter allowed) into messages, with `history` where it belongs."""
        # dotpromptz places history at `{{history}}`, else before the last user message, else at
        # the end. A stand-in message finds that spot, so the real history (whose parts dotpromptz
        # has no types for, e.g. reasoning) never goes through it.
        slot = [DpMessage(role=DpRole.USER, content=[DpTextPart(text="")], metadata={_HISTORY_SLOT: True})]
        try:
            fn = self._compiled.get(source)
            if fn is None:
                fn = self._compiled[source] = await self.dotprompt.compile(source)
            rendered = await fn(DataArgument(input=data, messages=slot if history else None, context=context))
        except TurnkitError:
            raise
        except Exception as exc:
            raise TurnkitError("INVALID_ARGUMENT", f"cannot render {label}: {_reason(exc)}") from exc
        out: list[Message] = []
        for msg in rendered.messages:
            if msg.metadata and msg.metadata.get(_HISTORY_SLOT):
                out.extend(history)
                continue
            dumped = [p.model_dump(mode="json", by_alias=True, exclude_none=True) for p in msg.content]
            # `{{section}}` yields metadata-only placeholder parts, which turnkit has no use for.
            parts = [Part.from_wire(p) for p in dumped if set(p) - {"metadata"}]
            if parts:
                out.append(Message(role=msg.role.value, content=parts, metadata=msg.metadata or None))
        return out


def _reason(exc: BaseException) -> str:
    """The message of a dotpromptz failure; its task groups wrap failures in exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(dict.fromkeys(_reason(e) for e in exc.exceptions))
    return str(exc) or type(exc).__name__


# Keyed weakly by app so that a dropped app takes its engine with it.
_ENVS: weakref.WeakKeyDictionary[Turnkit, _Env] = weakref.WeakKeyDictionary()


def _env(ai: Turnkit) -> _Env:
    env = _ENVS.get(ai)
    if env is None:
        env = _ENVS[ai] = _Env(ai.registry)
    return env


# --- the executable prompt ---------------------------------------------------------------------


class _Source(ABC):
    """Where a prompt's settings and messages come from: code (`define_prompt`) or a `.prompt` file."""

    label: str  # names the prompt in errors

    @abstractmethod
    async def spec(self) -> _Spec:
        """The declared settings, with schemas resolved."""

    @abstractmethod
    async def messages(
        self, value: Any, data: dict[str, Any], history: list[Message], context: dict[str, Any]
    ) -> list[Message]:
        """The rendered messages: the prompt's own, with `history` in its place."""


class ExecutablePrompt:
    """A registered prompt: call it to generate, `stream` it, or `render` it to generate options."""

    def __init__(
        self, ai: Turnkit, source: _Source, *, name: str | None, variant: str | None, description: str | None
    ) -> None:
        self.name = name
        self.variant = variant
        self.description = description
        self._ai = ai
        self._source = source

    async def render(
        self,
        input: Any = None,
        *,
        messages: Sequence[Message | dict[str, Any]] | None = None,
        context: dict[str, Any] | None = None,
        model: str | Model | None = None,
        config: Any = None,
        tools: Sequence[str | Tool] | None = None,
        output: Any = None,
        max_turns: int | None = None,
        tool_choice: str | None = None,
        return_tool_requests: bool | None = None,
        docs: Sequence[DocumentData] | None = None,
        use: Sequence[Middleware] = (),
    ) -> GenerateOptions:
        """Validate `input`, render the templates, and merge the overrides into generate options.

        `messages` is the conversation so far: it goes after the prompt's system message and before
        its user message (or at `{{history}}`). `context` is visible to templates as `{{@key}}`.
        Overrides replace the prompt's settings, except `config`, which is merged key by key, and
        `use`, whose middleware wraps the prompt's own.
        """
        spec = await self._source.spec()
        value, data = _validate_input(self._source.label, spec, input)
        rendered = await self._source.messages(value, data, to_messages(messages), context or {})
        return GenerateOptions(
            model=model or spec.model or self._ai.default_model,
            messages=rendered,
            config=_merge_config(spec.config, config),
            tools=list(tools) if tools is not None else list(spec.tools),
            output=OutputSpec.of(output) if output is not None else spec.output,
            max_turns=max_turns if max_turns is not None else spec.max_turns,
            tool_choice=tool_choice or spec.tool_choice,
            return_tool_requests=spec.return_tool_requests
            if return_tool_requests is None
            else return_tool_requests,
            docs=list(docs) if docs else None,
            use=[*use, *spec.use],
        )

    async def __call__(self, input: Any = None, **options: Any) -> GenerateResponse:
        """Render with `input` and generate; `options` are `render` overrides or `ai.generate` options."""
        render_opts = {k: v for k, v in options.items() if k in _RENDER_OPTIONS}
        generate_opts = {k: v for k, v in options.items() if k not in _RENDER_OPTIONS}
        rendered = await self.render(input, context=options.get("context"), **render_opts)
        return await self._ai.generate(**rendered.to_generate_kwargs(), **generate_opts)

    def stream(self, input: Any = None, **options: Any) -> GenerateStream:
        """Like calling the prompt, streaming: iterate the result for chunks, then await `.response`."""
        if "on_chunk" in options:
            raise TypeError("stream delivers chunks itself; do not pass on_chunk")

        async def run(sink: Callable[[ModelResponseChunk], None]) -> GenerateResponse:
            return await self(input, on_chunk=sink, **options)

        return GenerateStream(run)

    def __repr__(self) -> str:
        return f"ExecutablePrompt({self._source.label})"


# Options of `p(...)` / `p.stream(...)` that shape the render; the others go to `ai.generate` as is,
# and `context` goes to both (templates read it as `{{@key}}`, tools as their context).
_RENDER_OPTIONS = frozenset(inspect.signature(ExecutablePrompt.render).parameters) - {
    "self",
    "input",
    "context",
}


def _validate_input(label: str, spec: _Spec, raw: Any) -> tuple[Any, dict[str, Any]]:
    """Check `raw` against the input schema, defaults applied.

    Returns the value handed to callables (a model instance when the schema is a Pydantic model)
    and the dict the templates see.
    """
    if spec.input_model is not None:
        try:
            value = raw if isinstance(raw, spec.input_model) else spec.input_model.model_validate(raw or {})
        except ValidationError as exc:
            detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'input'}: {e['msg']}" for e in exc.errors())
            raise TurnkitError("INVALID_ARGUMENT", f"invalid input for {label}: {detail}") from exc
        return value, value.model_dump(mode="json")
    if isinstance(raw, BaseModel):
        raw = raw.model_dump(mode="json")
    if raw is not None and not isinstance(raw, Mapping):
        raise TurnkitError("INVALID_ARGUMENT", f"invalid input for {label}: expected an object, got {raw!r}")
    data = {**spec.input_default, **(raw or {})}
    if spec.input_schema is not None:
        for key, prop in (spec.input_schema.get("properties") or {}).items():
            if isinstance(prop, dict) and "default" in prop:
                data.setdefault(key, prop["default"])
        validator = jsonschema.validators.validator_for(spec.input_schema)(spec.input_schema)
        errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
        if errors:
            detail = "; ".join(
                f"{'.'.join(map(str, e.absolute_path)) or 'input'}: {e.message}" for e in errors
            )
            raise TurnkitError("INVALID_ARGUMENT", f"invalid input for {label}: {detail}")
    return data, data


def _merge_config(base: Any, override: Any) -> Any:
    if override is None or base is None:
        return base if override is None else override
    b, o = _as_dict(base), _as_dict(override)
    return {**b, **o} if b is not None and o is not None else override


def _as_dict(config: Any) -> dict[str, Any] | None:
    if isinstance(config, BaseModel):
        return config.model_dump(mode="json", by_alias=True, exclude_none=True)
    return dict(config) if isinstance(config, Mapping) else None


# --- prompts defined in code -------------------------------------------------------------------


class _CodeSource(_Source):
    """A prompt from `define_prompt`: string templates rendered by dotpromptz, or callables."""

    def __init__(
        self,
        env: _Env,
        label: str,
        spec: _Spec,
        system: TemplateSource | None,
        prompt: TemplateSource | None,
        messages: MessagesSource | None,
    ) -> None:
        self.label = label
        self._env = env
        self._spec = spec
        self._system = system
        self._prompt = prompt
        self._messages = messages

    async def spec(self) -> _Spec:
        """The settings given to `define_prompt`."""
        return self._spec

    async def messages(
        self, value: Any, data: dict[str, Any], history: list[Message], context: dict[str, Any]
    ) -> list[Message]:
        """The system message, the `messages` with history inserted (or the history), the user message."""
        out: list[Message] = []
        system = await self._parts(self._system, value, data, context)
        if system:
            out.append(Message(role="system", content=system))
        if self._messages is None:
            out.extend(history)
        elif isinstance(self._messages, str):
            out.extend(await self._env.render(self._messages, data, history, context, self.label))
        else:
            produced = await _call(self._messages, value) if callable(self._messages) else self._messages
            out.extend(_insert_history(to_messages(produced), history))
        user = await self._parts(self._prompt, value, data, context)
        if user:
            out.append(Message(role="user", content=user))
        return out

    async def _parts(
        self, source: TemplateSource | None, value: Any, data: dict[str, Any], context: dict[str, Any]
    ) -> list[Part]:
        if source is None:
            return []
        if isinstance(source, str):
            rendered = await self._env.render(source, data, [], context, self.label)
            return [part for msg in rendered for part in msg.content]
        result = await _call(source, value) if callable(source) else source
        return to_parts(result) if result is not None else []


async def _call(fn: Callable[[Any], Any], value: Any) -> Any:
    result = fn(value)
    return await result if inspect.isawaitable(result) else result


def _insert_history(messages: list[Message], history: list[Message]) -> list[Message]:
    """Put `history` before a trailing user message, else at the end (dotpromptz's rule, for callables)."""
    if messages and messages[-1].role == "user":
        return [*messages[:-1], *history, messages[-1]]
    return [*messages, *history]


def define_prompt(
    ai: Turnkit,
    name: str | None = None,
    *,
    variant: str | None = None,
    description: str | None = None,
    model: str | Model | None = None,
    config: Any = None,
    system: TemplateSource | None = None,
    prompt: TemplateSource | None = None,
    messages: MessagesSource | None = None,
    tools: Sequence[str | Tool] | None = None,
    tool_choice: str | None = None,
    input_schema: type[BaseModel] | dict[str, Any] | None = None,
    output: type[BaseModel] | dict[str, Any] | OutputSpec | None = None,
    max_turns: int | None = None,
    return_tool_requests: bool | None = None,
    use: Sequence[Middleware] = (),
) -> ExecutablePrompt:
    """Define a prompt in code and register it under `name` (and `variant`), returning it executable.

    `system` and `prompt` are Handlebars templates over the input, literal parts, or `fn(input)`;
    `messages` is a template with `{{role}}` markers, a list of messages, or `fn(input)`.
    `input_schema` (a Pydantic model or JSON schema) validates the input and supplies defaults;
    `use` is middleware around every model call the prompt makes.
    """
    spec = _Spec(
        model=model,
        config=config,
        tools=list(tools or ()),
        output=OutputSpec.of(output),
        max_turns=max_turns,
        tool_choice=tool_choice,
        return_tool_requests=return_tool_requests,
        use=list(use),
        input_model=input_schema if isinstance(input_schema, type) else None,
        input_schema=input_schema if isinstance(input_schema, dict) else None,
    )
    label = f"prompt {_key(name, variant)!r}" if name else "prompt"
    executable = ExecutablePrompt(
        ai,
        _CodeSource(_env(ai), label, spec, system, prompt, messages),
        name=name,
        variant=variant,
        description=description,
    )
    if name:
        ai.registry.register("prompt", _key(name, variant), executable)
    return executable


# --- prompts from .prompt files ----------------------------------------------------------------


class _FileSource(_Source):
    """A prompt from a `.prompt` file: front matter for the settings, the body for the messages."""

    def __init__(self, env: _Env, label: str, source: str, parsed: ParsedPrompt[Any]) -> None:
        self.label = label
        self._env = env
        self._source = source
        self._parsed = parsed
        raw = parsed.raw or {}
        self._max_turns = _typed(raw, "maxTurns", int, label)
        self._tool_choice = _typed(raw, "toolChoice", str, label)
        self._return_tool_requests = _typed(raw, "returnToolRequests", bool, label)
        fmt = parsed.output.format if parsed.output else None
        if fmt not in (None, "json", "text"):
            raise TurnkitError(
                "UNIMPLEMENTED", f"{label}: output format {fmt!r} is unsupported (use json or text)"
            )

    async def spec(self) -> _Spec:
        """The front matter, with picoschema and schema names turned into JSON schema."""
        try:
            meta = await self._env.dotprompt.render_metadata(self._parsed)
        except Exception as exc:
            raise TurnkitError(
                "INVALID_ARGUMENT", f"bad front matter in {self.label}: {_reason(exc)}"
            ) from exc
        return _Spec(
            model=meta.model,
            config=meta.config,
            # dotpromptz resolves no tools here (it has no tool resolver): the names stay for generate.
            tools=list(meta.tools or ()),
            output=self._output(meta.output),
            max_turns=self._max_turns,
            tool_choice=self._tool_choice,
            return_tool_requests=self._return_tool_requests,
            input_schema=meta.input.schema if meta.input else None,
            input_default=dict(meta.input.default or {}) if meta.input else {},
        )

    def _output(self, output: Any) -> OutputSpec | None:
        if output is None:
            return None
        fmt = output.format or ("json" if output.schema else "text")
        if fmt == "text":
            return None
        # A schema named after a registered Pydantic model gives `response.output` as that model.
        declared = ((self._parsed.raw or {}).get("output") or {}).get("schema")
        named = self._env.schemas.get(declared) if isinstance(declared, str) else None
        if isinstance(named, type):
            return OutputSpec.of(named)
        return OutputSpec(schema=output.schema)

    async def messages(
        self, value: Any, data: dict[str, Any], history: list[Message], context: dict[str, Any]
    ) -> list[Message]:
        """The rendered body; history goes at `{{history}}` or before the last user message."""
        return await self._env.render(self._source, data, history, context, self.label)


def _typed(raw: dict[str, Any], key: str, kind: type, label: str) -> Any:
    value = raw.get(key)
    # bool is an int in Python, but `maxTurns: true` is a mistake.
    if value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
        raise TurnkitError(
            "INVALID_ARGUMENT", f"{label}: front matter {key!r} must be of type {kind.__name__}"
        )
    return value


def load_prompt_folder(ai: Turnkit, directory: str | Path) -> None:
    """Register every `.prompt` file under `directory`: `_name.prompt` as partials, the rest as prompts.

    `sub/name.prompt` becomes prompt `sub/name`; `name.variant.prompt` is its variant `variant`.
    Front matter is checked now, so a malformed file fails here, naming the file.
    """
    root = Path(directory)
    if not root.is_dir():
        raise TurnkitError("NOT_FOUND", f"prompt directory {str(directory)!r} does not exist")
    env = _env(ai)
    for path in sorted(root.rglob("*.prompt")):
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TurnkitError("INVALID_ARGUMENT", f"cannot read prompt file {path}: {exc}") from exc
        stem = path.name.removesuffix(".prompt")
        if stem.startswith("_"):
            define_partial(ai, stem[1:], source)
            continue
        base, _, variant = stem.partition(".")
        name = "/".join([*path.relative_to(root).parent.parts, base])
        try:
            parsed: ParsedPrompt[Any] = env.dotprompt.parse(source, source_name=str(path))
        except FrontmatterError as exc:
            raise TurnkitError("INVALID_ARGUMENT", str(exc)) from exc
        label = f"prompt {_key(name, variant or None)!r} ({path})"
        executable = ExecutablePrompt(
            ai,
            _FileSource(env, label, source, parsed),
            name=name,
            variant=variant or None,
            description=parsed.description,
        )
        ai.registry.register("prompt", _key(name, variant or None), executable)


# --- lookup, partials, helpers, schemas --------------------------------------------------------


def _key(name: str | None, variant: str | None) -> str:
    return f"{name}.{variant}" if variant else name or ""


def lookup_prompt(ai: Turnkit, name: str, *, variant: str | None = None) -> ExecutablePrompt:
    """The prompt registered as `name` (and `variant`); NOT_FOUND naming it otherwise."""
    found: ExecutablePrompt = ai.registry.lookup("prompt", _key(name, variant))
    return found


def define_partial(ai: Turnkit, name: str, source: str) -> None:
    """Register a Handlebars partial, used in templates as `{{> name}}`."""
    ai.registry.register("partial", name, source)
    _env(ai).dotprompt.define_partial(name, source)


def define_helper(ai: Turnkit, name: str, fn: HelperFn) -> None:
    """Register a Handlebars helper `fn(params, options) -> str`, used in templates as `{{name ...}}`."""
    _env(ai).dotprompt.define_helper(name, fn)


def define_schema(ai: Turnkit, name: str, schema: type[BaseModel] | dict[str, Any]) -> None:
    """Name a schema (a Pydantic model or JSON schema) for use in `.prompt` front matter."""
    if not (isinstance(schema, dict) or (isinstance(schema, type) and issubclass(schema, BaseModel))):
        raise TurnkitError(
            "INVALID_ARGUMENT", f"schema {name!r} must be a Pydantic model class or JSON schema"
        )
    _env(ai).schemas[name] = schema
