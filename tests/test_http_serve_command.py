"""`turnkit serve FILE.py[:ATTR]`: a real uvicorn process serving a file's app, app object or agent."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from http_support import user

APP_FILE = """
from turnkit import Turnkit
from turnkit.testing import define_echo_model

ai = Turnkit(model="echoModel")
define_echo_model(ai)
ai.define_agent(name="echo")
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def serve_command(*args: str) -> list[str]:
    """`turnkit serve ARGS` through `turnkit.http._serve.main` (the same code the CLI runs)."""
    code = "import sys; from turnkit.http._serve import main; sys.exit(main(sys.argv[1:]))"
    return [sys.executable, "-c", code, *args]


@contextlib.contextmanager
def serving(*args: str) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        serve_command(*args, "--port", str(port), "--log-level", "warning"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.communicate()[0].decode()
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/agents", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, "turnkit serve did not come up"
            time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("extra", [[], ["--workers", "2"]])
def test_serve_a_file(tmp_path: Path, extra: list[str]) -> None:
    app_file = tmp_path / "myapp.py"
    app_file.write_text(APP_FILE)
    with serving(str(app_file), *extra) as url:
        body = {"data": {"message": user("hi there")}, "init": {}}
        result = httpx.post(f"{url}/agents/echo", json=body, timeout=10).json()["result"]
        assert result["message"]["content"][0]["text"] == "Echo: hi there"


def test_serve_prefers_app_then_ai(tmp_path: Path) -> None:
    app_file = tmp_path / "both.py"
    app_file.write_text(
        APP_FILE
        + "\nfrom turnkit.http import create_app\napp = create_app(ai, agents=[])\n"
        + "other = create_app(ai)\n"
    )
    with serving(str(app_file)) as url:  # `app` wins over `ai`
        assert httpx.get(f"{url}/agents").json() == {"agents": []}
    with serving(f"{app_file}:ai") as url:
        assert [a["name"] for a in httpx.get(f"{url}/agents").json()["agents"]] == ["echo"]


def test_serve_reports_a_bad_target(tmp_path: Path) -> None:
    missing = subprocess.run(
        serve_command(str(tmp_path / "nope.py")), capture_output=True, text=True, timeout=30
    )
    assert missing.returncode == 2 and "no such file" in missing.stderr
    (tmp_path / "empty.py").write_text("x = 1\n")
    empty = subprocess.run(
        serve_command(str(tmp_path / "empty.py")), capture_output=True, text=True, timeout=30
    )
    assert empty.returncode == 2 and "app or ai" in empty.stderr
    wrong = subprocess.run(
        serve_command(f"{tmp_path / 'empty.py'}:x"), capture_output=True, text=True, timeout=30
    )
    assert wrong.returncode == 2 and "neither a Turnkit app nor an ASGI app" in wrong.stderr


def test_serve_one_agent_of_a_file(tmp_path: Path) -> None:
    """`FILE.py:AGENT` serves that agent alone, with the app's routes (listing included)."""
    app_file = tmp_path / "agents.py"
    app_file.write_text(APP_FILE + 'ai.define_agent(name="other")\nonly_echo = ai.agent("echo")\n')
    with serving(f"{app_file}:only_echo") as url:
        assert [a["name"] for a in httpx.get(f"{url}/agents").json()["agents"]] == ["echo"]
        body = {"data": {"message": user("solo")}, "init": {}}
        result = httpx.post(f"{url}/agents/echo", json=body, timeout=10).json()["result"]
        assert result["message"]["content"][0]["text"] == "Echo: solo"
        assert httpx.post(f"{url}/agents/other", json=body, timeout=10).status_code == 404


FAILING_APP = """
from turnkit import Turnkit, TurnkitError
from turnkit.types import ModelResponse

ai = Turnkit(model="broken")

def broken(request, ctx):
    raise RuntimeError("secret detail of the failure")

ai.define_model(name="broken", fn=broken)
ai.define_agent(name="fails")
"""


def test_serve_logs_a_failed_turn_with_its_traceback_and_hides_it_from_the_client(tmp_path: Path) -> None:
    """turnkit only adds a NullHandler (a library); `turnkit serve` gives its logger a real handler,
    so operators see the failure at WARNING with the traceback, and the client sees none of it."""
    app_file = tmp_path / "failing.py"
    app_file.write_text(FAILING_APP)
    port = free_port()
    proc = subprocess.Popen(
        serve_command(str(app_file), "--port", str(port), "--log-level", "warning"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.communicate()[0].decode()
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/agents", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, "turnkit serve did not come up"
            time.sleep(0.1)
        body = {"data": {"message": user("hi")}, "init": {}}
        reply = httpx.post(f"{url}/agents/fails", json=body, timeout=10)
        assert "secret detail" not in reply.text and "Traceback" not in reply.text
    finally:
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=15)[0].decode()
    assert "turn failed" in output, output
    assert "Traceback (most recent call last)" in output and "secret detail of the failure" in output
