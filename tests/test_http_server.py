"""The HTTP server over the network: routes, frames, errors, tenancy, limits, disconnects, mounting."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount

from http_support import DemoApp, demo_app, raw_request, serve_async, text_reply, tool_call, user
from turnkit import TurnkitError
from turnkit.http import create_app
from turnkit.models import ModelContext
from turnkit.sessions import FileSessionStore, InMemorySessionStore, SessionStore
from turnkit.types import ModelRequest

SSE = {"accept": "text/event-stream"}


@dataclass
class Served:
    """A demo app served on 127.0.0.1, and an httpx client pointed at it."""

    demo: DemoApp
    url: str
    http: httpx.AsyncClient

    async def turn(self, agent: str, data: Any, init: Any = None, **kw: Any) -> httpx.Response:
        body: dict[str, Any] = {"data": data}
        if init is not None:
            body["init"] = init
        return await self.http.post(f"/agents/{agent}", json=body, **kw)

    async def post(self, path: str, data: Any, **kw: Any) -> httpx.Response:
        return await self.http.post(path, json={"data": data}, **kw)


def make_store(kind: str, tmp_path: Path) -> SessionStore:
    return InMemorySessionStore() if kind == "memory" else FileSessionStore(tmp_path / "sessions")


@pytest.fixture(params=["memory", "file"])
async def served(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Served]:
    demo = demo_app(make_store(request.param, tmp_path))
    async with serve_async(create_app(demo.ai)) as url, httpx.AsyncClient(base_url=url, timeout=10) as http:
        yield Served(demo, url, http)


def frames(body: bytes) -> list[dict[str, Any]]:
    """Split a stream strictly as Genkit's JS client does, checking every frame's exact shape."""
    assert b"\r" not in body and body.endswith(b"\n\n")
    parts = body.split(b"\n\n")
    assert parts[-1] == b""
    out = []
    for part in parts[:-1]:
        assert part.startswith(b"data: ") and b"\n" not in part, part
        payload = json.loads(part[len(b"data: ") :])
        # byte-exact: compact, ASCII-only JSON
        assert part == b"data: " + json.dumps(payload, separators=(",", ":")).encode(), part
        out.append(payload)
    return out


def error_of(resp: httpx.Response, code: int, status: str) -> dict[str, Any]:
    assert resp.status_code == code, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"status", "message", "details"}, body
    assert body["error"]["status"] == status, body
    assert body["error"]["message"] and body["error"]["message"] != "None"
    return dict(body["error"])


# --- turns ------------------------------------------------------------------------------------


async def test_send_json_server_managed(served: Served) -> None:
    served.demo.pm.program([text_reply("hello back")])
    resp = await served.turn("chat", {"message": user("hi")}, {})
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    result = resp.json()["result"]
    assert result["message"] == {"role": "model", "content": [{"text": "hello back"}]}
    assert result["finishReason"] == "stop" and result["snapshotId"] and result["sessionId"]
    assert "state" not in result and None not in result.values()

    served.demo.pm.program([text_reply("second")])
    again = await served.turn("chat", {"message": user("more")}, {"sessionId": result["sessionId"]})
    assert again.json()["result"]["sessionId"] == result["sessionId"]
    assert [m.text for m in served.demo.pm.requests[-1].messages] == ["hi", "hello back", "more"]


async def test_send_json_client_managed_round_trip(served: Served) -> None:
    resp = await served.turn("statelessCounter", {"message": user("one")}, {})
    state = resp.json()["result"]["state"]
    assert "snapshotId" not in resp.json()["result"] and state["custom"] == {"count": 1}
    resp = await served.turn("statelessCounter", {"message": user("two")}, {"state": state})
    result = resp.json()["result"]
    assert result["state"]["custom"] == {"count": 2} and result["message"]["content"][0]["text"] == "count 2"
    assert [m["content"][0]["text"] for m in result["state"]["messages"]] == [
        "one",
        "count 1",
        "two",
        "count 2",
    ]


async def test_init_may_be_left_out(served: Served) -> None:
    resp = await served.turn("counter", {"message": user("x")})
    assert resp.json()["result"]["finishReason"] == "stop"


async def test_stream_frames_byte_exact(served: Served) -> None:
    resp = await served.turn("counter", {"message": user("x")}, {}, headers=SSE)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "text/event-stream; charset=utf-8"
    body = resp.content
    got = frames(body)
    snapshot_id = got[-1]["result"]["snapshotId"]
    expected = (
        b'data: {"message":{"customPatch":[{"op":"replace","path":"","value":{"count":1}}]}}\n\n'
        b'data: {"message":{"artifact":{"name":"tally","parts":[{"text":"1"}]}}}\n\n'
        b'data: {"message":{"turnEnd":{"snapshotId":"'
        + snapshot_id.encode()
        + b'","finishReason":"stop"}}}\n\n'
    )
    assert body.startswith(expected)
    assert body[len(expected) :] == b"data: " + json.dumps(got[-1], separators=(",", ":")).encode() + b"\n\n"
    assert [list(f) for f in got] == [["message"]] * 3 + [["result"]]


async def test_stream_by_query_and_model_chunks(served: Served) -> None:
    served.demo.pm.program(
        [text_reply("héllo\u2028wörld")],
        [
            [
                {"role": "model", "content": [{"text": "héllo"}]},
                {"role": "model", "content": [{"text": "\u2028wörld"}]},
            ]
        ],
    )
    resp = await served.http.post(
        "/agents/stateless?stream=true", json={"data": {"message": user("hi")}, "init": {}}
    )
    body = resp.content
    assert body.isascii()  # non-ASCII is escaped, so no client splits a frame at U+2028
    got = frames(body)
    texts = [
        f["message"]["modelChunk"]["content"][0]["text"] for f in got if "modelChunk" in f.get("message", {})
    ]
    assert texts == ["héllo", "\u2028wörld"]
    assert got[-1]["result"]["message"]["content"][0]["text"] == "héllo\u2028wörld"


async def test_failed_turn_is_a_result_with_redacted_internal_error(served: Served) -> None:
    served.demo.pm.program([text_reply("fine")])
    first = (await served.turn("chat", {"message": user("hi")}, {})).json()["result"]
    served.demo.pm.program([tool_call("explode")])
    resp = await served.turn(
        "chat", {"message": user("boom")}, {"snapshotId": first["snapshotId"]}, headers=SSE
    )
    assert resp.status_code == 200
    result = frames(resp.content)[-1]["result"]
    assert result["finishReason"] == "failed"
    assert result["error"] == {"status": "INTERNAL", "message": "internal error"}
    assert result["snapshotId"] == first["snapshotId"]  # the last good one
    assert "hunter2" not in resp.text


async def test_failed_turn_keeps_a_public_error(served: Served) -> None:
    served.demo.pm.program([tool_call("refuse")])
    result = (await served.turn("stateless", {"message": user("hi")}, {})).json()["result"]
    assert result["finishReason"] == "failed"
    assert result["error"] == {
        "status": "PERMISSION_DENIED",
        "message": "you may not do that",
        "details": {"why": "policy"},
    }
    assert result["state"]["messages"] == []  # the last good state: before the turn


async def test_error_after_the_stream_started_is_a_terminal_frame(served: Served) -> None:
    resp = await served.turn("badTransform", {"message": user("x")}, {}, headers=SSE)
    assert resp.status_code == 200
    got = frames(resp.content)
    assert got[-1] == {"error": {"status": "INTERNAL", "message": "internal error", "details": {}}}
    assert all("message" in f for f in got[:-1]) and len(got) > 1
    assert "secret" not in resp.text
    plain = await served.turn("badTransform", {"message": user("x")}, {})
    error_of(plain, 500, "INTERNAL")


@pytest.mark.parametrize("stream", [False, True])
async def test_agent_misuse_is_an_http_error_or_the_streams_only_frame(served: Served, stream: bool) -> None:
    """Without streaming, misuse gets its HTTP code; with it, the stream opens and its one frame is the
    error (as Genkit's servers do, so Genkit's JS client reads the status)."""
    headers = SSE if stream else {}

    def misuse(resp: httpx.Response, code: int, status: str) -> dict[str, Any]:
        if not stream:
            return error_of(resp, code, status)
        assert resp.status_code == 200, resp.text
        assert (
            resp.text.startswith("data: ") and resp.text.endswith("\n\n") and resp.text.count("data: ") == 1
        )
        err: dict[str, Any] = json.loads(resp.text[len("data: ") :])["error"]
        assert err["status"] == status and "details" in err
        return err

    msg = {"message": user("x")}
    err = misuse(await served.turn("chat", msg, {"state": {}}, headers=headers), 400, "FAILED_PRECONDITION")
    assert "state" in err["message"]
    misuse(
        await served.turn("stateless", msg, {"sessionId": "s1"}, headers=headers), 400, "FAILED_PRECONDITION"
    )
    misuse(
        await served.turn("stateless", {**msg, "detach": True}, {}, headers=headers),
        400,
        "FAILED_PRECONDITION",
    )
    misuse(await served.turn("chat", msg, {"snapshotId": "nope"}, headers=headers), 404, "NOT_FOUND")
    first = (await served.turn("counter", msg, {})).json()["result"]
    init = {"snapshotId": first["snapshotId"], "sessionId": "another"}
    misuse(await served.turn("counter", msg, init, headers=headers), 400, "INVALID_ARGUMENT")


async def test_interrupt_and_resume_over_the_wire(served: Served) -> None:
    pm = served.demo.pm
    pm.program([tool_call("ask", {"query": "sure?"}, ref="q1"), text_reply("done")])
    first = (await served.turn("chat", {"message": user("go")}, {})).json()["result"]
    assert first["finishReason"] == "interrupted"
    request = first["message"]["content"][0]
    assert request["toolRequest"]["ref"] == "q1" and "interrupt" in request["metadata"]
    answer = {"toolResponse": {"name": "ask", "ref": "q1", "output": {"answer": "yes"}}}
    resp = await served.turn("chat", {"resume": {"respond": [answer]}}, {"snapshotId": first["snapshotId"]})
    assert resp.json()["result"]["message"]["content"][0]["text"] == "done"
    bogus = {"toolResponse": {"name": "ask", "ref": "zzz", "output": 1}}
    failed = await served.turn("chat", {"resume": {"respond": [bogus]}}, {"snapshotId": first["snapshotId"]})
    assert failed.json()["result"]["error"]["status"] == "INVALID_ARGUMENT"


# --- snapshots and abort ------------------------------------------------------------------------


async def test_get_snapshot(served: Served) -> None:
    result = (await served.turn("counter", {"message": user("x")}, {})).json()["result"]
    by_id = await served.post("/agents/counter/getSnapshot", {"snapshotId": result["snapshotId"]})
    snap = by_id.json()["result"]
    assert snap["snapshotId"] == result["snapshotId"] and snap["status"] == "completed"
    assert snap["state"]["custom"] == {"count": 1}
    by_session = await served.post("/agents/counter/getSnapshot", {"sessionId": result["sessionId"]})
    assert by_session.json()["result"]["snapshotId"] == result["snapshotId"]
    error_of(await served.post("/agents/counter/getSnapshot", {"snapshotId": "missing"}), 404, "NOT_FOUND")
    error_of(await served.post("/agents/counter/getSnapshot", {"sessionId": "missing"}), 404, "NOT_FOUND")
    error_of(await served.post("/agents/counter/getSnapshot", {}), 400, "INVALID_ARGUMENT")
    both = {"snapshotId": "a", "sessionId": "b"}
    error_of(await served.post("/agents/counter/getSnapshot", both), 400, "INVALID_ARGUMENT")
    error_of(
        await served.post("/agents/stateless/getSnapshot", {"snapshotId": "a"}), 400, "FAILED_PRECONDITION"
    )


async def test_detach_poll_and_abort(served: Served) -> None:
    resp = await served.turn("blocking", {"message": user("work"), "detach": True}, {}, headers=SSE)
    got = frames(resp.content)
    assert len(got) == 1  # a detached turn streams no chunks
    result = got[0]["result"]
    assert result["finishReason"] == "detached" and result["snapshotId"]
    sid = result["snapshotId"]
    snap = (await served.post("/agents/blocking/getSnapshot", {"snapshotId": sid})).json()["result"]
    assert snap["status"] == "pending"
    aborted = await served.post("/agents/blocking/abort", {"snapshotId": sid})
    assert aborted.json() == {"result": {"snapshotId": sid, "status": "pending"}}
    for _ in range(100):
        snap = (await served.post("/agents/blocking/getSnapshot", {"snapshotId": sid})).json()["result"]
        if snap["status"] != "pending":
            break
        await asyncio.sleep(0.02)
    assert snap["status"] == "aborted"
    again = await served.post("/agents/blocking/abort", {"snapshotId": sid})
    assert again.json() == {"result": {"snapshotId": sid, "status": "aborted"}}
    unknown = await served.post("/agents/blocking/abort", {"snapshotId": "never-was"})
    assert unknown.json() == {"result": {"snapshotId": "never-was"}}  # status omitted: there was none
    error_of(await served.post("/agents/blocking/abort", {}), 400, "INVALID_ARGUMENT")


# --- hostile and mistaken requests ---------------------------------------------------------------


async def test_bad_requests_get_json_errors(served: Served) -> None:
    post = served.http.post
    json_ct = {"content-type": "application/json"}
    error_of(await post("/agents/chat", content=b"{not json", headers=json_ct), 400, "INVALID_ARGUMENT")
    error_of(await post("/agents/chat", content=b"[1, 2]", headers=json_ct), 400, "INVALID_ARGUMENT")
    error_of(await post("/agents/chat", content=b'{"data": NaN}', headers=json_ct), 400, "INVALID_ARGUMENT")
    error_of(
        await post("/agents/chat", content=b'{"data": "\xff"}', headers=json_ct), 400, "INVALID_ARGUMENT"
    )
    error_of(await post("/agents/chat", content=b"", headers=json_ct), 400, "INVALID_ARGUMENT")
    error_of(await post("/agents/chat", json={"init": {}}), 400, "INVALID_ARGUMENT")
    error_of(await post("/agents/chat", json={"data": "hi"}), 400, "INVALID_ARGUMENT")
    error_of(await post("/agents/chat", json={"data": {}, "init": []}), 400, "INVALID_ARGUMENT")
    err = error_of(
        await post("/agents/chat", json={"data": {"message": {"role": "boss", "content": 3}}}),
        400,
        "INVALID_ARGUMENT",
    )
    paths = [e["path"] for e in err["details"]["errors"]]
    assert "data.message.role" in paths and "data.message.content" in paths
    error_of(
        await post("/agents/chat", json={"data": {}, "init": {"snapshotId": 7}}), 400, "INVALID_ARGUMENT"
    )
    deep: Any = {}
    for _ in range(200):
        deep = {"d": deep}
    error_of(
        await post("/agents/chat", json={"data": {"message": {"role": "user", "content": [{"data": deep}]}}}),
        400,
        "INVALID_ARGUMENT",
    )
    error_of(await post("/agents/chat", content=b"[" * 100_000, headers=json_ct), 400, "INVALID_ARGUMENT")
    error_of(
        await post("/agents/chat", content=b'{"data": {}}', headers={"content-type": "text/plain"}),
        415,
        "INVALID_ARGUMENT",
    )
    error_of(await post("/agents/nobody", json={"data": {}}), 404, "NOT_FOUND")
    error_of(await post("/agents/nobody/getSnapshot", json={"data": {"snapshotId": "x"}}), 404, "NOT_FOUND")
    error_of(await post("/nowhere", json={"data": {}}), 404, "NOT_FOUND")
    wrong = await served.http.get("/agents/chat")
    error_of(wrong, 405, "UNIMPLEMENTED")
    assert wrong.headers["allow"] == "POST"
    error_of(await served.http.put("/agents/chat/abort", json={"data": {}}), 405, "UNIMPLEMENTED")
    long_id = {"snapshotId": "x" * 10_000}
    error_of(await served.post("/agents/chat/getSnapshot", long_id), 400, "INVALID_ARGUMENT")
    error_of(await served.post("/agents/chat/getSnapshot", {"snapshotId": "a\x00b"}), 400, "INVALID_ARGUMENT")


async def test_body_size_limit() -> None:
    demo = demo_app()
    async with (
        serve_async(create_app(demo.ai, max_body_bytes=2000)) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        big = {"data": {"message": user("x" * 5000)}, "init": {}}
        err = error_of(await http.post("/agents/chat", json=big), 413, "INVALID_ARGUMENT")
        assert "2000" in err["message"]

        async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: the server must count
            yield b'{"data": {"message": {"role": "user", "content": [{"text": "'
            for _ in range(10):
                yield b"y" * 500
            yield b'"}]}}}'

        resp = await http.post(
            "/agents/chat", content=chunked(), headers={"content-type": "application/json"}
        )
        error_of(resp, 413, "INVALID_ARGUMENT")
        # A Content-Length that understates the body: only the declared bytes are the body.
        body = json.dumps(big).encode()
        lie = (
            b"POST /agents/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 20\r\n\r\n" + body
        )
        answer = await asyncio.to_thread(raw_request, url, lie)
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
        demo.pm.program([text_reply("still here")])
        ok = await http.post("/agents/chat", json={"data": {"message": user("small")}, "init": {}})
        assert ok.status_code == 200


# --- auth and tenancy -----------------------------------------------------------------------------


async def tenant_of(request: Request) -> dict[str, Any]:
    """An async context provider: a bearer token is required; `X-Tenant` picks the partition."""
    token = request.headers.get("authorization")
    if token is None:
        raise TurnkitError("UNAUTHENTICATED", "a bearer token is required")
    if token == "Bearer banned":
        raise TurnkitError("PERMISSION_DENIED", "this token may not call agents")
    body = await request.json()  # the provider may read the body too
    assert "data" in body
    return {"auth": {"token": token}, "tenant": request.headers.get("x-tenant", "default")}


@pytest.mark.parametrize("store", ["memory", "file"])
async def test_auth_and_tenancy(store: str, tmp_path: Path) -> None:
    demo = demo_app(make_store(store, tmp_path))
    app = create_app(demo.ai, context_provider=tenant_of)
    async with serve_async(app) as url, httpx.AsyncClient(base_url=url) as http:
        acme = {"authorization": "Bearer a", "x-tenant": "acme"}
        evil = {"authorization": "Bearer e", "x-tenant": "evil"}
        msg = {"data": {"message": user("hi")}, "init": {}}
        error_of(await http.post("/agents/chat", json=msg), 401, "UNAUTHENTICATED")
        error_of(
            await http.post("/agents/chat", json=msg, headers={"authorization": "Bearer banned"}),
            403,
            "PERMISSION_DENIED",
        )
        error_of(await http.get("/agents"), 401, "UNAUTHENTICATED")

        demo.pm.program([tool_call("whoami"), text_reply("you are acme")])
        result = (await http.post("/agents/chat", json=msg, headers=acme)).json()["result"]
        assert demo.seen["whoami"] == {"auth": {"token": "Bearer a"}, "tenant": "acme"}
        sid, snap = result["sessionId"], result["snapshotId"]

        def get(data: dict[str, str], headers: dict[str, str]) -> Any:
            return http.post("/agents/chat/getSnapshot", json={"data": data}, headers=headers)

        assert (await get({"snapshotId": snap}, acme)).status_code == 200
        error_of(await get({"snapshotId": snap}, evil), 404, "NOT_FOUND")
        error_of(await get({"sessionId": sid}, evil), 404, "NOT_FOUND")
        resumed = {"data": {"message": user("x")}, "init": {"snapshotId": snap}}
        error_of(await http.post("/agents/chat", json=resumed, headers=evil), 404, "NOT_FOUND")
        # sessionId from another tenant: a new, empty session in the caller's own partition
        demo.pm.program([text_reply("who?")])
        other = {"data": {"message": user("what did I say?")}, "init": {"sessionId": sid}}
        assert (await http.post("/agents/chat", json=other, headers=evil)).status_code == 200
        assert [m.text for m in demo.pm.requests[-1].messages] == ["what did I say?"]

        detached = {"data": {"message": user("bg"), "detach": True}, "init": {}}
        pending = (await http.post("/agents/blocking", json=detached, headers=acme)).json()["result"][
            "snapshotId"
        ]
        abort = {"data": {"snapshotId": pending}}
        assert (await http.post("/agents/blocking/abort", json=abort, headers=evil)).json()["result"] == {
            "snapshotId": pending
        }
        still = (await http.post("/agents/blocking/getSnapshot", json=abort, headers=acme)).json()["result"]
        assert still["status"] == "pending"  # the other tenant's abort touched nothing
        aborted = (await http.post("/agents/blocking/abort", json=abort, headers=acme)).json()["result"]
        assert aborted["status"] == "pending"


async def test_context_provider_failures_do_not_leak() -> None:
    demo = demo_app()

    def broken(request: Request) -> dict[str, Any]:
        raise RuntimeError("vault at 10.0.0.7 refused")

    def wrong_type(request: Request) -> Any:
        return ["not", "a", "mapping"]

    for provider in (broken, wrong_type):
        async with (
            serve_async(create_app(demo.ai, context_provider=provider)) as url,
            httpx.AsyncClient(base_url=url) as http,
        ):
            resp = await http.post("/agents/chat", json={"data": {}})
            err = error_of(resp, 500, "INTERNAL")
            assert err == {"status": "INTERNAL", "message": "internal error", "details": {}}


async def test_a_non_public_store_error_is_hidden(tmp_path: Path) -> None:
    class BrokenStore(InMemorySessionStore):
        async def get_snapshot(self, **kw: Any) -> Any:
            raise TurnkitError("DATA_LOSS", f"record file {tmp_path}/x.rec is corrupt", public=False)

    demo = demo_app(BrokenStore())
    async with serve_async(create_app(demo.ai)) as url, httpx.AsyncClient(base_url=url) as http:
        resp = await http.post("/agents/chat/getSnapshot", json={"data": {"snapshotId": "s"}})
        assert error_of(resp, 500, "INTERNAL")["message"] == "internal error"
        assert str(tmp_path) not in resp.text


async def test_a_failed_background_turn_hides_server_side_errors() -> None:
    demo = demo_app()

    @demo.ai.tool(name="db")
    async def db() -> str:
        """Fails the way an unreachable database does."""
        raise TurnkitError("UNAVAILABLE", "db at 10.0.0.3:5432 refused user=admin", public=False)

    demo.ai.define_agent(name="dbAgent", tools=["db"], store=demo.store)
    demo.pm.program([tool_call("db")])
    async with serve_async(create_app(demo.ai)) as url, httpx.AsyncClient(base_url=url) as http:
        body = {"data": {"message": user("x"), "detach": True}, "init": {}}
        sid = (await http.post("/agents/dbAgent", json=body)).json()["result"]["snapshotId"]
        for _ in range(100):
            lookup = {"data": {"snapshotId": sid}}
            snap = (await http.post("/agents/dbAgent/getSnapshot", json=lookup)).json()["result"]
            if snap["status"] != "pending":
                break
            await asyncio.sleep(0.02)
        assert snap["status"] == "failed"
        assert snap["error"] == {"status": "INTERNAL", "message": "internal error"}


# --- disconnects ------------------------------------------------------------------------------


class Blocked:
    """A model handler that blocks until cancelled, recording what happened (thread-safe)."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = threading.Event()
        self.ctx: ModelContext | None = None

    async def __call__(self, request: ModelRequest, ctx: ModelContext) -> Any:
        self.ctx = ctx
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return text_reply("never")


