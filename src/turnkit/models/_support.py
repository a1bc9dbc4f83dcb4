"""Small pieces every provider needs: abortable awaits, data URLs, JSON text, the SDK-missing error."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import mimetypes
from collections.abc import Awaitable
from typing import Any, TypeVar

from turnkit.errors import TurnkitError
from turnkit.models import ModelContext
from turnkit.types import Media, ModelRequest

T = TypeVar("T")


async def until_aborted(ctx: ModelContext, work: Awaitable[T]) -> T | None:
    """Await `work`, cancelling it (and returning None) if the caller aborts meanwhile."""
    task = asyncio.ensure_future(work)
    while not task.done():
        # The abort signal is a threading.Event, so it is polled rather than awaited.
        await asyncio.wait({task}, timeout=0.05)
        if ctx.aborted and not task.done():
            task.cancel()
            return None
    return task.result()


def json_text(value: Any) -> str:
    """A value as text: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


def parse_json(text: str) -> Any:
    """JSON text as a value; text that is not JSON is returned as it is (the tool validates it)."""
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return text


def data_url(media: Media) -> tuple[str, bytes] | None:
    """`(content type, bytes)` of a base64 `data:` URL; None for any other URL."""
    url = media.url
    if not url.startswith("data:"):
        return None
    header, sep, payload = url[5:].partition(",")
    if not sep or not header.endswith(";base64"):
        raise TurnkitError("INVALID_ARGUMENT", "a data: URL in a media part must be base64-encoded")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise TurnkitError("INVALID_ARGUMENT", f"invalid base64 in a data: URL: {exc}") from exc
    return media.content_type or header.removesuffix(";base64") or "application/octet-stream", data


def content_type(media: Media) -> str:
    """The media's content type, guessed from the URL's extension when the part does not say."""
    guessed, _ = mimetypes.guess_type(media.url.split("?", 1)[0])
    return media.content_type or guessed or "application/octet-stream"


def as_data_url(mime: str, data: bytes) -> str:
    """Bytes as a base64 `data:` URL."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def wants_json(request: ModelRequest) -> bool:
    """Whether the request asks for JSON the provider should constrain (not only instruct)."""
    out = request.output
    return out is not None and out.format == "json" and out.constrained is not False


def forced_tool_loops(request: ModelRequest) -> bool:
    """Whether forcing a tool call now would loop: the last message already answers a tool call."""
    return bool(request.messages) and request.messages[-1].role == "tool"


def missing_sdk(package: str, extra: str) -> TurnkitError:
    """The error for a provider whose optional SDK is not installed, naming the install command."""
    return TurnkitError(
        "FAILED_PRECONDITION", f"the {package} SDK is missing: pip install 'turnkit[{extra}]'"
    )
