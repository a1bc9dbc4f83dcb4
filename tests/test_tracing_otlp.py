"""Export over OTLP/HTTP to a real receiver on 127.0.0.1, then read the spans back from it.

The receiver is Arize Phoenix (PyPI `arize-phoenix`, pinned below), an OTLP/HTTP (protobuf)
collector with a REST API to read spans. Genkit's telemetry server also has an OTLP route, but it
only parses OTLP/JSON, while OpenTelemetry Python's OTLP/HTTP exporter sends protobuf. Phoenix
lives in its own virtualenv (tests/otlp/.venv, created on first use, git-ignored), never in
turnkit's; `TURNKIT_PHOENIX=/path/to/phoenix` uses an existing install instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from devui.harness import base_env, free_port, running, unavailable, wait_for
from turnkit import Turnkit
from turnkit._tracing import configure, reset_configuration
from turnkit.sessions import InMemorySessionStore
from turnkit.testing import define_programmable_model

PHOENIX_VERSION = "20.26.1"
VENV = Path(__file__).resolve().parent / "otlp" / ".venv"


def phoenix() -> Path:
    """The `phoenix` executable: $TURNKIT_PHOENIX, or the test's own virtualenv (made on first use)."""
    given = os.environ.get("TURNKIT_PHOENIX")
    if given:
        return Path(given)
    exe = VENV / "bin" / "phoenix"
    if exe.exists():
        return exe
    VENV.parent.mkdir(exist_ok=True)
    steps = [
        [sys.executable, "-m", "venv", str(VENV)],
        [str(VENV / "bin" / "pip"), "install", "-q", f"arize-phoenix=={PHOENIX_VERSION}"],
    ]
    for step in steps:
        proc = subprocess.run(step, capture_output=True, text=True, timeout=1800, check=False)
        if proc.returncode != 0:
            unavailable(f"could not install arize-phoenix: {proc.stderr[-2000:]}")
    return exe


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    exe = phoenix()
    work = tmp_path_factory.mktemp("phoenix")
    port = free_port()
    env = base_env(work)
    env.update(
        PHOENIX_WORKING_DIR=str(work),
        PHOENIX_HOST="127.0.0.1",
        PHOENIX_PORT=str(port),
        PHOENIX_GRPC_PORT=str(free_port()),
    )
    url = f"http://127.0.0.1:{port}"
    with running([str(exe), "serve"], work, env):
        wait_for("Phoenix", lambda: httpx.get(f"{url}/healthz").status_code == 200 or None, timeout=120)
        yield url


async def test_a_turn_exported_over_otlp_http_reads_back_whole(receiver: str) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "turnkit-otlp-test"}))
    # The lines an app adds to send turnkit's spans to any OTLP backend.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{receiver}/v1/traces")))
    configure(tracer_provider=provider)
    try:
        ai = Turnkit()
        pm = define_programmable_model(ai, name="test/otlp")

        @ai.tool
        def lookup(key: str) -> str:
            """Look a key up."""
            return key.upper()

        call = {"toolRequest": {"name": "lookup", "input": {"key": "abc"}, "ref": "1"}}
        pm.program(
            [
                {
                    "message": {"role": "model", "content": [call]},
                    "usage": {"inputTokens": 4, "outputTokens": 1},
                },
                {"message": {"role": "model", "content": [{"text": "ABC"}]}, "finishReason": "stop"},
            ]
        )
        agent = ai.define_agent("otlp", model="test/otlp", tools=["lookup"], store=InMemorySessionStore())
        res = await agent.chat().send("look up abc")
        assert provider.force_flush(10_000)
    finally:
        reset_configuration()
        provider.shutdown()

    def read() -> list[dict[str, Any]] | None:
        body = httpx.get(f"{receiver}/v1/projects/default/spans", params={"limit": 50}).json()
        found: list[dict[str, Any]] = body.get("data", [])
        return found if len(found) >= 5 else None

    spans = {s["name"]: s for s in wait_for("the spans in Phoenix", read)}
    assert set(spans) == {"invoke_agent otlp", "generate", "chat test/otlp", "execute_tool lookup"}
    turn, gen, tool = spans["invoke_agent otlp"], spans["generate"], spans["execute_tool lookup"]
    assert turn["parent_id"] is None
    assert gen["parent_id"] == turn["context"]["span_id"]
    assert tool["parent_id"] == gen["context"]["span_id"]
    assert len({s["context"]["trace_id"] for s in spans.values()}) == 1
    attrs = turn["attributes"]
    assert attrs["gen_ai.operation.name"] == "invoke_agent"
    assert attrs["turnkit.session.id"] == res.output.session_id
    assert attrs["turnkit.snapshot.id"] == res.output.snapshot_id
    assert attrs["gen_ai.usage.input_tokens"] == 4
    assert tool["attributes"]["gen_ai.tool.name"] == "lookup"
    # Production default: no message contents on the spans.
    assert "genkit:input" not in attrs and "genkit:output" not in tool["attributes"]
