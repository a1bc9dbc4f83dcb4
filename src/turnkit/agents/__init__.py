"""Agents: the turn runtime, the three ways to define an agent, the connection, and the chat client."""

from turnkit.agents.agent import Agent, AgentFn
from turnkit.agents.client import (
    AgentChat,
    AgentInterrupt,
    AgentResponse,
    AgentTransport,
    AgentTurn,
    DetachedTask,
    LocalTransport,
    TurnChunk,
    TurnResult,
)
from turnkit.agents.connection import AgentConnection
from turnkit.agents.define import define_agent, define_custom_agent, define_prompt_agent
from turnkit.agents.runner import AgentResult, AgentSession
from turnkit.agents.turn import AgentContext, TurnContext

__all__ = [
    "Agent",
    "AgentChat",
    "AgentConnection",
    "AgentContext",
    "AgentFn",
    "AgentInterrupt",
    "AgentResponse",
    "AgentResult",
    "AgentSession",
    "AgentTransport",
    "AgentTurn",
    "DetachedTask",
    "LocalTransport",
    "TurnChunk",
    "TurnContext",
    "TurnResult",
    "define_agent",
    "define_custom_agent",
    "define_prompt_agent",
]
