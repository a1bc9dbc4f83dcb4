"""The real Genkit CLI (npm `genkit-cli`, pinned in tests/devui/package.json) runs a turnkit app:
`genkit start -- turnkit dev app.py`. The test talks to what the Developer UI page talks to, the
CLI's UI server API on 127.0.0.1: it lists the runtime and its actions, runs a model and a tool,
streams an agent turn, and reads the turn's trace back (spans exported to the CLI's telemetry
server). The UI page itself is downloaded by the CLI at start and cannot be here: that fails, and
the API goes on."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from devui.harness import APP, TURNKIT, base_env, free_port, genkit_cli, read_lines, running, wait_for


class DevUi:
    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=60)

    def query(self, name: str, data: Any = None) -> Any:
        """A tRPC query of the UI server (what the page calls)."""
        params = {"input": json.dumps(data)} if data is not None else None
        res = self.http.get(f"/api/{name}", params=params)
        res.raise_for_status()
        return res.json()["result"]["data"]

    def trace(self, trace_id: str, spans: int) -> dict[str, Any]:
        """The trace, once the telemetry server holds `spans` finished spans of it."""

        def probe() -> dict[str, Any] | None:
            try:
                found: dict[str, Any] = self.query("getTrace", {"traceId": trace_id})
            except httpx.HTTPStatusError:
                return None
            done = [s for s in found.get("spans", {}).values() if s.get("endTime")]
            return found if len(done) >= spans else None

        return wait_for(f"trace {trace_id}", probe, timeout=30)


@pytest.fixture(scope="module")
def devui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevUi]:
    genkit = genkit_cli()
    project = tmp_path_factory.mktemp("devui-project")
    (project / "pyproject.toml").write_text('[project]\nname = "devui-test"\n')  # the CLI's project root
    env = base_env(project / "home")
    (project / "home").mkdir()
    subprocess.run(
        [str(genkit), "config", "set", "analyticsOptOut", "true", "--non-interactive"],
        cwd=project,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    port = free_port()
    # --non-interactive: no analytics prompt; no --open: no browser.
    cmd = [
        str(genkit),
        "start",
        "--non-interactive",
        "--port",
        str(port),
        "--",
        str(TURNKIT),
        "dev",
        str(APP),
    ]
    with running(cmd, project, env):
        ui = DevUi(f"http://127.0.0.1:{port}")
        wait_for("a turnkit runtime", lambda: ui.query("getActiveRuntimes") or None, timeout=60)
        yield ui


def test_the_cli_lists_the_runtime_and_its_actions(devui: DevUi) -> None:
    (runtime,) = devui.query("getActiveRuntimes")
    assert runtime["genkitVersion"].startswith("py/turnkit")
    assert runtime["reflectionApiSpecVersion"] == 1
    actions = devui.query("listActions", {})
    assert {"/model/dev/echo", "/tool/get_weather", "/agent/weather", "/agent-snapshot/weather"} <= set(
        actions
    )
    assert actions["/agent/weather"]["metadata"]["bidi"] is True


def test_run_a_model_and_a_tool_and_read_their_traces(devui: DevUi) -> None:
    req = {"messages": [{"role": "user", "content": [{"text": "hi there"}]}]}
    res = devui.http.post("/api/runAction", json={"key": "/model/dev/echo", "input": req}).json()
    assert res["result"]["message"]["content"] == [{"text": "echo: hi there"}]
    trace = devui.trace(res["telemetry"]["traceId"], spans=1)
    (span,) = trace["spans"].values()
    assert span["displayName"] == "dev/echo"
    assert span["attributes"]["genkit:metadata:subtype"] == "model"
    assert span["attributes"]["genkit:state"] == "success"

    res = devui.http.post(
        "/api/runAction", json={"key": "/tool/get_weather", "input": {"city": "Lima"}}
    ).json()
    assert res["result"] == "sunny in Lima"
    (span,) = devui.trace(res["telemetry"]["traceId"], spans=1)["spans"].values()
    assert span["attributes"]["genkit:metadata:subtype"] == "tool"
    assert json.loads(span["attributes"]["genkit:output"]) == "sunny in Lima"


def test_stream_an_agent_turn_and_read_its_span_tree(devui: DevUi) -> None:
    payload = {
        "key": "/agent/weather",
        "input": {"message": {"role": "user", "content": [{"text": "Paris"}]}},
    }
    res = devui.http.post("/api/streamAction", json=payload)
    *chunks, last = read_lines(res.text)
    assert any("turnEnd" in c for c in chunks)
    text = "".join(c["modelChunk"]["content"][0].get("text", "") for c in chunks if "modelChunk" in c)
    assert text.strip() == "echo: Paris"
    output = last["result"]
    trace_id = last["telemetry"]["traceId"]
    assert res.headers["x-genkit-trace-id"] == trace_id

    # Action span -> turn (Genkit's `runTurn-1` step: one span named for the agent) -> generate ->
    # 2 model calls + 1 tool call.
    trace = devui.trace(trace_id, spans=6)
    spans = {s["displayName"]: s for s in trace["spans"].values()}
    names = sorted(s["displayName"] for s in trace["spans"].values())
    assert names == [
        "chat dev/echo",
        "chat dev/echo",
        "execute_tool get_weather",
        "generate",
        "runTurn-1",
        "weather",
    ]
    root, turn, gen = spans["weather"], spans["runTurn-1"], spans["generate"]
    assert "parentSpanId" not in root and root["attributes"]["genkit:isRoot"] is True
    assert trace["displayName"] == "weather"
    assert turn["parentSpanId"] == root["spanId"]
    assert gen["parentSpanId"] == turn["spanId"]
    assert spans["execute_tool get_weather"]["parentSpanId"] == gen["spanId"]
    attrs = turn["attributes"]
    assert attrs["turnkit.session.id"] == output["sessionId"]
    assert attrs["turnkit.snapshot.id"] == output["snapshotId"]
    assert attrs["turnkit.turn.finish_reason"] == "stop"
    assert attrs["gen_ai.usage.input_tokens"] == 10 and attrs["gen_ai.usage.output_tokens"] == 4
    assert "Paris" in attrs["genkit:input"]  # contents are recorded in development
    model_attrs = spans["chat dev/echo"]["attributes"]
    assert model_attrs["gen_ai.request.model"] == "dev/echo"
    assert model_attrs["genkit:path"].startswith("/{weather,t:action,s:agent}/{runTurn-1,t:flowStep}/")
    assert [s["attributes"]["genkit:name"] for s in trace["spans"].values()].count("weather") == 1
