"""A turnkit app's registry seen as Genkit actions: keys, metadata and schemas, and how to run each.

Keys and metadata are those Genkit's runtimes register, so the Developer UI lists and runs them:
`/model/<name>`, `/tool/<name>`, `/prompt/<name>` (render) and `/executable-prompt/<name>`,
`/agent/<name>` (bidi, with `/agent-snapshot/<name>` and `/agent-abort/<name>`), and
`/util/generate`, which the UI's model runner calls.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from turnkit._generate import GenerateResponse, OutputSpec, generate
from turnkit._registry import Registry
from turnkit._tracing import Scope, root_span
from turnkit.errors import TurnkitError
from turnkit.models import Model, ModelContext
from turnkit.types import (
    AgentAbortRequest,
    AgentInit,
    AgentInput,
    AgentOutput,
    AgentStreamChunk,
    GetSnapshotRequest,
    Message,
    ModelRequest,
    ModelResponse,
    ModelResponseChunk,
    SessionSnapshot,
    WireModel,
)

__all__ = ["Action", "RunRequest", "list_actions"]

Json = Any
OnChunk = Callable[[Json], None]


@dataclasses.dataclass
class RunRequest:
    """One `runAction` call: the input, the agent init, the caller's context, and the chunk sink."""

    input: Json = None
    init: Json = None
    context: dict[str, Any] = dataclasses.field(default_factory=dict)
    on_chunk: OnChunk | None = None


@dataclasses.dataclass
class Action:
    """A runnable entry of the catalogue, described the way Genkit's reflection API lists actions."""

    key: str
    name: str
    subtype: str
    run: Callable[[RunRequest], Awaitable[Json]]
    description: str | None = None
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None

    def describe(self) -> dict[str, Any]:
        """The `/api/actions` entry: absent fields left out, as Genkit's runtimes do."""
        entry = {
            "key": self.key,
            "name": self.name,
            "description": self.description,
            "metadata": self.metadata,
            "inputSchema": self.input_schema,
            "outputSchema": self.output_schema,
        }
        return {k: v for k, v in entry.items() if v is not None}

    def span(self, run_input: Json) -> Scope:
        """The root span of one run of this action."""
        return root_span(self.name, self.subtype, run_input)


def _schema(model: type[WireModel]) -> dict[str, Any]:
    return model.model_json_schema(by_alias=True)


def _wire(value: Any) -> Json:
    if isinstance(value, WireModel):
        return value.to_wire()
    if isinstance(value, GenerateResponse):
        return _generate_response(value)
    return value


def _generate_response(res: GenerateResponse[Any]) -> Json:
    body: dict[str, Any] = {"finishReason": str(res.finish_reason), "usage": res.usage.to_wire()}
    if res.message is not None:
        body["message"] = res.message.to_wire()
    if res.finish_message:
        body["finishMessage"] = res.finish_message
    return body


def _chunk_sink(on_chunk: OnChunk | None) -> Callable[[ModelResponseChunk], None] | None:
    if on_chunk is None:
        return None
    return lambda chunk: on_chunk(chunk.to_wire())


def _model_action(model: Model) -> Action:
    async def run(req: RunRequest) -> Json:
        request = ModelRequest.from_wire(req.input or {})
        ctx = ModelContext(context=req.context, on_chunk=_chunk_sink(req.on_chunk))
        response: ModelResponse = await model(request, ctx)
        return response.to_wire()

    info = model.info
    supports = {
        "multiturn": info.multiturn,
        "tools": info.tools,
        "systemRole": info.system_role,
        "output": list(info.output),
        "constrained": "all" if info.constrained else "none",
    }
    return Action(
        key=f"/model/{model.name}",
        name=model.name,
        subtype="model",
        run=run,
        metadata={"model": {"label": info.label or model.name, "supports": supports}},
        input_schema=_schema(ModelRequest),
        output_schema=_schema(ModelResponse),
    )


def _tool_action(tool: Any) -> Action:
    async def run(req: RunRequest) -> Json:
        return await tool.run(req.input)

    return Action(
        key=f"/tool/{tool.name}",
        name=tool.name,
        subtype="tool",
        run=run,
        description=tool.description or None,
        metadata={"type": "tool", **(tool.metadata or {})},
        input_schema=tool.input_schema,
        output_schema=tool.output_schema,
    )


def _options_wire(options: Any) -> Json:
    """A rendered prompt (GenerateOptions) as Genkit's GenerateActionOptions JSON."""
    model = options.model
    body: dict[str, Any] = {
        "model": model.name if isinstance(model, Model) else model,
        "messages": [m.to_wire() for m in options.messages],
    }
    if options.config is not None:
        body["config"] = options.config
    if options.tools:
        body["tools"] = [t if isinstance(t, str) else t.name for t in options.tools]
    if options.output is not None and options.output.schema is not None:
        body["output"] = {"format": options.output.format, "jsonSchema": options.output.schema}
    if options.max_turns is not None:
        body["maxTurns"] = options.max_turns
    return body


