"""Provider errors shared by every provider: the HTTP status table, `Retry-After`, and the `retry`
middleware honouring it while the SDKs' own retries stay off."""

from __future__ import annotations

import email.utils
import time
from typing import Any

import pytest

from turnkit import Turnkit, TurnkitError
from turnkit.middleware import retry
from turnkit.models import ModelContext
from turnkit.models._errors import http_error, retry_after, status_for_http, transport_error
from turnkit.types import Message, ModelRequest, ModelResponse, Part


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (400, "INVALID_ARGUMENT"),
        (401, "UNAUTHENTICATED"),
        (403, "PERMISSION_DENIED"),
        (404, "NOT_FOUND"),
        (408, "DEADLINE_EXCEEDED"),
        (413, "INVALID_ARGUMENT"),
        (429, "RESOURCE_EXHAUSTED"),
        (500, "UNAVAILABLE"),
        (503, "UNAVAILABLE"),
        (529, "UNAVAILABLE"),  # Anthropic's "overloaded"
        (418, "UNKNOWN"),
    ],
)
def test_http_status_table(code: int, status: str) -> None:
    assert status_for_http(code) == status
    err = http_error("P", code, "boom")
    assert (err.status, err.details, err.message) == (status, {"httpStatus": code}, f"P error {code}: boom")
    assert err.public == (status == "INVALID_ARGUMENT")


def test_retry_after_forms() -> None:
    assert retry_after({"Retry-After": "7"}) == 7.0
    assert retry_after({"retry-after": "1.5"}) == 1.5
    assert retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    wait = retry_after({"retry-after": later})
    assert wait is not None and 27 <= wait <= 30
    assert retry_after({"retry-after": "Mon, 01 Jan 2001 00:00:00 GMT"}) == 0.0  # past dates: no wait
    info = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "12.5s"}
    assert retry_after(None, {"error": {"details": [{"@type": "other"}, info]}}) == 12.5
    assert (
        retry_after({"retry-after": "soon"}) is None and retry_after({}) is None and retry_after(None) is None
    )


def test_transport_errors() -> None:
    import httpx

    request = httpx.Request("POST", "http://x")
    timeout = transport_error("P", httpx.ReadTimeout("slow", request=request))
    refused = transport_error("P", httpx.ConnectError("refused", request=request))
    assert timeout is not None and timeout.status == "DEADLINE_EXCEEDED"
    assert refused is not None and refused.status == "UNAVAILABLE"
    assert transport_error("P", ValueError("x")) is None


def flaky(failures: list[TurnkitError], seen: list[bool]) -> Any:
    """A model failing with each of `failures` in turn, then answering; records the retry flag."""

    async def fn(request: ModelRequest, ctx: ModelContext) -> ModelResponse:
        seen.append(ctx.retried_by_middleware)
        if failures:
            raise failures.pop(0)
        return ModelResponse(message=Message(role="model", content=[Part(text="ok")]))

    return fn


async def test_retry_waits_what_the_provider_asked_and_marks_the_context() -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    seen: list[bool] = []
    ai = Turnkit()
    failures = [
        http_error("P", 429, "slow", headers={"retry-after": "3"}),
        http_error("P", 503, "busy"),  # no wait given: backoff with jitter
    ]
    ai.define_model(name="flaky", fn=flaky(failures, seen))
    resp = await ai.generate(prompt="x", model="flaky", use=[retry(initial_delay=0.5, sleep=sleep)])
    assert resp.text == "ok" and seen == [True, True, True]
    assert waits[0] == 3.0 and 0 <= waits[1] <= 1.0
    # Without the middleware the flag stays off: the provider's SDK may retry on its own.
    seen.clear()
    await ai.generate(prompt="x", model="flaky")
    assert seen == [False]


async def test_retry_gives_up_when_the_asked_wait_exceeds_max_delay() -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    ai = Turnkit()
    ai.define_model(name="flaky", fn=flaky([http_error("P", 429, "slow", headers={"retry-after": "60"})], []))
    with pytest.raises(TurnkitError) as err:
        await ai.generate(prompt="x", model="flaky", use=[retry(max_delay=10, sleep=sleep)])
    assert err.value.status == "RESOURCE_EXHAUSTED" and waits == []


def test_derived_contexts_keep_the_retry_flag() -> None:
    ctx = ModelContext()
    ctx.retried_by_middleware = True
    assert ctx.derive(None).retried_by_middleware
