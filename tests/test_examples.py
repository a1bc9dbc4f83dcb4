"""The examples in examples/, each run the way its docstring says (`turnkit chat` or `turnkit serve`,
in a real process, on 127.0.0.1) with the echo model or a programmable one, plus the README's list.

Examples that need a model to call tools are driven through a small wrapper file that loads the
example and programs its model, so the REPL and the server run the example's own agents and tools.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from http_support import start_server
from interop.harness import free_port
from store_case_postgres import DSN, require_postgres
from turnkit.http import remote_agent
from turnkit.testing import define_programmable_model

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
TURNKIT = str(Path(sys.executable).with_name("turnkit"))
ID = r"[0-9a-f-]{36}"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for an example's process: no stray model or store settings, then `extra`."""
    dropped = ("TURNKIT_MODEL", "TURNKIT_SESSIONS_DIR", "TURNKIT_STORE_URL", "REPORT_SECTION_SECONDS")
    return {**{k: v for k, v in os.environ.items() if k not in dropped}, "NO_COLOR": "1", **extra}


def load_example(name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **env: str) -> ModuleType:
    """A fresh import of examples/NAME.py (sessions under tmp_path, `env` set first)."""
    monkeypatch.setenv("TURNKIT_SESSIONS_DIR", str(tmp_path / "sessions"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.syspath_prepend(str(EXAMPLES))
    module_name = f"{name}_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # pydantic resolves the example's annotations through it
    spec.loader.exec_module(module)
    return module


def wrapper(tmp_path: Path, example: str, agent: str, handler: str) -> Path:
    """A file loading examples/EXAMPLE.py whose model is a programmable one running `handler`
    (the source of `async def handler(request, ctx)`); it exposes the example's agent as `agent`."""
    path = tmp_path / f"{example}_wrapped.py"
    path.write_text(
        f"""
import importlib.util, json, sys
from turnkit.testing import define_programmable_model

_spec = importlib.util.spec_from_file_location("{example}", {str(EXAMPLES / f"{example}.py")!r})
example = importlib.util.module_from_spec(_spec)
sys.modules["{example}"] = example
_spec.loader.exec_module(example)
pm = define_programmable_model(example.ai)
example.ai.default_model = "programmableModel"

{handler}

pm.handler = handler
agent = example.{agent}
"""
    )
    return path


def chat(
    target: str, *args: str, stdin: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`turnkit chat TARGET ARGS` with `stdin` piped in."""
    return subprocess.run(
        [TURNKIT, "chat", target, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=clean_env(TURNKIT_SESSIONS_DIR=str(cwd / "sessions"), **(env or {})),
    )


class Served:
    """A `turnkit serve` process: its base URL and the lines it printed at start."""

    def __init__(self, url: str, banner: list[str]) -> None:
        self.url = url
        self.banner = banner


@contextlib.contextmanager
def serve(*args: str, ready: str, cwd: Path, env: dict[str, str]) -> Iterator[Served]:
    """Run `turnkit serve ARGS` on a free port until the block ends; `ready` is a path that
    answers (any status below 500) once it is up."""
    port = free_port()
    cmd = [TURNKIT, "serve", *args, "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                out, err = proc.communicate()
                raise AssertionError(f"turnkit serve exited {proc.returncode}:\n{out.decode()}{err.decode()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + ready, timeout=2).status_code < 500:
                    break
            assert time.monotonic() < deadline, "turnkit serve did not come up"
            time.sleep(0.1)
        assert proc.stdout is not None
        printed = b""
        # The URLs are printed (and flushed) before the server starts, so they are all there now.
        while select.select([proc.stdout], [], [], 0.5)[0]:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            printed += chunk
        yield Served(url, printed.decode().splitlines())
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"text": text}]}


# --- payments: human approval ---------------------------------------------------------------------

# "pay NAME AMOUNT" calls send_payment; after a tool response the model repeats the tool's output.
PAYMENTS_MODEL = """
async def handler(request, ctx):
    last = request.messages[-1]
    if last.role == "tool":
        output = last.content[0].tool_response.output
        return {"message": {"role": "model", "content": [{"text": "tool: " + json.dumps(output)}]}}
    _, name, amount = last.text.split()
    call = {"name": "send_payment", "ref": "p1", "input": {"to": name, "amount": float(amount)}}
    return {"message": {"role": "model", "content": [{"toolRequest": call}]}}
"""


def test_payments_pays_only_what_the_user_approves(tmp_path: Path) -> None:
    target = wrapper(tmp_path, "payments", "payments", PAYMENTS_MODEL)
    stdin = "pay alice 25\ny\npay bob 40\nn\npay carol 9000\n/state\n"
    out = chat(str(target), stdin=stdin, cwd=tmp_path)  # FILE.py alone: its only agent
    assert out.returncode == 0, out.stderr
    body = out.stdout.split("/quit to leave\n", 1)[1]
    assert body.startswith(
        'the agent wants to run send_payment {"to": "alice", "amount": 25.0} '
        '({"question": "Pay 25.00 EUR to alice?", "memo": ""})\n'
        'tool: {"paid": 25.0, "to": "alice", "balance": 475.0}\n'
        'the agent wants to run send_payment {"to": "bob", "amount": 40.0} '
        '({"question": "Pay 40.00 EUR to bob?", "memo": ""})\n'
        'tool: {"approved": false, "reason": "denied by the user"}\n'
        '  = send_payment: {"error": "insufficient funds: the balance is 475.00 EUR"}\n'  # ran at once
        'tool: {"error": "insufficient funds: the balance is 475.00 EUR"}\n'
    ), body
    custom = json.loads(body.split("custom    ", 1)[1])
    assert custom == {"balance": 475.0, "payments": [{"to": "alice", "amount": 25.0, "memo": ""}]}


# --- FastAPI: auth dependency feeding context_provider ------------------------------------------


def test_fastapi_app_guards_agents_with_its_own_auth(tmp_path: Path) -> None:
    env = clean_env(TURNKIT_MODEL="echoModel")
    with serve(str(EXAMPLES / "fastapi_app.py"), ready="/docs", cwd=tmp_path, env=env) as served:
        url = served.url
        alice = {"Authorization": "Bearer alice-token"}
        bob = {"Authorization": "Bearer bob-token"}
        carol = {"Authorization": "Bearer carol-token"}
        assert httpx.get(f"{url}/me", timeout=10).status_code == 401
        assert httpx.get(f"{url}/me", headers=alice, timeout=10).json()["org"] == "acme"
        turn = {"data": {"message": user("hello")}}
        refused = httpx.post(f"{url}/api/agents/support", json=turn, timeout=10)
        assert refused.status_code == 401 and refused.json()["error"]["status"] == "UNAUTHENTICATED"
        wrong = httpx.post(f"{url}/api/agents/support", json=turn, headers={"Authorization": "Bearer x"})
        assert wrong.status_code == 401
        result = httpx.post(f"{url}/api/agents/support", json=turn, headers=alice, timeout=10).json()[
            "result"
        ]
        assert result["message"]["content"][0]["text"] == "Echo: hello"
        # The context's tenant partitions the store: acme's session is acme's alone.
        ask = {"data": {"sessionId": result["sessionId"]}}
        same_org = httpx.post(f"{url}/api/agents/support/getSnapshot", json=ask, headers=bob, timeout=10)
        assert same_org.status_code == 200 and same_org.json()["result"]["snapshotId"] == result["snapshotId"]
        other_org = httpx.post(f"{url}/api/agents/support/getSnapshot", json=ask, headers=carol, timeout=10)
        assert other_org.status_code == 404, other_org.text
    # The agents' listing needs a token, so the printed route is the template.
    assert any(f"{url}/api/agents/{{name}}" in line for line in served.banner), served.banner


async def test_fastapi_tools_see_the_authenticated_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    example = load_example("fastapi_app", monkeypatch, tmp_path)
    pm = define_programmable_model(example.ai)
    example.ai.default_model = "programmableModel"
    call = {"toolRequest": {"name": "my_account", "ref": "a", "input": {}}}
    pm.responses = [
        {"message": {"role": "model", "content": [call]}},
        {"message": {"role": "model", "content": [{"text": "You are Carol."}]}},
    ]
    with start_server(example.app) as url:
        agent = remote_agent(f"{url}/api/agents/support", headers={"Authorization": "Bearer carol-token"})
        res = await agent.chat().send("Who am I?")
    assert res.text == "You are Carol."
    tool_message = pm.requests[1].messages[-1]
    assert tool_message.role == "tool" and tool_message.content[0].tool_response is not None
    assert tool_message.content[0].tool_response.output == {"name": "Carol", "organisation": "globex"}


# --- report: background progress, polled and aborted ---------------------------------------------


def test_report_progress_is_polled_and_the_abort_keeps_it(tmp_path: Path) -> None:
    # Each section is followed by a 60 s pause: once a poll shows a section done, the turn is
    # waiting, so the abort lands mid-report every time.
    env = clean_env(
        TURNKIT_MODEL="echoModel", TURNKIT_SESSIONS_DIR=str(tmp_path / "s"), REPORT_SECTION_SECONDS="60"
    )
    with serve(str(EXAMPLES / "report.py"), ready="/agents", cwd=tmp_path, env=env) as served:
        assert served.banner[0].startswith(f"agent report  POST {served.url}/agents/report")
        client = httpx.Client(base_url=served.url, timeout=10)
        start = {"data": {"message": user("tidal power"), "detach": True}}
        detached = client.post("/agents/report", json=start).json()["result"]
        assert detached["finishReason"] == "detached"
        snapshot_id = detached["snapshotId"]
        deadline = time.monotonic() + 30
        while True:
            snap = client.post("/agents/report/getSnapshot", json={"data": {"snapshotId": snapshot_id}})
            snap_body = snap.json()["result"]
            custom = snap_body["state"]["custom"]
            if custom.get("sectionsDone", custom.get("sections_done")) == 1:
                break
            assert snap_body["status"] == "pending" and time.monotonic() < deadline, snap_body
            time.sleep(0.1)
        assert snap_body["status"] == "pending" and custom["current"] == "Background"
        abort = client.post("/agents/report/abort", json={"data": {"snapshotId": snapshot_id}}).json()
        assert abort["result"]["status"] == "pending"  # what it was
        while True:
            final = client.post("/agents/report/getSnapshot", json={"data": {"snapshotId": snapshot_id}})
            final_body = final.json()["result"]
            if final_body["status"] != "pending":
                break
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert final_body["status"] == "aborted"
    kept = final_body["state"]["custom"]
    assert kept["topic"] == "tidal power" and list(kept["sections"]) == ["Summary"]
    assert kept["sections"]["Summary"].startswith("Echo: Write the 'Summary' section")


async def test_report_completes_with_an_artifact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    example = load_example(
        "report", monkeypatch, tmp_path, TURNKIT_MODEL="echoModel", REPORT_SECTION_SECONDS="0"
    )
    task = await example.report.chat().detach("wind farms")
    snap = await task.wait(timeout=60)
    assert snap.status == "completed"
    progress = snap.state.custom
    assert progress.sections_done == 5 and progress.current is None
    assert list(progress.sections) == example.OUTLINE
    chat = await example.report.load_chat(snapshot_id=snap.snapshot_id)
    (artifact,) = chat.artifacts
    assert artifact.name == "report" and artifact.parts[0].text.startswith("# wind farms\n\n## Summary\n")


def test_report_script_polls_then_aborts(tmp_path: Path) -> None:
    env = clean_env(
        TURNKIT_MODEL="echoModel", TURNKIT_SESSIONS_DIR=str(tmp_path / "s"), REPORT_SECTION_SECONDS="5"
    )
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "report.py"), "geothermal"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert re.fullmatch(f"started: pending snapshot {ID}", lines[0])
    assert "pending: 2/5 sections" in lines and "abort -> was pending" in lines
    assert "aborted: 2/5 sections" in lines and "'status': 'aborted'" in lines[-1]


# --- PostgreSQL, two workers ---------------------------------------------------------------------


@pytest.fixture
def postgres_schema() -> Iterator[str]:
    """A store URL on a schema of its own, dropped afterwards."""
    require_postgres()
    import psycopg

    schema = f"tk_test_examples_{uuid.uuid4().hex[:12]}"
    try:
        yield f"{DSN}?schema={schema}"
    finally:
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_postgres_workers_share_sessions(tmp_path: Path, postgres_schema: str) -> None:
    env = clean_env(TURNKIT_MODEL="echoModel", TURNKIT_STORE_URL=postgres_schema)
    args = (str(EXAMPLES / "postgres_workers.py"), "--workers", "2")
    with serve(*args, ready="/agents", cwd=tmp_path, env=env) as served:
        assert served.banner[0].startswith(f"agent notes  POST {served.url}/agents/notes")
        pids: list[str] = []
        session_id = None
        for turn in range(80):  # a fresh connection per turn: the kernel hands each to a worker
            init: dict[str, str] = {"sessionId": session_id} if session_id else {}
            reply = httpx.post(
                f"{served.url}/agents/notes",
                json={"data": {"message": user(f"note {turn}")}, "init": init},
                timeout=30,
            )
            assert reply.status_code == 200, reply.text
            pids.append(reply.headers["x-worker-pid"])
            session_id = reply.json()["result"]["sessionId"]
            if len(set(pids)) == 2 and turn >= 3:
                break
        assert len(set(pids)) == 2, "every request went to one worker"
        snap = httpx.post(
            f"{served.url}/agents/notes/getSnapshot", json={"data": {"sessionId": session_id}}, timeout=10
        ).json()["result"]
    # One session across both workers: every turn continued the history the other one wrote.
    texts = [m["content"][0]["text"] for m in snap["state"]["messages"]]
    expected = [t for n in range(len(pids)) for t in (f"note {n}", f"Echo: note {n}")]
    assert texts == expected


# --- custom agent with its own loop ---------------------------------------------------------------


def test_custom_loop_drafts_until_the_editor_agrees(tmp_path: Path) -> None:
    out = chat(
        str(EXAMPLES / "custom_loop.py"), "--model", "echoModel", stdin="hello\n/state\n", cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    # The echo editor never says OK: a first draft and MAX_REVISIONS revisions.
    assert '"drafts_per_answer": [3]' in out.stdout and "messages  2\n" in out.stdout


async def test_custom_loop_stops_revising_on_ok(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    example = load_example("custom_loop", monkeypatch, tmp_path)
    pm = define_programmable_model(example.ai)
    example.ai.default_model = "programmableModel"
    texts = ["draft one", "Too vague.", "draft two", "OK"]
    pm.responses = [{"message": {"role": "model", "content": [{"text": t}]}} for t in texts]
    res = await example.writer.chat().send("Explain tides.")
    assert res.text == "draft two" and len(pm.requests) == 4
    assert res.state.drafts_per_answer == [2] and res.state.last_note == "OK"
    assert "Editor's note: Too vague." in pm.requests[2].messages[-1].text


# --- web page: the playground and the AI SDK route ------------------------------------------------


def test_web_chat_serves_the_playground_and_the_ai_sdk_route(tmp_path: Path) -> None:
    env = clean_env(TURNKIT_MODEL="echoModel", TURNKIT_SESSIONS_DIR=str(tmp_path / "s"))
    with serve(str(EXAMPLES / "web_chat.py"), "--ui", ready="/agents", cwd=tmp_path, env=env) as served:
        page = httpx.get(f"{served.url}/ui/", timeout=10)
        assert page.status_code == 200 and "<html" in page.text.lower()
        body = {
            "id": "web-1",
            "trigger": "submit-message",
            "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}],
        }
        stream = httpx.post(f"{served.url}/agents/payments/uiMessageStream", json=body, timeout=30)
    assert stream.status_code == 200
    events = [line[len("data: ") :] for line in stream.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    parts = [json.loads(e) for e in events[:-1]]
    assert "".join(p["delta"] for p in parts if p["type"] == "text-delta") == "Echo: hi"
    assert parts[-1]["type"] == "finish" and parts[-1]["messageMetadata"]["sessionId"] == "web-1"
    assert served.banner == [
        f"agent payments  POST {served.url}/agents/payments  (also /getSnapshot, /abort, /uiMessageStream)",
        f"playground  {served.url}/ui/",
    ]


# --- the README ----------------------------------------------------------------------------------


def test_readme_links_every_example() -> None:
    readme = (ROOT / "README.md").read_text()
    for example in sorted(EXAMPLES.glob("*.py")):
        assert f"](examples/{example.name})" in readme, f"README does not link examples/{example.name}"
