"""The `turnkit` command: generate streams an answer, picks the model from flag/env/default, explains errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TURNKIT = str(Path(sys.executable).with_name("turnkit"))

ECHO_APP = """
from turnkit import Turnkit
from turnkit.testing import define_echo_model, define_programmable_model
ai = Turnkit()
define_echo_model(ai)
define_programmable_model(ai)
"""


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
