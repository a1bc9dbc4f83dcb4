"""Prompts from Dotprompt `.prompt` files: front matter for the settings, the body for the messages.

`load_prompt_folder` registers a folder of them; the rendering and the executable prompt are
shared with prompts defined in code (`turnkit._prompts`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dotpromptz import FrontmatterError, ParsedPrompt

from turnkit._generate import OutputSpec
from turnkit._prompts import (
    ExecutablePrompt,
    PromptEnv,
    PromptSource,
    PromptSpec,
    define_partial,
    error_reason,
    prompt_env,
    prompt_key,
)
from turnkit._registry import Registry
from turnkit.errors import TurnkitError
from turnkit.types import Message

__all__ = ["load_prompt_folder"]


class _FileSource(PromptSource):
    """A prompt from a `.prompt` file: front matter for the settings, the body for the messages."""

    def __init__(self, env: PromptEnv, label: str, source: str, parsed: ParsedPrompt[Any]) -> None:
        self.label = label
        self._env = env
        self._source = source
        self._parsed = parsed
        raw = parsed.raw or {}
        self._max_turns = _typed(raw, "maxTurns", int, label)
        self._tool_choice = _typed(raw, "toolChoice", str, label)
        self._return_tool_requests = _typed(raw, "returnToolRequests", bool, label)
        self._use = _middleware_refs(raw.get("use"), label)
        fmt = parsed.output.format if parsed.output else None
        if fmt not in (None, "json", "text"):
            raise TurnkitError(
                "UNIMPLEMENTED", f"{label}: output format {fmt!r} is unsupported (use json or text)"
            )

    async def spec(self) -> PromptSpec:
        """The front matter, with picoschema and schema names turned into JSON schema."""
        try:
            meta = await self._env.dotprompt.render_metadata(self._parsed)
        except Exception as exc:
            raise TurnkitError(
                "INVALID_ARGUMENT", f"bad front matter in {self.label}: {error_reason(exc)}"
            ) from exc
        return PromptSpec(
            model=meta.model,
            config=meta.config,
            # dotpromptz resolves no tools here (it has no tool resolver): the names stay for generate.
            tools=list(meta.tools or ()),
            output=self._output(meta.output),
            max_turns=self._max_turns,
            tool_choice=self._tool_choice,
            return_tool_requests=self._return_tool_requests,
            use=self._use,
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


def _middleware_refs(value: Any, label: str) -> list[Any]:
    """Front matter `use`: registered middleware names, or `{name, config}` entries."""
    if value is None:
        return []
    ok = isinstance(value, list) and all(
        isinstance(v, str) or (isinstance(v, dict) and isinstance(v.get("name"), str)) for v in value
    )
    if not ok:
        raise TurnkitError(
            "INVALID_ARGUMENT",
            f"{label}: front matter 'use' must list middleware names or {{name, config}} entries",
        )
    return list(value)


def load_prompt_folder(registry: Registry, directory: str | Path) -> None:
    """Register every `.prompt` file under `directory`: `_name.prompt` as partials, the rest as prompts.

    `sub/name.prompt` becomes prompt `sub/name`; `name.variant.prompt` is its variant `variant`.
    Front matter is checked now, so a malformed file fails here, naming the file.
    """
    root = Path(directory)
    if not root.is_dir():
        raise TurnkitError("NOT_FOUND", f"prompt directory {str(directory)!r} does not exist")
    env = prompt_env(registry)
    for path in sorted(root.rglob("*.prompt")):
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TurnkitError("INVALID_ARGUMENT", f"cannot read prompt file {path}: {exc}") from exc
        stem = path.name.removesuffix(".prompt")
        if stem.startswith("_"):
            define_partial(registry, stem[1:], source)
            continue
        base, _, variant = stem.partition(".")
        name = "/".join([*path.relative_to(root).parent.parts, base])
        try:
            parsed: ParsedPrompt[Any] = env.dotprompt.parse(source, source_name=str(path))
        except FrontmatterError as exc:
            raise TurnkitError("INVALID_ARGUMENT", str(exc)) from exc
        label = f"prompt {prompt_key(name, variant or None)!r} ({path})"
        executable: ExecutablePrompt[Any] = ExecutablePrompt(
            registry,
            _FileSource(env, label, source, parsed),
            name=name,
            variant=variant or None,
            description=parsed.description,
        )
        registry.register("prompt", prompt_key(name, variant or None), executable)
