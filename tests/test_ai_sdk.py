"""The Vercel AI SDK's UI message stream: `POST /agents/NAME/uiMessageStream`.

The end-to-end tests run the npm package `ai` (pinned in tests/ai_sdk/package.json) in Node:
`tests/ai_sdk/chat_client.mjs` drives its `DefaultChatTransport` against `turnkit serve
tests/ai_sdk/app.py` on 127.0.0.1 and builds each answer with the SDK's `readUIMessageStream`,
which refuses chunks out of protocol order. The npm install happens on first use and is reused.
Without node or npm these skip, except in CI. The last tests check the conversions in Python.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from frontend_support import AI_SDK, AI_VERSION, APP, npm_install, serve_frontends
from http_support import start_server
from interop.harness import node, outcome, run_json
from turnkit._targets import load_module
from turnkit.errors import TurnkitError
from turnkit.http import create_app
from turnkit.http._ai_sdk import (
    ChatRequest,
    UIChunkEncoder,
    UIMessage,
    answers,
    custom_of,
    encode_chunk,
    to_messages,
)
from turnkit.http._server import serve_agent
from turnkit.types import (
    AgentOutput,
    AgentStreamChunk,
    Message,
    ModelResponseChunk,
    Part,
    ToolRequest,
    ToolResponse,
)


@pytest.fixture(scope="module")
def sdk() -> dict[str, Any]:
    """Every scenario's outcome, from one run of the AI SDK client against one turnkit server."""
    exe = node()
    npm_install(AI_SDK, {"ai": AI_VERSION})
    with serve_frontends() as base:
        report = run_json([exe, str(AI_SDK / "chat_client.mjs"), base])
    assert report["version"] == AI_VERSION
    results: dict[str, Any] = report["results"]
    return results


def text_of(message: dict[str, Any] | None) -> str:
    return "".join(p["text"] for p in (message or {}).get("parts", []) if p["type"] == "text")


def tool_parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in message["parts"] if p["type"].startswith("tool-")]


