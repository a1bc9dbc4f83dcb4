"""Setup for the front-end tests (the AI SDK client, the playground in Chromium).

- `npm_install(folder, pins)` installs a folder's pinned npm packages into its `node_modules`
  (once; reused after), as the Genkit client tests do for theirs;
- `chromium()` is Debian's `chromium` (installed with apt-get when missing and we are root, as
  in CI); Playwright drives it through `playwright-core`, which never downloads a browser;
- `serve_frontends(...)` runs `turnkit serve tests/ai_sdk/app.py:ai` in its own process.

Outside CI a missing tool or a failed install skips the tests; in CI (CI=true) it fails them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from interop.harness import HOST, free_port, running, unavailable

TESTS = Path(__file__).resolve().parent
AI_SDK = TESTS / "ai_sdk"
PLAYGROUND = TESTS / "playground"
APP = AI_SDK / "app.py"
AI_VERSION = "6.0.333"  # the newest `ai` that supports Node 20 (7.x needs Node 22)
PLAYWRIGHT_VERSION = "1.65.2"


def _installed(folder: Path, package: str) -> str | None:
    try:
        version: str = json.loads((folder / "node_modules" / package / "package.json").read_text())["version"]
        return version
    except (OSError, ValueError, KeyError):
        return None


def npm_install(folder: Path, pins: dict[str, str]) -> None:
    """Install `folder`'s package.json (which pins `pins`) unless those versions are there."""
    if all(_installed(folder, p) == v for p, v in pins.items()):
        return
    npm = shutil.which("npm")
    if npm is None:
        unavailable("npm is not installed")
    proc = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--no-package-lock"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    wrong = {p: _installed(folder, p) for p, v in pins.items() if _installed(folder, p) != v}
    if proc.returncode != 0 or wrong:
        unavailable(f"npm install in {folder} failed ({wrong}):\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}")


def chromium() -> str:
    """Debian's chromium, installed with apt-get first when it is missing and we may."""
    found = shutil.which("chromium")
    if found is not None:
        return found
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        unavailable("chromium is not installed (apt-get install chromium, as root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in ([apt, "update"], [apt, "install", "-y", "--no-install-recommends", "chromium"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env, check=False)
        if proc.returncode != 0:
            unavailable(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    found = shutil.which("chromium")
    if found is None:
        unavailable("apt-get installed chromium, but there is no chromium command")
    return found


def serve_command(port: int, *extra: str) -> list[str]:
    """`turnkit serve tests/ai_sdk/app.py:ai` on 127.0.0.1:PORT (the CLI's own code, run as a module)."""
    target = f"{APP}:ai"
    return [sys.executable, "-m", "turnkit.http._serve", target, "--host", HOST, "--port", str(port), *extra]


@contextlib.contextmanager
def serve_frontends(*extra: str, store_url: str | None = None) -> Iterator[str]:
    """The front-end test app served in its own process; yields its base URL."""
    port = free_port()
    env = dict(os.environ)
    if store_url is not None:
        env["TURNKIT_TEST_STORE"] = store_url
    cmd = serve_command(port, "--log-level", "warning", *extra)
    with running(cmd, port, env=env) as base:
        yield base
