"""Genkit's Python `remote_agent` (PyPI `genkit==0.12.0`, `genkit.exp`) driving an agent server.

Runs in the peer virtualenv, never in turnkit's (see `benchmarks/peers/env.py`):

    benchmarks/.venvs/genkit-fastapi-0.12.0/bin/python tests/interop/genkit_py_client.py BASE_URL [SCENARIO ...]

BASE_URL serves the agents of `app.py` at BASE_URL/agents/chat (server-managed) and
BASE_URL/agents/stateless (client-managed). The scenarios mirror `js_client.mjs`; each runs with
its own chat and a time limit. Prints one JSON object on stdout:
`{"client": "genkit-py", "version": ..., "results": {NAME: {"ok": true, "value": ...} |
{"ok": false, "error": {...}}}}`. With no SCENARIO every scenario runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from typing import Any

from genkit import Part
from genkit.exp import AgentError, remote_agent

SCENARIO_TIMEOUT = 20.0
POLL = 0.05

BASE = ""


def server() -> Any:
    """A client for the server-managed agent."""
    return remote_agent(f"{BASE}/agents/chat", state_management="server")


def client() -> Any:
    """A client for the client-managed agent."""
    return remote_agent(f"{BASE}/agents/stateless", state_management="client")


def wire(value: Any) -> Any:
    """Pydantic models (and lists of them) as wire JSON."""
    if isinstance(value, list):
        return [wire(v) for v in value]
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", by_alias=True, exclude_none=True)
    return value


def describe_error(e: BaseException) -> dict[str, Any]:
    """The fields of an exception the tests look at."""
    response = getattr(e, "response", None)
    return {
        "name": type(e).__name__,
        "isAgentError": isinstance(e, AgentError),
        "message": getattr(e, "message", None) or str(e),
        "status": getattr(e, "status", None),
        "snapshotId": getattr(e, "snapshot_id", None),
        "finishReason": str(response.finish_reason) if response is not None else None,
        "traceback": traceback.format_exception(e)[-3:],
    }


async def settle(awaitable: Awaitable[Any]) -> dict[str, Any]:
    """{"ok": true, "value": ...} or {"ok": false, "error": ...}."""
    try:
        return {"ok": True, "value": await awaitable}
    except Exception as e:
        return {"ok": False, "error": describe_error(e)}


def summary(res: Any) -> dict[str, Any]:
    """What a turn's response says."""
    return {
        "text": res.text,
        "finishReason": str(res.finish_reason) if res.finish_reason is not None else None,
        "snapshotId": res.snapshot_id,
        "sessionId": res.session_id,
        "state": wire(res.state),
        "artifacts": wire(res.artifacts),
        "interrupts": [{"name": i.name, "ref": i.ref, "input": i.input} for i in res.interrupts],
    }


def snap(s: Any) -> dict[str, Any] | None:
    """What a snapshot says."""
    if s is None:
        return None
    messages = list(s.state.messages or []) if s.state is not None else []
    return {
        "snapshotId": s.snapshot_id,
        "sessionId": s.session_id,
        "parentId": s.parent_id,
        "status": str(s.status) if s.status is not None else None,
        "finishReason": str(s.finish_reason) if s.finish_reason is not None else None,
        "createdAt": s.created_at,
        "hasError": s.error is not None,
        "messages": [str(m.role) for m in messages],
        "lastText": "".join(p.text or "" for p in messages[-1].content) if messages else None,
        "custom": wire(s.state.custom) if s.state is not None else None,
    }


async def collect(turn: Any) -> list[dict[str, Any]]:
    """Every chunk of a streaming turn."""
    chunks = []
    async for c in turn.stream:
        raw = c.raw
        chunks.append(
            {
                "kinds": sorted(wire(raw).keys()) if raw is not None else [],
                "text": c.text,
                "accumulatedText": c.accumulated_text,
                "toolRequests": [p.tool_request.name for p in c.tool_requests],
                "artifact": wire(c.artifact),
                "custom": wire(c.custom),
                "patch": wire(raw.custom_patch) if raw is not None and raw.custom_patch else None,
            }
        )
    return chunks


def roles(chat: Any) -> list[str]:
    """The roles of a chat's running history."""
    return [str(m.role) for m in chat.messages]


async def send() -> dict[str, Any]:
    chat = server().chat()
    first = await chat.send("hello there")
    second = await chat.send("again")
    return {
        "first": summary(first),
        "second": summary(second),
        "chatSnapshotId": chat.snapshot_id,
        "chatSessionId": chat.session_id,
        "roles": roles(chat),
    }


async def stream() -> dict[str, Any]:
    chat = server().chat()
    turn = chat.send_stream("please stream these words")
    chunks = await collect(turn)
    res = await turn.response
    return {"chunks": chunks, "response": summary(res)}


