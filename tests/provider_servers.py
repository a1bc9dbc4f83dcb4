"""A scripted HTTP server on 127.0.0.1 standing in for a model provider's REST API in tests.

Each test scripts the replies (JSON bodies with a status and headers, or server-sent event streams)
and reads back the requests the provider's official SDK sent, so both directions are checked through
the SDK's real HTTP stack. Replies are served in order; a request with no scripted reply gets a 500.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Reply:
    """A JSON reply: status, body, extra headers, and a delay before answering (for timeouts)."""

    body: Any
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Events:
    """A `text/event-stream` reply: `(event name or None, data)` pairs, data given as JSON values."""

    events: list[tuple[str | None, Any]]
    status: int = 200


@dataclass
class Recorded:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


class ProviderServer:
    """The server: `script(...)` what to answer, `requests` is what arrived, `url` where it listens."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._replies: list[Reply | Events] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet test output
                pass

            def do_POST(self) -> None:
                owner._handle(self)

            def do_GET(self) -> None:
                owner._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> ProviderServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def script(self, *replies: Reply | Events) -> None:
        """Replace the queue of replies with these, and forget earlier requests."""
        with self._lock:
            self._replies = list(replies)
            self.requests.clear()

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        # A client that gave up (a timeout test) leaves nothing to answer.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._answer(h)

    def _answer(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("content-length") or 0)
        raw = h.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        parts = urlsplit(h.path)
        with self._lock:
            self.requests.append(
                Recorded(
                    h.command,
                    parts.path,
                    parse_qs(parts.query),
                    {k.lower(): v for k, v in h.headers.items()},
                    body,
                )
            )
            reply: Reply | Events = (
                self._replies.pop(0)
                if self._replies
                else Reply({"error": {"message": "no scripted reply"}}, 500)
            )
        if isinstance(reply, Events):
            h.send_response(reply.status)
            h.send_header("content-type", "text/event-stream")
            h.send_header("connection", "close")  # the body ends when the connection closes
            h.end_headers()
            for name, data in reply.events:
                text = data if isinstance(data, str) else json.dumps(data)
                frame = (f"event: {name}\n" if name else "") + f"data: {text}\n\n"
                h.wfile.write(frame.encode())
                h.wfile.flush()
            h.close_connection = True
            return
        if reply.delay:
            time.sleep(reply.delay)
        payload = json.dumps(reply.body).encode()
        h.send_response(reply.status)
        h.send_header("content-type", "application/json")
        h.send_header("content-length", str(len(payload)))
        for k, v in reply.headers.items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(payload)


def closed_url() -> str:
    """The URL of a local port nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def serve() -> Iterator[ProviderServer]:
    """A started server, stopped when the generator is closed (for use in fixtures)."""
    server = ProviderServer().start()
    try:
        yield server
    finally:
        server.stop()
