"""turnkit: stateful, multi-turn LLM agents for Python."""

import logging

from turnkit._app import Turnkit
from turnkit._generate import GenerateResponse, GenerateStream
from turnkit._prompts import ExecutablePrompt, GenerateOptions
from turnkit._registry import Registry
from turnkit._tools import Interrupt, Tool, ToolContext
from turnkit.agents import AgentError
from turnkit.errors import TurnkitError
from turnkit.middleware import fallback, retry
from turnkit.models import Model, ModelContext, ModelInfo
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
    "AgentError",
    "AgentInit",
    "AgentInput",
    "AgentOutput",
    "AgentStreamChunk",
    "Artifact",
    "ExecutablePrompt",
    "GenerateOptions",
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
    "Registry",
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

# A library logs and leaves output to the application: without this, Python prints WARNING records
# (a failed turn with its traceback) to stderr of every program, the REPL included. `turnkit serve`
# configures a real handler.
logging.getLogger("turnkit").addHandler(logging.NullHandler())
