"""Agents: the turn runtime, the three ways to define an agent, the connection, and the chat client."""

from turnkit.agents._agent import Agent, AgentFn
from turnkit.agents._agent_session import AgentResult, AgentSession
from turnkit.agents._client import AgentChat, AgentTransport, LocalTransport
from turnkit.agents._connection import AgentConnection
from turnkit.agents._define import define_agent, define_custom_agent, define_prompt_agent
from turnkit.agents._handles import AgentTurn, DetachedTask, SnapshotPoll
from turnkit.agents._response import AgentChunk, AgentError, AgentInterrupt, AgentResponse
from turnkit.agents._turn import AgentContext, TurnContext

__all__ = [
    "Agent",
    "AgentChat",
    "AgentChunk",
    "AgentConnection",
    "AgentContext",
    "AgentError",
    "AgentFn",
    "AgentInterrupt",
    "AgentResponse",
    "AgentResult",
    "AgentSession",
    "AgentTransport",
    "AgentTurn",
    "DetachedTask",
    "LocalTransport",
    "SnapshotPoll",
    "TurnContext",
    "define_agent",
    "define_custom_agent",
    "define_prompt_agent",
]
