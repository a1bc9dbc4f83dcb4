"""Genkit's reflection API (v1) served by `turnkit dev`: the runtime file's lifecycle, the action
catalogue with Genkit's keys, running models, tools and agents (streamed), errors and cancelling.
The app runs in a real subprocess (tests/devui/app.py) on a free 127.0.0.1 port."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from devui.harness import APP, TURNKIT, base_env, free_port, read_lines, running, wait_for


class Runtime:
    def __init__(self, proc: Any, runtime_dir: Path, url: str) -> None:
        self.proc = proc
        self.runtime_dir = runtime_dir
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=30)


def _runtime_file(directory: Path) -> dict[str, Any] | None:
    files = list(directory.glob("*.json")) if directory.exists() else []
    return json.loads(files[0].read_text()) if files else None


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    port = free_port()
    runtime_dir = tmp_path / ".genkit" / "runtimes"
    cmd = [str(TURNKIT), "dev", str(APP), "--port", str(port)]
    with running(cmd, tmp_path, base_env(tmp_path)) as proc:
        info = wait_for("the runtime file", lambda: _runtime_file(runtime_dir))
        # Written only once the server listens: it answers at once.
        health = httpx.get(f"{info['reflectionServerUrl']}/api/__health", timeout=5)
        assert health.status_code == 200
        yield Runtime(proc, runtime_dir, info["reflectionServerUrl"])


def test_runtime_file_describes_the_server_and_goes_away_on_exit(runtime: Runtime) -> None:
    info = _runtime_file(runtime.runtime_dir)
    assert info is not None
    assert info["reflectionApiSpecVersion"] == 1
    assert info["pid"] == runtime.proc.pid
    assert info["id"] == f"{runtime.proc.pid}-{runtime.url.rsplit(':', 1)[1]}"
    assert info["genkitVersion"].startswith("py/")
    assert info["reflectionServerUrl"].startswith("http://127.0.0.1:")
    os.kill(runtime.proc.pid, signal.SIGTERM)
    assert runtime.proc.wait(timeout=15) == 0
    assert list(runtime.runtime_dir.glob("*.json")) == []


def test_quitquitquit_stops_the_runtime(runtime: Runtime) -> None:
    assert runtime.http.post("/api/__quitquitquit").json() == {"status": "OK"}
    runtime.proc.wait(timeout=15)
    assert list(runtime.runtime_dir.glob("*.json")) == []


def test_actions_use_genkit_keys_and_metadata(runtime: Runtime) -> None:
    res = runtime.http.get("/api/actions")
    assert res.headers["x-genkit-version"].startswith("py/")
    actions = res.json()
    assert set(actions) == {
        "/util/generate",
        "/model/dev/echo",
        "/tool/get_weather",
        "/tool/wait_forever",
        "/prompt/greet",
        "/executable-prompt/greet",
        "/agent/weather",
        "/agent-snapshot/weather",
        "/agent-abort/weather",
    }
    agent = actions["/agent/weather"]
    assert agent["key"] == "/agent/weather" and agent["name"] == "weather"
    assert agent["description"] == "Answers with the weather."
    assert agent["metadata"]["bidi"] is True
    assert agent["metadata"]["agent"]["stateManagement"] == "server"
    assert "message" in agent["inputSchema"]["properties"]
    tool = actions["/tool/get_weather"]
    assert tool["inputSchema"]["properties"]["city"]["type"] == "string"
    assert tool["description"] == "The weather in a city."
    model = actions["/model/dev/echo"]["metadata"]["model"]
    assert model["supports"]["tools"] is True
    assert runtime.http.get("/api/envs").json() == ["dev"]
    assert runtime.http.get("/api/values", params={"type": "defaultModel"}).json() == {
        "defaultModel": "dev/echo"
    }
    assert runtime.http.get("/api/values").status_code == 400
    assert runtime.http.post("/api/notify", json={"telemetryServerUrl": "http://x"}).json() == {}


def test_run_a_model_and_a_tool(runtime: Runtime) -> None:
    req = {"messages": [{"role": "user", "content": [{"text": "hello"}]}]}
    res = runtime.http.post("/api/runAction", json={"key": "/model/dev/echo", "input": req})
    body = res.json()
    assert body["result"]["message"]["content"] == [{"text": "echo: hello"}]
    assert body["result"]["usage"]["inputTokens"] == 5
    assert body["telemetry"]["traceId"] == res.headers["x-genkit-trace-id"]
    res = runtime.http.post("/api/runAction", json={"key": "/tool/get_weather", "input": {"city": "Rome"}})
    assert res.json()["result"] == "sunny in Rome"


def test_stream_an_agent_turn_then_read_its_snapshot(runtime: Runtime) -> None:
    payload = {"key": "/agent/weather", "input": {"message": {"role": "user", "content": [{"text": "Oslo"}]}}}
    res = runtime.http.post("/api/runAction", params={"stream": "true"}, json=payload)
    lines = read_lines(res.text)
    *chunks, last = lines
    assert chunks[0]["modelChunk"]["content"][0]["toolResponse"]["output"] == "sunny in Oslo"
    assert "".join(
        c["modelChunk"]["content"][0].get("text", "") for c in chunks if "modelChunk" in c
    ).strip() == ("echo: Oslo")
    assert chunks[-1]["turnEnd"]["finishReason"] == "stop"
    output = last["result"]
    assert output["finishReason"] == "stop" and output["sessionId"]
    assert "usage" not in output  # Genkit's AgentOutput has no usage field
    snap = runtime.http.post(
        "/api/runAction",
        json={"key": "/agent-snapshot/weather", "input": {"snapshotId": output["snapshotId"]}},
    ).json()["result"]
    assert snap["status"] == "completed" and snap["sessionId"] == output["sessionId"]
    # A second turn on the same session continues it.
    payload["init"] = {"sessionId": output["sessionId"]}
    again = runtime.http.post("/api/runAction", json=payload).json()["result"]
    assert again["sessionId"] == output["sessionId"]
    after = runtime.http.post(
        "/api/runAction",
        json={"key": "/agent-snapshot/weather", "input": {"snapshotId": again["snapshotId"]}},
    ).json()["result"]
    assert after["parentId"] == output["snapshotId"]


def test_errors_come_back_in_genkits_shape(runtime: Runtime) -> None:
    assert runtime.http.post("/api/runAction", json={"key": "/tool/nope"}).status_code == 404
    res = runtime.http.post("/api/runAction", json={"key": "/tool/get_weather", "input": {"town": 1}})
    error = res.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT" and error["code"] == 3
    assert "city" in error["message"]
    assert "Traceback" in error["details"]["stack"]
    missing = runtime.http.post(
        "/api/runAction", json={"key": "/agent-snapshot/weather", "input": {"snapshotId": "nope"}}
    ).json()["error"]
    assert missing["status"] == "NOT_FOUND"


def test_cancel_action_stops_a_running_action(runtime: Runtime) -> None:
    lines: list[str] = []
    trace_id: list[str] = []
    started = threading.Event()

    def run() -> None:
        payload = {"key": "/tool/wait_forever", "input": {"reason": "test"}}
        with (
            httpx.Client(base_url=runtime.url, timeout=30) as client,
            client.stream("POST", "/api/runAction", params={"stream": "true"}, json=payload) as res,
        ):
            trace_id.append(res.headers["x-genkit-trace-id"])
            started.set()
            lines.extend(res.iter_lines())

    thread = threading.Thread(target=run)
    thread.start()
    assert started.wait(15)
    res = runtime.http.post("/api/cancelAction", json={"traceId": trace_id[0]})
    assert res.json() == {"message": "Cancelled"}
    thread.join(15)
    assert not thread.is_alive()
    assert json.loads(lines[-1])["error"]["status"] == "CANCELLED"
    again = runtime.http.post("/api/cancelAction", json={"traceId": trace_id[0]})
    assert again.status_code == 404
    assert runtime.http.post("/api/cancelAction", json={}).status_code == 400


def test_render_and_run_a_prompt(runtime: Runtime) -> None:
    rendered = runtime.http.post(
        "/api/runAction", json={"key": "/prompt/greet", "input": {"name": "Ada"}}
    ).json()["result"]
    assert rendered["model"] == "dev/echo"
    assert rendered["messages"] == [{"role": "user", "content": [{"text": "Say hello to Ada."}]}]
    res = runtime.http.post(
        "/api/runAction",
        params={"stream": "true"},
        json={"key": "/executable-prompt/greet", "input": {"name": "Ada"}},
    )
    *chunks, last = read_lines(res.text)
    assert chunks and last["result"]["message"]["content"] == [{"text": "echo: Say hello to Ada."}]
    assert last["result"]["finishReason"] == "stop"


class _TraceReceiver(ThreadingHTTPServer):
    """A real HTTP server on 127.0.0.1 that keeps what is posted to /api/traces."""

    def __init__(self) -> None:
        self.documents: list[dict[str, Any]] = []
        self.arrived = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with outer.arrived:
                    if self.path == "/api/traces":
                        outer.documents.append(json.loads(body))
                    outer.arrived.notify_all()
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"OK")

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    def spans(self, trace_id: str) -> dict[str, dict[str, Any]]:
        """The latest version of each span of a trace (a span is posted at start and at end)."""
        found: dict[str, dict[str, Any]] = {}
        for doc in self.documents:
            if doc["traceId"] == trace_id:
                found.update(doc["spans"])
        return found

    def wait_for_ended(self, trace_id: str, count: int) -> dict[str, dict[str, Any]]:
        with self.arrived:
            ok = self.arrived.wait_for(
                lambda: sum(1 for s in self.spans(trace_id).values() if s["endTime"]) >= count, timeout=15
            )
        assert ok, f"trace {trace_id} did not arrive: {self.documents}"
        return self.spans(trace_id)


def test_notify_points_traces_at_the_telemetry_server(runtime: Runtime) -> None:
    receiver = _TraceReceiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{receiver.server_address[1]}"
        assert runtime.http.post("/api/notify", json={"telemetryServerUrl": url}).json() == {}
        res = runtime.http.post(
            "/api/runAction", json={"key": "/tool/get_weather", "input": {"city": "Nice"}}
        )
        trace_id = res.json()["telemetry"]["traceId"]
        (span,) = receiver.wait_for_ended(trace_id, 1).values()
        assert span["traceId"] == trace_id and span["spanId"] == res.headers["x-genkit-span-id"]
        assert span["displayName"] == "get_weather" and span["spanKind"] == "INTERNAL"
        assert span["instrumentationLibrary"]["name"] == "turnkit"
        assert span["endTime"] >= span["startTime"] > 1e12  # milliseconds since the epoch
        assert span["attributes"]["genkit:isRoot"] is True
        assert span["attributes"]["genkit:input"] == '{"city": "Nice"}'  # dev: contents recorded
        whole = next(d for d in receiver.documents if d["traceId"] == trace_id and "displayName" in d)
        assert whole["displayName"] == "get_weather"

        bad = runtime.http.post("/api/runAction", json={"key": "/tool/get_weather", "input": {"town": 1}})
        trace_id = bad.json()["error"]["details"]["traceId"]
        (span,) = receiver.wait_for_ended(trace_id, 1).values()
        assert span["status"]["code"] == 2 and "city" in span["status"]["message"]
        (event,) = span["timeEvents"]["timeEvent"]
        assert event["annotation"]["description"] == "exception"
        assert span["attributes"]["genkit:state"] == "error"
    finally:
        receiver.shutdown()
        receiver.server_close()


def test_runtime_file_appears_whole_and_nothing_else_lands_in_the_runtimes_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI's watcher parses every file added under .genkit/runtimes: the partial file is
    written beside it and renamed in."""
    from turnkit._devui import RuntimeFile

    runtimes = tmp_path / ".genkit" / "runtimes"
    renames: list[tuple[Path, list[str]]] = []
    real_replace = os.replace

    def watching_replace(src: Any, dst: Any) -> None:
        renames.append((Path(src), sorted(p.name for p in runtimes.iterdir())))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", watching_replace)
    runtime = RuntimeFile(runtimes, "http://127.0.0.1:1", 1)
    runtime.write()
    ((source, present_before),) = renames
    assert present_before == []  # nothing showed up in the watched directory before the rename
    assert source.parent == runtimes.parent  # same filesystem: the rename is atomic
    assert [p.name for p in runtimes.iterdir()] == [runtime.path.name]
    assert json.loads(runtime.path.read_text())["reflectionServerUrl"] == "http://127.0.0.1:1"
    assert sorted(p.name for p in runtimes.parent.iterdir()) == ["runtimes"]  # no partial file left
    runtime.remove()
    assert list(runtimes.iterdir()) == []
