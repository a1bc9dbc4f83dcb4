"""`Artifacts`: `read_artifact` / `write_artifact` tools over the current session's artifacts, and an
`<artifacts>` listing in the system prompt of every model call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

from turnkit._tools import Tool, tool_from_function
from turnkit.errors import TurnkitError
from turnkit.middleware._base import (
    BaseMiddleware,
    GenerateHookParams,
    GenerateMiddlewareContext,
    NextGenerate,
    with_system_text,
)
from turnkit.sessions import Session, get_current_session
from turnkit.types import Artifact, ModelResponse, Part

__all__ = ["Artifacts", "artifact_text"]

_MARKER = "artifactsListing"
_NO_SESSION = "there is no agent session here, so there are no artifacts (use this middleware on an agent)"


class ReadArtifactInput(BaseModel):
    name: str = Field(description="The name of the artifact to read.")


class WriteArtifactInput(BaseModel):
    name: str = Field(description='A unique name for the artifact, e.g. "report.md".')
    content: str = Field(description="The full text content of the artifact.")


def artifact_text(artifact: Artifact) -> str:
    """An artifact's text parts, joined by newlines."""
    return "\n".join(p.text for p in artifact.parts if p.text)


def _session() -> Session[Any] | None:
    try:
        return get_current_session()
    except TurnkitError:
        return None


async def read_artifact(input: ReadArtifactInput) -> dict[str, Any]:
    """Read a named artifact of the session (e.g. one a sub-agent produced)."""
    session = _session()
    if session is None:
        return {"name": input.name, "found": False, "content": _NO_SESSION}
    for artifact in await session.get_artifacts():
        if artifact.name == input.name:
            return {"name": input.name, "found": True, "content": artifact_text(artifact)}
    return {"name": input.name, "found": False, "content": f"no artifact named {input.name!r}"}


async def write_artifact(input: WriteArtifactInput) -> str:
    """Create or replace a named artifact in the session: a file, report, or other deliverable."""
    session = _session()
    if session is None:
        return f"error: {_NO_SESSION}"
    await session.add_artifacts(Artifact(name=input.name, parts=[Part(text=input.content)]))
    return f"artifact {input.name!r} saved"


def listing(artifacts: Sequence[Artifact]) -> str:
    """The `<artifacts>` block: each artifact's name, size and source."""
    if not artifacts:
        return "<artifacts>\nThe session has no artifacts yet.\n</artifacts>"
    lines = ["<artifacts>", "The session holds these artifacts; read one with the read_artifact tool:"]
    for artifact in artifacts:
        source = (artifact.metadata or {}).get("source")
        lines.append(
            f"- {artifact.name or '(unnamed)'} ({len(artifact_text(artifact))} chars)"
            + (f" [from {source}]" if source else "")
        )
    lines.append("</artifacts>")
    return "\n".join(lines)


class Artifacts(BaseMiddleware):
    """Artifact tools plus a listing of the session's artifacts in the system prompt.

    `readonly=True` offers only `read_artifact`. Outside an agent session it degrades: the listing
    says there are none and the tools say why.
    """

    def __init__(self, *, readonly: bool = False) -> None:
        if not isinstance(readonly, bool):
            raise TurnkitError("INVALID_ARGUMENT", f"Artifacts: readonly must be a bool, not {readonly!r}")
        self.readonly = readonly
        tools = [tool_from_function(read_artifact)]
        if not readonly:
            tools.append(tool_from_function(write_artifact))
        self._tools: list[Tool] = tools

    def tools(self, ctx: GenerateMiddlewareContext) -> Sequence[Tool]:
        """`read_artifact`, and `write_artifact` unless read-only."""
        return self._tools

    async def wrap_generate(
        self, params: GenerateHookParams, ctx: GenerateMiddlewareContext, next_fn: NextGenerate
    ) -> ModelResponse:
        """List the session's artifacts (as they are now) in the system prompt."""
        artifacts = await ctx.session.get_artifacts() if ctx.session is not None else []
        params.request = with_system_text(params.request, listing(artifacts), _MARKER)
        return await next_fn(params, ctx)

    def __repr__(self) -> str:
        return f"Artifacts(readonly={self.readonly})"
