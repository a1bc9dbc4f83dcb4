"""The streaming turn's hot path, driven through ASGI directly: frames that are ready together leave
in one message (the bytes unchanged), a frame is never held back while the turn waits, the direct
lane for turns yields to middleware added to the app, and a disconnect still cancels the turn."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from turnkit import Turnkit
from turnkit.http import create_app
from turnkit.models import ModelContext
from turnkit.sessions import InMemorySessionStore
from turnkit.testing import define_programmable_model
from turnkit.types import Message as ChatMessage
from turnkit.types import ModelRequest, ModelResponse, ModelResponseChunk, Part

PIECES = ["The quick ", "brown fox ", "jumps over ", "the dog."]
REPLY = "".join(PIECES)


def app_with(handler: Callable[[ModelRequest, ModelContext], Any]) -> tuple[Turnkit, ASGIApp]:
    ai = Turnkit(model="programmableModel")
    define_programmable_model(ai).handler = handler
    ai.define_agent(name="bench", store=InMemorySessionStore())
    return ai, create_app(ai)


def reply() -> ModelResponse:
    return ModelResponse(message=ChatMessage(role="model", content=[Part(text=REPLY)]), finish_reason="stop")


def scope(path: str = "/agents/bench") -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"accept", b"text/event-stream")],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
    }


def receiver(gone: asyncio.Event) -> Receive:
    body = json.dumps({"data": {"message": {"role": "user", "content": [{"text": "hi"}]}}}).encode()
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    return receive


def frames_of(bodies: list[bytes]) -> list[dict[str, Any]]:
    text = b"".join(bodies)
    assert text.endswith(b"\n\n")
    out = []
    for frame in text[:-2].split(b"\n\n"):
        assert frame.startswith(b"data: {") and b"\n" not in frame
        out.append(json.loads(frame[6:]))
    return out


async def run_turn(
    app: ASGIApp, on_send: Callable[[Message], Awaitable[None]] | None = None
) -> list[Message]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)
        if on_send is not None:
            await on_send(message)

    await asyncio.wait_for(app(scope(), receiver(asyncio.Event()), send), 10)
    return sent


async def test_chunks_ready_together_leave_in_one_message_with_the_same_bytes() -> None:
    def handler(request: ModelRequest, ctx: ModelContext) -> ModelResponse:
        for piece in PIECES:  # all four are queued before the server's side runs again
            ctx.send_chunk(ModelResponseChunk(role="model", content=[Part(text=piece)]))
        return reply()

    _, app = app_with(handler)
    sent = await run_turn(app)
    assert sent[0]["type"] == "http.response.start"
    bodies = [m["body"] for m in sent[1:]]
    assert [m["more_body"] for m in sent[1:]] == [True] * (len(bodies) - 1) + [False]
    frames = frames_of(bodies)
    chunks = [
        f["message"]["modelChunk"]["content"][0]["text"]
        for f in frames
        if "modelChunk" in f.get("message", {})
    ]
    assert chunks == PIECES and frames[-1]["result"]["message"]["content"][0]["text"] == REPLY
    together = [b for b in bodies if b.count(b'"modelChunk"') == len(PIECES)]
    assert len(together) == 1  # one socket write for the four chunks
    assert len(bodies) < len(frames)


async def test_a_chunk_is_sent_at_once_when_the_turn_waits_for_the_next() -> None:
    first_out = asyncio.Event()

    async def handler(request: ModelRequest, ctx: ModelContext) -> ModelResponse:
        ctx.send_chunk(ModelResponseChunk(role="model", content=[Part(text=PIECES[0])]))
        await first_out.wait()  # only the client seeing the first chunk lets the model go on
        for piece in PIECES[1:]:
            ctx.send_chunk(ModelResponseChunk(role="model", content=[Part(text=piece)]))
        return reply()

    async def on_send(message: Message) -> None:
        if PIECES[0].encode() in message.get("body", b""):
            first_out.set()

    _, app = app_with(handler)
    sent = await run_turn(app, on_send)  # a held-back first chunk would time out here
    first = next(m for m in sent if PIECES[0].encode() in m.get("body", b""))
    assert PIECES[1].encode() not in first["body"]


async def test_middleware_added_to_the_app_sees_every_turn() -> None:
    _, app = app_with(lambda request, ctx: reply())
    seen: list[str] = []

    class Count:
        def __init__(self, inner: ASGIApp) -> None:
            self.inner = inner

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            seen.append(scope["path"])
            await self.inner(scope, receive, send)

    app.add_middleware(Count)  # type: ignore[attr-defined]
    sent = await run_turn(app)
    assert seen == ["/agents/bench"]
    assert frames_of([m["body"] for m in sent[1:]])[-1]["result"]["finishReason"] == "stop"


async def test_an_unknown_agent_on_the_direct_lane_is_the_json_404() -> None:
    _, app = app_with(lambda request, ctx: reply())
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope("/agents/nobody"), receiver(asyncio.Event()), send)
    assert sent[0]["status"] == 404
    assert json.loads(sent[1]["body"])["error"]["status"] == "NOT_FOUND"


async def test_a_disconnect_cancels_the_running_turn() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def handler(request: ModelRequest, ctx: ModelContext) -> ModelResponse:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return reply()

    _, app = app_with(handler)
    gone = asyncio.Event()
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    call = asyncio.ensure_future(app(scope(), receiver(gone), send))
    await asyncio.wait_for(started.wait(), 5)
    gone.set()
    await asyncio.wait_for(call, 5)  # the response ends without a terminal frame
    assert cancelled.is_set()
    assert [m["type"] for m in sent] == ["http.response.start"]
    assert not asyncio.current_task().cancelling()  # type: ignore[union-attr]  # nothing leaks out
