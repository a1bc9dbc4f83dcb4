"""Small pieces every provider needs: abortable awaits and streams, plugin registration by name
prefix, data URLs, JSON text, the SDK-missing error."""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import json
import mimetypes
from collections.abc import AsyncIterable, AsyncIterator, Awaitable
from typing import Any, ClassVar, Generic, TypeVar

from turnkit.errors import TurnkitError
from turnkit.models import ModelContext, ModelInfo
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


class Abortable(Generic[T]):
    """The items of an async stream until it ends or the caller aborts; `aborted` then says which.

    An iterator class rather than an async generator: leaving an `async for` early then needs no
    `aclose()`, and the caller still closes the SDK stream itself.
    """

    def __init__(self, ctx: ModelContext, stream: AsyncIterable[T]) -> None:
        self._ctx = ctx
        self._items = aiter(stream)
        self.aborted = False

    def __aiter__(self) -> AsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        # The stream's own StopAsyncIteration passes through: it ended, not aborted.
        item = None if self._ctx.aborted else await until_aborted(self._ctx, anext(self._items))
        if item is None:
            self.aborted = True
            raise StopAsyncIteration
        return item


class PrefixedModels:
    """Base of the provider plugins that serve `<name>/<model id>` for any model id.

    A subclass sets `name` and `models` (ids registered up front), the class's `_info` and
    `_label_prefix` (the label is `<prefix> <model id>`; None: the plugin's name), and `model()`.
    """

    name: str
    models: list[str]
    _info: ClassVar[ModelInfo]
    _label_prefix: ClassVar[str | None] = None

    def model(self, model_id: str) -> Any:
        """The model function for one model id."""
        raise NotImplementedError

    def _define(self, ai: Any, model_id: str) -> Any:
        prefix = self._label_prefix if self._label_prefix is not None else self.name
        info = dataclasses.replace(self._info, label=f"{prefix} {model_id}", output=list(self._info.output))
        return ai.define_model(name=f"{self.name}/{model_id}", fn=self.model(model_id), info=info)

    def initialize(self, ai: Any) -> None:
        """Register the listed models, and resolve any other `<name>/<model id>` on first lookup
        (whether that model exists is the server's to say, on the first call)."""
        for model_id in self.models:
            self._define(ai, model_id)
        prefix = f"{self.name}/"

        def resolve(kind: str, name: str) -> Any:
            if kind == "model" and name.startswith(prefix) and len(name) > len(prefix):
                return self._define(ai, name[len(prefix) :])
            return None

        ai.registry.add_resolver(resolve)


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
