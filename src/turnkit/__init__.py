"""turnkit: stateful, multi-turn LLM agents for Python."""

from turnkit.app import Turnkit
from turnkit.errors import TurnkitError
from turnkit.generate import GenerateResponse, GenerateStream
from turnkit.middleware import fallback, retry
from turnkit.models import Model, ModelContext, ModelInfo
from turnkit.tools import Interrupt, Tool, ToolContext
from turnkit.types import (
    AgentInit,
    AgentInput,
    AgentOutput,
    AgentStreamChunk,
    Artifact,
    Message,
    ModelRequest,
    ModelResponse,
    ModelResponseChunk,
    Part,
    SessionSnapshot,
    SessionState,
    ToolRequest,
    ToolResponse,
)

__all__ = [
    "AgentInit",
    "AgentInput",
    "AgentOutput",
    "AgentStreamChunk",
    "Artifact",
    "GenerateResponse",
    "GenerateStream",
    "Interrupt",
    "Message",
    "Model",
    "ModelContext",
    "ModelInfo",
    "ModelRequest",
    "ModelResponse",
    "ModelResponseChunk",
    "Part",
    "SessionSnapshot",
    "SessionState",
    "Tool",
    "ToolContext",
    "ToolRequest",
    "ToolResponse",
    "Turnkit",
    "TurnkitError",
    "fallback",
    "retry",
]
