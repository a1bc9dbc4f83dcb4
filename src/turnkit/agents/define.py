"""The three ways to define an agent: inline prompt, registered prompt, or your own turn loop."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from turnkit.agents.agent import Agent, AgentFn, ChunkTransform, StateTransform, generate_turn
from turnkit.agents.turn import AgentContext
from turnkit.generate import to_parts
from turnkit.middleware import Middleware
from turnkit.sessions import SessionStore
from turnkit.tools import Tool
from turnkit.types import Message

if TYPE_CHECKING:
    from turnkit.app import Turnkit

__all__ = ["define_agent", "define_custom_agent", "define_prompt_agent"]


def _register(ai: Turnkit, agent: Agent) -> Agent:
    ai.registry.register("agent", agent.name, agent)
    return agent


def define_agent(
    ai: Turnkit,
    *,
    name: str,
    model: str | None = None,
    system: str | None = None,
    tools: Sequence[str | Tool] | None = None,
    config: Any = None,
    max_turns: int | None = None,
    output: Any = None,
    use: Sequence[Middleware] = (),
    store: SessionStore | None = None,
    state_schema: Any = None,
    state_transform: StateTransform | None = None,
    chunk_transform: ChunkTransform | None = None,
    description: str | None = None,
    heartbeat_interval: float = 5.0,
) -> Agent:
    """An agent whose every turn sends the system prompt and the history to `model`, with `tools`."""
    system_msg = Message(role="system", content=to_parts(system)) if system else None

    async def options(history: list[Message], ctx: AgentContext) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": model or ai.default_model,
            "messages": [system_msg, *history] if system_msg else history,
            "tools": tools,
            "config": config,
            "output": output,
            "use": use,
            "context": ctx.context,
        }
        if max_turns is not None:
            kwargs["max_turns"] = max_turns
        return kwargs

    agent = Agent(
        ai,
        name=name,
        fn=generate_turn(ai, options),
        store=store,
        state_schema=state_schema,
        state_transform=state_transform,
        chunk_transform=chunk_transform,
        description=description,
        heartbeat_interval=heartbeat_interval,
    )
    return _register(ai, agent)


def define_prompt_agent(
    ai: Turnkit,
    *,
    name: str,
    prompt: str | None = None,
    prompt_input: Any = None,
    store: SessionStore | None = None,
    state_schema: Any = None,
    state_transform: StateTransform | None = None,
    chunk_transform: ChunkTransform | None = None,
    description: str | None = None,
    heartbeat_interval: float = 5.0,
) -> Agent:
    """An agent driven by a registered prompt (or `.prompt` file), looked up when each turn runs.

    The prompt is rendered with `prompt_input` (a chat's own prompt input wins) and the history.
    """
    prompt_name = prompt or name

    async def options(history: list[Message], ctx: AgentContext) -> dict[str, Any]:
        executable = ai.prompt(prompt_name)  # NOT_FOUND naming the prompt fails the turn
        value = ctx.prompt_input if ctx.prompt_input is not None else prompt_input
        rendered = await executable.render(value, messages=history, context=ctx.context)
        kwargs: dict[str, Any] = rendered.to_generate_kwargs()
        kwargs["context"] = ctx.context
        return kwargs

    agent = Agent(
        ai,
        name=name,
        fn=generate_turn(ai, options),
        store=store,
        state_schema=state_schema,
        state_transform=state_transform,
        chunk_transform=chunk_transform,
        description=description,
        prompt_input=prompt_input,
        heartbeat_interval=heartbeat_interval,
    )
    return _register(ai, agent)


def define_custom_agent(
    ai: Turnkit,
    *,
    name: str,
    fn: AgentFn,
    store: SessionStore | None = None,
    state_schema: Any = None,
    state_transform: StateTransform | None = None,
    chunk_transform: ChunkTransform | None = None,
    description: str | None = None,
    heartbeat_interval: float = 5.0,
) -> Agent:
    """An agent whose function `fn(sess, ctx)` drives the turns itself: `await sess.run(handle_turn)`."""
    agent = Agent(
        ai,
        name=name,
        fn=fn,
        store=store,
        state_schema=state_schema,
        state_transform=state_transform,
        chunk_transform=chunk_transform,
        description=description,
        heartbeat_interval=heartbeat_interval,
    )
    return _register(ai, agent)
