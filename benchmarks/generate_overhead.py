"""Framework overhead per `generate` call, with the programmable model (no real inference).

Run: .venv/bin/python benchmarks/generate_overhead.py [--calls N] [--skip-peer]

Prints the median wall time per call, in microseconds, for: the bare model call (the floor),
`generate` with no tools, and `generate` with one tool round (two model calls and one tool run);
then the overhead over the floor (no tools: minus one model call; one tool round: minus two).

The same three measurements run on `genkit==0.12.0` in the same run
(`benchmarks/peers/genkit_generate.py`, in its own virtualenv under `benchmarks/.venvs/`, created on
first use), and each row shows the ratio Genkit / turnkit (above 1: Genkit takes longer). Both sides
use a model function returning a fixed response, the same tool (`ping`, answering "pong"), the same
prompt and the same loop: `min(200, calls)` warm-up calls, `gc.collect()`, then `calls` calls timed
one by one with `time.perf_counter_ns()`. The floor is each framework's registered model awaited
directly (turnkit's `Model`, Genkit's model `Action`, which opens a trace span per call).
`--skip-peer` runs turnkit only. The exit status is 1 when the peer failed, else 0.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

from turnkit import Turnkit
from turnkit.models import ModelContext
from turnkit.testing import define_programmable_model
from turnkit.types import Message, ModelRequest, ModelResponse, Part, ToolRequest

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS))

from peers.env import PeerError, run_peer  # noqa: E402  (needs benchmarks/ on sys.path)

PEER_SCRIPT = BENCHMARKS / "peers" / "genkit_generate.py"
PEER_PACKAGES = ["genkit==0.12.0"]

TEXT = ModelResponse(message=Message(role="model", content=[Part(text="hello")]), finish_reason="stop")
TOOL = ModelResponse(
    message=Message(role="model", content=[Part(tool_request=ToolRequest(name="ping", ref="1", input={}))]),
    finish_reason="stop",
)

# (key, label, model calls per row): the overhead of a row is its time minus that many floors.
ROWS = (
    ("floor", "bare model call (floor)", 0),
    ("plain", "generate, no tools", 1),
    ("one_round", "generate, one tool round", 2),
)


class _NullList(list[ModelRequest]):
    """A list that forgets what is appended to it (the programmable model's request log)."""

    def append(self, item: ModelRequest) -> None:
        """Drop `item`."""


def warmup_calls(calls: int) -> int:
    """Warm-up calls before each measurement (the same rule as the peer)."""
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


async def run_turnkit(calls: int) -> dict[str, float]:
    """The three measurements on turnkit, in microseconds."""
    ai = Turnkit(model="programmableModel")
    pm = define_programmable_model(ai)
    # The programmable model records every request; drop them so it stays as cheap as the peer's
    # bare model function (keeping thousands of requests alive is not the framework's cost).
    pm.requests = _NullList()

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

    # Check, outside the timed loops, that each call did what its row says (as the peer does).
    checked = await ai.generate("hi", tools=["ping"])
    roles = [m.role for m in checked.messages]
    if checked.text != "hello" or roles != ["user", "model", "tool", "model"]:
        raise RuntimeError(f"tool round: unexpected result {checked.text!r}, roles {roles}")
    pm.handler = lambda request, ctx: TEXT
    if (await ai.generate("hi")).text != "hello":
        raise RuntimeError("generate without tools: unexpected reply")
    return {"floor": floor, "plain": plain, "one_round": one_round}


def overheads(results: dict[str, float]) -> dict[str, float]:
    """Each generate row minus the model calls it makes (in floors)."""
    return {key: results[key] - calls * results["floor"] for key, _, calls in ROWS if calls}


def print_report(calls: int, tk: dict[str, float], gk: dict[str, Any] | None) -> None:
    """The table: turnkit, Genkit and Genkit / turnkit per row, then the overheads."""
    header = f"generate overhead, median of {calls} calls after {warmup_calls(calls)} warm-up (microseconds)"
    print(header)
    print(f"  turnkit {version('turnkit')} (Python {sys.version.split()[0]})", end="")
    print(f"  vs  Genkit {gk['version']} (Python {gk['python']})" if gk else "  (peer skipped)")
    gk_us: dict[str, float] = gk["results_us"] if gk else {}
    tk_over, gk_over = overheads(tk), overheads(gk_us) if gk else {}

    def line(label: str, t: float, g: float | None) -> None:
        ratio = f"{g / t:15.2f}x" if g is not None and t > 0 else f"{'-':>16}"
        peer = f"{g:10.1f}" if g is not None else f"{'-':>10}"
        print(f"  {label:<40}{t:10.1f}{peer}{ratio}")

    print(f"  {'':<40}{'turnkit':>10}{'Genkit':>10}{'Genkit/turnkit':>16}")
    for key, label, _ in ROWS:
        line(label, tk[key], gk_us.get(key))
    print("  overhead over the floor")
    for key, label, n in ROWS:
        if n:
            line(f"{label} - {n} model call{'s' if n > 1 else ''}", tk_over[key], gk_over.get(key))


def main() -> None:
    """Parse arguments, run turnkit then the peer, print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=5000, help="timed calls per measurement (default 5000)")
    parser.add_argument("--skip-peer", action="store_true", help="run turnkit only (no Genkit)")
    args = parser.parse_args()
    if args.calls < 1:
        parser.error("--calls must be at least 1")

    tk = asyncio.run(run_turnkit(args.calls))
    gk: dict[str, Any] | None = None
    peer_error: str | None = None
    if not args.skip_peer:
        try:
            gk = run_peer(PEER_SCRIPT, PEER_PACKAGES, ["--calls", str(args.calls)])
        except (PeerError, OSError) as exc:
            peer_error = f"{type(exc).__name__}: {exc}"
            print(f"generate_overhead.py: the Genkit peer failed: {peer_error}", file=sys.stderr)
    print_report(args.calls, tk, gk)
    if peer_error:
        print(f"\nGenkit peer FAILED: {peer_error}")
    sys.exit(1 if peer_error else 0)


if __name__ == "__main__":
    main()
