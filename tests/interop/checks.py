"""What each interop scenario must show when a Genkit client talks to turnkit's server.

`js_client.mjs` and `genkit_py_client.py` report every scenario in the same JSON shape, so one
check per scenario serves both clients. The expectations follow from `app.py`'s scripted model
and PROTOCOL.md; absent fields and JSON nulls are treated alike (the JS client omits, the Python
one prints null).
"""

from __future__ import annotations

from typing import Any

TOOL_STATE = 'tool said [{"mood":"calm"}]'


def _turn(res: dict[str, Any], text: str, finish: str = "stop") -> None:
    assert res["text"] == text, res
    assert res["finishReason"] == finish, res
    assert res.get("sessionId"), res


def _artifact(name: str, version: int) -> dict[str, Any]:
    return {"name": name, "parts": [{"text": f"report {name} v{version}"}], "metadata": {"version": version}}


def send(v: dict[str, Any]) -> None:
    """Two sends continue one server-managed session; the chat tracks its ids and history."""
    first, second = v["first"], v["second"]
    _turn(first, "echo: hello there (turn 1)")
    _turn(second, "echo: again (turn 2)")
    assert first["snapshotId"] and second["snapshotId"] and first["snapshotId"] != second["snapshotId"]
    assert second["sessionId"] == first["sessionId"]
    assert v["chatSnapshotId"] == second["snapshotId"]
    assert v["chatSessionId"] == first["sessionId"]
    assert v["roles"] == ["user", "model", "user", "model"]


def stream(v: dict[str, Any]) -> None:
    """Text arrives in several chunks, in order, adding up to the final text; the turn end is seen."""
    text = "echo: please stream these words (turn 1)"
    _turn(v["response"], text)
    texts = [c for c in v["chunks"] if c["text"]]
    assert len(texts) == len(text.split(" ")), v["chunks"]
    assert "".join(c["text"] for c in texts) == text
    assert [c["accumulatedText"] for c in texts][-1] == text
    assert all(c["kinds"] == ["modelChunk"] for c in texts), texts
    assert any("turnEnd" in c["kinds"] for c in v["chunks"]), v["chunks"]


def state(v: dict[str, Any]) -> None:
    """Custom-state patches stream (whole document first, then diffs) and keep `chat.state` live."""
    assert v["patches"] == [
        [{"op": "replace", "path": "", "value": {"mood": "calm"}}],
        [{"op": "add", "path": "/changes", "value": 1}],
    ]
    assert v["customs"] == [{"mood": "calm"}, {"mood": "calm", "changes": 1}]
    assert v["afterFirst"] == {"mood": "calm", "changes": 1}
    # Each turn's first patch replaces the whole document, from the state the server holds.
    assert v["secondPatches"][0] == [
        {"op": "replace", "path": "", "value": {"mood": "excited", "changes": 1}}
    ]
    assert v["afterSecond"] == {"mood": "excited", "changes": 2}
    _turn(v["first"], TOOL_STATE)
    _turn(v["second"], 'tool said [{"mood":"excited"}]')


def artifacts(v: dict[str, Any]) -> None:
    """Artifacts stream as they are added; a named one replaces its namesake, others append."""
    assert v["streamed"] == [_artifact("summary", 1)]
    assert _artifact("summary", 1) in v["first"]["artifacts"]
    assert v["afterFirst"] == [_artifact("summary", 1)]
    assert v["afterSecond"] == [_artifact("summary", 2)]
    assert v["afterThird"] == [_artifact("summary", 2), _artifact("appendix", 1)]
    _turn(v["third"], 'tool said ["saved appendix v1"]')


def _interrupted(res: dict[str, Any], action: str) -> None:
    assert res["finishReason"] == "interrupted", res
    assert res["interrupts"] == [{"name": "approve_action", "ref": "approve-1", "input": {"action": action}}]


