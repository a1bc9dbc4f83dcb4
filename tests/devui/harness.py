"""Helpers for the Developer UI tests: run `turnkit dev` (alone or under the real `genkit start`),
find free ports, install the pinned npm `genkit-cli` into tests/devui/node_modules on first use."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import httpx
import pytest

DEVUI = Path(__file__).resolve().parent
APP = DEVUI / "app.py"
TURNKIT = Path(sys.executable).with_name("turnkit")
GENKIT_CLI_VERSION = json.loads((DEVUI / "package.json").read_text())["devDependencies"]["genkit-cli"]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

T = TypeVar("T")


def unavailable(reason: str) -> NoReturn:
    """Skip the test (fail it in CI, where it must run)."""
    if IN_CI:
        pytest.fail(f"Developer UI test cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 30.0) -> T:
    """Poll `probe` until it returns something other than None (or fail after `timeout`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = probe()
        except (OSError, httpx.HTTPError):  # not up yet
            found = None
        if found is not None:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def genkit_cli() -> Path:
    """The `genkit` executable of the pinned genkit-cli, installed here on first use."""
    exe = DEVUI / "node_modules" / ".bin" / "genkit"
    installed = DEVUI / "node_modules" / "genkit-cli" / "package.json"
    if installed.exists() and json.loads(installed.read_text())["version"] == GENKIT_CLI_VERSION:
        return exe
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        unavailable("node and npm are needed for the genkit-cli test")
    proc = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--no-package-lock"],
        cwd=DEVUI,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if proc.returncode != 0 or not exe.exists():
        unavailable(f"npm install in {DEVUI} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return exe


@contextmanager
def running(cmd: list[str], cwd: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """Run `cmd` in its own process group; on exit stop the group (SIGTERM, then SIGKILL)."""
    log = (cwd / "process.log").open("w")
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def base_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GENKIT_", "TURNKIT_TRACE"))}
    env["HOME"] = str(home)  # the CLI's settings and UI asset cache stay in the test's directory
    return env


def read_lines(body: str) -> list[Any]:
    return [json.loads(line) for line in body.splitlines() if line.strip()]