async def state() -> dict[str, Any]:
    chat = server().chat()
    turn = chat.send_stream("state calm")
    chunks = await collect(turn)
    first = await turn.response
    after_first = wire(chat.state)
    second_turn = chat.send_stream("state excited")
    second_chunks = await collect(second_turn)
    second = await second_turn.response
    return {
        "patches": [c["patch"] for c in chunks if c["patch"]],
        "customs": [c["custom"] for c in chunks if c["patch"]],
        "secondPatches": [c["patch"] for c in second_chunks if c["patch"]],
        "first": summary(first),
        "afterFirst": after_first,
        "second": summary(second),
        "afterSecond": wire(chat.state),
    }


async def artifacts() -> dict[str, Any]:
    chat = server().chat()
    turn = chat.send_stream("artifact summary")
    chunks = await collect(turn)
    first = await turn.response
    after_first = wire(chat.artifacts)
    second = await chat.send("artifact summary")
    after_second = wire(chat.artifacts)
    third = await chat.send("artifact appendix")
    return {
        "streamed": [c["artifact"] for c in chunks if c["artifact"]],
        "first": summary(first),
        "afterFirst": after_first,
        "second": summary(second),
        "afterSecond": after_second,
        "third": summary(third),
        "afterThird": wire(chat.artifacts),
    }


async def interrupt_respond() -> dict[str, Any]:
    chat = server().chat()
    first = await chat.send("approve deploy")
    answered = await chat.resume(respond=[first.interrupts[0].respond({"approved": True, "by": "py"})])
    nxt = await chat.send("after approval")
    return {"first": summary(first), "answered": summary(answered), "next": summary(nxt)}


async def interrupt_restart() -> dict[str, Any]:
    chat = server().chat()
    first = await chat.send("approve rollback")
    restarted = await chat.resume(restart=[first.interrupts[0].restart()])
    return {"first": summary(first), "restarted": summary(restarted)}


async def failure() -> dict[str, Any]:
    chat = server().chat()
    ok = await chat.send("hello")
    sent = await settle(chat.send("fail now"))
    turn = chat.send_stream("fail streaming")
    streamed = await settle(collect(turn))
    response = await settle(turn.response)
    recovered = await chat.send("recover")
    return {
        "ok": summary(ok),
        "send": {"unexpected": summary(sent["value"])} if sent["ok"] else sent["error"],
        "stream": {"chunks": streamed["value"]} if streamed["ok"] else streamed["error"],
        "response": {"unexpected": summary(response["value"])} if response["ok"] else response["error"],
        "recovered": summary(recovered),
        "chatSnapshotId": chat.snapshot_id,
    }


async def detach() -> dict[str, Any]:
    agent = server()
    chat = agent.chat()
    first = await chat.send("hello")
    task = await chat.detach("sleep 0.3")
    detached_at = chat.snapshot_id
    polled = [snap(s) async for s in task.poll(POLL)]
    after = await chat.send("after detach")
    blocked = await chat.detach("block")
    pending_before = snap(await agent.get_snapshot(snapshot_id=blocked.snapshot_id))
    aborted_from = await blocked.abort()
    final = snap(await blocked.wait(POLL))
    abort_again = await blocked.abort()
    by_session = snap(await agent.get_snapshot(session_id=chat.session_id))
    return {
        "first": summary(first),
        "taskSnapshotId": task.snapshot_id,
        "detachedAt": detached_at,
        "polled": polled,
        "after": summary(after),
        "blockedSnapshotId": blocked.snapshot_id,
        "pendingBefore": pending_before,
        "abortedFrom": str(aborted_from) if aborted_from is not None else None,
        "final": final,
        "abortAgain": str(abort_again) if abort_again is not None else None,
        "bySession": by_session,
    }


async def load_chat() -> dict[str, Any]:
    agent = server()
    chat = agent.chat()
    one = await chat.send("one")
    two = await chat.send("two")
    by_session = await agent.load_chat(session_id=chat.session_id)
    loaded_session = {
        "snapshotId": by_session.snapshot_id,
        "sessionId": by_session.session_id,
        "roles": roles(by_session),
    }
    three = await by_session.send("three")
    by_snapshot = await agent.load_chat(snapshot_id=one.snapshot_id)
    loaded_snapshot = {
        "snapshotId": by_snapshot.snapshot_id,
        "sessionId": by_snapshot.session_id,
        "roles": roles(by_snapshot),
    }
    branch = await by_snapshot.send("branch")
    branch_snap = snap(await agent.get_snapshot(snapshot_id=branch.snapshot_id))
    missing = await settle(agent.load_chat(snapshot_id="no-such-snapshot"))
    return {
        "one": summary(one),
        "two": summary(two),
        "loadedSession": loaded_session,
        "three": summary(three),
        "loadedSnapshot": loaded_snapshot,
        "branch": summary(branch),
        "branchSnap": branch_snap,
        "missing": {"unexpected": True} if missing["ok"] else missing["error"],
    }