def interrupt_respond(v: dict[str, Any], by: str) -> None:
    """An interrupt is answered with `resume.respond`; the tool's output is what the client sent."""
    _interrupted(v["first"], "deploy")
    _turn(v["answered"], f'tool said [{{"approved":true,"by":"{by}"}}]')
    _turn(v["next"], "echo: after approval (turn 2)")


def interrupt_restart(v: dict[str, Any]) -> None:
    """An interrupt is answered with `resume.restart`; the tool runs again, as resumed."""
    _interrupted(v["first"], "rollback")
    _turn(v["restarted"], 'tool said [{"action":"rollback","approved":true,"restarted":true}]')


def _agent_error(err: dict[str, Any], last_good: str) -> None:
    assert err["isAgentError"] is True, err
    assert err["status"] == "UNAVAILABLE", err
    assert "scripted failure: the model is down" in err["message"], err
    assert err["finishReason"] == "failed", err
    assert err["snapshotId"] == last_good, err


def failure(v: dict[str, Any]) -> None:
    """A failed turn surfaces as AgentError (send, stream and response); the session goes on."""
    _turn(v["ok"], "echo: hello (turn 1)")
    last_good = v["ok"]["snapshotId"]
    _agent_error(v["send"], last_good)
    _agent_error(v["stream"], last_good)
    _agent_error(v["response"], last_good)
    _turn(v["recovered"], "echo: recover (turn 2)")  # the failed turns left no trace in the history
    assert v["chatSnapshotId"] == v["recovered"]["snapshotId"]


def detach(v: dict[str, Any]) -> None:
    """Detach answers at once with a pending snapshot; polling sees it complete; abort stops one."""
    first = v["first"]
    assert v["taskSnapshotId"] and v["detachedAt"] == v["taskSnapshotId"]
    polled = v["polled"]
    assert polled and polled[-1]["status"] == "completed", polled
    assert all(p["status"] == "pending" for p in polled[:-1]), polled
    done = polled[-1]
    assert done["snapshotId"] == v["taskSnapshotId"]
    assert done["parentId"] == first["snapshotId"]
    assert done["messages"] == ["user", "model", "user", "model"]
    assert done["lastText"] == "slept 0.3"
    _turn(v["after"], "echo: after detach (turn 3)")
    pending = v["pendingBefore"]
    assert pending["status"] == "pending" and pending["lastText"] == "block", pending
    assert pending["parentId"] == v["after"]["snapshotId"]
    assert v["abortedFrom"] == "pending"
    assert v["final"]["status"] == "aborted", v["final"]
    assert v["abortAgain"] == "aborted"
    assert v["bySession"]["snapshotId"] == v["blockedSnapshotId"]
    assert v["bySession"]["status"] == "aborted"


def load_chat(v: dict[str, Any], missing_error: bool = True) -> None:
    """loadChat by session id continues the head; by an older snapshot id it branches."""
    one, two = v["one"], v["two"]
    assert v["loadedSession"] == {
        "snapshotId": two["snapshotId"],
        "sessionId": one["sessionId"],
        "roles": ["user", "model", "user", "model"],
    }
    _turn(v["three"], "echo: three (turn 3)")
    assert v["loadedSnapshot"]["snapshotId"] == one["snapshotId"]
    assert v["loadedSnapshot"]["roles"] == ["user", "model"]
    _turn(v["branch"], "echo: branch (turn 2)")
    assert v["branch"]["snapshotId"] not in (two["snapshotId"], v["three"]["snapshotId"])
    assert v["branchSnap"]["parentId"] == one["snapshotId"]
    assert v["branchSnap"]["sessionId"] == one["sessionId"]
    missing = v["missing"]
    assert "unexpected" not in missing, missing
    assert "not found" in missing["message"].lower() or "404" in missing["message"], missing


