"""Genkit's cross-language agent conformance spec (tests/reference/conformance/agent.yaml), run in process.

Every test runs once per store used by the server-managed agents (in-memory and file).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from conftest import REFERENCE
from test_store_contract import STORES as STORE_CASES
from turnkit import Turnkit, TurnkitError
from turnkit._tools import ToolContext
from turnkit.agents import Agent, AgentConnection, AgentContext, AgentSession, TurnContext
from turnkit.sessions import SessionStore
from turnkit.testing import ProgrammableModel, define_programmable_model
from turnkit.types import AgentInput, AgentOutput, AgentStreamChunk, Artifact, Message, Part

SPEC_PATH = REFERENCE / "conformance" / "agent.yaml"

SPEC: list[dict[str, Any]] = yaml.safe_load(SPEC_PATH.read_text())["tests"]
# Every store of the contract suite (memory, file, and the database stores when present).
STORES: dict[str, Callable[[Path], SessionStore]] = {
    name: (lambda tmp, make=make: make(tmp).open()) for name, make in STORE_CASES.items()
}


# --- the harness's agents ----------------------------------------------------------------------


class Query(BaseModel):
    query: str


class Action(BaseModel):
    action: str


def build(store: SessionStore) -> tuple[Turnkit, ProgrammableModel]:
    """An app with the agents, tools and programmable model the spec requires."""
    ai = Turnkit(model="programmableModel")
    pm = define_programmable_model(ai)

    @ai.tool(name="testTool")
    async def test_tool() -> str:
        """A simple tool."""
        return "tool called"

    ai.define_interrupt(
        name="interruptTool",
        description="Ask the user.",
        input_schema=Query,
        output_schema={"type": "object", "properties": {"answer": {"type": "string"}}},
    )

    @ai.tool(name="restartTool")
    async def restart_tool(input: Action, ctx: ToolContext) -> dict[str, str]:
        """Needs confirmation before it acts."""
        if not ctx.resumed:
            ctx.interrupt()
        return {"result": f"did {input.action}"}

    ai.define_agent(name="promptAgent")
    ai.define_agent(name="promptAgentWithStore", store=store)
    ai.define_agent(name="promptAgentWithTools", tools=["testTool"])
    ai.define_agent(name="promptAgentWithInterrupt", tools=["interruptTool"], store=store)
    ai.define_agent(name="promptAgentWithRestartTool", tools=["restartTool"], store=store)

    def custom(name: str, handle: Callable[[AgentSession, TurnContext], Any], with_store: bool) -> None:
        async def fn(sess: AgentSession, ctx: AgentContext) -> Any:
            async def turn(_input: AgentInput, turn: TurnContext) -> None:
                await handle(sess, turn)

            await sess.run(turn)
            return await sess.result()

        ai.define_custom_agent(name=name, fn=fn, store=store if with_store else None)

    done = Message(role="model", content=[Part(text="done")])

    async def blocking(sess: AgentSession, turn: TurnContext) -> None:
        await turn.wait_aborted()

    async def failing(sess: AgentSession, turn: TurnContext) -> None:
        raise Exception("intentional failure")

    async def artifacts(sess: AgentSession, turn: TurnContext) -> None:
        await sess.add_artifacts([Artifact(name="doc1", parts=[Part(text="v1")])])
        await sess.add_artifacts([Artifact(name="doc1", parts=[Part(text="v2")])])
        await sess.add_artifacts([Artifact(name="doc2", parts=[Part(text="other")])])
        await sess.add_messages([done])

    async def counter(sess: AgentSession, turn: TurnContext) -> None:
        await sess.update_custom(lambda c: {**(c or {}), "counter": (c or {}).get("counter", 0) + 1})
        await sess.add_messages([done])

    async def multi_state(sess: AgentSession, turn: TurnContext) -> None:
        await sess.update_custom(lambda c: {"counter": 1, "status": "working"})
        await sess.update_custom(lambda c: {**c, "counter": 2})
        await sess.update_custom(lambda c: {**c, "status": "done"})
        await sess.add_messages([done])

    async def numbered_artifact(sess: AgentSession, turn: TurnContext) -> None:
        n = len(await sess.get_artifacts()) + 1
        await sess.add_artifacts([Artifact(name=f"doc{n}", parts=[Part(text=f"content{n}")])])
        await sess.add_messages([done])

    custom("customAgentBlocking", blocking, True)
    custom("customAgentFailing", failing, True)
    custom("customAgentWithArtifacts", artifacts, False)
    custom("customAgentWithCustomState", counter, False)
    custom("customAgentWithMultiCustomState", multi_state, False)
    custom("customAgentWithArtifactsStore", numbered_artifact, True)
    custom("customAgentWithCustomStateStore", counter, True)
    return ai, pm


# --- matching ----------------------------------------------------------------------------------


def contains(actual: Any, expected: Any) -> bool:
    """Partial match: dict keys recursively, lists as ordered subsequences, scalars equal."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and contains(actual[k], v) for k, v in expected.items()
        )
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return False
        i = 0
        for item in expected:
            while i < len(actual) and not contains(actual[i], item):
                i += 1
            if i == len(actual):
                return False
            i += 1
        return True
    return bool(actual == expected)


