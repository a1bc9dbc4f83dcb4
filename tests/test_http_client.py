"""`remote_agent` against a real server: the local client surface, over HTTP."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from http_support import DemoApp, demo_app, serve_async, text_reply, tool_call
from turnkit import TurnkitError
from turnkit.agents import AgentError
from turnkit.http import RemoteAgent, create_app, remote_agent
from turnkit.http._wire import FrameReader, error_from_response
from turnkit.models import ModelContext
from turnkit.types import ModelRequest, ModelResponseChunk, Part


@pytest.fixture
async def demo() -> AsyncIterator[tuple[DemoApp, str]]:
    app = demo_app()
    async with serve_async(create_app(app.ai)) as url:
        yield app, url


@pytest.fixture
async def agents(demo: tuple[DemoApp, str]) -> AsyncIterator[dict[str, RemoteAgent]]:
    _, url = demo
    names = ["chat", "stateless", "counter", "statelessCounter", "blocking"]
    async with httpx.AsyncClient(timeout=10) as client:
        yield {n: remote_agent(f"{url}/agents/{n}", client=client) for n in names}


async def test_send_and_continue(demo: tuple[DemoApp, str], agents: dict[str, RemoteAgent]) -> None:
    app, _ = demo
    app.pm.program([text_reply("one"), text_reply("two")])
    chat = agents["chat"].chat()
    first = await chat.send("hi")
    assert first.text == "one" and first.finish_reason == "stop" and first.snapshot_id
    second = await chat.send("again")
    assert second.text == "two" and chat.snapshot_id == second.snapshot_id
    assert [m.text for m in app.pm.requests[-1].messages] == ["hi", "one", "again"]
    snap = await chat.get_snapshot()
    assert snap is not None and snap.parent_id == first.snapshot_id


async def test_stream_delivers_chunks_as_they_come(
    demo: tuple[DemoApp, str], agents: dict[str, RemoteAgent]
) -> None:
    app, _ = demo
    gate = asyncio.Event()

    async def slow(request: ModelRequest, ctx: ModelContext) -> Any:
        ctx.send_chunk(ModelResponseChunk(role="model", content=[Part(text="first")]))
        await gate.wait()
        ctx.send_chunk(ModelResponseChunk(role="model", content=[Part(text=" second")]))
        return text_reply("first second")

    app.pm.handler = slow
    turn = agents["stateless"].chat().send_stream("go")
    stream = turn.stream.__aiter__()
    chunk = await asyncio.wait_for(stream.__anext__(), 5)  # arrives while the model still waits
    assert chunk.text == "first" and not gate.is_set()
    gate.set()
    rest = [c async for c in stream]
    assert [c.text for c in rest if c.text] == [" second"]
    assert rest[-1].turn_end and rest[-2].accumulated_text == "first second"
    assert (await turn.response).text == "first second"


async def test_custom_state_patches_and_artifacts(agents: dict[str, RemoteAgent]) -> None:
    chat = agents["counter"].chat()
    turn = chat.send_stream("x")
    seen = [c async for c in turn.stream]
    assert seen[0].custom == {"count": 1} and seen[1].artifact is not None
    response = await turn.response
    assert response.text == "count 1" and chat.custom == {"count": 1}
    await chat.send("y")
    assert chat.custom == {"count": 2}
    assert [a.name for a in (await chat.send("z")).artifacts] == ["tally"]


async def test_client_managed_state_round_trip(
    agents: dict[str, RemoteAgent], demo: tuple[DemoApp, str]
) -> None:
    _, url = demo
    declared = remote_agent(f"{url}/agents/statelessCounter", state_management="client")
    inferred = agents["statelessCounter"]
    for agent in (declared, inferred):
        chat = agent.chat()
        await chat.send("one")
        assert chat.transport.state_management == "client" and chat.state == {"count": 1}
        second = await chat.send("two")
        assert second.text == "count 2" and second.state == {"count": 2}
        assert [m.text for m in second.messages] == ["one", "count 1", "two", "count 2"]
        resumed = agent.chat(session_state=second.session_state)
        assert (await resumed.send("three")).text == "count 3"
    await declared.aclose()


async def test_detach_poll_wait_and_abort(demo: tuple[DemoApp, str], agents: dict[str, RemoteAgent]) -> None:
    app, _ = demo
    task = await agents["blocking"].chat().detach("work")
    polled = await task.poll()
    assert polled is not None and polled.status == "pending"
    assert await task.abort() == "pending"
    assert (await task.wait(timeout=5)).status == "aborted"
    assert await agents["blocking"].abort(task.snapshot_id) == "aborted"
    assert await agents["blocking"].abort("never-was") is None

    gate = asyncio.Event()
    app.pm.gate = gate
    app.pm.program([text_reply("done later")])
    chat = agents["chat"].chat()
    background = await chat.detach("later")
    gate.set()
    final = await background.wait(timeout=5)
    assert final.status == "completed" and final.state is not None
    loaded = await agents["chat"].load_chat(snapshot_id=background.snapshot_id)
    assert loaded.loaded is not None and loaded.loaded.snapshot_id == background.snapshot_id


def _with_usage(reply: dict[str, Any], input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {**reply, "usage": {"inputTokens": input_tokens, "outputTokens": output_tokens}}


async def test_turn_usage_reaches_the_remote_client(
    demo: tuple[DemoApp, str], agents: dict[str, RemoteAgent]
) -> None:
    app, _ = demo
    # A tool loop: two model calls, whose usage the turn sums.
    app.pm.program([_with_usage(tool_call("whoami"), 5, 1), _with_usage(text_reply("you"), 7, 2)] * 2)
    sent = await agents["chat"].chat().send("who?")
    assert sent.usage is not None and (sent.usage.input_tokens, sent.usage.output_tokens) == (12, 3)
    streamed = agents["stateless"].chat().send_stream("who?")
    _ = [c async for c in streamed.stream]
    usage = (await streamed.response).usage
    assert usage is not None and (usage.input_tokens, usage.output_tokens) == (12, 3)


async def test_usage_goes_on_the_wire_only_when_asked(demo: tuple[DemoApp, str]) -> None:
    """Genkit's Python client rejects an output field its AgentOutput lacks: usage is opt-in."""
    app, url = demo
    app.pm.program([_with_usage(text_reply("hi"), 4, 1)] * 4)
    body = {"data": {"message": {"role": "user", "content": [{"text": "x"}]}}}
    asked = {"turnkit-usage": "1"}
    async with httpx.AsyncClient(timeout=10) as client:
        plain = (await client.post(f"{url}/agents/stateless", json=body)).json()["result"]
        assert "usage" not in plain and plain["finishReason"] == "stop"
        answered = (await client.post(f"{url}/agents/stateless", json=body, headers=asked)).json()
        assert answered["result"]["usage"] == {"inputTokens": 4, "outputTokens": 1}
        for headers in ({}, asked):
            stream = await client.post(f"{url}/agents/stateless?stream=true", json=body, headers=headers)
            frames = FrameReader().feed(stream.text)
            assert "result" in frames[-1]
            assert frames[-1]["result"].get("usage") == (
                {"inputTokens": 4, "outputTokens": 1} if headers else None
            )


