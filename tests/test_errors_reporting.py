"""Errors say what happened: invalid text is INVALID_ARGUMENT before the turn, a failed turn keeps its
original exception (in process) and logs it with its traceback (on the server, never sent), the
README's `context_provider` behaves alike on every route, and an unreachable store is UNAVAILABLE,
delivered the same way whether it fails before or during the turn."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from fault_servers import PrivateRedis, private_redis  # noqa: F401 - the fixture
from http_support import serve_async
from turnkit import Turnkit, TurnkitError
from turnkit.agents import AgentContext, AgentSession, TurnContext
from turnkit.http import create_app
from turnkit.http._wire import FrameReader
from turnkit.sessions import InMemorySessionStore, SessionStore
from turnkit.sessions.redis_store import RedisSessionStore
from turnkit.types import AgentInput, Message, Part

LONE = "bad \ud800 text"
LONE_JSON = '{"data": {"message": {"role": "user", "content": [{"text": "bad \\ud800 text"}]}}}'


class Turns:
    """A custom agent's turns: counted, optionally failing, optionally held until `gate` opens."""

    def __init__(self) -> None:
        self.ran = 0
        self.fail: BaseException | None = None
        self.entered = asyncio.Event()
        self.gate: asyncio.Event | None = None

    def define(self, ai: Turnkit, name: str, store: SessionStore | None) -> Any:
        async def fn(sess: AgentSession[Any], ctx: AgentContext) -> Any:
            async def turn(item: AgentInput, turn: TurnContext) -> None:
                self.ran += 1
                self.entered.set()
                if self.gate is not None:
                    await self.gate.wait()
                if self.fail is not None:
                    raise_it(self.fail)
                await sess.add_messages([Message(role="model", content=[Part(text="ok")])])

            await sess.run(turn)
            return await sess.result()

        return ai.define_custom_agent(name=name, fn=fn, store=store)


def raise_it(exc: BaseException) -> None:
    raise exc


def user(text: str) -> dict[str, Any]:
    return {"data": {"message": {"role": "user", "content": [{"text": text}]}}}


@pytest.fixture
def turns() -> Turns:
    return Turns()


# --- invalid text ---------------------------------------------------------------------------------


@pytest.mark.parametrize("with_store", [True, False])
async def test_a_lone_surrogate_is_invalid_argument_before_the_turn_in_process(
    turns: Turns, with_store: bool
) -> None:
    store = InMemorySessionStore() if with_store else None
    agent = turns.define(Turnkit(), "a", store)
    chat = agent.chat()
    with pytest.raises(TurnkitError) as err:
        await chat.send(LONE)
    assert err.value.status == "INVALID_ARGUMENT"
    assert "input.message.content.0.text" in err.value.message and "surrogate" in err.value.message
    assert turns.ran == 0
    # The chat goes on: the next, valid turn runs as the first.
    assert (await chat.send("fine \U0001f600")).text == "ok"
    assert turns.ran == 1
    # Client-held state is input too.
    if not with_store:
        state = {"messages": [{"role": "user", "content": [{"text": LONE}]}]}
        with pytest.raises(TurnkitError) as err:
            await agent.run({"state": state}, [{"message": {"role": "user", "content": [{"text": "hi"}]}}])
        assert err.value.status == "INVALID_ARGUMENT" and "init.state.messages.0" in err.value.message


@pytest.fixture
async def base_url(turns: Turns) -> AsyncIterator[str]:
    ai = Turnkit()
    turns.define(ai, "a", InMemorySessionStore())
    async with serve_async(create_app(ai)) as url:
        yield url