def same_message(actual: Any, expected: dict[str, Any]) -> bool:
    """Message match: every given field matches and the parts line up one to one."""
    return (
        isinstance(actual, dict)
        and len(actual.get("content", [])) == len(expected.get("content", []))
        and all(
            contains(a, e)
            for a, e in zip(actual.get("content", []), expected.get("content", []), strict=True)
        )
        and contains(
            {k: v for k, v in actual.items() if k != "content"},
            {k: v for k, v in expected.items() if k != "content"},
        )
    )


def check_chunks(actual: list[AgentStreamChunk], expected: list[dict[str, Any]]) -> None:
    got = [c.to_wire() for c in actual]
    assert len(got) == len(expected), f"chunks: expected {expected}, got {got}"
    for a, e in zip(got, expected, strict=True):
        if "turnEnd" in e:
            assert "turnEnd" in a, f"expected turnEnd, got {a}"
            if (e["turnEnd"] or {}).get("finishReason"):
                assert a["turnEnd"].get("finishReason") == e["turnEnd"]["finishReason"], a
        else:
            assert contains(a, e), f"chunk {a} does not match {e}"


def check_error(err: dict[str, Any] | None, expected: dict[str, Any]) -> None:
    assert err is not None, f"expected an error like {expected}"
    if "status" in expected:
        assert err.get("status") == expected["status"], err
    if "message" in expected:
        assert expected["message"] in err.get("message", ""), err


def check_output(out: AgentOutput, expected: dict[str, Any]) -> None:
    wire = out.to_wire()
    state = wire.get("state") or {}
    if "message" in expected:
        assert same_message(wire.get("message"), expected["message"]), (
            f"message {wire.get('message')} != {expected['message']}"
        )
    if expected.get("hasSnapshotId"):
        assert wire.get("snapshotId"), wire
    if expected.get("hasSessionId"):
        assert state.get("sessionId"), wire
    if "stateContains" in expected:
        assert contains(state, expected["stateContains"]), f"state {state} lacks {expected['stateContains']}"
    if "artifactsContain" in expected:
        by_name = {a.get("name"): a for a in wire.get("artifacts", [])}
        for art in expected["artifactsContain"]:
            assert contains(by_name.get(art["name"]), art), f"artifacts {wire.get('artifacts')} lack {art}"
    if "finishReason" in expected:
        assert wire.get("finishReason") == expected["finishReason"], wire
    if "errorContains" in expected:
        check_error(wire.get("error"), expected["errorContains"])


def check_snapshot(snap: dict[str, Any], expected: dict[str, Any]) -> None:
    state = snap.get("state") or {}
    for key in ("parentId", "status", "finishReason"):
        if key in expected:
            assert snap.get(key) == expected[key], f"{key}: {snap.get(key)!r} != {expected[key]!r} in {snap}"
    if expected.get("hasSessionId"):
        assert state.get("sessionId"), snap
    if "stateContains" in expected:
        assert contains(state, expected["stateContains"]), f"state {state} lacks {expected['stateContains']}"
    if "errorContains" in expected:
        check_error(snap.get("error"), expected["errorContains"])


def substitute(value: Any, captured: dict[str, Any]) -> Any:
    """Replace `{{name}}` strings with captured values."""
    if isinstance(value, str):
        match = re.fullmatch(r"\{\{(\w+)\}\}", value)
        return captured[match.group(1)] if match else value
    if isinstance(value, dict):
        return {k: substitute(v, captured) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, captured) for v in value]
    return value


# --- steps -------------------------------------------------------------------------------------