async def test_interrupt_respond_and_restart(
    demo: tuple[DemoApp, str], agents: dict[str, RemoteAgent]
) -> None:
    app, _ = demo
    app.pm.program([tool_call("ask", {"query": "sure?"}, ref="q1"), text_reply("answered")])
    chat = agents["chat"].chat()
    paused = await chat.send("go")
    assert paused.finish_reason == "interrupted"
    (interrupt,) = paused.interrupts
    assert interrupt.name == "ask" and interrupt.input == {"query": "sure?"}
    done = await chat.resume(respond=[interrupt.respond({"answer": "yes"})])
    assert done.text == "answered"

    app.pm.program([tool_call("confirm", {"action": "delete"}, ref="c1"), text_reply("deleted")])
    paused = await chat.send("delete it")
    (interrupt,) = paused.interrupts
    assert interrupt.data == {"reason": "needs confirmation"}
    done = await chat.resume(restart=[interrupt.restart({"approved": True})])
    assert done.text == "deleted"
    tool_message = app.pm.requests[-1].messages[-1]
    assert tool_message.content[0].tool_response is not None
    assert tool_message.content[0].tool_response.output == {"result": "did delete"}


async def test_failed_turn_and_misuse(demo: tuple[DemoApp, str], agents: dict[str, RemoteAgent]) -> None:
    app, url = demo
    app.pm.program([tool_call("explode")])
    with pytest.raises(AgentError) as failure:
        await agents["stateless"].chat().send("boom")
    assert (failure.value.status, failure.value.message) == ("INTERNAL", "internal error")
    assert failure.value.response.finish_reason == "failed"

    wrong = remote_agent(f"{url}/agents/chat", state_management="client")  # it is server-managed
    with pytest.raises(TurnkitError) as caught:
        await wrong.chat(session_state={"messages": []}).send("x")
    assert caught.value.status == "FAILED_PRECONDITION" and "state" in caught.value.message
    with pytest.raises(TurnkitError) as caught:
        await agents["chat"].chat(snapshot_id="nope").send("x")
    assert caught.value.status == "NOT_FOUND"
    with pytest.raises(TurnkitError) as caught:
        await agents["chat"].load_chat(session_id="nobody")
    assert caught.value.status == "NOT_FOUND"
    assert await agents["chat"].get_snapshot("nope") is None
    await wrong.aclose()


