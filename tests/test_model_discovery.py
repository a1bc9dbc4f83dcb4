"""Provider discovery: the providers usable from the environment, `turnkit models`, and `--model`
naming any provider's model from the command line with no code (against local provider servers)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provider_servers import Events, ProviderServer, serve
from turnkit import Turnkit
from turnkit._cli import main
from turnkit.models._discovery import discovered_plugins, provider_status, register_discovered
from turnkit.testing import define_echo_model

SRC = Path(__file__).parents[1] / "src"
KEYS = (
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "GOOGLE_CLOUD_PROJECT",
    "ANTHROPIC_API_KEY",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "TURNKIT_MODEL",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in KEYS:
        monkeypatch.delenv(key, raising=False)


@pytest.fixture(scope="module")
def server() -> Iterator[ProviderServer]:
    yield from serve()


def by_name() -> dict[str, Any]:
    return {p.name: p for p in provider_status()}


def test_status_names_the_missing_key_and_the_missing_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    status = by_name()
    assert not status["googleai"].available
    assert status["googleai"].reason == "missing key: set GEMINI_API_KEY or GOOGLE_API_KEY"
    assert status["anthropic"].reason == "missing key: set ANTHROPIC_API_KEY"
    assert status["openai"].reason == "missing key: set OPENAI_API_KEY or OPENAI_BASE_URL"
    assert status["llamacpp"].available  # the local extra is installed and needs no key
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k")
    monkeypatch.setitem(sys.modules, "anthropic", None)  # as if the extra were not installed
    assert by_name()["anthropic"].reason == "missing extra: pip install 'turnkit[anthropic]'"


def test_plugins_follow_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert [p.name for p in discovered_plugins()] == ["llamacpp"]
    monkeypatch.setenv("GEMINI_API_KEY", "g")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")  # Ollama and the like need no key
    assert [p.name for p in discovered_plugins()] == ["googleai", "openai", "llamacpp"]
    assert [p.name for p in discovered_plugins({"ANTHROPIC_API_KEY": "a"})] == ["anthropic", "llamacpp"]


def test_registering_keeps_the_apps_own_models(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "g")
    ai = Turnkit()
    define_echo_model(ai, name="llamacpp/smollm2")  # the app's own model under a provider's prefix
    mine = ai.registry.get("model", "llamacpp/smollm2")
    assert register_discovered(ai) == ["googleai"]
    assert ai.registry.get("model", "llamacpp/smollm2") is mine
    assert ai.registry.get("model", "googleai/gemini-flash-latest") is not None


def test_models_command_lists_providers(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "g")
    assert main(["models"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "available" in lines["googleai"].split() and "GEMINI_API_KEY set" in lines["googleai"]
    assert "unavailable" in lines["anthropic"] and "set ANTHROPIC_API_KEY" in lines["anthropic"]


def test_generate_reaches_gemini_with_no_code(
    server: ProviderServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "g")
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", server.url)
    chunk = {
        "candidates": [
            {"content": {"role": "model", "parts": [{"text": "Hello from Gemini"}]}, "finishReason": "STOP"}
        ]
    }
    server.script(Events([(None, chunk)]))
    assert main(["generate", "Hi", "--model", "googleai/gemini-flash-latest"]) == 0
    assert capsys.readouterr().out == "Hello from Gemini\n"
    assert server.requests[0].path.endswith("/models/gemini-flash-latest:streamGenerateContent")


def test_generate_reaches_an_openai_compatible_server_with_no_code(
    server: ProviderServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "o")
    monkeypatch.setenv("OPENAI_BASE_URL", f"{server.url}/v1")

    def delta(content: str | None, finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": {"content": content} if content else {}, "finish_reason": finish}
        return {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "gpt-4o-mini",
            "choices": [choice],
        }

    server.script(
        Events(
            [(None, delta("Hello ")), (None, delta("there")), (None, delta(None, "stop")), (None, "[DONE]")]
        )
    )
    assert main(["generate", "Hi", "--model", "openai/gpt-4o-mini"]) == 0
    assert capsys.readouterr().out == "Hello there\n"
    [req] = server.requests
    assert req.path == "/v1/chat/completions" and req.body["model"] == "gpt-4o-mini"
    assert req.headers["authorization"] == "Bearer o"


def test_unknown_provider_points_at_turnkit_models(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "Hi", "--model", "nowhere/model"]) == 2
    assert "`turnkit models` lists the providers" in capsys.readouterr().err


def test_chat_uses_a_discovered_provider_for_an_app_without_plugins(
    server: ProviderServer, tmp_path: Path
) -> None:
    app = tmp_path / "plain_app.py"
    app.write_text('from turnkit import Turnkit\nai = Turnkit()\nhelper = ai.define_agent(name="helper")\n')
    chunk = {
        "candidates": [
            {"content": {"role": "model", "parts": [{"text": "Hi from Gemini"}]}, "finishReason": "STOP"}
        ]
    }
    server.script(Events([(None, chunk)]))
    env = {k: v for k, v in os.environ.items() if k not in KEYS}
    env |= {"GEMINI_API_KEY": "g", "GOOGLE_GEMINI_BASE_URL": server.url, "PYTHONPATH": str(SRC)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "turnkit._cli",
            "chat",
            f"{app}:helper",
            "--new",
            "--model",
            "googleai/gemini-2.0-flash",
        ],
        input="hello\n/quit\n",
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "Hi from Gemini\n" in done.stdout
    assert server.requests[0].body["contents"] == [{"role": "user", "parts": [{"text": "hello"}]}]


def test_serve_registers_discovered_providers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from turnkit.http._serve import load_app

    app = tmp_path / "served_app.py"
    app.write_text("from turnkit import Turnkit\nai = Turnkit()\n")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "a")
    load_app(f"{app}:ai")
    module = sys.modules[
        next(name for name, m in sys.modules.items() if getattr(m, "__file__", None) == str(app))
    ]
    assert module.ai.registry.get("model", "anthropic/claude-sonnet-4-5") is not None
    assert module.ai.registry.get("model", "googleai/gemini-2.0-flash") is None  # no key, not registered
