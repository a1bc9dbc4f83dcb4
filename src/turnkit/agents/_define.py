"""The three ways to define an agent: inline prompt, registered prompt, or your own turn loop.

Each checks its options when the agent is defined (INVALID_ARGUMENT naming the option), builds an
`Agent[S]` typed by `state_schema`, and registers it. They take the app's `Registry` (`ai.registry`);
`ai.define_agent(...)` and its siblings on the app call them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel

from turnkit._checks import Options
from turnkit._generate import OutputSpec, to_parts
from turnkit._prompts import lookup_prompt, render_template
from turnkit._registry import Registry
from turnkit._tools import Tool
from turnkit.agents._agent import Agent, AgentFn, ChunkTransform, StateTransform, generate_turn
from turnkit.agents._turn import AgentContext
from turnkit.errors import TurnkitError
from turnkit.middleware import Middleware
from turnkit.models import Model
from turnkit.sessions import SessionStore
from turnkit.sessions._state_type import S, StateType
from turnkit.sessions._store import SnapshotStoreLike, as_session_store
from turnkit.types import Message, Part

__all__ = ["define_agent", "define_custom_agent", "define_prompt_agent"]

# `prompt_input=`: the values of the prompt's input variables.
PromptInput = Mapping[str, Any] | BaseModel


def _build(
    registry: Registry,
    check: Options,
    *,
    name: str,
    fn: AgentFn[S],
    store: SessionStore | SnapshotStoreLike | str | None,
    state_schema: type[S] | Mapping[str, Any] | None,
    state_transform: StateTransform | None,
    chunk_transform: ChunkTransform | None,
    description: str | None,
    metadata: Mapping[str, Any] | None,
    prompt_input: Any,
    heartbeat_interval: float,
    on_conflict: Literal["queue", "reject"],
    lease_wait: float,
    use: Sequence[Middleware] = (),
) -> Agent[S]:
    """Check the options every kind of agent takes, then build and register the agent."""
    state_type: StateType[S] = check.converted("state_schema", lambda: StateType.of(state_schema))
    agent = Agent(
        registry,
        name=check.agent_name(registry, name),
        fn=fn,
        store=None if store is None else check.converted("store", lambda: as_session_store(store)),
        state_type=state_type,
        state_transform=check.callable_or_none("state_transform", state_transform),
        chunk_transform=check.callable_or_none("chunk_transform", chunk_transform),
        description=check.optional_str("description", description),
        metadata=check.mapping("metadata", metadata),
        prompt_input=prompt_input,
        heartbeat_interval=check.seconds("heartbeat_interval", heartbeat_interval, positive=True),
        on_conflict=check.choice("on_conflict", on_conflict, ("queue", "reject")),
        lease_wait=check.seconds("lease_wait", lease_wait, positive=False),
    )
    agent.use = check.middleware(use)
    registry.register("agent", agent.name, agent)
    return agent


def _input_data(value: Any, label: str) -> dict[str, Any]:
    """A prompt input as the dict templates see (a chat's input is checked here, at its turn)."""
    if value is None:
        return {}
    if isinstance(value, BaseModel):
        dumped: dict[str, Any] = value.model_dump(mode="json", by_alias=True)
        return dumped
    if isinstance(value, Mapping):
        return dict(value)
    raise TurnkitError("INVALID_ARGUMENT", f"prompt input for {label} must be a dict or a Pydantic model")


def define_agent(
    registry: Registry,
    name: str,
    *,
    model: str | Model | None = None,
    system: str | Part | Sequence[str | Part] | None = None,
    messages: Sequence[Message | dict[str, Any]] | None = None,
    prompt_input: PromptInput | None = None,
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
    """An agent whose every turn sends the system prompt, `messages` and the history to `model`.

    `system` is a Handlebars template rendered with the prompt input (a chat's `prompt_input`, else
    this `prompt_input`), as Genkit does; `messages` are fixed preamble messages (e.g. few-shot
    examples) sent after it on every turn and never stored in the session.
    """
    check = Options("define_agent")
    name = check.name(name)
    model = check.model(model)
    system_text = check.prompt_text("system", system)
    preamble = check.messages(messages) or []
    default_input = _input_data(check.mapping("prompt_input", prompt_input), repr(name))
    tool_list = check.tools(tools)
    config = check.config(config)
    max_turns = check.count("max_turns", max_turns)
    spec = check.converted("output", lambda: OutputSpec.of(output))
    middleware = check.middleware(use)
    label = f"the system prompt of agent {name!r}"
    # A system prompt without `{{` renders to itself: build the message once instead of every turn.
    templated = isinstance(system_text, str) and "{{" in system_text
    fixed: list[Message] | None = None
    if not templated:
        system_msg = [Message(role="system", content=to_parts(system_text))] if system_text else []
        fixed = [*system_msg, *preamble]

    async def turn_options(history: list[Message], ctx: AgentContext) -> dict[str, Any]:
        head = fixed
        if head is None:
            assert isinstance(system_text, str)
            data = _input_data(ctx.prompt_input, label) if ctx.prompt_input is not None else default_input
            parts = await render_template(registry, system_text, data, ctx.context, label)
            head = [Message(role="system", content=parts), *preamble] if parts else preamble
        kwargs: dict[str, Any] = {
            "model": model or registry.default_model,
            "messages": [*head, *history] if head else history,
            "tools": tool_list,
            "config": config,
            "output": spec,
            "context": ctx.context,
        }
        if max_turns is not None:
            kwargs["max_turns"] = max_turns
        return kwargs

    return _build(
        registry,
        check,
        name=name,
        fn=generate_turn(registry, turn_options),
        store=store,
        state_schema=state_schema,
        state_transform=state_transform,
        chunk_transform=chunk_transform,
        description=description,
        metadata=metadata,
        prompt_input=prompt_input,
        heartbeat_interval=heartbeat_interval,
        on_conflict=on_conflict,
        lease_wait=lease_wait,
        use=middleware,
    )


def define_prompt_agent(
    registry: Registry,
    name: str,
    *,
    prompt: str | None = None,
    prompt_input: PromptInput | None = None,
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
    """An agent driven by a registered prompt (or `.prompt` file), looked up when each turn runs.

    The prompt (`prompt`, default: the agent's name) is rendered with `prompt_input` (a chat's own
    prompt input wins) and the history.
    """
    check = Options("define_prompt_agent")
    name = check.name(name)
    prompt_name = name if prompt is None else check.name(prompt, "prompt")
    check.mapping("prompt_input", prompt_input)

    async def turn_options(history: list[Message], ctx: AgentContext) -> dict[str, Any]:
        executable = lookup_prompt(registry, prompt_name)  # NOT_FOUND naming the prompt fails the turn
        value = ctx.prompt_input if ctx.prompt_input is not None else prompt_input
        rendered = await executable.render(value, messages=history, context=ctx.context)
        kwargs: dict[str, Any] = rendered.to_generate_kwargs()
        kwargs["context"] = ctx.context
        return kwargs

    return _build(
        registry,
        check,
        name=name,
        fn=generate_turn(registry, turn_options),
        store=store,
        state_schema=state_schema,
        state_transform=state_transform,
        chunk_transform=chunk_transform,
        description=description,
        metadata=metadata,
        prompt_input=prompt_input,
        heartbeat_interval=heartbeat_interval,
        on_conflict=on_conflict,
        lease_wait=lease_wait,
        use=use,
    )


def define_custom_agent(
    registry: Registry,
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
    """An agent whose function `fn(sess, ctx)` drives the turns itself: `await sess.run(handle_turn)`."""
    check = Options("define_custom_agent")
    return _build(
        registry,
        check,
        name=check.name(name),
        fn=check.async_function("fn", fn, ("sess", "ctx")),
        store=store,
        state_schema=state_schema,
        state_transform=state_transform,
        chunk_transform=chunk_transform,
        description=description,
        metadata=metadata,
        prompt_input=None,
        heartbeat_interval=heartbeat_interval,
        on_conflict=on_conflict,
        lease_wait=lease_wait,
        use=use,
    )
