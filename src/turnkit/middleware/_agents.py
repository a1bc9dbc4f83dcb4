"""`Agents`: delegation to sub-agents through one `<tool_prefix>_<name>` tool per sub-agent.

A delegation runs the sub-agent's turn as a child of the coordinator's: cancelling the
coordinator's turn (its abort) aborts the child; the child's task message records the parent
agent, session and snapshot in its metadata (`delegatedBy`). A server-managed sub-agent keeps one
session per coordinator session (`<parent session id>:<name>`), so it remembers earlier
delegations; a client-managed one starts afresh, with the coordinator's last `history_length`
messages (taken from its session when the delegation runs on resume, before any model call).
Failures and interrupts come back as the tool's output, never as the coordinator's.
Sub-agents may be local agents or remote ones (`turnkit.http.remote_agent`).

Delegations nest (a sub-agent may delegate in turn), but never in a cycle: a delegation to an agent
whose turn is already running up the chain (itself included) is refused, and so is one deeper than
`max_depth`, both as the tool's error output. The chain is followed within this process; a cycle
through a remote agent is bounded by the remote side's own guard only.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from turnkit._tools import Tool, ToolContext, ToolInputError
from turnkit.errors import TurnkitError, as_turnkit_error
from turnkit.middleware._base import (
    BaseMiddleware,
    GenerateHookParams,
    GenerateMiddlewareContext,
    NextGenerate,
    with_system_text,
)
from turnkit.middleware._delegate import run_child
from turnkit.types import (
    AgentInit,
    AgentInput,
    AgentOutput,
    Artifact,
    Message,
    ModelResponse,
    Part,
    SessionState,
)

__all__ = ["Agents"]

_MARKER = "subAgentsListing"
_TASK_SCHEMA = {
    "type": "object",
    "properties": {
        "task": {"type": "string", "description": "A clear, self-contained description of the task."}
    },
    "required": ["task"],
}
_ARTIFACT_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "content": {"type": "string"}},
}
_OUTPUT_SCHEMA = {
    "type": "object",
    "properties": {
        "response": {"type": "string", "description": "The sub-agent's answer (or what went wrong)."},
        "artifacts": {"type": "array", "items": _ARTIFACT_SCHEMA},
    },
    "required": ["response", "artifacts"],
}
ArtifactStrategy = Literal["inline", "session"]
DEFAULT_MAX_DEPTH = 8
# The agents whose turns are running above this point of a delegation chain, outermost first: set
# around each in-process delegation, so the sub-agent's turn (a task started from it) inherits it.
_delegating: ContextVar[tuple[Any, ...]] = ContextVar("turnkit_delegation_chain", default=())
# A sub-agent: its name, an agent (local or remote), or {"name", "description"?, "agent"?}.
AgentRef = str | Mapping[str, Any] | Any


@dataclass(slots=True)
class _SubAgent:
    """A sub-agent as configured: resolved against the registry at the first call that needs it."""

    name: str
    description: str | None
    agent: Any
    tool_name: str
    server_managed: bool | None = None  # a remote agent's mode, learnt at its first delegation


@dataclass(slots=True)
class _Resolved:
    """The sub-agents as resolved in one app, and their (unbound) tools."""

    subs: list[_SubAgent]
    tools: list[Tool]


@dataclass(slots=True)
class _CallState:
    """One coordinator call's delegations: their count, the conversation, artifact numbering."""

    delegations: int = 0
    messages: list[Message] = field(default_factory=list)
    numbers: dict[str, int] | None = None


