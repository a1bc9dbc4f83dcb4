"""Real HTTP servers for tests: an ASGI app served by uvicorn on 127.0.0.1 at a free port.

Two ways, both yielding the base URL (e.g. ``http://127.0.0.1:41234``):

- ``with start_server(app) as base_url:`` runs the server in a background thread with its own
  event loop. Use it from sync tests and whenever the test blocks (a ``subprocess.run`` of a Node
  or Python client, say). Objects bound to an event loop (``asyncio.Event``, a programmable
  model's ``gate``) must not be shared between the test and the server then.
- ``async with serve_async(app) as base_url:`` runs the server as a task on the test's own
  event loop, so the test can share asyncio objects with the server (``pm.gate``) while it
  talks to it over the network. Never block that loop.

Both bind the socket before the server starts (no port race), wait until it accepts
connections, and shut it down (closing open streams) on exit.

`demo_app()` builds an app with the agents the HTTP tests use (server- and client-managed,
interrupts, custom state, failures, a turn that blocks until aborted), driven by the
programmable model; `text_reply`, `tool_call` and `user` build the wire dicts they exchange.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn
from pydantic import BaseModel

from turnkit import Turnkit, TurnkitError
from turnkit._tools import ToolContext
from turnkit.agents import AgentContext, AgentSession, TurnContext
from turnkit.sessions import InMemorySessionStore, SessionStore
from turnkit.testing import ProgrammableModel, define_programmable_model
from turnkit.types import AgentInput, Artifact, Message, Part, SessionState

__all__ = [
    "DemoApp",
    "demo_app",
    "raw_request",
    "serve_async",
    "start_server",
    "text_reply",
    "tool_call",
    "user",
]

HOST = "127.0.0.1"


class _TestServer(uvicorn.Server):
    """A uvicorn server that leaves the process's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bound_socket() -> socket.socket:
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted sockets only when the proto
    # says TCP, and without it every response waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    return sock


def _server(app: Any) -> _TestServer:
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
        ws="none",
    )
    return _TestServer(config)


@contextlib.contextmanager
def start_server(app: Any, *, startup_timeout: float = 10.0) -> Iterator[str]:
    """Serve `app` from a background thread for the duration of the block; yields its base URL."""
    sock = _bound_socket()
    port = sock.getsockname()[1]
    server = _server(app)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(server.serve(sockets=[sock]))
        except BaseException as exc:  # surfaced to the test below
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if failure or not thread.is_alive():
            raise RuntimeError(f"the test server did not start: {failure!r}")
        if time.monotonic() > deadline:
            raise TimeoutError("the test server did not start in time")
        time.sleep(0.01)
    try:
        yield f"http://{HOST}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextlib.asynccontextmanager
async def serve_async(app: Any, *, startup_timeout: float = 10.0) -> AsyncIterator[str]:
    """Serve `app` on the running event loop for the duration of the block; yields its base URL."""
    sock = _bound_socket()
    port = sock.getsockname()[1]
    server = _server(app)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if task.done():
            task.result()  # raises what stopped it
            raise RuntimeError("the test server stopped before it started")
        if time.monotonic() > deadline:
            raise TimeoutError("the test server did not start in time")
        await asyncio.sleep(0.01)
    try:
        yield f"http://{HOST}:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=10)
        sock.close()


def raw_request(base_url: str, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Send raw bytes to the server (for malformed HTTP) and return all it answers until it closes."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as conn:
        conn.sendall(data)
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_WR)
        received = b""
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while piece := conn.recv(65536):
                received += piece
        return received


# --- a demo app --------------------------------------------------------------------------------


def user(text: str) -> dict[str, Any]:
    """A user message, as wire data."""
    return {"role": "user", "content": [{"text": text}]}


def text_reply(text: str) -> dict[str, Any]:
    """A model response answering `text`."""
    return {"message": {"role": "model", "content": [{"text": text}]}, "finishReason": "stop"}