async def test_abort_turn_closes_the_stream_and_stops_the_server_turn(
    demo: tuple[DemoApp, str], agents: dict[str, RemoteAgent]
) -> None:
    app, _ = demo
    started, cancelled = asyncio.Event(), threading.Event()

    async def hang(request: ModelRequest, ctx: ModelContext) -> Any:
        ctx.send_chunk(ModelResponseChunk(role="model", content=[Part(text="thinking")]))
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    app.pm.handler = hang
    chat = agents["chat"].chat()
    turn = chat.send_stream("long job")
    await asyncio.wait_for(started.wait(), 5)
    response = await asyncio.wait_for(turn.abort(), 5)
    assert response.finish_reason == "aborted" and chat.snapshot_id is None
    for _ in range(200):
        if cancelled.is_set():
            break
        await asyncio.sleep(0.01)
    assert cancelled.is_set()


async def test_headers_auth_and_tenants() -> None:
    app = demo_app()

    def provider(request: Request) -> dict[str, Any]:
        if request.headers.get("authorization") != "Bearer ok":
            raise TurnkitError("UNAUTHENTICATED", "no valid token")
        return {"tenant": request.headers["x-tenant"]}

    calls = 0

    async def rotating() -> dict[str, str]:
        nonlocal calls
        calls += 1
        return {"authorization": "Bearer ok", "x-tenant": "acme"}

    async with serve_async(create_app(app.ai, context_provider=provider)) as url:
        url = f"{url}/agents/counter"
        async with (
            remote_agent(url, headers=rotating) as acme,
            remote_agent(url, headers={"authorization": "Bearer ok", "x-tenant": "evil"}) as evil,
            remote_agent(url) as anonymous,
        ):
            response = await acme.chat().send("x")
            assert calls == 2 and response.snapshot_id  # the turn, then the state it left
            assert await acme.get_snapshot(response.snapshot_id) is not None and calls == 3
            assert await evil.get_snapshot(response.snapshot_id) is None
            with pytest.raises(TurnkitError) as caught:
                await evil.load_chat(snapshot_id=response.snapshot_id)
            assert caught.value.status == "NOT_FOUND"
            with pytest.raises(TurnkitError) as caught:
                await anonymous.chat().send("x")
            assert (caught.value.status, caught.value.message) == ("UNAUTHENTICATED", "no valid token")


