"""The app object: `ai = Turnkit(plugins=[...], model="provider/name")`, the entry point to everything."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, overload

from pydantic import BaseModel

from turnkit.generate import DEFAULT_MAX_TURNS, GenerateResponse, GenerateStream, PromptLike, generate
from turnkit.middleware import Middleware
from turnkit.models import Model, ModelContext, ModelFn, ModelInfo, Plugin
from turnkit.registry import Registry
from turnkit.tools import Tool, ToolFn, define_interrupt, tool_from_function
from turnkit.types import DocumentData, Message, ModelResponseChunk, Resume

if TYPE_CHECKING:
    from turnkit.agents.agent import Agent

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
    ) -> None:
        self.registry = Registry()
        self.default_model = model
        self.plugins = list(plugins)
        for plugin in self.plugins:
            plugin.initialize(self)
        if prompt_dir is not None:
            self.load_prompt_folder(prompt_dir)

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
        self, fn: None = None, /, *, name: str | None = None, description: str | None = None
    ) -> Callable[[ToolFn], Tool]: ...

    def tool(
        self, fn: ToolFn | None = None, /, *, name: str | None = None, description: str | None = None
    ) -> Tool | Callable[[ToolFn], Tool]:
        """Decorator registering a function as a tool; its docstring is the description."""

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
        *,
        name: str,
        description: str,
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
        output: Any = None,
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
    ) -> GenerateResponse:
        """Call a model, running requested tools until it answers; return text, output and history.

        `output` is a Pydantic model class or a JSON schema for structured output; `resume` answers
        the interrupts of the last message in `messages`; `use` wraps model calls in middleware;
        `on_chunk` receives streamed chunks.
        """
        return await generate(
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

    def generate_stream(self, prompt: PromptLike | None = None, **options: Any) -> GenerateStream:
        """Like `generate`, streaming: iterate the result for chunks, then await `.response`."""
        if "on_chunk" in options:
            raise TypeError("generate_stream delivers chunks itself; do not pass on_chunk")

        async def run(sink: Callable[[ModelResponseChunk], None]) -> GenerateResponse:
            return await self.generate(prompt, on_chunk=sink, **options)

        return GenerateStream(run)

    # --- prompts -----------------------------------------------------------------------------

    def define_prompt(self, **options: Any) -> Any:
        """Register a prompt (see `turnkit.prompts.define_prompt`) and return it, executable."""
        from turnkit.prompts import define_prompt

        return define_prompt(self, **options)

    def prompt(self, name: str, *, variant: str | None = None) -> Any:
        """The registered (or .prompt-file) prompt called `name`, executable."""
        from turnkit.prompts import lookup_prompt

        return lookup_prompt(self, name, variant=variant)

    def load_prompt_folder(self, directory: str) -> None:
        """Register every `.prompt` file (and `_partial.prompt`) in `directory`."""
        from turnkit.prompts import load_prompt_folder

        load_prompt_folder(self, directory)

    def define_schema(self, name: str, schema: type[BaseModel] | dict[str, Any]) -> None:
        """Register a schema that `.prompt` files can name in their input or output."""
        from turnkit.prompts import define_schema

        define_schema(self, name, schema)

    def define_partial(self, name: str, source: str) -> None:
        """Register a Handlebars partial for prompts."""
        from turnkit.prompts import define_partial

        define_partial(self, name, source)

    def define_helper(self, name: str, fn: Callable[..., Any]) -> None:
        """Register a Handlebars helper for prompts."""
        from turnkit.prompts import define_helper

        define_helper(self, name, fn)

    # --- agents ------------------------------------------------------------------------------

    def define_agent(self, **options: Any) -> Agent:
        """Define an agent from a model, system prompt and tools (see `turnkit.agents.define_agent`)."""
        from turnkit.agents.define import define_agent

        return define_agent(self, **options)

    def define_prompt_agent(self, **options: Any) -> Agent:
        """Define an agent driven by a registered prompt (see `turnkit.agents.define_prompt_agent`)."""
        from turnkit.agents.define import define_prompt_agent

        return define_prompt_agent(self, **options)

    def define_custom_agent(self, **options: Any) -> Agent:
        """Define an agent whose function drives its own turns (see `turnkit.agents.define_custom_agent`)."""
        from turnkit.agents.define import define_custom_agent

        return define_custom_agent(self, **options)

    def agent(self, name: str) -> Agent:
        """The agent registered as `name`."""
        found: Agent = self.registry.lookup("agent", name)
        return found

    @staticmethod
    def current_session() -> Any:
        """The session of the turn running in this task (from tools, prompts, anywhere under a turn)."""
        from turnkit.sessions import get_current_session

        return get_current_session()

    # --- running -----------------------------------------------------------------------------

    @staticmethod
    def run_main(coro: Coroutine[Any, Any, T]) -> T:
        """Run an app's main coroutine to completion."""
        return asyncio.run(coro)
