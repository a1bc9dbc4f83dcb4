"""Serving agents over HTTP (the Genkit agent wire protocol) and talking to remote ones.

`create_app(ai)` builds the ASGI server for an app's agents and `serve_agent(agent)` one for a
single agent, mountable under any path (both need the `server` extra: Starlette and uvicorn);
`remote_agent(url)` is the client (httpx only), with the same surface as a local agent.
`tune_gc()` sets a server process's garbage collector up as `turnkit serve` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from turnkit.http._client import HeadersProvider, HttpTransport, RemoteAgent, remote_agent
from turnkit.http._gc import tune_gc

if TYPE_CHECKING:
    from turnkit.http._server import ContextProvider, create_app, serve_agent

__all__ = [
    "ContextProvider",
    "HeadersProvider",
    "HttpTransport",
    "RemoteAgent",
    "create_app",
    "remote_agent",
    "serve_agent",
    "tune_gc",
]

_SERVER_NAMES = ("ContextProvider", "create_app", "serve_agent")


def __getattr__(name: str) -> Any:
    # The server pulls in Starlette, which a client-only install does not have.
    if name in _SERVER_NAMES:
        from turnkit.http import _server

        return getattr(_server, name)
    raise AttributeError(f"module 'turnkit.http' has no attribute {name!r}")