def _prompt_actions(key: str, prompt: Any) -> list[Action]:
    async def render(req: RunRequest) -> Json:
        return _options_wire(await prompt.render(req.input, context=req.context))

    async def execute(req: RunRequest) -> Json:
        if req.on_chunk is not None:
            stream = prompt.stream(req.input, context=req.context)
            async for chunk in stream:
                req.on_chunk(chunk.to_wire())
            return _wire(await stream.response)
        return _wire(await prompt(req.input, context=req.context))

    meta = {"type": "prompt", "prompt": {"name": key}}
    description = getattr(prompt, "description", None)
    return [
        Action(f"/prompt/{key}", key, "prompt", render, description, meta),
        Action(f"/executable-prompt/{key}", key, "executable-prompt", execute, description, meta),
    ]


def _agent_actions(agent: Any) -> list[Action]:
    name = agent.name

    async def run(req: RunRequest) -> Json:
        init = AgentInit.from_wire(req.init or {})
        if agent.store is not None and init.session_id is None and init.snapshot_id is None:
            init.state = None  # a server-managed agent's store owns the state, not the caller
        item = AgentInput.from_wire(req.input or {})
        sink = req.on_chunk

        def on_chunk(chunk: AgentStreamChunk) -> None:
            if sink is not None:
                sink(chunk.to_wire())

        output: AgentOutput = await agent.run(init, [item], on_chunk=on_chunk, context=req.context)
        return output.to_wire()

    async def snapshot(req: RunRequest) -> Json:
        ask = GetSnapshotRequest.from_wire(req.input or {})
        snap: SessionSnapshot | None = await agent.get_snapshot(
            ask.snapshot_id, session_id=ask.session_id, context=req.context
        )
        if snap is None:
            raise TurnkitError("NOT_FOUND", f"no snapshot found for agent {name!r}")
        return snap.to_wire()

    async def abort(req: RunRequest) -> Json:
        ask = AgentAbortRequest.from_wire(req.input or {})
        previous = await agent.abort(ask.snapshot_id, context=req.context)
        body: dict[str, Any] = {"snapshotId": ask.snapshot_id}
        if previous is not None:
            body["status"] = str(previous)
        return body

    published = dict(agent.metadata)
    published.pop("description", None)
    metadata = {"agent": published, "bidi": True}
    return [
        Action(
            f"/agent/{name}",
            name,
            "agent",
            run,
            agent.description or None,
            metadata,
            _schema(AgentInput),
            _schema(AgentOutput),
        ),
        Action(
            f"/agent-snapshot/{name}",
            name,
            "agent-snapshot",
            snapshot,
            f"Gets snapshot data for {name} by snapshotId or sessionId",
            input_schema=_schema(GetSnapshotRequest),
            output_schema=_schema(SessionSnapshot),
        ),
        Action(
            f"/agent-abort/{name}",
            name,
            "agent-abort",
            abort,
            f"Aborts {name} agent by snapshotId",
            input_schema=_schema(AgentAbortRequest),
        ),
    ]


def _generate_action(registry: Registry) -> Action:
    async def run(req: RunRequest) -> Json:
        opts = req.input or {}
        if not isinstance(opts, dict):
            raise TurnkitError("INVALID_ARGUMENT", "util/generate takes GenerateActionOptions (an object)")
        output = opts.get("output") or {}
        schema = output.get("jsonSchema") or output.get("schema")
        res = await generate(
            registry,
            model=opts.get("model") or registry.default_model,
            messages=[Message.from_wire(m) for m in opts.get("messages") or []],
            tools=[t.rsplit("/", 1)[-1] for t in opts.get("tools") or []],
            config=opts.get("config"),
            output=OutputSpec(schema=schema) if output.get("format") == "json" or schema else None,
            max_turns=int(opts.get("maxTurns") or 5),
            resume=opts.get("resume"),
            on_chunk=_chunk_sink(req.on_chunk),
            context=req.context,
        )
        return _generate_response(res)

    return Action("/util/generate", "generate", "util", run)


def list_actions(registry: Registry) -> dict[str, Action]:
    """Every action of the app, by Genkit action key."""
    found: list[Action] = [_generate_action(registry)]
    for name in registry.names("model"):
        found.append(_model_action(registry.lookup("model", name)))
    for name in registry.names("tool"):
        found.append(_tool_action(registry.lookup("tool", name)))
    for name in registry.names("prompt"):
        found.extend(_prompt_actions(name, registry.lookup("prompt", name)))
    for name in registry.names("agent"):
        found.extend(_agent_actions(registry.lookup("agent", name)))
    return {action.key: action for action in found}