async def get_snapshot() -> dict[str, Any]:
    agent = server()
    chat = agent.chat()
    one = await chat.send("one")
    two = await chat.send("state calm")
    by_id = snap(await agent.get_snapshot(snapshot_id=two.snapshot_id))
    by_chat = snap(await chat.get_snapshot())
    by_object = snap(await agent.get_snapshot(snapshot_id=one.snapshot_id))
    by_session = snap(await agent.get_snapshot(session_id=chat.session_id))
    missing = await settle(agent.get_snapshot(snapshot_id="no-such-snapshot"))
    return {
        "one": summary(one),
        "two": summary(two),
        "byId": by_id,
        "byChat": by_chat,
        "byObject": by_object,
        "bySession": by_session,
        "missing": {"value": missing["value"]} if missing["ok"] else missing["error"],
    }


async def errors() -> dict[str, Any]:
    agent = server()

    async def attempt(awaitable: Awaitable[Any]) -> dict[str, Any]:
        r = await settle(awaitable)
        return {"unexpected": str(r["value"].finish_reason)} if r["ok"] else r["error"]

    unknown_snapshot = await attempt(agent.chat(snapshot_id="no-such-snapshot").send("hi"))
    chat = agent.chat()
    await chat.send("hi")
    task = await chat.detach("block")
    await task.abort()
    await task.wait(POLL)
    resume_aborted = await attempt(chat.send("again"))
    paused = agent.chat()
    await paused.send("approve x")
    bad = Part.from_tool_response(name="approve_action", ref="nope", output=1)
    bad_respond = await attempt(paused.resume(respond=[bad]))
    changed = Part.from_tool_request(name="approve_action", ref="approve-1", input={"action": "y"})
    changed_restart = await attempt(paused.resume(restart=[changed]))
    return {
        "unknownSnapshot": unknown_snapshot,
        "resumeAborted": resume_aborted,
        "badRespond": bad_respond,
        "changedRestart": changed_restart,
    }


async def client_managed() -> dict[str, Any]:
    chat = client().chat()
    turn = chat.send_stream("state calm")
    chunks = await collect(turn)
    first = await turn.response
    after_first = {"state": wire(chat.state), "roles": roles(chat)}
    second = await chat.send("hello")
    third = await chat.send("artifact notes")
    return {
        "patches": [c["patch"] for c in chunks if c["patch"]],
        "first": summary(first),
        "afterFirst": after_first,
        "second": summary(second),
        "third": summary(third),
        "final": {"state": wire(chat.state), "roles": roles(chat), "artifacts": wire(chat.artifacts)},
        "snapshotId": chat.snapshot_id,
        "sessionId": chat.session_id,
    }


SCENARIOS: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
    "send": send,
    "stream": stream,
    "state": state,
    "artifacts": artifacts,
    "interrupt_respond": interrupt_respond,
    "interrupt_restart": interrupt_restart,
    "failure": failure,
    "detach": detach,
    "load_chat": load_chat,
    "get_snapshot": get_snapshot,
    "errors": errors,
    "client_managed": client_managed,
}


async def run(names: list[str]) -> dict[str, Any]:
    """Run the scenarios one after another, each within the time limit."""
    results: dict[str, Any] = {}
    for name in names:
        fn = SCENARIOS.get(name)
        if fn is None:
            results[name] = {
                "ok": False,
                "error": {"name": "UnknownScenario", "message": f"no scenario {name}"},
            }
            continue
        started = time.perf_counter()
        try:
            async with asyncio.timeout(SCENARIO_TIMEOUT):
                results[name] = await settle(fn())
        except TimeoutError:
            results[name] = {
                "ok": False,
                "error": {
                    "name": "Timeout",
                    "message": f"scenario {name} did not finish within {SCENARIO_TIMEOUT} s",
                },
            }
        results[name]["ms"] = round((time.perf_counter() - started) * 1000)
    return results


def main() -> None:
    """Parse arguments, run, and print the JSON report as the only thing on stdout."""
    global BASE
    if len(sys.argv) < 2:
        sys.exit("usage: genkit_py_client.py BASE_URL [SCENARIO ...]")
    BASE = sys.argv[1].rstrip("/")
    names = sys.argv[2:] or list(SCENARIOS)
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything the library prints goes to stderr
    results = asyncio.run(run(names))
    report = {
        "client": "genkit-py",
        "version": version("genkit"),
        "python": sys.version.split()[0],
        "results": results,
    }
    out.write(json.dumps(report, default=str) + "\n")
    out.flush()


if __name__ == "__main__":
    main()