def tool_call(name: str, input: Any = None, ref: str = "r1") -> dict[str, Any]:
    """A model response asking for one tool call."""
    request: dict[str, Any] = {"name": name, "ref": ref}
    if input is not None:
        request["input"] = input
    return {"message": {"role": "model", "content": [{"toolRequest": request}]}, "finishReason": "stop"}


class Query(BaseModel):
    """The input of the `ask` interrupt."""

    query: str


class Action(BaseModel):
    """The input of the `confirm` tool."""

    action: str


class DemoApp:
    """An app, its programmable model and store, and what its tools saw (`seen`: tool name -> context)."""

    def __init__(self, ai: Turnkit, pm: ProgrammableModel, store: SessionStore) -> None:
        self.ai = ai
        self.pm = pm
        self.store = store
        self.seen: dict[str, dict[str, Any]] = {}


def demo_app(store: SessionStore | None = None) -> DemoApp:
    """An app whose default model is the programmable model, with these agents:

    - `chat` (store) and `stateless` (client-managed): prompt agents with the tools `whoami`
      (returns the caller's context), `ask` (an interrupt), `confirm` (interrupts until restarted),
      `explode` (raises a RuntimeError whose text must not leak) and `refuse` (a public error);
    - `counter` (store) and `statelessCounter`: custom agents that bump `custom.count`, add an
      artifact and answer "count N";
    - `blocking` (store): a custom agent whose turns wait until aborted;
    - `badTransform` (client-managed): its state transform fails once the turn has run.
    """
    ai = Turnkit(model="programmableModel")
    pm = define_programmable_model(ai)
    store = store if store is not None else InMemorySessionStore()
    app = DemoApp(ai, pm, store)

    @ai.tool(name="whoami")
    async def whoami(ctx: ToolContext) -> dict[str, Any]:
        """Who is calling."""
        app.seen["whoami"] = dict(ctx.context)
        return {"tenant": ctx.context.get("tenant")}

    ai.define_interrupt(name="ask", description="Ask the user.", input_schema=Query)

    @ai.tool(name="confirm")
    async def confirm(input: Action, ctx: ToolContext) -> dict[str, str]:
        """Acts once confirmed."""
        if not ctx.resumed:
            ctx.interrupt({"reason": "needs confirmation"})
        return {"result": f"did {input.action}"}

    @ai.tool(name="explode")
    async def explode() -> str:
        """Always fails with an internal error."""
        raise RuntimeError("database password is hunter2")

    @ai.tool(name="refuse")
    async def refuse() -> str:
        """Always fails with a public error."""
        raise TurnkitError("PERMISSION_DENIED", "you may not do that", details={"why": "policy"})

    tools = ["whoami", "ask", "confirm", "explode", "refuse"]
    ai.define_agent(name="chat", tools=tools, store=store, description="A chat with a store.")
    ai.define_agent(name="stateless", tools=tools)

    async def counting(sess: AgentSession, ctx: AgentContext) -> Any:
        async def turn(_item: AgentInput, _turn: TurnContext) -> None:
            custom = await sess.update_custom(lambda c: {"count": (c or {}).get("count", 0) + 1})
            await sess.add_artifacts([Artifact(name="tally", parts=[Part(text=str(custom["count"]))])])
            await sess.add_messages([Message(role="model", content=[Part(text=f"count {custom['count']}")])])

        await sess.run(turn)
        return await sess.result()

    ai.define_custom_agent(name="counter", fn=counting, store=store)
    ai.define_custom_agent(name="statelessCounter", fn=counting)

    async def blocking(sess: AgentSession, ctx: AgentContext) -> Any:
        async def turn(_item: AgentInput, turn: TurnContext) -> None:
            await turn.wait_aborted()

        await sess.run(turn)
        return await sess.result()

    ai.define_custom_agent(name="blocking", fn=blocking, store=store, heartbeat_interval=0.2)

    def bad_transform(state: SessionState) -> SessionState:
        raise RuntimeError("transform broke: secret internals")

    ai.define_custom_agent(name="badTransform", fn=counting, state_transform=bad_transform)
    return app
