"""The three ways to define an agent: inline prompt, registered prompt, or your own turn loop."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, TypedDict, Unpack

from turnkit.agents.agent import Agent, AgentFn, ChunkTransform, StateTransform, generate_turn
from turnkit.agents.turn import AgentContext
from turnkit.generate import to_parts
from turnkit.middleware import Middleware
from turnkit.sessions import SessionStore
from turnkit.tools import Tool
from turnkit.types import Message

if TYPE_CHECKING:
    from turnkit.app import Turnkit

__all__ = ["AgentOptions", "define_agent", "define_custom_agent", "define_prompt_agent"]


class AgentOptions(TypedDict, total=False):
    """Options every kind of agent takes (see `Agent`)."""

    store: SessionStore | None
    state_schema: Any
    state_transform: StateTransform | None
    chunk_transform: ChunkTransform | None
    description: str | None
    heartbeat_interval: float
    on_conflict: Literal["queue", "reject"]
    lease_wait: float


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
    **options: Unpack[AgentOptions],
) -> Agent:
    """An agent whose every turn sends the system prompt and the history to `model`, with `tools`."""
    system_msg = Message(role="system", content=to_parts(system)) if system else None

    async def turn_options(history: list[Message], ctx: AgentContext) -> dict[str, Any]:
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

    return _register(ai, Agent(ai, name=name, fn=generate_turn(ai, turn_options), **options))


def define_prompt_agent(
    ai: Turnkit,
    *,
    name: str,
    prompt: str | None = None,
    prompt_input: Any = None,
    **options: Unpack[AgentOptions],
) -> Agent:
    """An agent driven by a registered prompt (or `.prompt` file), looked up when each turn runs.

    The prompt is rendered with `prompt_input` (a chat's own prompt input wins) and the history.
    """
    prompt_name = prompt or name

    async def turn_options(history: list[Message], ctx: AgentContext) -> dict[str, Any]:
        executable = ai.prompt(prompt_name)  # NOT_FOUND naming the prompt fails the turn
        value = ctx.prompt_input if ctx.prompt_input is not None else prompt_input
        rendered = await executable.render(value, messages=history, context=ctx.context)
        kwargs: dict[str, Any] = rendered.to_generate_kwargs()
        kwargs["context"] = ctx.context
        return kwargs

    agent = Agent(ai, name=name, fn=generate_turn(ai, turn_options), prompt_input=prompt_input, **options)
    return _register(ai, agent)


def define_custom_agent(ai: Turnkit, *, name: str, fn: AgentFn, **options: Unpack[AgentOptions]) -> Agent:
    """An agent whose function `fn(sess, ctx)` drives the turns itself: `await sess.run(handle_turn)`."""
    return _register(ai, Agent(ai, name=name, fn=fn, **options))
