"""The `turnkit` command: generate streams an answer (prompt from the command line or stdin), picks the
model from flag/env/default, explains errors with "did you mean"; --version; serve prints its routes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

TURNKIT = str(Path(sys.executable).with_name("turnkit"))

ECHO_APP = """
from turnkit import Turnkit
from turnkit.testing import define_echo_model, define_programmable_model
ai = Turnkit()
define_echo_model(ai)
define_programmable_model(ai)
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TURNKIT, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


@pytest.fixture
def echo_app(tmp_path: Path) -> str:
    path = tmp_path / "echo_app.py"
    path.write_text(ECHO_APP)
    return f"{path}:ai"


def test_help_on_every_command() -> None:
    top = run("--help")
    assert top.returncode == 0 and "generate" in top.stdout
    sub = run("generate", "--help")
    assert sub.returncode == 0 and "--model" in sub.stdout and "TURNKIT_MODEL" in sub.stdout


def test_generate_streams_from_the_chosen_model(echo_app: str) -> None:
    out = run("generate", "hello there", "--app", echo_app, "--model", "echoModel")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "Echo: hello there\n"


def test_model_from_environment(echo_app: str) -> None:
    out = run("generate", "from env", "--app", echo_app, env={"TURNKIT_MODEL": "echoModel"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "Echo: from env"


def test_unknown_model_lists_registered(echo_app: str) -> None:
    out = run("generate", "x", "--app", echo_app, "--model", "nope")
    assert out.returncode == 2
    assert "unknown model 'nope'" in out.stderr
    assert "echoModel" in out.stderr and "programmableModel" in out.stderr


def test_bad_app_target(tmp_path: Path) -> None:
    out = run("generate", "x", "--app", str(tmp_path / "missing.py") + ":ai")
    assert out.returncode == 2 and "no such file" in out.stderr
    out = run("generate", "x", "--app", "no-colon")
    assert out.returncode == 2 and "FILE.py:NAME" in out.stderr


@pytest.mark.model
def test_generate_with_the_local_default_model() -> None:
    out = run("generate", "Say hello.", "--max-tokens", "24", "--temperature", "0", env={"TURNKIT_MODEL": ""})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() and out.stdout.endswith("\n")


# --- version, stdin, "did you mean" --------------------------------------------------------------


def test_version() -> None:
    from importlib.metadata import version

    out = run("--version")
    assert out.returncode == 0 and out.stdout == f"turnkit {version('turnkit')}\n"


def test_generate_reads_the_prompt_from_stdin(echo_app: str) -> None:
    piped = subprocess.run(
        [TURNKIT, "generate", "-", "--app", echo_app, "--model", "echoModel"],
        input="a prompt\nover two lines\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == "Echo: a prompt\nover two lines\n"  # stdin's final newline is not sent
    empty = subprocess.run(
        [TURNKIT, "generate", "-", "--app", echo_app, "--model", "echoModel"],
        input="  \n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert empty.returncode == 2 and "the prompt read from stdin (`-`) is empty" in empty.stderr


def test_unknown_names_get_a_did_you_mean(echo_app: str) -> None:
    model = run("generate", "x", "--app", echo_app, "--model", "echomodel")
    assert model.returncode == 2
    assert "unknown model 'echomodel' (did you mean 'echoModel'?)" in model.stderr
    far = run("generate", "x", "--app", echo_app, "--model", "zzz")
    assert far.returncode == 2 and "did you mean" not in far.stderr
    attribute = run("generate", "x", "--app", echo_app.replace(":ai", ":aii"), "--model", "echoModel")
    assert attribute.returncode == 2 and "has no attribute 'aii' (did you mean 'ai'?)" in attribute.stderr
    served = run("serve", echo_app.replace(":ai", ":aii"))
    assert served.returncode == 2 and "has no attribute aii (did you mean 'ai'?)" in served.stderr


def test_a_provider_that_is_not_usable_says_why(echo_app: str) -> None:
    no_key = run("generate", "x", "--model", "anthropic/claude-x", env={"ANTHROPIC_API_KEY": ""})
    assert no_key.returncode == 2
    assert "FAILED_PRECONDITION: model 'anthropic/claude-x' needs the anthropic provider" in no_key.stderr
    assert "missing key: set ANTHROPIC_API_KEY" in no_key.stderr
    typo = run("generate", "x", "--model", "googlai/gemini-flash-latest", env={"GEMINI_API_KEY": ""})
    assert typo.returncode == 2
    assert "(did you mean 'googleai/gemini-flash-latest'?)" in typo.stderr


# --- serve prints its agent routes ---------------------------------------------------------------

TWO_AGENTS = """
from turnkit import Turnkit
from turnkit.http import serve_agent
from turnkit.testing import define_echo_model
from starlette.applications import Starlette
from starlette.routing import Mount

ai = Turnkit(model="echoModel")
define_echo_model(ai)
ai.define_agent(name="alpha")
ai.define_agent(name="beta")
mounted = Starlette(routes=[Mount("/api", app=serve_agent(ai.agent("beta")))])
"""


@pytest.mark.parametrize(
    ("attr", "extra", "expected"),
    [
        (
            ":ai",
            ["--ui"],
            [
                "agent alpha  POST {url}/agents/alpha  (also /getSnapshot, /abort, /uiMessageStream)",
                "agent beta   POST {url}/agents/beta  (also /getSnapshot, /abort, /uiMessageStream)",
                "playground  {url}/ui/",
            ],
        ),
        (
            ":mounted",
            [],
            ["agent beta  POST {url}/api/beta  (also /getSnapshot, /abort, /uiMessageStream)"],
        ),
    ],
)
def test_serve_prints_the_url_of_every_agent_route(
    tmp_path: Path, attr: str, extra: list[str], expected: list[str]
) -> None:
    app_file = tmp_path / "two.py"
    app_file.write_text(TWO_AGENTS)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [TURNKIT, "serve", f"{app_file}{attr}", "--port", str(port), "--log-level", "warning", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().rstrip("\n") for _ in expected]  # printed before serving
        assert lines == [line.format(url=url) for line in expected]
        # ... and each printed turn URL answers a turn.
        deadline = time.monotonic() + 30
        first = lines[0].split("POST ", 1)[1].split("  ", 1)[0]
        body = {"data": {"message": {"role": "user", "content": [{"text": "hi"}]}}}
        while True:
            try:
                reply = httpx.post(first, json=body, timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        assert reply.json()["result"]["message"]["content"][0]["text"] == "Echo: hi"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
