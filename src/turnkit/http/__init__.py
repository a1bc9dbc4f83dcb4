"""Serving agents over HTTP (the Genkit agent wire protocol) and talking to remote ones.

`create_app(ai)` builds the ASGI server (needs the `server` extra: Starlette and uvicorn);
`remote_agent(url)` is the client (httpx only), with the same surface as a local agent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from turnkit.http.client import HttpTransport, RemoteAgent, remote_agent

if TYPE_CHECKING:
    from turnkit.http.server import ContextProvider, create_app

__all__ = ["ContextProvider", "HttpTransport", "RemoteAgent", "create_app", "remote_agent"]


def __getattr__(name: str) -> Any:
    # The server pulls in Starlette, which a client-only install does not have.
    if name in ("create_app", "ContextProvider"):
        from turnkit.http import server

        return getattr(server, name)
    raise AttributeError(f"module 'turnkit.http' has no attribute {name!r}")
