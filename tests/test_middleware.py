"""Middleware: retry with exponential backoff and jitter, fallback to other models; models that fail on purpose."""

from __future__ import annotations

from typing import Any

import pytest

from turnkit import Turnkit, TurnkitError, fallback, retry
from turnkit.middleware import Fallback, Retry
from turnkit.models import ModelContext
from turnkit.types import Message, ModelRequest, ModelResponse, Part


def flaky(ai: Turnkit, name: str, failures: list[BaseException]) -> list[int]:
    """A model that raises each error of `failures` in turn, then answers with its name."""
    calls: list[int] = []

    async def fn(request: ModelRequest, ctx: ModelContext) -> ModelResponse:
        calls.append(1)
        if failures:
            raise failures.pop(0)
        return ModelResponse(message=Message(role="model", content=[Part(text=name)]))

    ai.define_model(name=name, fn=fn)
    return calls


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


async def test_retry_backs_off_exponentially_then_succeeds() -> None:
    ai = Turnkit()
    calls = flaky(ai, "m", [TurnkitError("UNAVAILABLE", "down"), TimeoutError(), ConnectionError()])
    sleeps = Sleeps()
    res = await ai.generate(
        "x", model="m", use=[retry(max_retries=3, initial_delay=0.5, jitter=False, sleep=sleeps)]
    )
    assert res.text == "m" and len(calls) == 4
    assert sleeps.delays == [0.5, 1.0, 2.0]


async def test_retry_jitter_stays_within_the_backoff_window() -> None:
    ai = Turnkit()
    flaky(ai, "m", [TurnkitError("UNAVAILABLE", "down")] * 5)
    sleeps = Sleeps()
    await ai.generate("x", model="m", use=[retry(max_retries=5, initial_delay=1, max_delay=4, sleep=sleeps)])
    caps = [1, 2, 4, 4, 4]
    assert all(0 <= d <= cap for d, cap in zip(sleeps.delays, caps, strict=True))
    assert len(set(sleeps.delays)) > 1  # jittered, not in lock-step


async def test_retry_gives_up_and_skips_non_retryable() -> None:
    ai = Turnkit()
    calls = flaky(ai, "m", [TurnkitError("UNAVAILABLE", "down")] * 3)
    with pytest.raises(TurnkitError, match="UNAVAILABLE"):
        await ai.generate("x", model="m", use=[retry(max_retries=2, sleep=Sleeps())])
    assert len(calls) == 3
    calls = flaky(ai, "bad", [TurnkitError("INVALID_ARGUMENT", "bad request")])
    with pytest.raises(TurnkitError, match="INVALID_ARGUMENT"):
        await ai.generate("x", model="bad", use=[retry(sleep=Sleeps())])
    assert len(calls) == 1
    with pytest.raises(TurnkitError, match="max_retries"):
        retry(max_retries=-1)


async def test_fallback_uses_next_model_on_failure() -> None:
    ai = Turnkit()
    primary = flaky(ai, "primary", [TurnkitError("UNAVAILABLE", "down")])
    dead = flaky(ai, "dead", [TurnkitError("RESOURCE_EXHAUSTED", "quota")])
    backup = flaky(ai, "backup", [])
    res = await ai.generate("x", model="primary", use=[fallback(ai, models=["dead", "backup"])])
    assert res.text == "backup" and (len(primary), len(dead), len(backup)) == (1, 1, 1)


async def test_fallback_does_not_hide_client_errors_and_reraises_last() -> None:
    ai = Turnkit()
    flaky(ai, "primary", [TurnkitError("INVALID_ARGUMENT", "bad")])
    backup = flaky(ai, "backup", [])
    with pytest.raises(TurnkitError, match="INVALID_ARGUMENT"):
        await ai.generate("x", model="primary", use=[fallback(ai, models=["backup"])])
    assert backup == []
    flaky(ai, "p2", [TurnkitError("UNAVAILABLE", "a")])
    flaky(ai, "b2", [TurnkitError("UNAVAILABLE", "last one")])
    with pytest.raises(TurnkitError, match="last one"):
        await ai.generate("x", model="p2", use=[fallback(ai, models=["b2"])])


async def test_a_misspelt_fallback_model_is_not_found_at_first_use() -> None:
    ai = Turnkit()
    primary = flaky(ai, "primary", [])
    flaky(ai, "backup", [])
    with pytest.raises(
        TurnkitError, match=r"Fallback: no model named 'bakup' \(did you mean 'backup'\?\)"
    ) as err:
        await ai.generate("x", model="primary", use=[fallback(ai, models=["bakup", "backup"])])
    assert err.value.status == "NOT_FOUND" and primary == []  # even though the primary would work


async def test_retry_inside_fallback_composes() -> None:
    ai = Turnkit()
    flaky(ai, "primary", [TurnkitError("UNAVAILABLE", "x")] * 10)
    flaky(ai, "backup", [])
    mws: list[Any] = [fallback(ai, models=["backup"]), retry(max_retries=2, sleep=Sleeps())]
    res = await ai.generate("x", model="primary", use=mws)
    assert res.text == "backup"


async def test_retry_and_fallback_classes_take_genkits_spelling() -> None:
    ai = Turnkit()
    calls = flaky(ai, "m", [TurnkitError("UNAVAILABLE", "down")] * 2)
    sleeps = Sleeps()
    mw = Retry(
        max_retries=2, initial_delay_ms=100, max_delay_ms=150, backoff_factor=3, no_jitter=True, sleep=sleeps
    )
    assert (await ai.generate("x", model="m", use=[mw])).text == "m"
    assert len(calls) == 3 and sleeps.delays == [0.1, 0.15]
    flaky(ai, "primary", [TurnkitError("UNAVAILABLE", "down")])
    flaky(ai, "backup", [])
    assert (await ai.generate("x", model="primary", use=[Fallback(models=["backup"])])).text == "backup"


async def test_retry_waits_as_long_as_the_provider_asks() -> None:
    ai = Turnkit()
    quota = TurnkitError("RESOURCE_EXHAUSTED", "quota", details={"retryAfter": 2.5})
    flaky(ai, "m", [quota])
    sleeps = Sleeps()
    await ai.generate("x", model="m", use=[retry(max_retries=1, max_delay=5, sleep=sleeps)])
    assert sleeps.delays == [2.5]
    flaky(ai, "m2", [TurnkitError("RESOURCE_EXHAUSTED", "quota", details={"retryAfter": 60})])
    with pytest.raises(TurnkitError, match="quota"):  # longer than max_delay: not retried
        await ai.generate("x", model="m2", use=[retry(max_retries=1, max_delay=5, sleep=sleeps)])


async def test_standard_middleware_by_name_with_config() -> None:
    ai = Turnkit()
    flaky(ai, "primary", [TurnkitError("UNAVAILABLE", "down")])
    flaky(ai, "backup", [])
    res = await ai.generate(
        "x", model="primary", use=[{"name": "fallback", "config": {"models": ["backup"]}}]
    )
    assert res.text == "backup"
    with pytest.raises(TurnkitError) as err:
        Fallback(models="backup")
    assert err.value.status == "INVALID_ARGUMENT" and "models" in err.value.message