@pytest.mark.parametrize("stream", [False, True])
async def test_a_lone_surrogate_is_a_400_before_the_turn_over_http(
    turns: Turns, base_url: str, stream: bool
) -> None:
    async with httpx.AsyncClient(base_url=base_url) as client:
        suffix = "?stream=true" if stream else ""
        headers = {"Content-Type": "application/json"}
        bad = await client.post(f"/agents/a{suffix}", content=LONE_JSON, headers=headers)
        assert bad.status_code == 400, bad.text
        error = bad.json()["error"]
        assert error["status"] == "INVALID_ARGUMENT"
        assert error["details"]["path"] == "data.message.content.0.text"
        # A surrogate pair (an emoji written as JSON escapes) is valid text.
        pair = LONE_JSON.replace("\\ud800", "\\ud83d\\ude00")
        good = await client.post(f"/agents/a{suffix}", content=pair, headers=headers)
        assert good.status_code == 200, good.text
    assert turns.ran == 1


# --- the original exception of a failed turn --------------------------------------------------------


async def test_a_failed_turn_keeps_its_original_exception_as_cause_in_process(turns: Turns) -> None:
    agent = turns.define(Turnkit(), "a", InMemorySessionStore())
    turns.fail = original = RuntimeError("the database password is hunter2")
    with pytest.raises(TurnkitError) as err:
        await agent.chat().send("hi")
    assert err.value.status == "INTERNAL"
    assert err.value.__cause__ is original
    assert err.value.__cause__.__traceback__ is not None  # where it was raised, kept

    conn = await agent.stream_bidi()
    await conn.send_text("hi")
    output = await conn.output()
    assert output.finish_reason == "failed"
    assert conn.error is not None and conn.error.__cause__ is original