@pytest.mark.parametrize("stream", [True, False])
async def test_client_disconnect_cancels_an_attached_turn(served: Served, stream: bool) -> None:
    blocked = Blocked()
    served.demo.pm.handler = blocked
    request = served.turn("chat", {"message": user("hang")}, {}, headers=SSE if stream else {})
    task = asyncio.ensure_future(request)
    await asyncio.wait_for(blocked.started.wait(), 5)
    task.cancel()  # closes the connection
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(200):
        if blocked.cancelled.is_set():
            break
        await asyncio.sleep(0.01)
    assert blocked.cancelled.is_set()
    assert blocked.ctx is not None and blocked.ctx.abort_signal.is_set()


async def test_a_detached_turn_goes_on_after_the_client_leaves(served: Served) -> None:
    gate = asyncio.Event()
    served.demo.pm.gate = gate
    served.demo.pm.program([text_reply("finished in the background")])
    resp = await served.turn("chat", {"message": user("bg"), "detach": True}, {}, headers=SSE)
    sid = frames(resp.content)[0]["result"]["snapshotId"]
    await served.http.aclose()  # every connection of the client is gone
    gate.set()
    async with httpx.AsyncClient(base_url=served.url) as http:
        for _ in range(200):
            snap = (await http.post("/agents/chat/getSnapshot", json={"data": {"snapshotId": sid}})).json()[
                "result"
            ]
            if snap["status"] != "pending":
                break
            await asyncio.sleep(0.02)
    assert snap["status"] == "completed"
    assert snap["state"]["messages"][-1]["content"][0]["text"] == "finished in the background"