async def test_unreachable_server() -> None:
    async with remote_agent("http://127.0.0.1:9/agents/x") as agent:
        with pytest.raises(TurnkitError) as caught:
            await agent.chat().send("x")
        assert caught.value.status == "UNAVAILABLE"


# --- reading what other servers send ------------------------------------------------------------


def test_frame_reader_is_tolerant() -> None:
    reader = FrameReader()
    stream = (
        ': a comment\r\nevent: message\r\ndata:{"message":{"turnEnd":{}}}\r\n\r\n'
        'data: {"message":\ndata: {"turnEnd":{}}}\n\n'
        'error: {"error":{"status":"INTERNAL","message":"x"}}\r\r'
    )
    got: list[dict[str, Any]] = []
    for i in range(len(stream)):  # fed one character at a time: frames may split anywhere
        got += reader.feed(stream[i])
    got += reader.finish()  # a last CR might have been the start of a CRLF
    assert got == [{"message": {"turnEnd": {}}}] * 2 + [{"error": {"status": "INTERNAL", "message": "x"}}]
    assert reader.feed('data: {"result":{}}') == [] and reader.finish() == [{"result": {}}]
    with pytest.raises(TurnkitError):
        FrameReader().feed("data: {oops\n\n")


def test_error_bodies_of_every_flavour() -> None:
    nested = error_from_response(
        400, b'{"error":{"status":"FAILED_PRECONDITION","message":"m","details":{}}}'
    )
    assert (nested.status, nested.message, nested.details) == ("FAILED_PRECONDITION", "m", None)
    flat = error_from_response(400, b'{"status":"INVALID ARGUMENT","message":"body missing"}')
    assert (flat.status, flat.message) == ("INVALID_ARGUMENT", "body missing")
    twice = error_from_response(500, b'{"error":{"error":{"status":"UNAVAILABLE","message":"down"}}}')
    assert twice.status == "UNAVAILABLE"
    text = error_from_response(503, b"Service Unavailable")
    assert (text.status, text.message) == ("UNAVAILABLE", "Service Unavailable")
    assert error_from_response(418, b"").message == "HTTP 418"


async def test_reads_a_genkit_style_server() -> None:
    """Genkit's Express handler: text/plain streams, CRLF tolerated, `error:` frames, flat errors."""

    async def turn(request: Request) -> Response:
        body = await request.json()
        text = body["data"]["message"]["content"][0]["text"]
        if text == "fail":
            return Response(
                'error: {"error":{"status":"ABORTED","message":"busy"}}\n\n', media_type="text/plain"
            )
        if text == "refuse":
            return Response(
                '{"status":"PERMISSION_DENIED","message":"no"}', 403, media_type="application/json"
            )
        frames = (
            'data: {"message":{"modelChunk":{"content":[{"text":"hi"}]}}}\r\n\r\n'
            'data: {"result":{"message":{"role":"model","content":[{"text":"hi"}]},"finishReason":"stop"}}\r\n\r\n'
        )
        return Response(frames, media_type="text/plain")

    async def snapshot(request: Request) -> Response:
        return Response(
            '{"result":{"snapshotId":"s","createdAt":"2026-01-01T00:00:00Z"}}', media_type="application/json"
        )

    genkitish = Starlette(
        routes=[Route("/t", turn, methods=["POST"]), Route("/t/getSnapshot", snapshot, methods=["POST"])]
    )
    async with serve_async(genkitish) as url, remote_agent(f"{url}/t", state_management="server") as agent:
        turn_ = agent.chat().send_stream("hello")
        assert [c.text async for c in turn_.stream] == ["hi"]
        assert (await turn_.response).text == "hi"
        for text, status in (("fail", "ABORTED"), ("refuse", "PERMISSION_DENIED")):
            with pytest.raises(TurnkitError) as caught:
                await agent.chat().send(text)
            assert caught.value.status == status
        snap = await agent.get_snapshot("s")
        assert snap is not None and snap.snapshot_id == "s"
