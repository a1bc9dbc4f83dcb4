"""Dedicated virtualenvs for peer frameworks, and running a peer script in one.

A peer (e.g. `genkit==0.12.0`) is never installed into turnkit's own environment. `run_peer` creates
`benchmarks/.venvs/<name>-<version>/` with `python3.11 -m venv` the first time, pip-installs the
exact pins into it, and reuses it afterwards (it only reinstalls when a pinned version is missing or
different). Then it runs the script with that venv's interpreter and returns the JSON object the
script printed on stdout.

    from peers.env import run_peer
    report = run_peer(PEERS / "genkit_turns.py", ["genkit==0.12.0"], ["--turns", "200"])
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

VENVS = Path(__file__).resolve().parent.parent / ".venvs"
PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==\s*([^\s;]+)\s*$")

# Prints {"name": "installed version or null"} for the names given as arguments.
_VERSIONS = (
    "import json, sys\n"
    "from importlib.metadata import PackageNotFoundError, version\n"
    "def v(n):\n"
    "    try:\n"
    "        return version(n)\n"
    "    except PackageNotFoundError:\n"
    "        return None\n"
    "print(json.dumps({n: v(n) for n in sys.argv[1:]}))\n"
)


class PeerError(RuntimeError):
    """The peer environment could not be built, or the peer script failed."""


def parse_pins(packages: list[str]) -> dict[str, str]:
    """Map each `name==version` (extras allowed) to its version; anything else is rejected."""
    pins: dict[str, str] = {}
    for spec in packages:
        match = PIN.match(spec)
        if match is None:
            raise ValueError(f"peer packages must be exact pins like 'genkit==0.12.0', got {spec!r}")
        pins[match.group(1)] = match.group(3)
    return pins


def venv_python(venv: Path) -> Path:
    """The interpreter inside a virtualenv."""
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _clean_env() -> dict[str, str]:
    """This process's environment minus what would leak turnkit's venv into the peer's."""
    env = dict(os.environ)
    for key in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP"):
        env.pop(key, None)
    return env


def _installed(python: Path, names: list[str]) -> dict[str, str | None]:
    """Installed versions of `names` in the venv of `python` (None when absent)."""
    proc = subprocess.run(
        [str(python), "-c", _VERSIONS, *names], capture_output=True, text=True, env=_clean_env(), check=False
    )
    if proc.returncode != 0:
        return dict.fromkeys(names)
    result: dict[str, str | None] = json.loads(proc.stdout)
    return result


def ensure_venv(packages: list[str], *, name: str | None = None, python: str | None = None) -> Path:
    """Create or reuse the venv for these exact pins and return its interpreter.

    The venv is `benchmarks/.venvs/<name>`, `name` defaulting to the first pin as
    `<package>-<version>` (e.g. `genkit-0.12.0`). `python` is the base interpreter used to create it
    (default: `python3.11` on PATH, else the running one). Nothing is installed when every pin is
    already there at the right version.
    """
    pins = parse_pins(packages)
    if not pins:
        raise ValueError("no peer packages given")
    first, first_version = next(iter(pins.items()))
    venv = VENVS / (name or f"{first}-{first_version}")
    interpreter = venv_python(venv)
    env = _clean_env()
    if not interpreter.exists():
        base = python or shutil.which("python3.11") or sys.executable
        print(f"peers: creating {venv} with {base}", file=sys.stderr)
        subprocess.run([base, "-m", "venv", "--clear", str(venv)], check=True, env=env)
    installed = _installed(interpreter, list(pins))
    if all(installed[n] == v for n, v in pins.items()):
        return interpreter
    print(f"peers: installing {' '.join(packages)} into {venv}", file=sys.stderr)
    proc = subprocess.run(
        [str(interpreter), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *packages],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise PeerError(f"pip install {' '.join(packages)} failed:\n{proc.stdout}{proc.stderr}")
    installed = _installed(interpreter, list(pins))
    if wrong := {n: installed[n] for n, v in pins.items() if installed[n] != v}:
        raise PeerError(f"after pip install, versions differ from the pins {pins}: {wrong}")
    return interpreter


def run_peer(
    script: Path,
    packages: list[str],
    args: list[str] | None = None,
    *,
    name: str | None = None,
    timeout: float = 900,
) -> dict[str, Any]:
    """Run `script` with `args` in the venv for `packages`; return the JSON object it printed.

    The script's stderr passes through to ours; its stdout must be one JSON object. It runs from
    its own directory, with turnkit's venv variables removed from its environment.
    """
    interpreter = ensure_venv(packages, name=name)
    script = Path(script).resolve()
    try:
        proc = subprocess.run(
            [str(interpreter), str(script), *(args or [])],
            stdout=subprocess.PIPE,
            text=True,
            cwd=script.parent,
            env=_clean_env(),
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise PeerError(f"{script.name} did not finish within {timeout:.0f} s") from e
    if proc.returncode != 0:
        raise PeerError(f"{script.name} exited with {proc.returncode}; stdout:\n{proc.stdout}")
    try:
        result: dict[str, Any] = json.loads(proc.stdout)
    except json.JSONDecodeError as e:
        raise PeerError(f"{script.name} did not print one JSON object; stdout:\n{proc.stdout}") from e
    return result