class Agents(BaseMiddleware):
    """Delegation tools for `agents` (names, agents, or `{"name", "description"}` entries).

    `tool_prefix` names the tools (`""`: the bare agent name); `history_length` is how many recent
    user/model messages a client-managed sub-agent gets; `max_delegations` caps delegations per
    coordinator turn (later ones get an error output); `max_depth` caps how deeply delegations nest
    (a delegation made by a sub-agent `max_depth` levels down gets an error output, as does one to
    an agent already running up the chain); `artifact_strategy="inline"` puts the
    sub-agent's artifacts' content in the tool output, `"session"` copies them into the
    coordinator's session as `<agent>_<n>/<name>` and names them only.
    """

    def __init__(
        self,
        *,
        agents: Sequence[AgentRef],
        tool_prefix: str = "delegate_to",
        history_length: int = 0,
        max_delegations: int | None = None,
        max_depth: int = DEFAULT_MAX_DEPTH,
        artifact_strategy: ArtifactStrategy = "inline",
    ) -> None:
        if isinstance(agents, str | Mapping) or not isinstance(agents, Sequence) or not agents:
            raise TurnkitError("INVALID_ARGUMENT", f"Agents: agents must be a non-empty list, not {agents!r}")
        if not isinstance(history_length, int) or history_length < 0:
            raise TurnkitError(
                "INVALID_ARGUMENT", f"Agents: history_length must be an int >= 0, not {history_length!r}"
            )
        if max_delegations is not None and (not isinstance(max_delegations, int) or max_delegations < 0):
            raise TurnkitError(
                "INVALID_ARGUMENT",
                f"Agents: max_delegations must be None or an int >= 0, not {max_delegations!r}",
            )
        if isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 1:
            raise TurnkitError(
                "INVALID_ARGUMENT", f"Agents: max_depth must be an int >= 1, not {max_depth!r}"
            )
        if artifact_strategy not in ("inline", "session"):
            raise TurnkitError(
                "INVALID_ARGUMENT",
                f"Agents: artifact_strategy must be 'inline' or 'session', not {artifact_strategy!r}",
            )
        if not isinstance(tool_prefix, str):
            raise TurnkitError(
                "INVALID_ARGUMENT", f"Agents: tool_prefix must be a string, not {tool_prefix!r}"
            )
        self.tool_prefix = tool_prefix
        self.history_length = history_length
        self.max_delegations = max_delegations
        self.max_depth = max_depth
        self.artifact_strategy = artifact_strategy
        self._subs = [self._sub_agent(ref) for ref in agents]
        names = [s.tool_name for s in self._subs]
        if len(set(names)) != len(names):
            raise TurnkitError("INVALID_ARGUMENT", f"Agents: two sub-agents share a tool name: {names}")
        # Per app (registry): the sub-agents resolved there and their tools, built at first use.
        self._by_registry: weakref.WeakKeyDictionary[Any, _Resolved] = weakref.WeakKeyDictionary()

    def _sub_agent(self, ref: AgentRef) -> _SubAgent:
        description: Any = None
        agent: Any = None
        name: Any
        if isinstance(ref, str):
            name = ref
        elif isinstance(ref, Mapping):
            name, description, agent = ref.get("name"), ref.get("description"), ref.get("agent")
            if agent is not None and name is None:
                name = _name_of(agent)
        else:
            agent, name = ref, _name_of(ref)
        if not isinstance(name, str) or not name:
            raise TurnkitError("INVALID_ARGUMENT", f"Agents: cannot tell the name of sub-agent {ref!r}")
        if description is not None and not isinstance(description, str):
            raise TurnkitError("INVALID_ARGUMENT", f"Agents: the description of {name!r} must be a string")
        tool_name = re.sub(r"[^A-Za-z0-9_-]", "_", f"{self.tool_prefix}_{name}" if self.tool_prefix else name)
        return _SubAgent(name, description, agent, tool_name)

    def _resolved(self, ctx: GenerateMiddlewareContext) -> _Resolved:
        """The sub-agents as found in the app of this call (one object may serve several apps)."""
        found = self._by_registry.get(ctx.registry)
        if found is None:
            subs = []
            for sub in self._subs:
                agent = sub.agent if sub.agent is not None else ctx.registry.get("agent", sub.name)
                if agent is None:
                    raise TurnkitError("NOT_FOUND", f"Agents: no agent named {sub.name!r} to delegate to")
                subs.append(replace(sub, agent=agent))
            found = self._by_registry[ctx.registry] = _Resolved(subs, [_template(sub) for sub in subs])
        return found

    def tools(self, ctx: GenerateMiddlewareContext) -> Sequence[Tool]:
        """One delegation tool per sub-agent, bound to this call."""
        resolved = self._resolved(ctx)
        state = ctx.state(self, _CallState)
        return [
            _DelegationTool(t, self, sub, ctx, state)
            for t, sub in zip(resolved.tools, resolved.subs, strict=True)
        ]

    async def wrap_generate(
        self, params: GenerateHookParams, ctx: GenerateMiddlewareContext, next_fn: NextGenerate
    ) -> ModelResponse:
        """Note the conversation (for history forwarding) and list the sub-agents in the system prompt."""
        state = ctx.state(self, _CallState)
        state.messages = params.request.messages
        if self.artifact_strategy == "session" and state.numbers is None and ctx.session is not None:
            state.numbers = _numbers_in_use(await ctx.session.get_artifacts())
        listing = self._listing(self._resolved(ctx).subs)
        params.request = with_system_text(params.request, listing, _MARKER)
        return await next_fn(params, ctx)

    def _listing(self, subs: Sequence[_SubAgent]) -> str:
        lines = ["<sub-agents>", "You can delegate tasks to these specialised agents with their tools:"]
        lines += [f"- {sub.tool_name}: {_description(sub)}" for sub in subs]
        lines.append("Give each a clear, self-contained task; their answers come back as the tool's output.")
        lines.append("</sub-agents>")
        return "\n".join(lines)

    async def delegate(
        self, sub: _SubAgent, task: str, ctx: GenerateMiddlewareContext, state: _CallState
    ) -> dict[str, Any]:
        """Run one delegation; every outcome is the tool's output."""
        if self.max_delegations is not None and state.delegations >= self.max_delegations:
            return _problem(
                f"delegation limit reached ({self.max_delegations} per turn): finish with what you have",
                "RESOURCE_EXHAUSTED",
            )
        here = ctx.turn_scope.agent if ctx.turn_scope is not None else None
        chain = _delegating.get()
        if here is not None and not (chain and chain[-1] is here):
            chain = (*chain, here)
        if any(a is sub.agent for a in chain):
            names = " -> ".join(str(_name_of(a)) for a in (*chain, sub.agent))
            return _problem(
                f"cannot delegate to {sub.name!r}: its turn is already running up this chain ({names}); "
                "do the task yourself or give it to another agent",
                "FAILED_PRECONDITION",
            )
        level = max(len(chain), 1)  # this delegation's nesting level: 1 from the outermost turn
        if level > self.max_depth:
            return _problem(
                f"delegations nest too deeply (this would be level {level}, at most {self.max_depth}): "
                "finish with what you have",
                "RESOURCE_EXHAUSTED",
            )
        state.delegations += 1
        item = AgentInput(message=Message(role="user", content=[Part(text=task)], metadata=_lineage(ctx)))
        collected: list[Artifact] = []
        token = _delegating.set(chain)
        try:
            output = await self._run(sub, item, ctx, state, collected.append)
        except TurnkitError as exc:
            return _problem(f"sub-agent {sub.name!r} failed: {exc.message}", exc.status)
        except Exception as exc:  # an unexpected failure of the sub-agent is still only its own
            err = as_turnkit_error(exc)
            return _problem(f"sub-agent {sub.name!r} failed: {err.message}", err.status)
        finally:
            _delegating.reset(token)
        return await self._outcome(sub, output, collected, ctx, state)

    async def _run(
        self,
        sub: _SubAgent,
        item: AgentInput,
        ctx: GenerateMiddlewareContext,
        state: _CallState,
        on_artifact: Callable[[Artifact], None],
    ) -> AgentOutput:
        server = sub.server_managed
        if server is None:
            mode = getattr(sub.agent, "state_management", None)
            server = mode != "client"  # a remote agent of unknown mode is tried as server-managed first
        try:
            return await run_child(
                sub.agent, await self._init(server, ctx, state, sub), item, on_artifact, ctx.context, server
            )
        except TurnkitError as exc:
            if not (server and sub.server_managed is None and exc.status == "FAILED_PRECONDITION"):
                raise
            # A remote agent that turned out to be client-managed: remember, and send state instead.
            sub.server_managed = False
            return await run_child(
                sub.agent, await self._init(False, ctx, state, sub), item, on_artifact, ctx.context, False
            )

    async def _init(
        self, server: bool, ctx: GenerateMiddlewareContext, state: _CallState, sub: _SubAgent
    ) -> AgentInit:
        if server:
            parent = ctx.session.id if ctx.session is not None else None
            return AgentInit(session_id=f"{parent}:{sub.name}") if parent else AgentInit()
        messages = state.messages
        if not messages and self.history_length and ctx.session is not None:
            # On resume the tool runs before any model call: the conversation is the session's.
            messages = await ctx.session.get_messages()
        history = _recent(messages, self.history_length)
        return AgentInit(state=SessionState(messages=history)) if history else AgentInit()

    async def _outcome(
        self,
        sub: _SubAgent,
        output: AgentOutput,
        produced: list[Artifact],
        ctx: GenerateMiddlewareContext,
        state: _CallState,
    ) -> dict[str, Any]:
        reason = output.finish_reason
        if reason == "failed":
            err = output.error
            return _problem(
                f"sub-agent {sub.name!r} failed: {err.message if err else 'unknown error'}",
                err.status if err else None,
            )
        if reason == "interrupted":
            asked = [p for p in (output.message.content if output.message else []) if p.is_interrupt]
            names = ", ".join(p.tool_request.name for p in asked if p.tool_request) or "unknown"
            out = _problem(
                f"sub-agent {sub.name!r} stopped to ask for input (tool {names}), which cannot be given from here; "
                "give it a more self-contained task or ask the user",
                "FAILED_PRECONDITION",
            )
            out["interrupts"] = [p.tool_request.to_wire() for p in asked if p.tool_request]
            return out
        if reason == "aborted":
            return _problem(f"sub-agent {sub.name!r} was aborted", "CANCELLED")
        text = output.message.text if output.message else ""
        return {
            "response": text or "(no response)",
            "artifacts": await self._artifacts(sub, produced, ctx, state),
        }

    async def _artifacts(
        self, sub: _SubAgent, produced: list[Artifact], ctx: GenerateMiddlewareContext, state: _CallState
    ) -> list[dict[str, Any]]:
        latest: dict[str, Artifact] = {}
        for i, artifact in enumerate(produced):  # a name added twice in the turn: its last version
            latest[artifact.name or f"artifact_{i + 1}"] = artifact
        if not latest:
            return []
        if self.artifact_strategy == "inline" or ctx.session is None:
            return [{"name": name, "content": _text(a)} for name, a in latest.items()]
        if state.numbers is None:  # e.g. a resumed call, whose tools run before any model call
            state.numbers = _numbers_in_use(await ctx.session.get_artifacts())
        numbers = state.numbers
        n = numbers[sub.name] = numbers.get(sub.name, 0) + 1
        copies = [
            Artifact(
                name=f"{sub.name}_{n}/{name}",
                parts=a.parts,
                metadata={**(a.metadata or {}), "source": sub.name},
            )
            for name, a in latest.items()
        ]
        await ctx.session.add_artifacts(copies)
        return [{"name": c.name} for c in copies]

    def __repr__(self) -> str:
        return f"Agents(agents={[s.name for s in self._subs]!r})"


