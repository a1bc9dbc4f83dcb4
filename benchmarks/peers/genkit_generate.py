"""Genkit peer for `benchmarks/generate_overhead.py`: framework overhead per `generate` call.

Runs INSIDE the benchmark's own virtualenv that has `genkit==0.12.0` (see `benchmarks/peers/env.py`),
never in turnkit's environment:

    benchmarks/.venvs/genkit-0.12.0/bin/python benchmarks/peers/genkit_generate.py [--calls 5000]

The same three measurements as the turnkit side, with a model whose function returns a fixed
`ModelResponse` (no inference), registered with `ai.define_model(name="fixedReply", fn=...)` and made
the app's default model:

- `floor`: the bare model call, the registered model action awaited directly with a one-message
  request (`await model(request)`, as turnkit awaits its registered `Model`);
- `plain`: `await ai.generate(prompt="hi")`, no tools (one model call);
- `one_round`: `await ai.generate(prompt="hi", tools=["ping"])`, where the model asks for the `ping`
  tool unless the last message is a tool message, then answers (two model calls and one tool run).

Each: `min(200, calls)` warm-up calls, `gc.collect()`, then `calls` calls each timed with
`time.perf_counter_ns()`; the median in microseconds. It prints one JSON object on stdout:
`{"peer": "genkit", "version": ..., "python": ..., "calls": N, "warmup": W, "results_us": {...}}`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from typing import Any

from genkit import ActionRunContext, Genkit, Message, ModelRequest, ModelResponse, Part, ToolRequest

TEXT = ModelResponse(message=Message(role="model", content=[Part(text="hello")]), finish_reason="stop")
TOOL = ModelResponse(
    message=Message(role="model", content=[Part(tool_request=ToolRequest(name="ping", ref="1", input={}))]),
    finish_reason="stop",
)


def warmup_calls(calls: int) -> int:
    """Warm-up calls before each measurement (the same rule as the turnkit side)."""
    return min(200, calls)


async def median_us(fn: Callable[[], Awaitable[object]], calls: int) -> float:
    """Warm up, collect garbage, then the median wall time of `calls` awaited calls, in microseconds."""
    for _ in range(warmup_calls(calls)):
        await fn()
    gc.collect()
    samples = []
    for _ in range(calls):
        start = time.perf_counter_ns()
        await fn()
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1000


async def run(calls: int) -> dict[str, Any]:
    """Run the three measurements in this process and build the report."""
    ai = Genkit(model="fixedReply")
    mode = {"tools": False}

    async def fixed_reply(request: ModelRequest, ctx: ActionRunContext) -> ModelResponse:
        """The programmable model: a fixed reply; in tool mode, a tool request until a tool answered."""
        if mode["tools"] and request.messages[-1].role != "tool":
            return TOOL
        return TEXT

    model = ai.define_model(name="fixedReply", fn=fixed_reply)

    @ai.tool()
    async def ping() -> str:
        """Answer pong."""
        return "pong"

    request = ModelRequest(messages=[Message(role="user", content=[Part(text="hi")])])
    floor = await median_us(lambda: model(request), calls)
    plain = await median_us(lambda: ai.generate(prompt="hi"), calls)
    mode["tools"] = True
    one_round = await median_us(lambda: ai.generate(prompt="hi", tools=["ping"]), calls)

    # Check, outside the timed loops, that each call did what its row says.
    checked = await ai.generate(prompt="hi", tools=["ping"])
    roles = [m.role for m in checked.messages]
    if checked.text != "hello" or roles != ["user", "model", "tool", "model"]:
        raise RuntimeError(f"tool round: unexpected result {checked.text!r}, roles {roles}")
    mode["tools"] = False
    if (await ai.generate(prompt="hi")).text != "hello":
        raise RuntimeError("generate without tools: unexpected reply")

    return {
        "peer": "genkit",
        "version": version("genkit"),
        "python": sys.version.split()[0],
        "calls": calls,
        "warmup": warmup_calls(calls),
        "results_us": {"floor": floor, "plain": plain, "one_round": one_round},
    }


def main() -> None:
    """Parse arguments, run, and print the JSON report as the only thing on stdout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000, help="timed calls per measurement (default 5000)")
    args = parser.parse_args()
    if args.calls < 1:
        parser.error("--calls must be at least 1")
    # Keep stdout for the JSON alone: anything the library prints goes to stderr.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    report = asyncio.run(run(args.calls))
    out.write(json.dumps(report) + "\n")
    out.flush()


if __name__ == "__main__":
    main()
