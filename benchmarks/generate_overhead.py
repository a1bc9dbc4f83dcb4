"""Framework overhead per `generate` call, with the programmable model (no real inference).

Run: .venv/bin/python benchmarks/generate_overhead.py [--calls N]

Prints the median wall time per call, in microseconds, for: the bare model call (the floor),
`generate` with no tools, and `generate` with one tool round (two model calls and one tool run).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from collections.abc import Awaitable, Callable

from turnkit import Turnkit
from turnkit.models import ModelContext
from turnkit.testing import define_programmable_model
from turnkit.types import Message, ModelRequest, ModelResponse, Part, ToolRequest

TEXT = ModelResponse(message=Message(role="model", content=[Part(text="hello")]), finish_reason="stop")
TOOL = ModelResponse(
    message=Message(role="model", content=[Part(tool_request=ToolRequest(name="ping", ref="1", input={}))]),
    finish_reason="stop",
)


async def median_us(fn: Callable[[], Awaitable[object]], calls: int) -> float:
    for _ in range(min(200, calls)):  # warm up
        await fn()
    gc.collect()
    samples = []
    for _ in range(calls):
        start = time.perf_counter_ns()
        await fn()
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1000


async def main(calls: int) -> None:
    ai = Turnkit(model="programmableModel")
    pm = define_programmable_model(ai)

    @ai.tool()
    async def ping() -> str:
        """Answer pong."""
        return "pong"

    pm.handler = lambda request, ctx: TEXT
    model = pm.model
    assert model is not None
    request = ModelRequest(messages=[Message(role="user", content=[Part(text="hi")])])
    floor = await median_us(lambda: model(request, ModelContext()), calls)
    plain = await median_us(lambda: ai.generate("hi"), calls)

    def tool_then_text(request: ModelRequest, ctx: ModelContext) -> ModelResponse:
        return TEXT if request.messages[-1].role == "tool" else TOOL

    pm.handler = tool_then_text
    one_round = await median_us(lambda: ai.generate("hi", tools=["ping"]), calls)

    print(f"generate overhead, median of {calls} calls (microseconds)")
    print(f"  bare model call (floor)        {floor:8.1f}")
    print(f"  generate, no tools             {plain:8.1f}   overhead {plain - floor:8.1f}")
    print(f"  generate, one tool round       {one_round:8.1f}   overhead {one_round - 2 * floor:8.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=5000)
    asyncio.run(main(parser.parse_args().calls))
