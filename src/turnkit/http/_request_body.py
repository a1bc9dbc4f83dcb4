"""Reading a request's JSON body within a size limit, and replaying it to a second reader.

A refused body (too large, not JSON) is answered with its own HTTP code (413, 415); what the client
is still sending is read and dropped first, up to `DRAIN_BYTES`, so that it gets to read the answer
instead of a reset connection.
"""

from __future__ import annotations

import contextlib

from starlette.requests import Request
from starlette.types import Message as AsgiMessage
from starlette.types import Receive

from turnkit.errors import TurnkitError

__all__ = ["DRAIN_BYTES", "HttpError", "read_body", "replay"]

# How much of a refused body is read and dropped before answering (beyond that, the connection closes).
DRAIN_BYTES = 8 * 1024 * 1024


class HttpError(TurnkitError):
    """A TurnkitError answered with a specific HTTP code (413, 415) instead of its status's."""

    def __init__(self, code: int, status: str, message: str) -> None:
        super().__init__(status, message)
        self.code = code


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than `limit` bytes whatever Content-Length says."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json" and not ctype.endswith("+json"):
        await _drain(request, 0)
        raise HttpError(
            415, "INVALID_ARGUMENT", "the request body must be JSON (Content-Type: application/json)"
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        await _drain(request, 0)
        raise _too_large(limit)
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            await _drain(request, len(body))
            raise _too_large(limit)
    return bytes(body)


def _too_large(limit: int) -> HttpError:
    return HttpError(413, "INVALID_ARGUMENT", f"request body exceeds {limit} bytes")


async def _drain(request: Request, seen: int) -> None:
    """Read and drop the rest of a refused body (up to DRAIN_BYTES more), so that the client,
    still sending, gets to read the answer instead of a reset connection."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) - seen > DRAIN_BYTES:
        return  # too much to swallow: the connection closes after the answer
    with contextlib.suppress(RuntimeError):  # the body may have ended already ("stream consumed")
        async for piece in request.stream():
            seen += len(piece)
            if seen > DRAIN_BYTES:
                return


def replay(raw: bytes, receive: Receive) -> Receive:
    """A receive that yields the already-read body once, then passes through (to a disconnect)."""
    sent = False

    async def replay() -> AsgiMessage:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        return await receive()

    return replay
