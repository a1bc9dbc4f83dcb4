"""The AI SDK endpoint: `POST /agents/NAME/uiMessageStream` runs one turn for the Vercel AI SDK's
`DefaultChatTransport` (and so `useChat`) and answers it as a UI message stream (see `_ai_sdk`).

A server-managed agent keeps the chat's history: the chat `id` is the session id and only the
last message counts (the user's new message, or the assistant's message carrying approval
answers). A client-managed agent gets its history, custom state and artifacts from `messages`.
The request goes through the server's body limits, context provider and error bodies; once the
stream has started, a failure is an `error` chunk. A client that disconnects cancels the turn.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from turnkit.errors import TurnkitError
from turnkit.http._ai_sdk import (
    DONE,
    HEADERS,
    ChatRequest,
    UIChunkEncoder,
    UIMessage,
    answers,
    artifacts_of,
    custom_of,
    encode_chunk,
    new_message_id,
    to_messages,
    user_parts,
)
from turnkit.http._wire import public_error, public_error_info, visible_error
from turnkit.types import (
    AgentInit,
    AgentInput,
    AgentOutput,
    Message,
    Part,
    Resume,
    SessionSnapshot,
    SessionState,
)

if TYPE_CHECKING:
    from turnkit.agents import Agent, AgentConnection

__all__ = ["AgentSource", "ai_sdk_routes"]

Handler = Callable[[Request], Awaitable[Response]]


class AgentSource(Protocol):
    """What the endpoint needs from the server: a request read (bounded body, context provider
    applied) into its agent, context and JSON body."""

    async def prepare(self, request: Request) -> tuple[Agent, dict[str, Any], dict[str, Any]]: ...


def ai_sdk_routes(server: AgentSource, wrap: Callable[[Handler], Handler], base: str) -> list[Route]:
    """The AI SDK routes of the agent whose turn is at `base` (`{base}/uiMessageStream`); `wrap`
    turns a handler's errors into the server's error bodies."""

    async def ui_message_stream(request: Request) -> Response:
        """POST /agents/{name}/uiMessageStream: one turn as an AI SDK UI message stream."""
        agent, context, body = await server.prepare(request)
        chat = _chat_request(body)
        plan = await _plan(agent, chat, context)
        conn = await agent.stream_bidi(plan.init, context=context)
        try:
            await conn.send(plan.item)
            await conn.close()
        except BaseException:
            await conn.cancel()
            raise
        return _UIStreamResponse(conn, plan.encoder)

    async def no_stream_to_resume(request: Request) -> Response:
        """GET /agents/{name}/uiMessageStream/{chat}/stream: nothing to resume (turns do not outlive
        their request), which the SDK reads from 204."""
        return Response(status_code=204)

    return [
        Route(f"{base}/uiMessageStream", wrap(ui_message_stream), methods=["POST"]),
        Route(f"{base}/uiMessageStream/{{chat}}/stream", wrap(no_stream_to_resume), methods=["GET"]),
    ]


def _chat_request(body: Mapping[str, Any]) -> ChatRequest:
    try:
        return ChatRequest.model_validate(body)
    except ValidationError as exc:
        problems = [
            {"path": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
            for e in exc.errors(include_url=False, include_input=False)
        ]
        first = problems[0]
        raise TurnkitError(
            "INVALID_ARGUMENT",
            f"invalid AI SDK chat request: {first['path']}: {first['message']}",
            details={"errors": problems},
        ) from None


class _Plan:
    """How a chat request runs: the connection's init, its one input, and the stream's encoder."""

    def __init__(self, init: AgentInit, item: AgentInput, encoder: UIChunkEncoder) -> None:
        self.init = init
        self.item = item
        self.encoder = encoder


async def _head(agent: Agent, chat: ChatRequest, context: dict[str, Any]) -> SessionSnapshot | None:
    """The snapshot the turn will continue from: the requested one, or the session's latest
    completed one (the runtime skips failed and aborted turns the same way)."""
    if chat.snapshot_id:
        return await agent.get_snapshot(chat.snapshot_id, context=context)
    snap = await agent.get_snapshot(session_id=chat.id, context=context)
    while snap is not None and snap.status not in (None, "completed"):
        snap = await agent.get_snapshot(snap.parent_id, context=context) if snap.parent_id else None
    return snap


def _interrupts(history: list[Message]) -> list[Part]:
    last = history[-1] if history else None
    return last.interrupts if last is not None and last.role == "model" else []


async def _plan(agent: Agent, chat: ChatRequest, context: dict[str, Any]) -> _Plan:
    last = chat.messages[-1]
    if last.role == "system":
        raise TurnkitError(
            "INVALID_ARGUMENT", "the chat's last message must be the user's or the assistant's"
        )
    if agent.store is not None:
        if chat.trigger == "regenerate-message":
            raise TurnkitError(
                "UNIMPLEMENTED",
                f"agent {agent.name!r} keeps its history on the server: regenerate by sending "
                "the message again with `snapshotId` set to the snapshot before the answer",
            )
        head = await _head(agent, chat, context)
        state = head.state if head is not None else None
        init = AgentInit(session_id=chat.id, snapshot_id=chat.snapshot_id)
        custom = state.custom if state is not None else None
        pending = _interrupts(list(state.messages or [])) if state is not None else []
    else:
        earlier = chat.messages if last.role == "assistant" else chat.messages[:-1]
        history = to_messages(earlier, answering=last.role == "assistant")
        custom = custom_of(chat.messages)
        artifacts = artifacts_of(chat.messages)
        state = SessionState(session_id=chat.id, messages=history, custom=custom, artifacts=artifacts or None)
        init = AgentInit(state=state)
        pending = _interrupts(history)
    return _input_plan(last, init, custom, pending)


def _input_plan(last: UIMessage, init: AgentInit, custom: Any, pending: list[Part]) -> _Plan:
    if last.role == "user":
        parts = user_parts(last)
        if not parts:
            raise TurnkitError("INVALID_ARGUMENT", "the user's message has no text or file part")
        item = AgentInput(message=Message(role="user", content=parts))
        return _Plan(init, item, UIChunkEncoder(new_message_id(), custom=custom))
    restart, respond, denied = answers(last, pending)
    item = AgentInput(resume=Resume(restart=restart or None, respond=respond or None))
    # The answer continues the assistant's message: same id, or the SDK starts a new one.
    encoder = UIChunkEncoder(last.id or new_message_id(), custom=custom, denied=denied)
    return _Plan(init, item, encoder)


# --- the stream -----------------------------------------------------------------------------------


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class _UIStreamResponse(Response):
    """The UI message stream of one running turn, ending with `[DONE]`."""

    def __init__(self, conn: AgentConnection, encoder: UIChunkEncoder) -> None:
        super().__init__(status_code=200)
        self.conn = conn
        self.encoder = encoder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"text/event-stream; charset=utf-8")]
        headers += [(k.encode(), v.encode()) for k, v in HEADERS.items()]
        await send({"type": "http.response.start", "status": 200, "headers": headers})

        async def write(chunks: list[dict[str, Any]], more: bool = True) -> None:
            body = b"".join(encode_chunk(c) for c in chunks) + (b"" if more else DONE)
            await send({"type": "http.response.body", "body": body, "more_body": more})

        pump = asyncio.ensure_future(self._pump(write))
        gone = asyncio.ensure_future(_until_disconnect(receive))
        try:
            await asyncio.wait({pump, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not pump.done():  # the client went away (the SDK's stop / an aborted fetch)
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pump
                await self.conn.cancel()
                return
            pump.result()
        except Exception as exc:
            await self.conn.cancel()
            text = visible_error(exc).message
            await write([{"type": "error", "errorText": text}], more=False)
        finally:
            gone.cancel()
            if not pump.done():
                pump.cancel()

    async def _pump(self, write: Callable[[list[dict[str, Any]], bool], Awaitable[None]]) -> None:
        conn, encoder = self.conn, self.encoder
        await write(encoder.start(), True)
        while True:
            async for chunk in conn.receive():
                out = encoder.chunk(chunk)
                if out:
                    await write(out, True)
            if conn.finished:
                break
        output = await conn.output()
        await write(encoder.finish(output, _output_error(output, conn)), False)


def _output_error(output: AgentOutput, conn: AgentConnection) -> str | None:
    """A failed turn's error message as the client may see it (non-public ones hidden)."""
    if output.error is None:
        return None
    err = conn.error
    return (public_error(err) if err is not None else public_error_info(output.error)).message
