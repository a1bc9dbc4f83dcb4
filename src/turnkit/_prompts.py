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
from typing import Any, Generic

import jsonschema  # type: ignore[import-untyped, unused-ignore]
from dotpromptz import DataArgument, Dotprompt, HelperFn, PromptFunction
from dotpromptz import Message as DpMessage
from dotpromptz import Role as DpRole
from dotpromptz import TextPart as DpTextPart
from pydantic import BaseModel, ValidationError

from turnkit._checks import Options
from turnkit._generate import (
    DEFAULT_MAX_TURNS,
    GenerateResponse,
    GenerateStream,
    OutputSpec,
    OutputT,
    generate,
    to_messages,
    to_parts,
)
from turnkit._registry import Registry
from turnkit._tools import Tool
from turnkit.errors import TurnkitError
from turnkit.middleware import Middleware
from turnkit.models import Model, ModelContext
from turnkit.types import DocumentData, Message, ModelResponseChunk, Part, Resume

__all__ = [
    "ExecutablePrompt",
    "GenerateOptions",
    "PromptEnv",
    "PromptSource",
    "PromptSpec",
    "define_helper",
    "define_partial",
    "define_prompt",
    "define_schema",
    "error_reason",
    "lookup_prompt",
    "prompt_env",
    "prompt_key",
    "render_template",
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
class PromptSpec:
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


class PromptEnv:
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
            raise TurnkitError("INVALID_ARGUMENT", f"cannot render {label}: {error_reason(exc)}") from exc
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


def error_reason(exc: BaseException) -> str:
    """The message of a dotpromptz failure; its task groups wrap failures in exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(dict.fromkeys(error_reason(e) for e in exc.exceptions))
    return str(exc) or type(exc).__name__


# Keyed weakly by registry so that a dropped app takes its engine with it.
_ENVS: weakref.WeakKeyDictionary[Registry, PromptEnv] = weakref.WeakKeyDictionary()


def prompt_env(registry: Registry) -> PromptEnv:
    env = _ENVS.get(registry)
    if env is None:
        env = _ENVS[registry] = PromptEnv(registry)
    return env


async def render_template(
    registry: Registry, source: str, data: Mapping[str, Any], context: Mapping[str, Any], label: str
) -> list[Part]:
    """Render a Handlebars template (with this app's partials and helpers) into parts.

    `data` is the input the template sees; `context` is visible as `{{@key}}`; `label` names the
    template in a rendering error.
    """
    rendered = await prompt_env(registry).render(source, dict(data), [], dict(context), label)
    return [part for msg in rendered for part in msg.content]


# --- the executable prompt ---------------------------------------------------------------------


class PromptSource(ABC):
    """Where a prompt's settings and messages come from: code (`define_prompt`) or a `.prompt` file."""

    label: str  # names the prompt in errors

    @abstractmethod
    async def spec(self) -> PromptSpec:
        """The declared settings, with schemas resolved."""

    @abstractmethod
    async def messages(
        self, value: Any, data: dict[str, Any], history: list[Message], context: dict[str, Any]
    ) -> list[Message]:
        """The rendered messages: the prompt's own, with `history` in its place."""


class ExecutablePrompt(Generic[OutputT]):
    """A registered prompt: call it to generate, `stream` it, or `render` it to generate options.

    Generic in its structured output type: `define_prompt(output=MyModel)` gives an
    `ExecutablePrompt[MyModel]`, whose calls return `GenerateResponse[MyModel]`.
    """

    def __init__(
        self,
        registry: Registry,
        source: PromptSource,
        *,
        name: str | None,
        variant: str | None,
        description: str | None,
    ) -> None:
        self.name = name
        self.variant = variant
        self.description = description
        self._registry = registry
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
            model=model or spec.model or self._registry.default_model,
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

    async def __call__(
        self,
        input: Any = None,
        *,
        messages: Sequence[Message | dict[str, Any]] | None = None,
        context: dict[str, Any] | None = None,
        model: str | Model | None = None,
        config: Any = None,
        tools: Sequence[str | Tool] | None = None,
        output: type[OutputT] | Mapping[str, Any] | None = None,
        max_turns: int | None = None,
        tool_choice: str | None = None,
        return_tool_requests: bool | None = None,
        docs: Sequence[DocumentData] | None = None,
        use: Sequence[Middleware] = (),
        resume: Resume | dict[str, Any] | None = None,
        on_chunk: Callable[[ModelResponseChunk], None] | None = None,
        model_context: ModelContext | None = None,
    ) -> GenerateResponse[OutputT]:
        """Render with `input` and the `render` overrides, then generate; `resume`, `on_chunk` and
        `model_context` go to `generate` as they do in `ai.generate`."""
        rendered = await self.render(
            input,
            messages=messages,
            context=context,
            model=model,
            config=config,
            tools=tools,
            output=output,
            max_turns=max_turns,
            tool_choice=tool_choice,
            return_tool_requests=return_tool_requests,
            docs=docs,
            use=use,
        )
        response: GenerateResponse[OutputT] = await generate(
            self._registry,
            model=rendered.model,
            messages=rendered.messages,
            config=rendered.config,
            tools=rendered.tools or None,
            output=rendered.output,
            max_turns=DEFAULT_MAX_TURNS if rendered.max_turns is None else rendered.max_turns,
            tool_choice=rendered.tool_choice,
            return_tool_requests=bool(rendered.return_tool_requests),
            docs=rendered.docs,
            use=rendered.use,
            resume=resume,
            on_chunk=on_chunk,
            context=context,
            model_context=model_context,
        )
        return response

    def stream(
        self,
        input: Any = None,
        *,
        messages: Sequence[Message | dict[str, Any]] | None = None,
        context: dict[str, Any] | None = None,
        model: str | Model | None = None,
        config: Any = None,
        tools: Sequence[str | Tool] | None = None,
        output: type[OutputT] | Mapping[str, Any] | None = None,
        max_turns: int | None = None,
        tool_choice: str | None = None,
        return_tool_requests: bool | None = None,
        docs: Sequence[DocumentData] | None = None,
        use: Sequence[Middleware] = (),
        resume: Resume | dict[str, Any] | None = None,
        model_context: ModelContext | None = None,
    ) -> GenerateStream:
        """Like calling the prompt, streaming: iterate the result for chunks, then await `.response`."""

        async def run(sink: Callable[[ModelResponseChunk], None]) -> GenerateResponse[OutputT]:
            return await self(
                input,
                messages=messages,
                context=context,
                model=model,
                config=config,
                tools=tools,
                output=output,
                max_turns=max_turns,
                tool_choice=tool_choice,
                return_tool_requests=return_tool_requests,
                docs=docs,
                use=use,
                resume=resume,
                on_chunk=sink,
                model_context=model_context,
            )

        return GenerateStream(run)

    def __repr__(self) -> str:
        return f"ExecutablePrompt({self._source.label})"


def _validate_input(label: str, spec: PromptSpec, raw: Any) -> tuple[Any, dict[str, Any]]:
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


class _CodeSource(PromptSource):
    """A prompt from `define_prompt`: string templates rendered by dotpromptz, or callables."""

    def __init__(
        self,
        env: PromptEnv,
        label: str,
        spec: PromptSpec,
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

    async def spec(self) -> PromptSpec:
        """The settings given to `define_prompt`."""
        return self._spec

    async def messages(
        self, value: Any, data: dict[str, Any], history: list[Message], context: dict[str, Any]
    ) -> list[Message]:
        """The system message, the `messages` with history inserted (or the history), the user message."""
        out: list[Message] = []
        system = await self._parts(self._system, value, data, context, "system")
        if system:
            out.append(Message(role="system", content=system))
        if self._messages is None:
            out.extend(history)
        elif isinstance(self._messages, str):
            out.extend(await self._env.render(self._messages, data, history, context, self.label))
        else:
            produced = await _call(self._messages, value) if callable(self._messages) else self._messages
            out.extend(_insert_history(to_messages(produced), history))
        user = await self._parts(self._prompt, value, data, context, "prompt")
        if user:
            out.append(Message(role="user", content=user))
        return out

    async def _parts(
        self,
        source: TemplateSource | None,
        value: Any,
        data: dict[str, Any],
        context: dict[str, Any],
        what: str,
    ) -> list[Part]:
        if source is None:
            return []
        if isinstance(source, str):
            rendered = await self._env.render(source, data, [], context, self.label)
            return [part for msg in rendered for part in msg.content]
        result = await _call(source, value) if callable(source) else source
        return to_parts(result, f"{self.label}'s {what}") if result is not None else []


async def _call(fn: Callable[[Any], Any], value: Any) -> Any:
    result = fn(value)
    return await result if inspect.isawaitable(result) else result


def _insert_history(messages: list[Message], history: list[Message]) -> list[Message]:
    """Put `history` before a trailing user message, else at the end (dotpromptz's rule, for callables)."""
    if messages and messages[-1].role == "user":
        return [*messages[:-1], *history, messages[-1]]
    return [*messages, *history]


def define_prompt(
    registry: Registry,
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
    output: type[OutputT] | Mapping[str, Any] | OutputSpec | None = None,
    max_turns: int | None = None,
    return_tool_requests: bool | None = None,
    use: Sequence[Middleware] = (),
) -> ExecutablePrompt[OutputT]:
    """Define a prompt in code and register it under `name` (and `variant`), returning it executable.

    `system` and `prompt` are Handlebars templates over the input, literal parts, or `fn(input)`;
    `messages` is a template with `{{role}}` markers, a list of messages, or `fn(input)`.
    `input_schema` (a Pydantic model or JSON schema) validates the input and supplies defaults;
    `use` is middleware around every model call the prompt makes.
    """
    check = Options("define_prompt")
    if name is not None:
        check.name(name)
    check.optional_str("variant", variant)
    check.optional_str("description", description)
    system = check.prompt_source("system", system)
    prompt = check.prompt_source("prompt", prompt)
    messages = check.messages_source(messages)
    if input_schema is not None and not (
        isinstance(input_schema, dict)
        or (isinstance(input_schema, type) and issubclass(input_schema, BaseModel))
    ):
        raise check.fail("input_schema", "must be a Pydantic model class or a JSON schema dict", input_schema)
    if return_tool_requests is not None and not isinstance(return_tool_requests, bool):
        raise check.fail("return_tool_requests", "must be a bool", return_tool_requests)
    spec = PromptSpec(
        model=check.model(model),
        config=check.config(config),
        tools=check.tools(tools) or [],
        output=check.converted("output", lambda: OutputSpec.of(output)),
        max_turns=check.count("max_turns", max_turns),
        tool_choice=check.optional_str("tool_choice", tool_choice),
        return_tool_requests=return_tool_requests,
        use=check.middleware(use),
        input_model=input_schema if isinstance(input_schema, type) else None,
        input_schema=input_schema if isinstance(input_schema, dict) else None,
    )
    label = f"prompt {prompt_key(name, variant)!r}" if name else "prompt"
    executable: ExecutablePrompt[OutputT] = ExecutablePrompt(
        registry,
        _CodeSource(prompt_env(registry), label, spec, system, prompt, messages),
        name=name,
        variant=variant,
        description=description,
    )
    if name:
        registry.register("prompt", prompt_key(name, variant), executable)
    return executable


# --- lookup, partials, helpers, schemas --------------------------------------------------------


def prompt_key(name: str | None, variant: str | None) -> str:
    return f"{name}.{variant}" if variant else name or ""


def lookup_prompt(registry: Registry, name: str, *, variant: str | None = None) -> ExecutablePrompt[Any]:
    """The prompt registered as `name` (and `variant`); NOT_FOUND naming it otherwise."""
    found: ExecutablePrompt[Any] = registry.lookup("prompt", prompt_key(name, variant))
    return found


def define_partial(registry: Registry, name: str, source: str) -> None:
    """Register a Handlebars partial, used in templates as `{{> name}}`."""
    registry.register("partial", name, source)
    prompt_env(registry).dotprompt.define_partial(name, source)


def define_helper(registry: Registry, name: str, fn: HelperFn) -> None:
    """Register a Handlebars helper `fn(params, options) -> str`, used in templates as `{{name ...}}`."""
    prompt_env(registry).dotprompt.define_helper(name, fn)


def define_schema(registry: Registry, name: str, schema: type[BaseModel] | dict[str, Any]) -> None:
    """Name a schema (a Pydantic model or JSON schema) for use in `.prompt` front matter."""
    if not (isinstance(schema, dict) or (isinstance(schema, type) and issubclass(schema, BaseModel))):
        raise TurnkitError(
            "INVALID_ARGUMENT", f"schema {name!r} must be a Pydantic model class or JSON schema"
        )
    prompt_env(registry).schemas[name] = schema
