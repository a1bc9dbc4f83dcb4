"""The public API, pinned: each public package's `__all__` as users import it, every name in it
importable and documented, and every other module marked private.

A change here is a change users see: when a test fails because a name was added, removed or
renamed on purpose, update the list below and say so in docs/migrating-from-0.1.md.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"

# Every public module. Any other module under src/turnkit must be private: a leading underscore in
# its own name or in a parent package's (`turnkit.agents._client`, `turnkit._devui.server`).
PUBLIC_MODULES = {
    "turnkit",
    "turnkit.agents",
    "turnkit.errors",
    "turnkit.http",
    "turnkit.middleware",
    "turnkit.models",
    "turnkit.models.anthropic",
    "turnkit.models.google_genai",
    "turnkit.models.llamacpp",
    "turnkit.models.openai_compat",
    "turnkit.sessions",
    "turnkit.sessions.postgres",
    "turnkit.sessions.redis_store",
    "turnkit.testing",
    "turnkit.tracing",
    "turnkit.types",
}

# What `from MODULE import *` gives, module by module.
PUBLIC_NAMES: dict[str, set[str]] = {
    "turnkit": {
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
    },
    "turnkit.agents": {
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
    },
    "turnkit.sessions": {
        "FORMAT_VERSION",
        "TERMINAL_STATUSES",
        "ArtifactAdded",
        "CustomChanged",
        "FileSessionStore",
        "InMemorySessionStore",
        "LeaseBackend",
        "LinearSessionStore",
        "ListingBackend",
        "MaintenanceBackend",
        "MemoryBackend",
        "MessagesAdded",
        "MessagesSet",
        "Pruned",
        "RecordBackend",
        "Session",
        "SessionEvent",
        "SessionLease",
        "SessionListener",
        "SessionListing",
        "SessionPage",
        "SessionStore",
        "SessionStoreBase",
        "SnapshotMutator",
        "SnapshotStoreLike",
        "SqliteSessionStore",
        "StateSchema",
        "StateType",
        "StoreOptions",
        "StoreStats",
        "StoredRecord",
        "TenantOf",
        "as_session_store",
        "check_id",
        "default_tenant_of",
        "get_current_session",
        "run_with_session",
        "store_from_url",
    },
    "turnkit.http": {
        "ContextProvider",
        "HeadersProvider",
        "HttpTransport",
        "RemoteAgent",
        "create_app",
        "remote_agent",
        "serve_agent",
        "tune_gc",
    },
    "turnkit.types": {
        "AgentAbortRequest",
        "AgentAbortResponse",
        "AgentFinishReason",
        "AgentFinishReasonName",
        "AgentInit",
        "AgentInput",
        "AgentOutput",
        "AgentStreamChunk",
        "Artifact",
        "DocumentData",
        "ErrorInfo",
        "FinishReason",
        "FinishReasonName",
        "GenerationUsage",
        "GetSnapshotRequest",
        "JsonPatchOperation",
        "Media",
        "Message",
        "ModelRequest",
        "ModelResponse",
        "ModelResponseChunk",
        "OutputConfig",
        "Part",
        "Resource",
        "Resume",
        "Role",
        "SessionSnapshot",
        "SessionState",
        "SnapshotStatus",
        "SnapshotStatusName",
        "ToolDefinition",
        "ToolRequest",
        "ToolResponse",
        "TurnEnd",
        "TurnkitError",
        "WireModel",
    },
    "turnkit.testing": {"ProgrammableModel", "define_echo_model", "define_programmable_model"},
    "turnkit.tracing": {
        "CONTENT_ENV",
        "TRACING_ENV",
        "Attr",
        "configure",
        "content_recording",
        "tracing_active",
    },
    "turnkit.models": {"Model", "ModelContext", "ModelFn", "ModelInfo", "Plugin"},
    "turnkit.errors": {
        "HTTP_STATUS",
        "RETRYABLE",
        "STATUS_NAMES",
        "StatusName",
        "TurnkitError",
        "as_turnkit_error",
    },
    "turnkit.middleware": {
        "BUILTIN_MIDDLEWARE",
        "Agents",
        "Artifacts",
        "BaseMiddleware",
        "Fallback",
        "Filesystem",
        "GenerateHookParams",
        "GenerateMiddlewareContext",
        "HistoryCompaction",
        "Middleware",
        "MiddlewareChain",
        "ModelHookParams",
        "ModelMiddleware",
        "Next",
        "NextGenerate",
        "NextModel",
        "NextTool",
        "Retry",
        "Skills",
        "ToolApproval",
        "ToolHookParams",
        "define_middleware",
        "fallback",
        "retry",
        "status_of",
    },
}


def _module_names() -> list[str]:
    names = []
    for path in sorted((SRC / "turnkit").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


def _is_private(module: str) -> bool:
    return any(part.startswith("_") for part in module.split("."))


@pytest.mark.parametrize("module", sorted(PUBLIC_NAMES))
def test_all_is_pinned(module: str) -> None:
    exported = importlib.import_module(module).__all__
    assert len(exported) == len(set(exported)), f"{module}.__all__ lists a name twice"
    assert set(exported) == PUBLIC_NAMES[module]


@pytest.mark.parametrize("module", sorted(PUBLIC_NAMES))
def test_every_exported_name_imports(module: str) -> None:
    namespace: dict[str, Any] = {}
    exec(f"from {module} import *", namespace)  # what a user's star import gets, lazy names included
    missing = PUBLIC_NAMES[module] - set(namespace)
    assert not missing, f"{module} lists names it cannot give: {sorted(missing)}"
    for name in PUBLIC_NAMES[module]:
        assert not name.startswith("_")
        assert getattr(importlib.import_module(module), name) is namespace[name]


def test_errors_all_lists_every_own_public_name() -> None:
    errors = importlib.import_module("turnkit.errors")
    imported = {"annotations", "Any", "Literal", "get_args"}  # what the module itself imports
    own = {name for name in vars(errors) if not name.startswith("_")} - imported
    assert own == set(errors.__all__)


@pytest.mark.parametrize("module", sorted(PUBLIC_NAMES))
def test_exported_classes_and_functions_are_documented(module: str) -> None:
    mod = importlib.import_module(module)
    undocumented = [
        name
        for name in PUBLIC_NAMES[module]
        if (inspect.isclass(obj := getattr(mod, name)) or inspect.isfunction(obj))
        and obj.__module__.startswith("turnkit")
        and not (obj.__doc__ or "").strip()
    ]
    assert not undocumented, f"{module}: no docstring on {undocumented}"


def test_internal_modules_are_private() -> None:
    modules = _module_names()
    public = [m for m in modules if not _is_private(m)]
    assert sorted(public) == sorted(PUBLIC_MODULES), (
        "a module without a leading underscore is public: make it private or add it to PUBLIC_MODULES"
    )


def test_old_module_paths_are_gone() -> None:
    # The modules made private after 0.1 (docs/migrating-from-0.1.md) must not come back by their old
    # names, or users would keep importing them.
    for old in (
        "turnkit.app",
        "turnkit.generate",
        "turnkit.tools",
        "turnkit.prompts",
        "turnkit.registry",
        "turnkit.agents.client",
        "turnkit.agents.agent",
        "turnkit.agents.define",
        "turnkit.agents.runner",
        "turnkit.sessions.session",
        "turnkit.sessions.store",
        "turnkit.sessions.sqlite",
        "turnkit.http.client",
        "turnkit.http.server",
    ):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(old)


def test_every_public_module_imports() -> None:
    for module in sorted(PUBLIC_MODULES):
        importlib.import_module(module)


def _named_types(annotation: Any) -> set[str]:
    import re

    return set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", str(annotation)))


def test_public_signatures_name_only_public_types() -> None:
    # A type a user must write to call or annotate something is one they can import.
    from turnkit import ExecutablePrompt, Turnkit
    from turnkit.sessions import InMemorySessionStore

    public = set().union(*PUBLIC_NAMES.values())
    checked = {
        "Turnkit.generate(output=)": inspect.signature(Turnkit.generate).parameters["output"].annotation,
        "Turnkit.generate_stream(output=)": inspect.signature(Turnkit.generate_stream)
        .parameters["output"]
        .annotation,
        "Turnkit.define_prompt(output=)": inspect.signature(Turnkit.define_prompt)
        .parameters["output"]
        .annotation,
        "ExecutablePrompt.render ->": inspect.signature(ExecutablePrompt.render).return_annotation,
        "InMemorySessionStore(backend=)": inspect.signature(InMemorySessionStore.__init__)
        .parameters["backend"]
        .annotation,
    }
    # Every class turnkit defines that no public module exports.
    private_classes = {
        name
        for module in _module_names()
        for name, obj in vars(importlib.import_module(module)).items()
        if inspect.isclass(obj) and obj.__module__.startswith("turnkit") and name not in public
    }
    assert {"OutputSpec", "PromptSpec"} <= private_classes  # the check can see a private type
    for where, annotation in checked.items():
        private = private_classes & _named_types(annotation)
        assert not private, f"{where} names {private}"