async def test_a_failed_turn_is_logged_with_its_traceback_and_never_sent(
    turns: Turns, base_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    turns.fail = RuntimeError("the database password is hunter2")
    with caplog.at_level(logging.WARNING, logger="turnkit"):
        async with httpx.AsyncClient(base_url=base_url) as client:
            plain = await client.post("/agents/a", json=user("hi"))
            streamed = await client.post("/agents/a?stream=true", json=user("hi"))
    for answer in (plain, streamed):
        assert answer.status_code == 200
        assert "hunter2" not in answer.text
        assert '"failed"' in answer.text and '"INTERNAL"' in answer.text
    failed = [r for r in caplog.records if r.name == "turnkit.agents" and "turn failed" in r.getMessage()]
    assert len(failed) == 2
    for record in failed:
        assert record.levelno == logging.WARNING
        assert record.exc_info is not None
        text = logging.Formatter().formatException(record.exc_info)
        assert "Traceback" in text and "in raise_it" in text and "hunter2" in text


# --- the README's context provider, on every route ---------------------------------------------------


def readme_context(request: Any) -> dict[str, Any]:
    # The README's example as the issue found it: a request without the header has an empty tenant.
    return {"tenant": request.headers.get("x-tenant", "")}


ROUTES = [
    ("POST", "/agents/a", user("hi")),
    ("POST", "/agents/a?stream=true", user("hi")),
    ("POST", "/agents/a/getSnapshot", {"data": {"sessionId": "s1"}}),
    ("POST", "/agents/a/abort", {"data": {"snapshotId": "x"}}),
    (
        "POST",
        "/agents/a/uiMessageStream",
        {"id": "c1", "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}]},
    ),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=[p for _, p, _ in ROUTES])
async def test_the_readme_context_provider_refuses_a_request_alike_on_every_route(
    turns: Turns, method: str, path: str, body: dict[str, Any]
) -> None:
    ai = Turnkit()
    turns.define(ai, "a", InMemorySessionStore())
    app = create_app(ai, context_provider=readme_context)
    async with serve_async(app) as url, httpx.AsyncClient(base_url=url) as client:
        refused = await client.request(method, path, json=body)
        assert refused.status_code == 400, refused.text  # an HTTP error, before any stream
        assert refused.headers["content-type"].startswith("application/json")
        error = refused.json()["error"]
        assert error["status"] == "INVALID_ARGUMENT" and "tenant" in error["message"]
        accepted = await client.request(method, path, json=body, headers={"x-tenant": "acme"})
        assert accepted.status_code in (200, 404), accepted.text  # 404: no such snapshot yet
    assert turns.ran == (1 if path.startswith(("/agents/a?", "/agents/a/ui")) or path == "/agents/a" else 0)


async def test_a_context_the_store_refuses_is_refused_before_the_turn_in_process(turns: Turns) -> None:
    agent = turns.define(Turnkit(), "a", InMemorySessionStore())
    with pytest.raises(TurnkitError) as err:
        await agent.stream_bidi(context={"tenant": ""})
    assert err.value.status == "INVALID_ARGUMENT" and "tenant" in err.value.message
    with pytest.raises(TurnkitError):
        await agent.chat(context={"tenant": ""}).send("hi")
    assert turns.ran == 0


# --- an unreachable store: UNAVAILABLE, raised before and during the turn alike ------------------------


async def test_an_unreachable_store_is_raised_unavailable_before_and_during_the_turn(
    private_redis: PrivateRedis,  # noqa: F811
    turns: Turns,
) -> None:
    ai = Turnkit()
    agent = turns.define(ai, "a", RedisSessionStore(private_redis.url, prefix="errs:"))
    await agent.chat(session_id="s").send("first")
    async with serve_async(create_app(ai)) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        seen: dict[str, Any] = {}

        async def each_way(when: str) -> None:
            """Every way of running a turn, as the store fails `when` ("before" or "during")."""

            async def connection() -> Any:
                conn = await agent.stream_bidi({"sessionId": "s"})
                await conn.send_text("hi")
                return await conn.output()

            ways = {
                "in process": lambda: agent.chat(session_id="s").send("hi"),
                "connection": connection,
                "json": lambda: client.post("/agents/a", json={**user("hi"), "init": {"sessionId": "s"}}),
                "stream": lambda: client.post(
                    "/agents/a?stream=true", json={**user("hi"), "init": {"sessionId": "s"}}
                ),
            }
            for way, start in ways.items():
                turns.entered.clear()
                turns.gate = asyncio.Event() if when == "during" else None
                task = asyncio.ensure_future(start())
                if when == "during":
                    await asyncio.wait_for(turns.entered.wait(), 10)
                    private_redis.stop(save=True)
                    turns.gate.set()  # type: ignore[union-attr]
                try:
                    seen[f"{way} {when}"] = await _delivered(task)
                finally:
                    if when == "during":
                        private_redis.start()
                        await asyncio.sleep(0.3)  # let a lease left behind go

        await each_way("during")
        private_redis.stop(save=True)
        try:
            await each_way("before")
        finally:
            private_redis.start()
    assert seen == {
        "in process during": ("raised", "UNAVAILABLE"),
        "in process before": ("raised", "UNAVAILABLE"),
        "connection during": ("raised", "UNAVAILABLE"),
        "connection before": ("raised", "UNAVAILABLE"),
        "json during": (503, "UNAVAILABLE"),
        "json before": (503, "UNAVAILABLE"),
        "stream during": ("error frame", "UNAVAILABLE"),
        "stream before": ("error frame", "UNAVAILABLE"),
    }


async def _delivered(task: asyncio.Future[Any]) -> tuple[Any, str]:
    """How a turn's failure reached the caller, and its status."""
    try:
        answer = await asyncio.wait_for(task, 30)
    except TurnkitError as exc:
        return "raised", exc.status
    if isinstance(answer, httpx.Response):
        if answer.headers["content-type"].startswith("text/event-stream"):
            last = FrameReader().feed(answer.text)[-1]
            if "error" in last:
                return "error frame", last["error"]["status"]
            return "result frame", json.dumps(last["result"].get("error"))
        body = answer.json()
        if "error" in body:
            return answer.status_code, body["error"]["status"]
        return answer.status_code, json.dumps(body["result"].get("error"))
    return "returned", str(answer.error.status if answer.error else None)