# --- listing, OpenAPI, mounting --------------------------------------------------------------------


async def test_list_agents_and_openapi(served: Served) -> None:
    listed = (await served.http.get("/agents")).json()["agents"]
    by_name = {a["name"]: a for a in listed}
    assert by_name["chat"]["metadata"]["stateManagement"] == "server"
    assert by_name["chat"]["description"] == "A chat with a store."
    assert by_name["stateless"]["metadata"] == {"stateManagement": "client", "abortable": False}
    doc = (await served.http.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    assert {"/agents/chat", "/agents/chat/getSnapshot", "/agents/chat/abort"} <= set(doc["paths"])
    assert "AgentInput" in doc["components"]["schemas"] and "SessionSnapshot" in doc["components"]["schemas"]


async def test_only_the_listed_agents_are_served() -> None:
    demo = demo_app()
    async with (
        serve_async(create_app(demo.ai, agents=["counter"])) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        assert [a["name"] for a in (await http.get("/agents")).json()["agents"]] == ["counter"]
        error_of(await http.post("/agents/chat", json={"data": {}}), 404, "NOT_FOUND")
        assert (await http.post("/agents/counter", json={"data": {}})).status_code == 200


async def test_mounted_under_a_prefix() -> None:
    demo = demo_app()
    parent = Starlette(routes=[Mount("/api/v1", app=create_app(demo.ai))])
    async with serve_async(parent) as url, httpx.AsyncClient(base_url=url) as http:
        resp = await http.post(
            "/api/v1/agents/counter", json={"data": {"message": user("x")}, "init": {}}, headers=SSE
        )
        assert frames(resp.content)[-1]["result"]["message"]["content"][0]["text"] == "count 1"
        snap = await http.post(
            "/api/v1/agents/counter/getSnapshot",
            json={"data": {"sessionId": frames(resp.content)[-1]["result"]["sessionId"]}},
        )
        assert snap.status_code == 200
        error_of(await http.post("/api/v1/agents/nobody", json={"data": {}}), 404, "NOT_FOUND")
        doc = (await http.get("/api/v1/openapi.json")).json()
        assert doc["servers"] == [{"url": "/api/v1"}]
