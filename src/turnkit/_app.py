"""The app object: `ai = Turnkit(plugins=[...], model="provider/name")`, the entry point to everything.

The app is a front for its `Registry`: prompts and agents are defined on the registry (they never
see the app), so this module imports them and nothing imports it back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, overload

from dotpromptz import HelperFn
from pydantic import BaseModel

from turnkit import _prompt_files, _prompts
from turnkit._generate import (
    DEFAULT_MAX_TURNS,
    GenerateResponse,
    GenerateStream,
    OutputT,
    PromptLike,
    generate,
)
from turnkit._prompts import ExecutablePrompt, MessagesSource, TemplateSource
from turnkit._registry import Registry
from turnkit._tools import Tool, ToolFn, define_interrupt, genkit_tool_names, tool_from_function
from turnkit.agents import _define
from turnkit.agents._agent import Agent, AgentFn, ChunkTransform, StateTransform
from turnkit.errors import TurnkitError
from turnkit.middleware import Middleware, define_middleware
from turnkit.models import Model, ModelContext, ModelFn, ModelInfo, Plugin
from turnkit.sessions import SessionStore, SnapshotStoreLike
from turnkit.sessions._session import Session, get_current_session
from turnkit.sessions._state_type import S
from turnkit.types import DocumentData, Message, ModelResponseChunk, Part, Resume

__all__ = ["Turnkit"]

T = TypeVar("T")


class Turnkit:
    """An app: its plugins, default model, and the models, tools, prompts and agents it defines."""

    def __init__(
        self,
        *,
        plugins: Sequence[Plugin] = (),
        model: str | None = None,
        prompt_dir: str | None = None,
        registry: Registry | None = None,
    ) -> None:
        """`registry` shares another app's definitions (e.g. `Turnkit(registry=agent.registry)`)."""
        self.registry = registry if registry is not None else Registry()
        if model is not None or registry is None:
            self.registry.default_model = model
        self.plugins = list(plugins)
        for plugin in self.plugins:
            plugin.initialize(self)
        if prompt_dir is not None:
            self.load_prompt_folder(prompt_dir)

    @property
    def default_model(self) -> str | None:
        """The model used when a call, prompt or agent names none (kept in the registry)."""
        return self.registry.default_model

    @default_model.setter
    def default_model(self, model: str | None) -> None:
        self.registry.default_model = model

    # --- models and tools ------------------------------------------------------------------

    def define_model(self, *, name: str, fn: ModelFn, info: ModelInfo | None = None) -> Model:
        """Register a model function `fn(request, ctx) -> ModelResponse` under `name`."""
        model = Model(name, fn, info)
        self.registry.register("model", name, model)
        return model

    @overload
    def tool(self, fn: ToolFn, /) -> Tool: ...
    @overload
    def tool(
        self,
        name_: str | None = None,
        description_: str | None = None,
        /,
        *,
        name: str | None = None,
        description: str | None = None,
    ) -> Callable[[ToolFn], Tool]: ...

    def tool(
        self,
        fn: ToolFn | str | None = None,
        description_: str | None = None,
        /,
        *,
        name: str | None = None,
        description: str | None = None,
    ) -> Tool | Callable[[ToolFn], Tool]:
        """Decorator registering a function as a tool; its docstring is the description. Genkit's
        spelling `@ai.tool("name", "description")` works too."""
        if isinstance(fn, str) or description_ is not None:
            name, description = genkit_tool_names(fn, description_, name, description)
            fn = None

        def register(f: ToolFn) -> Tool:
            t = tool_from_function(f, name=name, description=description)
            self.registry.register("tool", t.name, t)
            return t

        return register(fn) if fn is not None else register

    def define_tool(self, fn: ToolFn, *, name: str | None = None, description: str | None = None) -> Tool:
        """Register `fn` as a tool (the non-decorator form of `tool`)."""
        return self.tool(name=name, description=description)(fn)

    def define_interrupt(
        self,
        name: str,
        *,
        description: str | None = None,
        input_schema: type[BaseModel] | dict[str, Any] | None = None,
        output_schema: type[BaseModel] | dict[str, Any] | None = None,
    ) -> Tool:
        """Register a tool that always pauses the turn for the client to answer."""
        t = define_interrupt(
            name, description=description, input_schema=input_schema, output_schema=output_schema
        )
        self.registry.register("tool", name, t)
        return t

    # --- generate ----------------------------------------------------------------------------

    async def generate(
        self,
        prompt: PromptLike | None = None,
        *,
        system: PromptLike | None = None,
        messages: Sequence[Message | dict[str, Any]] | None = None,
        tools: Sequence[str | Tool] | None = None,
        output: type[OutputT] | Mapping[str, Any] | None = None,
        config: Any = None,
        model: str | Model | None = None,
        max_turns: int = DEFAULT_MAX_TURNS,
        resume: Resume | dict[str, Any] | None = None,
        docs: Sequence[DocumentData] | None = None,
        tool_choice: str | None = None,
        return_tool_requests: bool = False,
        use: Sequence[Middleware] = (),
        on_chunk: Callable[[ModelResponseChunk], None] | None = None,
        context: dict[str, Any] | None = None,
        model_context: ModelContext | None = None,
    ) -> GenerateResponse[OutputT]:
        """Call a model, running requested tools until it answers; return text, output and history.

        `output` is a Pydantic model class (`response.output` is then an instance of it) or a JSON
        schema for structured output; `resume` answers
        the interrupts of the last message in `messages`; `use` wraps model calls in middleware;
        `on_chunk` receives streamed chunks.
        """
        response: GenerateResponse[OutputT] = await generate(
            self.registry,
            model=model or self.default_model,
            prompt=prompt,
            system=system,
            messages=messages,
            tools=tools,
            output=output,
            config=config,
            max_turns=max_turns,
            resume=resume,
            docs=docs,
            tool_choice=tool_choice,
            return_tool_requests=return_tool_requests,
            use=use,
            on_chunk=on_chunk,
            context=context,
            model_context=model_context,
        )
        return response

    def generate_stream(
        self,
        prompt: PromptLike | None = None,
        *,
        system: PromptLike | None = None,
        messages: Sequence[Message | dict[str, Any]] | None = None,
        tools: Sequence[str | Tool] | None = None,
        output: type[OutputT] | Mapping[str, Any] | None = None,
        config: Any = None,
        model: str | Model | None = None,
        max_turns: int = DEFAULT_MAX_TURNS,
        resume: Resume | dict[str, Any] | None = None,
        docs: Sequence[DocumentData] | None = None,
        tool_choice: str | None = None,
        return_tool_requests: bool = False,
        use: Sequence[Middleware] = (),
        context: dict[str, Any] | None = None,
        model_context: ModelContext | None = None,
    ) -> GenerateStream[OutputT]:
        """Like `generate`, streaming: iterate the result for chunks, then await it (or `.response`)
        for the `GenerateResponse[OutputT]`."""

        async def run(sink: Callable[[ModelResponseChunk], None]) -> GenerateResponse[OutputT]:
            return await self.generate(
                prompt,
                system=system,
                messages=messages,
                tools=tools,
                output=output,
                config=config,
                model=model,
                max_turns=max_turns,
                resume=resume,
                docs=docs,
                tool_choice=tool_choice,
                return_tool_requests=return_tool_requests,
                use=use,
                on_chunk=sink,
                context=context,
                model_context=model_context,
            )

        return GenerateStream(run)

    # --- prompts -----------------------------------------------------------------------------

    def define_prompt(
        self,
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
        output: type[OutputT] | Mapping[str, Any] | None = None,
        max_turns: int | None = None,
        return_tool_requests: bool | None = None,
        use: Sequence[Middleware] = (),
    ) -> ExecutablePrompt[OutputT]:
        """Define a prompt and register it under `name` (and `variant`); returns it, executable.

        `system` and `prompt` are Handlebars templates over the input, literal parts, or `fn(input)`;
        `messages` is a template with `{{role}}` markers, a list of messages, or `fn(input)`.
        `input_schema` (a Pydantic model or JSON schema) validates the input and supplies defaults;
        `output=MyModel` makes the prompt's `response.output` a `MyModel`.
        """
        return _prompts.define_prompt(
            self.registry,
            name,
            variant=variant,
            description=description,
            model=model,
            config=config,
            system=system,
            prompt=prompt,
            messages=messages,
            tools=tools,
            tool_choice=tool_choice,
            input_schema=input_schema,
            output=output,
            max_turns=max_turns,
            return_tool_requests=return_tool_requests,
            use=use,
        )

    def prompt(self, name: str, *, variant: str | None = None) -> ExecutablePrompt[Any]:
        """The registered (or .prompt-file) prompt called `name`, executable."""
        return _prompts.lookup_prompt(self.registry, name, variant=variant)

    def load_prompt_folder(self, directory: str | Path) -> None:
        """Register every `.prompt` file (and `_partial.prompt`) in `directory`."""
        _prompt_files.load_prompt_folder(self.registry, directory)

    def define_schema(self, name: str, schema: type[BaseModel] | dict[str, Any]) -> None:
        """Register a schema that `.prompt` files can name in their input or output."""
        _prompts.define_schema(self.registry, name, schema)

    def define_partial(self, name: str, source: str) -> None:
        """Register a Handlebars partial for prompts."""
        _prompts.define_partial(self.registry, name, source)

    def define_helper(self, name: str, fn: HelperFn) -> None:
        """Register a Handlebars helper `fn(params, options) -> str` for prompts."""
        _prompts.define_helper(self.registry, name, fn)

    # --- agents ------------------------------------------------------------------------------

    def define_agent(
        self,
        name: str,
        *,
        model: str | Model | None = None,
        system: str | Part | Sequence[str | Part] | None = None,
        messages: Sequence[Message | dict[str, Any]] | None = None,
        prompt_input: Mapping[str, Any] | BaseModel | None = None,
        tools: Sequence[str | Tool] | None = None,
        config: BaseModel | Mapping[str, Any] | None = None,
        max_turns: int | None = None,
        output: type[BaseModel] | Mapping[str, Any] | None = None,
        use: Sequence[Middleware] = (),
        store: SessionStore | SnapshotStoreLike | str | None = None,
        state_schema: type[S] | Mapping[str, Any] | None = None,
        state_transform: StateTransform | None = None,
        chunk_transform: ChunkTransform | None = None,
        description: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        heartbeat_interval: float = 5.0,
        on_conflict: Literal["queue", "reject"] = "queue",
        lease_wait: float = 30.0,
    ) -> Agent[S]:
        """Define an agent from a model, a system prompt and tools; every turn is one generate call.

        `system` is a Handlebars template rendered with `prompt_input` (or a chat's prompt input);
        `messages` are preamble messages sent after it. `store` (a SessionStore or a store URL such
        as "sqlite:chats.db", a file in the working directory; see `store_from_url`) keeps sessions
        on the server; `state_schema` (a Pydantic model,
        TypedDict or JSON schema) types the custom state: `Agent[MyState]`. `state_transform` /
        `chunk_transform` shape what clients see; `on_conflict` says what a second turn on a busy
        session does ("queue": wait up to `lease_wait` seconds, "reject": fail at once); a detached
        turn beats its heartbeat every `heartbeat_interval` seconds. Options are checked here:
        INVALID_ARGUMENT names a bad one.
        """
        return _define.define_agent(
            self.registry,
            name,
            model=model,
            system=system,
            messages=messages,
            prompt_input=prompt_input,
            tools=tools,
            config=config,
            max_turns=max_turns,
            output=output,
            use=use,
            store=store,
            state_schema=state_schema,
            state_transform=state_transform,
            chunk_transform=chunk_transform,
            description=description,
            metadata=metadata,
            heartbeat_interval=heartbeat_interval,
            on_conflict=on_conflict,
            lease_wait=lease_wait,
        )

    def define_prompt_agent(
        self,
        name: str,
        *,
        prompt: str | None = None,
        prompt_input: Mapping[str, Any] | BaseModel | None = None,
        store: SessionStore | SnapshotStoreLike | str | None = None,
        state_schema: type[S] | Mapping[str, Any] | None = None,
        state_transform: StateTransform | None = None,
        chunk_transform: ChunkTransform | None = None,
        description: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        heartbeat_interval: float = 5.0,
        on_conflict: Literal["queue", "reject"] = "queue",
        lease_wait: float = 30.0,
        use: Sequence[Middleware] = (),
    ) -> Agent[S]:
        """Define an agent driven by the registered prompt `prompt` (default: `name`), rendered with
        `prompt_input` and the history each turn. The other options are as in `define_agent`."""
        return _define.define_prompt_agent(
            self.registry,
            name,
            prompt=prompt,
            prompt_input=prompt_input,
            store=store,
            state_schema=state_schema,
            state_transform=state_transform,
            chunk_transform=chunk_transform,
            description=description,
            metadata=metadata,
            heartbeat_interval=heartbeat_interval,
            on_conflict=on_conflict,
            lease_wait=lease_wait,
            use=use,
        )

    def define_custom_agent(
        self,
        name: str,
        fn: AgentFn[S],
        *,
        store: SessionStore | SnapshotStoreLike | str | None = None,
        state_schema: type[S] | Mapping[str, Any] | None = None,
        state_transform: StateTransform | None = None,
        chunk_transform: ChunkTransform | None = None,
        description: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        heartbeat_interval: float = 5.0,
        on_conflict: Literal["queue", "reject"] = "queue",
        lease_wait: float = 30.0,
        use: Sequence[Middleware] = (),
    ) -> Agent[S]:
        """Define an agent whose function `fn(sess, ctx)` drives its own turns
        (`await sess.run(handle_turn)`). The other options are as in `define_agent`."""
        return _define.define_custom_agent(
            self.registry,
            name,
            fn,
            store=store,
            state_schema=state_schema,
            state_transform=state_transform,
            chunk_transform=chunk_transform,
            description=description,
            metadata=metadata,
            heartbeat_interval=heartbeat_interval,
            on_conflict=on_conflict,
            lease_wait=lease_wait,
            use=use,
        )

    def define_middleware(self, name: str, factory: Callable[..., Any]) -> None:
        """Register a middleware class (or a function returning one) as `name`, so that `use=["name"]`
        and `.prompt` front matter (`use: [{name: ..., config: {...}}]`) can name it."""
        define_middleware(self.registry, name, factory)

    def agent(self, name: str) -> Agent[Any]:
        """The agent registered as `name`."""
        found: Agent[Any] = self.registry.lookup("agent", name)
        return found

    @staticmethod
    def current_session(state_schema: type[S] | None = None) -> Session[S]:
        """The session of the turn running in this task (from tools, prompts, anywhere under a turn).

        `state_schema` types the result for a type checker (`ai.current_session(MyState)` is a
        `Session[MyState]`); it must be the schema the session's agent was defined with.
        """
        session = get_current_session()
        if state_schema is not None and session.state_schema is not state_schema:
            raise TurnkitError(
                "FAILED_PRECONDITION",
                f"current_session({getattr(state_schema, '__name__', state_schema)}): the current "
                f"session's state schema is {session.state_type!r}",
            )
        return session

    # --- running -----------------------------------------------------------------------------

    @staticmethod
    def run_main(coro: Coroutine[Any, Any, T]) -> T:
        """Run an app's main coroutine to completion."""
        return asyncio.run(coro)