def data_parts(message: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [p for p in message["parts"] if p["type"] == kind]


def clean(run: dict[str, Any]) -> None:
    """The request streamed to its end without protocol errors."""
    assert run["thrown"] is None and run["errors"] == [], run
    assert run["types"][0] == "start" and run["types"][-1] == "finish", run["types"]


def test_protocol_header_and_chunk_order(sdk: dict[str, Any]) -> None:
    first = outcome(sdk, "server_turns")["first"]
    clean(first)
    assert first["headers"]["x-vercel-ai-ui-message-stream"] == "v1"
    assert first["headers"]["content-type"].startswith("text/event-stream")
    types = first["types"]
    assert types[:3] == ["start", "start-step", "text-start"], types
    assert types[-3:] == ["text-end", "finish-step", "finish"], types
    assert types.count("text-delta") == 4  # "echo: hello (turn 1)" streamed word by word
    assert first["chunks"][-1]["finishReason"] == "stop"


def test_server_managed_chat_id_is_the_session(sdk: dict[str, Any]) -> None:
    v = outcome(sdk, "server_turns")
    for run in (v["first"], v["second"], v["third"]):
        clean(run)
    # The third request sent only its new message: the server's history stands (turn 3).
    assert v["texts"] == ["echo: hello (turn 1)", "echo: hello again (turn 2)", "echo: just this (turn 3)"]
    meta = [r["message"]["metadata"] for r in (v["first"], v["second"], v["third"])]
    assert {m["sessionId"] for m in meta} == {v["first"]["chunks"][-1]["messageMetadata"]["sessionId"]}
    assert len({m["snapshotId"] for m in meta}) == 3 and all(m["finishReason"] == "stop" for m in meta)


def test_reasoning_streams_as_reasoning_parts(sdk: dict[str, Any]) -> None:
    run = outcome(sdk, "reasoning")
    clean(run)
    parts = run["message"]["parts"]
    reasoning = [p for p in parts if p["type"] == "reasoning"]
    assert [p["text"] for p in reasoning] == ["considering tides carefully"]
    assert text_of(run["message"]) == "thought about tides"
    assert run["types"].index("reasoning-end") < run["types"].index("text-start")


def test_tool_call_and_custom_state(sdk: dict[str, Any]) -> None:
    v = outcome(sdk, "tool_and_state")
    first, second = v["first"], v["second"]
    clean(first)
    clean(second)
    (tool,) = tool_parts(first["message"])
    assert tool["type"] == "tool-set_mood" and tool["state"] == "output-available"
    assert tool["input"] == {"mood": "happy"} and tool["output"] == {"mood": "happy"}
    # Each change of the custom state streams as the whole value; the message keeps the latest.
    states = [c["data"] for c in first["chunks"] if c["type"] == "data-state"]
    assert states == [{"mood": "happy"}, {"mood": "happy", "changes": 1}]
    assert [p["data"] for p in data_parts(first["message"], "data-state")] == [
        {"mood": "happy", "changes": 1}
    ]
    assert text_of(first["message"]) == 'tool said [{"mood":"happy"}]'
    # The next turn's patches apply to the state the session had (server-managed).
    assert data_parts(second["message"], "data-state")[0]["data"] == {"mood": "calm", "changes": 2}
    step_starts = [p for p in first["message"]["parts"] if p["type"] == "step-start"]
    assert len(step_starts) == 2  # the tool call, then the answer after it


def test_artifact_is_a_data_part(sdk: dict[str, Any]) -> None:
    run = outcome(sdk, "artifact")
    clean(run)
    (artifact,) = data_parts(run["message"], "data-artifact")
    assert artifact["id"] == "summary"
    assert artifact["data"]["parts"] == [{"text": "report summary v1"}]
    assert artifact["data"]["metadata"] == {"version": 1}


def test_interrupt_is_a_tool_approval_and_approving_restarts_the_tool(sdk: dict[str, Any]) -> None:
    v = outcome(sdk, "interrupt_approve")
    asked, resumed, after = v["asked"], v["resumed"], v["after"]
    clean(asked)
    (tool,) = tool_parts(asked["message"])
    assert tool["state"] == "approval-requested" and tool["input"] == {"action": "launch"}
    assert tool["approval"]["descriptor"] == {"reason": "approve launch?"}
    assert asked["chunks"][-1]["finishReason"] == "tool-calls"
    assert asked["message"]["metadata"]["finishReason"] == "interrupted"
    clean(resumed)
    assert resumed["message"]["id"] == asked["message"]["id"]  # the answer continues that message
    (tool,) = tool_parts(resumed["message"])
    assert tool["state"] == "output-available"
    assert tool["output"] == {"action": "launch", "approved": True}
    assert text_of(resumed["message"]) == 'tool said [{"action":"launch","approved":true}]'
    clean(after)
    assert text_of(after["message"]) == "echo: and then (turn 2)"


def test_denying_an_interrupt_answers_it_with_a_denial(sdk: dict[str, Any]) -> None:
    v = outcome(sdk, "interrupt_deny")
    resumed = v["resumed"]
    clean(resumed)
    assert "tool-output-denied" in resumed["types"] and "tool-output-available" not in resumed["types"]
    (tool,) = tool_parts(resumed["message"])
    assert tool["state"] == "output-denied"
    assert text_of(resumed["message"]) == 'tool said [{"approved":false,"reason":"too risky"}]'


def test_abort_stops_the_turn_and_the_chat_goes_on(sdk: dict[str, Any]) -> None:
    v = outcome(sdk, "abort")
    aborted = v["aborted"]
    assert aborted["types"] == ["start"]  # nothing after the abort
    assert aborted["thrown"] == "AbortError", aborted
    clean(v["next"])
    # The session's next turn did not wait for the blocking model (30 s): the abort stopped it.
    assert v["nextMs"] < 10_000, v["nextMs"]
    assert v["text"] == "echo: still there? (turn 1)"  # the aborted turn left nothing in the history


def test_failed_turn_is_an_error_chunk(sdk: dict[str, Any]) -> None:
    run = outcome(sdk, "failure")
    assert run["thrown"] is None
    errors = [c for c in run["chunks"] if c["type"] == "error"]
    assert [e["errorText"] for e in errors] == ["scripted failure"]
    assert run["errors"] == ["scripted failure"]  # what useChat's `error` would hold
    assert run["chunks"][-1] == {
        "type": "finish",
        "finishReason": "error",
        "messageMetadata": {
            "sessionId": run["chunks"][-1]["messageMetadata"]["sessionId"],
            "finishReason": "failed",
        },
    }


def test_client_managed_agent_takes_history_and_state_from_messages(sdk: dict[str, Any]) -> None:
    v = outcome(sdk, "client_managed")
    for key in ("first", "second", "third", "asked", "resumed", "fifth"):
        clean(v[key])
    assert v["texts"][0] == "echo: hello (turn 1)"
    assert data_parts(v["second"]["message"], "data-state")[0]["data"] == {"mood": "sad", "changes": 1}
    # The state came back in the messages' data-state part: the count goes on.
    assert data_parts(v["third"]["message"], "data-state")[0]["data"] == {"mood": "glad", "changes": 2}
    assert "snapshotId" not in v["first"]["message"]["metadata"]
    (tool,) = tool_parts(v["resumed"]["message"])
    assert tool["state"] == "output-available" and tool["output"] == {"action": "deploy", "approved": True}
    assert v["texts"][1] == "echo: count (turn 5)"


def test_bad_request_is_refused_with_its_status(sdk: dict[str, Any]) -> None:
    v = outcome(sdk, "bad_request")
    assert v["threw"] and "INVALID_ARGUMENT" in v["message"] and "messages" in v["message"], v


def test_reconnect_finds_no_stream_to_resume(sdk: dict[str, Any]) -> None:
    assert outcome(sdk, "reconnect") == {"stream": None}


# --- the route, in Python ---------------------------------------------------------------------------


def chat_body(text: str, *, role: str = "user", **extra: Any) -> dict[str, Any]:
    """A request of a new chat (its own id: the tests share one app and its store)."""
    message = {"id": "m1", "role": role, "parts": [{"type": "text", "text": text}]}
    return {"id": uuid.uuid4().hex, "messages": [message], "trigger": "submit-message", **extra}


def streamed_text(body: str) -> str:
    """The text of a UI message stream's text deltas."""
    events = [line[len("data: ") :] for line in body.split("\n") if line.startswith("data: {")]
    return "".join(c["delta"] for c in map(json.loads, events) if c["type"] == "text-delta")


@pytest.fixture(scope="module")
def app_ai() -> Any:
    return load_module(str(APP)).ai


def test_context_provider_guards_the_route(app_ai: Any) -> None:
    def provider(request: Any) -> dict[str, Any]:
        if request.headers.get("authorization") != "Bearer ok":
            raise TurnkitError("UNAUTHENTICATED", "who are you?")
        return {"auth": "ok"}

    with start_server(create_app(app_ai, context_provider=provider)) as base:
        url = f"{base}/agents/chat/uiMessageStream"
        refused = httpx.post(url, json=chat_body("hi"))
        assert refused.status_code == 401 and refused.json()["error"]["status"] == "UNAUTHENTICATED"
        ok = httpx.post(url, json=chat_body("hi"), headers={"authorization": "Bearer ok"})
        assert ok.status_code == 200 and ok.headers["x-vercel-ai-ui-message-stream"] == "v1"
        assert ok.text.endswith("data: [DONE]\n\n")
        assert streamed_text(ok.text) == "echo: hi (turn 1)"


def test_misuse_is_refused_before_the_stream(app_ai: Any) -> None:
    with start_server(create_app(app_ai)) as base:
        url = f"{base}/agents/chat/uiMessageStream"
        regenerate = httpx.post(url, json=chat_body("hi", trigger="regenerate-message"))
        assert regenerate.status_code == 501 and "snapshotId" in regenerate.json()["error"]["message"]
        system_last = httpx.post(url, json=chat_body("be brief", role="system"))
        assert system_last.status_code == 400
        unanswered = httpx.post(url, json=chat_body("", role="assistant"))
        assert unanswered.status_code == 400 and "approval" in unanswered.json()["error"]["message"]
        missing = httpx.post(f"{base}/agents/nobody/uiMessageStream", json=chat_body("hi"))
        assert missing.status_code == 404
        snapshot = httpx.post(url, json=chat_body("hi", snapshotId="no-such-snapshot"))
        assert snapshot.status_code == 404 and snapshot.json()["error"]["status"] == "NOT_FOUND"


def test_serve_agent_has_the_route_under_its_base(app_ai: Any) -> None:
    with start_server(serve_agent(app_ai.agent("chat"), base_path="/api/chat")) as base:
        response = httpx.post(f"{base}/api/chat/uiMessageStream", json=chat_body("hello"))
        assert response.status_code == 200 and streamed_text(response.text) == "echo: hello (turn 1)"


# --- conversions, in Python -----------------------------------------------------------------------


def ui(role: str, *parts: dict[str, Any], id: str = "m") -> UIMessage:
    return UIMessage.model_validate({"id": id, "role": role, "parts": list(parts)})


def test_assistant_message_becomes_model_and_tool_messages_per_step() -> None:
    message = ui(
        "assistant",
        {"type": "step-start"},
        {"type": "reasoning", "text": "hmm"},
        {
            "type": "tool-lookup",
            "toolCallId": "c1",
            "state": "output-available",
            "input": {"q": 1},
            "output": 2,
        },
        {"type": "step-start"},
        {"type": "text", "text": "it is 2"},
        {"type": "data-state", "id": "state", "data": {"n": 1}},
    )
    history = to_messages([ui("user", {"type": "text", "text": "q?"}), message])
    assert [m.role for m in history] == ["user", "model", "tool", "model"]
    assert history[1].content[0].reasoning == "hmm"
    request = history[1].content[1].tool_request
    assert request is not None and (request.name, request.ref, request.input) == ("lookup", "c1", {"q": 1})
    response = history[2].content[0].tool_response
    assert response is not None and (response.ref, response.output) == ("c1", 2)
    assert history[3].text == "it is 2"
    assert custom_of([message]) == {"n": 1}


def test_pending_approval_is_an_interrupt_in_history_and_its_answer_a_restart() -> None:
    asked = {
        "type": "tool-pay",
        "toolCallId": "p1",
        "state": "approval-responded",
        "input": {"amount": 5},
        "approval": {"id": "approval-p1", "approved": True, "descriptor": {"why": "money"}},
    }
    (model,) = to_messages([ui("assistant", asked)])
    (interrupt,) = model.interrupts
    assert interrupt.metadata == {"interrupt": {"why": "money"}}
    restart, respond, denied = answers(ui("assistant", asked), model.interrupts)
    assert respond == [] and denied == []
    assert restart[0].tool_request == ToolRequest(name="pay", ref="p1", input={"amount": 5})
    assert restart[0].metadata == {"resumed": {"approved": True}}


def test_an_assistant_message_answering_nothing_is_refused() -> None:
    pending = [Part(tool_request=ToolRequest(name="pay", ref="p1", input={}), metadata={"interrupt": True})]
    other = {
        "type": "tool-pay",
        "toolCallId": "zzz",
        "state": "approval-responded",
        "approval": {"id": "a", "approved": True},
    }
    with pytest.raises(TurnkitError) as err:
        answers(ui("assistant", other), pending)
    assert err.value.status == "INVALID_ARGUMENT"


def test_chat_request_needs_an_id_and_messages() -> None:
    with pytest.raises(ValueError):
        ChatRequest.model_validate({"id": "", "messages": []})
    req = ChatRequest.model_validate(
        {"id": "c", "messages": [{"id": "1", "role": "user", "parts": []}], "snapshotId": "s", "x": 1}
    )
    assert req.snapshot_id == "s" and req.trigger == "submit-message"


def test_encoder_closes_text_before_a_tool_call_and_pairs_steps() -> None:
    enc = UIChunkEncoder("m1")
    chunks = enc.start()
    text = ModelResponseChunk(role="model", content=[Part(text="a")])
    call = ModelResponseChunk(role="model", content=[Part(tool_request=ToolRequest(name="t", input={}))])
    chunks += enc.chunk(AgentStreamChunk(model_chunk=text))
    chunks += enc.chunk(AgentStreamChunk(model_chunk=call))
    out = AgentOutput(message=Message(role="model", content=[Part(text="a")]), finish_reason="stop")
    chunks += enc.finish(out)
    types = [c["type"] for c in chunks]
    assert types == [
        "start",
        "start-step",
        "text-start",
        "text-delta",
        "text-end",
        "tool-input-start",
        "tool-input-available",
        "finish-step",
        "finish",
    ]
    # A request without a ref gets one made-up id, the same each time it is seen.
    assert chunks[5]["toolCallId"] == chunks[6]["toolCallId"] == enc.call_id(ToolRequest(name="t", input={}))


def test_interrupt_first_seen_in_the_output_is_announced_before_its_approval() -> None:
    enc = UIChunkEncoder("m1")
    enc.start()
    part = Part(tool_request=ToolRequest(name="pay", ref="p1", input={"n": 1}), metadata={"interrupt": True})
    out = AgentOutput(message=Message(role="model", content=[part]), finish_reason="interrupted")
    chunks = enc.finish(out)
    assert [c["type"] for c in chunks] == [
        "start-step",
        "tool-input-start",
        "tool-input-available",
        "tool-approval-request",
        "finish-step",
        "finish",
    ]
    assert "approvalDescriptor" not in chunks[3] and chunks[3]["toolCallId"] == "p1"
    assert chunks[-1]["finishReason"] == "tool-calls"


def test_output_given_by_the_client_answers_the_interrupt() -> None:
    given = {
        "type": "tool-ask",
        "toolCallId": "a1",
        "state": "output-available",
        "input": {"q": "name?"},
        "output": {"answer": "Ada"},
        "approval": {"id": "approval-a1"},
    }
    (model,) = to_messages([ui("assistant", given)], answering=True)  # not settled yet
    restart, respond, denied = answers(ui("assistant", given), model.interrupts)
    assert restart == [] and denied == []
    (response,) = respond
    assert response.tool_response is not None and response.tool_response.output == {"answer": "Ada"}
    # In a later request the server has taken that answer: a settled call in the history.
    settled = to_messages([ui("assistant", given), ui("user", {"type": "text", "text": "next"})])
    assert [m.role for m in settled] == ["model", "tool", "user"] and settled[0].interrupts == []


def test_denial_keeps_the_tool_output_off_the_stream() -> None:
    enc = UIChunkEncoder("m1", denied=["p1"])
    assert enc.start()[1] == {"type": "tool-output-denied", "toolCallId": "p1"}
    result = Part(tool_response=ToolResponse(name="pay", ref="p1", output={"approved": False}))
    assert enc.chunk(AgentStreamChunk(model_chunk=ModelResponseChunk(role="tool", content=[result]))) == []


def test_chunks_are_strict_json_whatever_the_tool_returned() -> None:
    class Result(BaseModel):
        total: float

    event = encode_chunk(
        {"type": "tool-output-available", "toolCallId": "c", "output": Result(total=float("nan"))}
    )
    assert event == b'data: {"type":"tool-output-available","toolCallId":"c","output":{"total":null}}\n\n'