def get_snapshot(v: dict[str, Any]) -> None:
    """getSnapshot by snapshot id (either form) and by session id."""
    one, two = v["one"], v["two"]
    by_id = v["byId"]
    assert by_id["snapshotId"] == two["snapshotId"]
    assert by_id["sessionId"] == one["sessionId"]
    assert by_id["parentId"] == one["snapshotId"]
    assert by_id["status"] == "completed"
    assert by_id["finishReason"] == "stop"
    assert by_id["createdAt"]
    assert by_id["messages"] == ["user", "model", "user", "model", "tool", "model"]
    assert by_id["lastText"] == TOOL_STATE
    assert by_id["custom"] == {"mood": "calm", "changes": 1}
    by_object = v["byObject"]
    assert by_object["snapshotId"] == one["snapshotId"]
    assert by_object["status"] == "completed"
    assert not by_object.get("parentId")
    assert by_object["messages"] == ["user", "model"]
    assert v["bySession"]["snapshotId"] == two["snapshotId"]
    if "byChat" in v:
        assert v["byChat"]["snapshotId"] == two["snapshotId"]


def client_managed(v: dict[str, Any]) -> None:
    """A storeless agent: the client holds the state, sends it back each turn, and gets it back."""
    assert v["patches"] == [
        [{"op": "replace", "path": "", "value": {"mood": "calm"}}],
        [{"op": "add", "path": "/changes", "value": 1}],
    ]
    _turn(v["first"], TOOL_STATE)
    assert v["first"]["state"] == {"mood": "calm", "changes": 1}
    assert v["afterFirst"] == {
        "state": {"mood": "calm", "changes": 1},
        "roles": ["user", "model", "tool", "model"],
    }
    _turn(v["second"], "echo: hello (turn 2)")  # the server saw the history the client sent
    _turn(v["third"], 'tool said ["saved notes v1"]')
    assert v["third"]["artifacts"] == [_artifact("notes", 1)]
    final = v["final"]
    assert final["state"] == {"mood": "calm", "changes": 1}
    with_tool, plain = ["user", "model", "tool", "model"], ["user", "model"]
    assert final["roles"] == with_tool + plain + with_tool
    assert final["artifacts"] == [_artifact("notes", 1)]
    assert not v.get("snapshotId")
    assert v["sessionId"] == v["first"]["sessionId"] == v["third"]["sessionId"]


def abort_foreground(v: dict[str, Any]) -> None:
    """A client that aborts its own running turn (closes the stream) stops it on the server."""
    _turn(v["first"], "echo: hello (turn 1)")
    assert v["chunks"] == [], v["chunks"]
    assert v["aborted"]["finishReason"] == "aborted", v["aborted"]
    head = v["head"]
    assert head["snapshotId"] == v["first"]["snapshotId"], head  # the aborted turn wrote nothing
    assert head["messages"] == ["user", "model"]
    _turn(v["after"], "echo: after abort (turn 2)")


# The status each misuse is rejected with (PROTOCOL.md, "Semantics worth knowing").
ERRORS = {
    "unknownSnapshot": "NOT_FOUND",
    "stateToServer": "FAILED_PRECONDITION",
    "sessionToClient": "FAILED_PRECONDITION",
    "resumeAborted": "FAILED_PRECONDITION",
    "badRespond": "INVALID_ARGUMENT",
    "changedRestart": "INVALID_ARGUMENT",
}


def errors(v: dict[str, Any]) -> None:
    """Misuse (bad init, resuming a non-completed snapshot, bad resume entries) is an AgentError.

    Its status name must reach the client, in the error's `status` or at least in its message
    (the JS client keeps only the message of an HTTP error answer; see `error_statuses`).
    """
    for name, status in ERRORS.items():
        if name not in v:
            continue
        err = v[name]
        assert "unexpected" not in err, (name, err)
        assert err["isAgentError"] is True, (name, err)
        assert err["status"] == status or status in err["message"], (name, err)


def error_statuses(v: dict[str, Any]) -> None:
    """The status of every misuse error is in the AgentError's `status` field."""
    assert {name: v[name].get("status") for name in ERRORS if name in v} == {
        name: status for name, status in ERRORS.items() if name in v
    }
