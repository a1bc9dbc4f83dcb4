"""`StateType`: how a session's custom state is typed, validated, and turned to and from JSON.

Sessions and stores keep custom state in its JSON form (it is what snapshots and the wire carry);
a `StateType` converts at the edges a user touches: `session.get_custom()`, `update_custom`,
`chat.state`, `response.state`, `chunk.custom`. The schema can be a Pydantic model class, a
`TypedDict` (both through a Pydantic `TypeAdapter`), or a JSON schema dict (validated with
`jsonschema` when it is installed; values stay dicts).
"""

from __future__ import annotations

import importlib
import sys
import typing
from collections.abc import Mapping
from typing import Any, Generic, cast

import typing_extensions
from pydantic import BaseModel, TypeAdapter, ValidationError
from typing_extensions import TypeVar

from turnkit.errors import TurnkitError

__all__ = ["StateSchema", "StateType"]

# The state type: Any when the agent or session has no schema.
S = TypeVar("S", default=Any)

# What `state_schema=` accepts: a Pydantic model class, a TypedDict class, or a JSON schema dict.
StateSchema = type[Any] | Mapping[str, Any]

try:  # JSON-schema validation is optional: without the package, dict schemas are not enforced.
    _jsonschema: Any = importlib.import_module("jsonschema")
except ImportError:  # pragma: no cover - the dev extra installs it
    _jsonschema = None


def _is_typeddict(schema: Any) -> bool:
    return isinstance(schema, type) and issubclass(schema, dict) and hasattr(schema, "__total__")


_KEY_MARKS = {typing.Required, typing.NotRequired, typing_extensions.Required, typing_extensions.NotRequired}


def _pydantic_typeddict(schema: type[Any]) -> type[Any]:
    """`schema` as a TypedDict Pydantic can build on this Python.

    Before 3.12 Pydantic rejects `typing.TypedDict` (it lacks details it needs); users write that
    one, so it is rebuilt here as the `typing_extensions` kind with the same keys.
    """
    if sys.version_info >= (3, 12) or type(schema).__module__ != "typing":
        return schema
    fields: dict[str, Any] = {}
    for key, hint in typing.get_type_hints(schema, include_extras=True).items():
        if typing.get_origin(hint) in _KEY_MARKS:
            fields[key] = hint  # says itself whether the key is required (also under string annotations)
        elif key in schema.__required_keys__:
            fields[key] = typing_extensions.Required[hint]
        else:
            fields[key] = typing_extensions.NotRequired[hint]
    make: Any = typing_extensions.TypedDict  # called with a computed name, which mypy cannot follow
    rebuilt: type[Any] = make(schema.__name__, fields)
    return rebuilt


class StateType(Generic[S]):
    """The custom state's type: `validate` turns a user value into JSON, `load` turns JSON into `S`."""

    def __init__(self, schema: type[S] | Mapping[str, Any] | None = None) -> None:
        self.schema = schema
        self._adapter: TypeAdapter[Any] | None = None
        self._json_schema: dict[str, Any] | None = None
        self._validator: Any = None  # a jsonschema validator, built once (checking a schema is slow)
        if schema is None:
            return
        if isinstance(schema, Mapping):
            self._json_schema = dict(schema)
            if _jsonschema is not None:
                cls = _jsonschema.validators.validator_for(self._json_schema)
                try:
                    cls.check_schema(self._json_schema)
                except _jsonschema.SchemaError as exc:
                    raise TurnkitError("INVALID_ARGUMENT", f"state_schema: {exc.message}") from exc
                self._validator = cls(self._json_schema)
            return
        if not isinstance(schema, type) or not (issubclass(schema, BaseModel) or _is_typeddict(schema)):
            raise TurnkitError(
                "INVALID_ARGUMENT",
                f"state_schema must be a Pydantic model class, a TypedDict or a JSON schema dict, "
                f"not {schema!r}",
            )
        self._adapter = TypeAdapter(_pydantic_typeddict(schema) if _is_typeddict(schema) else schema)
        self._json_schema = self._adapter.json_schema()

    @classmethod
    def of(cls, schema: StateType[S] | type[S] | Mapping[str, Any] | None) -> StateType[S]:
        """`schema` itself when it is a StateType already, else a StateType wrapping it."""
        return schema if isinstance(schema, StateType) else cls(schema)

    @property
    def json_schema(self) -> dict[str, Any] | None:
        """The JSON schema of the state (agent metadata, OpenAPI), or None when untyped."""
        return self._json_schema

    def validate(self, value: Any) -> Any:
        """Check `value` (an `S`, or its JSON form) and return its JSON form; INVALID_ARGUMENT if wrong.

        None passes only when the state is untyped (or its JSON schema allows null)."""
        if value is None and self.schema is None:
            return None
        if self._adapter is not None:
            try:
                typed = self._adapter.validate_python(value)
            except ValidationError as exc:
                raise TurnkitError("INVALID_ARGUMENT", f"invalid custom state: {exc}") from exc
            return self._adapter.dump_python(typed, mode="json", by_alias=True)
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json", by_alias=True)
        if self._validator is not None:
            error = next(iter(self._validator.iter_errors(value)), None)
            if error is not None:
                where = "/".join(map(str, error.absolute_path))
                raise TurnkitError(
                    "INVALID_ARGUMENT",
                    f"invalid custom state{' at ' + where if where else ''}: {error.message}",
                )
        return value

    def load(self, value: Any) -> S | None:
        """The typed state from its JSON form. With a model or TypedDict schema, None becomes the
        default instance when every field has a default (a fresh session reads as `MyState()`)."""
        if self._adapter is None:
            return cast("S | None", value)
        if value is None:
            try:
                return cast(S, self._adapter.validate_python({}))
            except ValidationError:
                return None
        try:
            return cast(S, self._adapter.validate_python(value))
        except ValidationError as exc:
            # Stored state that no longer fits the schema (the schema changed): say which.
            raise TurnkitError(
                "FAILED_PRECONDITION", f"stored custom state does not fit the schema: {exc}"
            ) from exc

    def __repr__(self) -> str:
        schema = self.schema
        shown = getattr(schema, "__name__", None) or ("JSON schema" if schema is not None else "untyped")
        return f"StateType({shown})"
