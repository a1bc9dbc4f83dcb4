"""Provider discovery: which model providers this environment can use, and why the others cannot.

A provider is usable when its SDK (a turnkit extra) is installed and its key is in the environment.
The command line registers every usable provider, so `--model googleai/gemini-flash-latest` works
with no code; `turnkit models` prints the table.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from turnkit.models import Plugin

__all__ = ["ProviderStatus", "discovered_plugins", "provider_status", "register_discovered"]


@dataclass(frozen=True)
class ProviderStatus:
    """One provider: its model-name prefix, whether it can be used here, and why (not)."""

    name: str
    available: bool
    reason: str
    example: str
    extra: str


@dataclass(frozen=True)
class _Provider:
    name: str
    extra: str
    module: str  # the SDK module the extra installs
    keys: tuple[str, ...]  # any one of these environment variables enables the provider
    example: str
    make: Callable[[Mapping[str, str]], Plugin]


def _googleai(env: Mapping[str, str]) -> Plugin:
    from turnkit.models.google_genai import GoogleAI

    # GOOGLE_API_KEY first, as the google-genai SDK itself reads them.
    return GoogleAI(api_key=env.get("GOOGLE_API_KEY") or env.get("GEMINI_API_KEY"))


def _vertexai(env: Mapping[str, str]) -> Plugin:
    from turnkit.models.google_genai import VertexAI

    return VertexAI(project=env.get("GOOGLE_CLOUD_PROJECT"), location=env.get("GOOGLE_CLOUD_LOCATION"))


def _anthropic(env: Mapping[str, str]) -> Plugin:
    from turnkit.models.anthropic import Anthropic

    return Anthropic(api_key=env.get("ANTHROPIC_API_KEY"))


def _openai(env: Mapping[str, str]) -> Plugin:
    from turnkit.models.openai_compat import OpenAICompat

    return OpenAICompat("openai", base_url=env.get("OPENAI_BASE_URL"), api_key=env.get("OPENAI_API_KEY"))


def _llamacpp(env: Mapping[str, str]) -> Plugin:
    from turnkit.models.llamacpp import LlamaCpp

    return LlamaCpp()


_PROVIDERS = (
    _Provider(
        "googleai",
        "google",
        "google.genai",
        ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
        "googleai/gemini-flash-latest",
        _googleai,
    ),
    _Provider(
        "vertexai",
        "google",
        "google.genai",
        ("GOOGLE_CLOUD_PROJECT",),
        "vertexai/gemini-2.5-flash",
        _vertexai,
    ),
    _Provider(
        "anthropic",
        "anthropic",
        "anthropic",
        ("ANTHROPIC_API_KEY",),
        "anthropic/claude-sonnet-4-5",
        _anthropic,
    ),
    _Provider(
        "openai", "openai", "openai", ("OPENAI_API_KEY", "OPENAI_BASE_URL"), "openai/gpt-4o-mini", _openai
    ),
    _Provider("llamacpp", "local", "llama_cpp", (), "llamacpp/smollm2", _llamacpp),
)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # the parent package is missing
        return False


def _status(p: _Provider, env: Mapping[str, str]) -> ProviderStatus:
    if not _installed(p.module):
        reason = f"missing extra: pip install 'turnkit[{p.extra}]'"
        return ProviderStatus(p.name, False, reason, p.example, p.extra)
    if p.keys and not any(env.get(k) for k in p.keys):
        reason = f"missing key: set {' or '.join(p.keys)}"
        return ProviderStatus(p.name, False, reason, p.example, p.extra)
    found = [k for k in p.keys if env.get(k)]
    reason = f"{' and '.join(found)} set" if found else "installed, needs no key"
    return ProviderStatus(p.name, True, reason, p.example, p.extra)


def provider_status(environ: Mapping[str, str] | None = None) -> list[ProviderStatus]:
    """Every provider turnkit knows, with whether it is usable under `environ` (default: os.environ)."""
    env = os.environ if environ is None else environ
    return [_status(p, env) for p in _PROVIDERS]


def discovered_plugins(environ: Mapping[str, str] | None = None) -> list[Plugin]:
    """A plugin for each usable provider; each serves any model id under its prefix."""
    env = os.environ if environ is None else environ
    return [p.make(env) for p in _PROVIDERS if _status(p, env).available]


def register_discovered(ai: Any, environ: Mapping[str, str] | None = None) -> list[str]:
    """Add the usable providers to the app `ai` (or a view of it), after its own plugins, so the
    app's own definitions and plugins win for any name they serve; returns the providers' names."""
    taken = {p.name for p in getattr(ai, "plugins", [])}
    taken |= {name.split("/", 1)[0] for name in ai.registry.names("model")}
    names = []
    for plugin in discovered_plugins(environ):
        if plugin.name not in taken:
            plugin.initialize(ai)
            names.append(plugin.name)
    return names
