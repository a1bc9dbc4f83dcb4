"""Tools: Python functions a model may call, described to it by a name, a docstring and a JSON schema.

A tool takes a Pydantic model (or plain typed parameters) and may also take a `ToolContext` to read
the caller's context or resumed-interrupt metadata. A tool pauses the turn for a human by raising
`Interrupt` (or calling `ctx.interrupt(...)`); `define_interrupt` makes a tool that always does.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, get_origin, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from turnkit.errors import TurnkitError
from turnkit.types import ToolDefinition

__all__ = [
    "Interrupt",
    "Tool",
    "ToolContext",
    "ToolInputError",
    "define_interrupt",
    "genkit_tool_names",
    "tool_from_function",
]


class Interrupt(Exception):
    """Raised by a tool to pause the turn and ask the client for input; `data` reaches the client."""

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        super().__init__("tool interrupted")
        self.data = data


class ToolInputError(TurnkitError):
    """The model called a tool with input that does not fit the tool's schema."""

    def __init__(self, tool: str, detail: str) -> None:
        super().__init__("INVALID_ARGUMENT", f"invalid input for tool {tool!r}: {detail}")


class ToolContext:
    """What a running tool can see: the caller's context and, on restart, the resumed metadata."""

    def __init__(
        self,
        *,
        context: dict[str, Any] | None = None,
        resumed: Any = None,
        abort_signal: threading.Event | None = None,
    ) -> None:
        self.context: dict[str, Any] = context or {}
        self.resumed = resumed
        # Set when the turn is aborted: a long-running (or sync, in a worker thread) tool should poll it.
        self.abort_signal = abort_signal or threading.Event()

    @property
    def aborted(self) -> bool:
        """Whether the turn running this tool has been asked to stop."""
        return self.abort_signal.is_set()

    def interrupt(self, data: dict[str, Any] | None = None) -> NoReturn:
        """Pause the turn and hand `data` to the client, which answers with respond or restart."""
        raise Interrupt(data)


ToolFn = Callable[..., Any]


class Tool:
    """A named tool: its description, JSON schemas, input model, and the function that runs it."""

    def __init__(
        self,
        name: str,
        fn: ToolFn,
        *,
        description: str = "",
        input_model: type[BaseModel] | None = None,
        input_schema: dict[str, Any] | None = None,
        output_schema: dict[str, Any] | None = None,
        call_style: str = "value",
        wants_context: bool = False,
        metadata: dict[str, Any] | None = None,
        context_param: str = "ctx",
        input_param: str | None = None,
        field_params: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.fn = fn
        self.description = description
        self.input_model = input_model
        self.input_schema = input_schema if input_schema is not None else _schema_of(input_model)
        self.output_schema = output_schema
        self.metadata = metadata
        # How the function takes its input: "value" (one argument), "object" (one argument, the raw
        # input object), "spread" (keyword per field), "none".
        self._call_style = call_style
        self._wants_context = wants_context
        # Where the input and the ToolContext go: keyword names (None: the input goes first, by position).
        self._context_param = context_param
        self._input_param = input_param
        # Spread style: input model field -> function parameter (they differ for names like `_`).
        self._field_params = field_params
        self._is_async = inspect.iscoroutinefunction(fn)
        self._definition = ToolDefinition(
            name=name,
            description=description,
            input_schema=self.input_schema,
            output_schema=output_schema,
            metadata=metadata,
        )

    @property
    def definition(self) -> ToolDefinition:
        """The tool as the model sees it."""
        return self._definition

    def parse_input(self, raw: Any) -> Any:
        """Validate the model's raw input; raise ToolInputError when it does not fit."""
        if self.input_model is None:
            if self._call_style != "object":
                return raw
            if raw is not None and not isinstance(raw, dict):
                raise ToolInputError(self.name, f"input: expected an object, got {type(raw).__name__}")
            return raw if raw is not None else {}
        try:
            return self.input_model.model_validate(raw if raw is not None else {})
        except ValidationError as exc:
            detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'input'}: {e['msg']}" for e in exc.errors())
            raise ToolInputError(self.name, detail) from exc

    async def run(self, raw_input: Any, ctx: ToolContext | None = None) -> Any:
        """Validate the input, call the function (sync ones in a worker thread), return JSON-able output."""
        value = self.parse_input(raw_input)
        args: tuple[Any, ...] = ()
        kwargs: dict[str, Any] = {}
        if self._call_style == "spread" and isinstance(value, BaseModel):
            names = self._field_params or {}
            kwargs = {names.get(k, k): getattr(value, k) for k in type(value).model_fields}
        elif self._call_style in ("value", "object"):
            if self._input_param is None:
                args = (value,)
            else:
                kwargs[self._input_param] = value
        if self._wants_context:
            kwargs[self._context_param] = ctx or ToolContext()
        if self._is_async:
            result = await self.fn(*args, **kwargs)
        else:
            result = await asyncio.to_thread(self.fn, *args, **kwargs)
        return _jsonable(result)

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the underlying function directly, as if undecorated."""
        result = self.fn(*args, **kwargs)
        return await result if inspect.isawaitable(result) else result

    def __repr__(self) -> str:
        return f"Tool({self.name!r})"


def tool_from_function(fn: ToolFn, *, name: str | None = None, description: str | None = None) -> Tool:
    """Build a Tool from a function's signature, type hints and docstring."""
    sig = inspect.signature(fn)
    hints = get_type_hints(fn)
    context = [p for p in sig.parameters.values() if _is_context_param(p, hints)]
    by_position = not context and _context_by_position(sig, hints)
    if by_position:
        context = [list(sig.parameters.values())[1]]
    if len(context) > 1:
        raise TurnkitError(
            "INVALID_ARGUMENT", f"tool {fn.__name__!r} takes more than one ToolContext parameter"
        )
    params = [p for p in sig.parameters.values() if p not in context]
    if context and context[0].kind is inspect.Parameter.POSITIONAL_ONLY:
        raise TurnkitError(
            "INVALID_ARGUMENT", f"tool {fn.__name__!r}: the ToolContext parameter cannot be positional-only"
        )
    input_model: type[BaseModel] | None
    style = "value"
    input_param: str | None = None
    field_params: dict[str, str] | None = None
    lone = params[0] if len(params) == 1 else None
    if lone is not None and lone.kind is not inspect.Parameter.POSITIONAL_ONLY:
        input_param = lone.name  # by name, so a ToolContext parameter may come first
    if lone is not None and by_position and lone.name not in hints:
        # Genkit's `def tool(input, ctx)`: the input as the model sent it.
        input_model = None
    elif lone is not None and _is_model(hints.get(lone.name)):
        input_model = hints[lone.name]
    elif lone is not None and _is_mapping(hints.get(lone.name)):
        # `def tool(input: dict, ctx)` (Genkit's shape): the whole input object, unvalidated.
        input_model, style = None, "object"
    elif params:
        input_param = None
        fields: dict[str, Any] = {}
        field_params = {}
        for i, p in enumerate(params):
            annotation = hints.get(p.name, Any)
            default = ... if p.default is inspect.Parameter.empty else p.default
            # Pydantic ignores fields named with a leading underscore (`_`): keep such a parameter
            # under another field name, with its own name as the alias the model sees.
            field = p.name if not p.name.startswith("_") else f"param_{i}"
            fields[field] = (annotation, Field(default, alias=p.name) if field != p.name else default)
            field_params[field] = p.name
        input_model = create_model(
            f"{fn.__name__}_input", __config__=ConfigDict(validate_by_name=True), **fields
        )
        style = "spread"
    else:
        input_model, style = None, "none"
    output_schema = None
    ret = hints.get("return")
    if isinstance(ret, type) and issubclass(ret, BaseModel):
        output_schema = ret.model_json_schema()
    tool_name = name or fn.__name__
    return Tool(
        tool_name,
        fn,
        description=description if description is not None else inspect.cleandoc(fn.__doc__ or ""),
        input_model=input_model,
        input_schema=None if input_model else {"type": "object", "properties": {}},
        output_schema=output_schema,
        call_style=style,
        wants_context=bool(context),
        context_param=context[0].name if context else "ctx",
        input_param=input_param,
        field_params=field_params,
    )


