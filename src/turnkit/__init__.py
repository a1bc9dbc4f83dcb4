"""turnkit: stateful, multi-turn LLM agents for Python."""

from turnkit.errors import TurnkitError

__all__ = ["TurnkitError"]