class _DelegationTool(Tool):
    """A sub-agent's delegation tool, bound to one coordinator call."""

    def __init__(
        self, template: Tool, owner: Agents, sub: _SubAgent, ctx: GenerateMiddlewareContext, state: _CallState
    ) -> None:
        self.__dict__.update(template.__dict__)
        self._owner, self._sub, self._ctx, self._state = owner, sub, ctx, state

    async def run(self, raw_input: Any, ctx: ToolContext | None = None) -> Any:
        """Delegate the task in `raw_input` (`{"task": ...}`)."""
        task = raw_input.get("task") if isinstance(raw_input, dict) else None
        if not isinstance(task, str) or not task.strip():
            raise ToolInputError(self.name, "give the task as {'task': '<what to do>'}")
        return await self._owner.delegate(self._sub, task, self._ctx, self._state)


def _template(sub: _SubAgent) -> Tool:
    def unbound(_input: Any) -> Any:
        raise TurnkitError("INTERNAL", "a delegation tool ran outside a generate call")

    return Tool(
        sub.tool_name,
        unbound,
        description=_description(sub),
        input_schema=_TASK_SCHEMA,
        output_schema=_OUTPUT_SCHEMA,
        metadata={"delegation": {"agent": sub.name}},
    )


def _name_of(agent: Any) -> str | None:
    name = getattr(agent, "name", None)
    if isinstance(name, str):
        return name
    url = getattr(agent, "url", None)  # a remote agent: the last segment of its URL
    return url.rstrip("/").rsplit("/", 1)[-1] if isinstance(url, str) else None


