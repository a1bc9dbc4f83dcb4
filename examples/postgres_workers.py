"""Agents served by several worker processes sharing one PostgreSQL session store.

    pip install 'turnkit[postgres,server]'
    export TURNKIT_STORE_URL='postgresql://127.0.0.1:5432/test?schema=turnkit_example'
    turnkit serve examples/postgres_workers.py --workers 2

Each uvicorn worker imports this file and opens its own connection pool to the same database, so
any worker can take any request: a session started on one continues on the other (its history is
in PostgreSQL, and the session's lease keeps two turns of one session from running at once), and
an abort sent to either worker stops a background turn running on the other (LISTEN/NOTIFY). Every
response carries `X-Worker-Pid`, so you can watch the requests spread over the workers. The schema
(`?schema=`) is created on first use. The model is `$TURNKIT_MODEL` (default: the local SmolLM2;
`echoModel` needs none).
"""

from __future__ import annotations

import os

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from turnkit import Turnkit
from turnkit.http import create_app
from turnkit.models.llamacpp import LlamaCpp
from turnkit.testing import define_echo_model

STORE_URL = os.environ.get("TURNKIT_STORE_URL") or "postgresql://127.0.0.1:5432/test?schema=turnkit_example"

ai = Turnkit(plugins=[LlamaCpp()], model=os.environ.get("TURNKIT_MODEL") or "llamacpp/smollm2")
define_echo_model(ai)

ai.define_agent(
    name="notes",
    system="You keep the user's notes. Repeat back what they ask you to remember. Be brief.",
    store=STORE_URL,
)


class WorkerPid:
    """ASGI middleware: an `X-Worker-Pid` header on each response names the process that answered."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"x-worker-pid", str(os.getpid()).encode())]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, tagged)


app = create_app(ai)
app.add_middleware(WorkerPid)
