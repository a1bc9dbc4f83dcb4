"""Setup for the interop tests: the peer installs (npm, the Genkit virtualenv) and the servers.

- `npm_install()` installs `genkit@1.42.0` into `tests/interop/node_modules` (once; reused after).
- `peer_python()` creates or reuses the virtualenv with `genkit==0.12.0` and
  `genkit-fastapi==0.12.0` under `benchmarks/.venvs/` (through `benchmarks/peers/env.py`); Genkit
  never enters turnkit's own environment.
- `turnkit_server()` serves `app.py` with `turnkit serve` (or `python -m turnkit.http._serve`, the
  same code, while the CLI lacks the command) as a separate process on 127.0.0.1; `genkit_server()` serves `genkit_server.py` in the peer venv.
- `run_json(cmd)` runs a client script and returns the JSON object it printed.

Outside CI a missing tool or a failed install skips the tests; in CI (CI=true) it fails them.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, NoReturn

import httpx
import pytest

INTEROP = Path(__file__).resolve().parent
ROOT = INTEROP.parents[1]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

GENKIT_JS_VERSION = "1.42.0"
PEER_PACKAGES = ["genkit-fastapi==0.12.0", "genkit==0.12.0"]
PEER_VENV = "genkit-fastapi-0.12.0"
HOST = "127.0.0.1"


def unavailable(reason: str) -> NoReturn:
    """Skip the test (fail it in CI, where every interop test must run)."""
    if IN_CI:
        pytest.fail(f"interop test cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


# --- installs ------------------------------------------------------------------------------------


def _installed_genkit_js() -> str | None:
    pkg = INTEROP / "node_modules" / "genkit" / "package.json"
    try:
        version: str = json.loads(pkg.read_text())["version"]
        return version
    except (OSError, ValueError, KeyError):
        return None


def node() -> str:
    """The `node` executable (v20 or later)."""
    exe = shutil.which("node")
    if exe is None:
        unavailable("node is not installed")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    major = int(out.lstrip("v").split(".")[0] or 0) if out.startswith("v") else 0
    if major < 20:
        unavailable(f"node >= 20 is needed, found {out or 'nothing'}")
    return exe


def npm_install() -> None:
    """Install the pinned `genkit` npm package into tests/interop/node_modules unless it is there."""
    if _installed_genkit_js() == GENKIT_JS_VERSION:
        return
    npm = shutil.which("npm")
    if npm is None:
        unavailable("npm is not installed")
    proc = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--no-package-lock"],
        cwd=INTEROP,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if proc.returncode != 0 or _installed_genkit_js() != GENKIT_JS_VERSION:
        unavailable(f"npm install in {INTEROP} failed:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}")


def _peers_env() -> Any:
    path = ROOT / "benchmarks" / "peers" / "env.py"
    spec = importlib.util.spec_from_file_location("turnkit_bench_peers_env", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def peer_python() -> Path:
    """The interpreter of the Genkit peer virtualenv (created and pip-installed on first use)."""
    env = _peers_env()
    try:
        interpreter: Path = env.ensure_venv(PEER_PACKAGES, name=PEER_VENV)
    except (env.PeerError, OSError, subprocess.CalledProcessError) as exc:
        unavailable(f"cannot set up the Genkit peer virtualenv: {exc}")
    return interpreter


def peer_env() -> dict[str, str]:
    """This environment minus what would leak turnkit's venv into a peer process."""
    env = dict(os.environ)
    for key in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP"):
        env.pop(key, None)
    return env


# --- servers -------------------------------------------------------------------------------------


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _turnkit_cli() -> Path:
    return Path(sys.executable).with_name("turnkit")


@functools.cache
def _has_serve_command() -> bool:
    cli = _turnkit_cli()
    if not cli.exists():
        return False
    proc = subprocess.run([str(cli), "serve", "--help"], capture_output=True, text=True, check=False)
    return proc.returncode == 0 and "--port" in proc.stdout


def turnkit_server_command(port: int, app: str | None = None) -> list[str]:
    """`turnkit serve APP --host 127.0.0.1 --port PORT` (`python -m turnkit.http._serve` if the CLI lacks it)."""
    target = app or f"{INTEROP / 'app.py'}:ai"
    options = [target, "--host", HOST, "--port", str(port), "--log-level", "warning"]
    if _has_serve_command():
        return [str(_turnkit_cli()), "serve", *options]
    return [sys.executable, "-m", "turnkit.http._serve", *options]


@contextlib.contextmanager
def running(
    cmd: list[str], port: int, *, env: dict[str, str] | None = None, startup_timeout: float = 90.0
) -> Iterator[str]:
    """Run a server process until the block ends; yields its base URL once it accepts requests."""
    with tempfile.TemporaryFile(mode="w+") as log:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, text=True
        )
        try:
            yield _wait_until_serving(proc, log, cmd, f"http://{HOST}:{port}", startup_timeout)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)


def _wait_until_serving(
    proc: subprocess.Popen[str], log: IO[str], cmd: list[str], base: str, timeout: float
) -> str:
    """Poll `base` until it answers HTTP; fail with the server's output if it exits first."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"{cmd} exited with {proc.returncode} before serving:\n{log.read()[-4000:]}")
        try:
            httpx.get(f"{base}/agents", timeout=1.0)
            return base
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{cmd} did not serve on {base} within {timeout} s") from None
            time.sleep(0.1)


@contextlib.contextmanager
def turnkit_server() -> Iterator[str]:
    """turnkit serving `app.py` in its own process; yields the base URL."""
    port = free_port()
    with running(turnkit_server_command(port), port) as base:
        yield base


@contextlib.contextmanager
def genkit_server() -> Iterator[str]:
    """Genkit (genkit-fastapi) serving the agents of `app.py` in the peer venv; yields the base URL."""
    python = peer_python()
    port = free_port()
    cmd = [str(python), str(INTEROP / "genkit_server.py"), "--port", str(port)]
    with running(cmd, port, env=peer_env()) as base:
        yield base


# --- clients -------------------------------------------------------------------------------------


def run_json(cmd: list[str], *, env: dict[str, str] | None = None, timeout: float = 240) -> dict[str, Any]:
    """Run a client script; return the JSON object it printed (its stderr is shown on failure)."""
    proc = subprocess.run(
        cmd, cwd=INTEROP, capture_output=True, text=True, env=env, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"{cmd} exited with {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    try:
        report: dict[str, Any] = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise AssertionError(
            f"{cmd} printed no JSON object:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        ) from None
    return report


def outcome(results: dict[str, Any], scenario: str) -> Any:
    """The value of a scenario that ran to its end; fail with its error otherwise."""
    entry = results.get(scenario)
    if entry is None:
        raise AssertionError(f"scenario {scenario!r} did not run")
    if not entry.get("ok"):
        raise AssertionError(f"scenario {scenario!r} failed: {json.dumps(entry.get('error'), indent=2)}")
    return entry["value"]