def _description(sub: _SubAgent) -> str:
    found = sub.description or getattr(sub.agent, "description", None)
    return found if isinstance(found, str) and found else f"Delegates a task to the {sub.name!r} agent."


def _lineage(ctx: GenerateMiddlewareContext) -> dict[str, Any] | None:
    scope = ctx.turn_scope
    parent = {
        "agent": getattr(scope.agent, "name", None) if scope is not None else None,
        "sessionId": ctx.session.id if ctx.session is not None else None,
        "snapshotId": getattr(scope.turn, "snapshot_id", None) if scope is not None else None,
    }
    known = {k: v for k, v in parent.items() if v is not None}
    return {"delegatedBy": known} if known else None  # outside an agent turn there is no parent


def _recent(messages: Sequence[Message], count: int) -> list[Message]:
    """The last `count` user/model messages, reduced to their text (tool traffic left out)."""
    if count == 0:
        return []
    out: list[Message] = []
    for msg in reversed(messages):
        if msg.role not in ("user", "model"):
            continue
        texts = [Part(text=p.text) for p in msg.content if p.text]
        if texts:
            out.append(Message(role=msg.role, content=texts))
            if len(out) == count:
                break
    out.reverse()
    return out


def _numbers_in_use(artifacts: Sequence[Artifact]) -> dict[str, int]:
    """The highest `<agent>_<n>/` number each agent has among the session's artifacts."""
    numbers: dict[str, int] = {}
    for artifact in artifacts:
        match = re.match(r"^(.+)_(\d+)/", artifact.name or "")
        if match:
            agent, n = match.group(1), int(match.group(2))
            numbers[agent] = max(numbers.get(agent, 0), n)
    return numbers


def _text(artifact: Artifact) -> str:
    return "\n".join(p.text for p in artifact.parts if p.text)


def _problem(message: str, status: str | None) -> dict[str, Any]:
    return {
        "response": f"error: {message}",
        "artifacts": [],
        "error": {"status": status or "UNKNOWN", "message": message},
    }