def genkit_tool_names(
    name_arg: Any, description_arg: Any, name: str | None, description: str | None
) -> tuple[str | None, str | None]:
    """The name and description of Genkit's `@ai.tool("name", "description")`, given by position;
    INVALID_ARGUMENT when they are not strings or are also given by keyword."""
    for label, by_position, by_keyword in (
        ("name", name_arg, name),
        ("description", description_arg, description),
    ):
        if by_position is not None and not isinstance(by_position, str):
            raise TurnkitError(
                "INVALID_ARGUMENT", f"ai.tool: the {label} must be a string, got {by_position!r:.80}"
            )
        if by_position is not None and by_keyword is not None:
            raise TurnkitError("INVALID_ARGUMENT", f"ai.tool: {label} given both by position and as {label}=")
    return (
        name_arg if name_arg is not None else name,
        description_arg if description_arg is not None else description,
    )


def _context_by_position(sig: inspect.Signature, hints: dict[str, Any]) -> bool:
    """Whether the second of exactly two positional parameters, unannotated and without a default,
    takes the ToolContext, as Genkit decides it (`async def tool(input, ctx)` under any names)."""
    params = list(sig.parameters.values())
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if len(params) != 2 or any(p.kind not in positional for p in params):
        return False
    second = params[1]
    return second.name not in hints and second.default is inspect.Parameter.empty


def _is_context_param(param: inspect.Parameter, hints: dict[str, Any]) -> bool:
    """A parameter that receives the ToolContext: annotated as one (any name), or an unannotated `ctx`."""
    hint = hints.get(param.name)
    if hint is None or hint is Any:
        return param.name == "ctx"
    return isinstance(hint, type) and issubclass(hint, ToolContext)


def define_interrupt(
    name: str,
    *,
    description: str | None = None,
    input_schema: type[BaseModel] | dict[str, Any] | None = None,
    output_schema: type[BaseModel] | dict[str, Any] | None = None,
) -> Tool:
    """A tool that never runs by itself: every call pauses the turn until the client responds.
    Without a `description` the model sees an empty one (as in Genkit)."""

    def always_interrupt(_input: Any = None) -> NoReturn:
        raise Interrupt()

    model = input_schema if _is_model(input_schema) else None
    return Tool(
        name,
        always_interrupt,
        description=description or "",
        input_model=model,  # type: ignore[arg-type]
        input_schema=None if model else (input_schema or {"type": "object", "properties": {}}),  # type: ignore[arg-type]
        output_schema=_schema_of(output_schema) if _is_model(output_schema) else output_schema,  # type: ignore[arg-type]
    )


def _is_mapping(tp: Any) -> bool:
    origin = get_origin(tp) or tp
    return isinstance(origin, type) and issubclass(origin, Mapping)


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _schema_of(model: type[BaseModel] | None) -> dict[str, Any] | None:
    return model.model_json_schema() if model is not None else None


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True, exclude_none=True)
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value