async def collect(conn: AgentConnection) -> tuple[list[AgentStreamChunk], AgentOutput]:
    """Read every chunk until the agent ends (or detaches), then the output."""
    chunks: list[AgentStreamChunk] = []

    async def reader() -> None:
        while not conn.finished:
            async for chunk in conn.receive():
                chunks.append(chunk)

    reading = asyncio.ensure_future(reader())
    try:
        out = await asyncio.wait_for(conn.output(), 10)
    finally:
        if not reading.done():
            try:
                await asyncio.wait_for(asyncio.shield(reading), 0 if conn.detached else 5)
            except TimeoutError:
                reading.cancel()
    return chunks, out


async def send(agent: Agent, pm: ProgrammableModel, step: dict[str, Any], captured: dict[str, Any]) -> None:
    pm.program(step.get("modelResponses", []), step.get("streamChunks", []))
    try:
        conn = await agent.stream_bidi(substitute(step.get("init") or {}, captured))
        for item in step.get("inputs", []):
            await conn.send(substitute(item, captured))
        chunks, out = await collect(conn)
    except TurnkitError as exc:
        if "expectError" in step:
            check_error(exc.to_wire(), step["expectError"])
            return
        raise
    assert "expectError" not in step, f"expected error {step['expectError']}, got output {out.to_wire()}"
    if "expectChunks" in step:
        check_chunks(chunks, step["expectChunks"])
    if "expectOutput" in step:
        check_output(out, substitute(step["expectOutput"], captured))
    if "captureSnapshotId" in step:
        captured[step["captureSnapshotId"]] = out.snapshot_id
    if "captureState" in step:
        captured[step["captureState"]] = out.to_wire().get("state")
    if "captureSessionId" in step:
        captured[step["captureSessionId"]] = (out.state.session_id if out.state else None) or out.session_id


async def get_snapshot(agent: Agent, step: dict[str, Any], captured: dict[str, Any]) -> None:
    snapshot_id = substitute(step.get("snapshotId"), captured)
    session_id = substitute(step.get("sessionId"), captured)
    try:
        snap = await agent.get_snapshot(snapshot_id, session_id=session_id)
    except TurnkitError as exc:
        assert "expectError" in step, f"unexpected error {exc}"
        assert step["expectError"] in exc.message
        return
    assert "expectError" not in step, f"expected error {step['expectError']}"
    assert snap is not None, f"no snapshot for {snapshot_id or session_id}"
    check_snapshot(snap.to_wire(), substitute(step.get("expectSnapshot", {}), captured))


async def abort(agent: Agent, step: dict[str, Any], captured: dict[str, Any]) -> None:
    previous = await agent.abort(substitute(step["snapshotId"], captured))
    if "expectPreviousStatus" in step:
        assert previous == step["expectPreviousStatus"], f"previous status {previous!r}"


async def wait_until_completed(agent: Agent, step: dict[str, Any], captured: dict[str, Any]) -> None:
    snapshot_id = substitute(step["snapshotId"], captured)
    deadline = time.monotonic() + step.get("timeoutMs", 5000) / 1000
    while True:
        snap = await agent.get_snapshot(snapshot_id)
        if snap is not None and snap.status in ("completed", "failed", "aborted"):
            break
        assert time.monotonic() < deadline, f"snapshot {snapshot_id} not finished: {snap}"
        await asyncio.sleep(0.01)
    check_snapshot(snap.to_wire(), substitute(step.get("expectSnapshot", {}), captured))


@pytest.mark.parametrize("store_kind", list(STORES))
@pytest.mark.parametrize("case", SPEC, ids=[t["name"] for t in SPEC])
async def test_conformance(case: dict[str, Any], store_kind: str, tmp_path: Path) -> None:
    ai, pm = build(STORES[store_kind](tmp_path))
    agent = ai.agent(case["agent"])
    captured: dict[str, Any] = {}
    for step in case["steps"]:
        kind = step["type"]
        if kind == "send":
            await send(agent, pm, step, captured)
        elif kind == "getSnapshotData":
            await get_snapshot(agent, step, captured)
        elif kind == "abort":
            await abort(agent, step, captured)
        elif kind == "waitUntilCompleted":
            await wait_until_completed(agent, step, captured)
        else:
            raise AssertionError(f"unknown step type {kind!r}")
    # Background turns must not outlive the test: abort what is still pending.
    for sid, _ in list(agent._background.items()):
        await agent.abort(sid)


def test_spec_has_all_tests() -> None:
    assert len(SPEC) == 39
