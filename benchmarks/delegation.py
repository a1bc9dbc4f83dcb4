"""Framework CPU per delegation (`Agents` middleware), over the sub-agent's turn itself.

Run: .venv/bin/python benchmarks/delegation.py [--turns N]

Three measurements per sub-agent kind (client-managed, and server-managed with an in-memory
store), each the median over 7 batches of `turns` turns of process CPU time per turn, with models
that answer at once (no inference):

- child: the sub-agent's turn run directly (`agent.run`), as a delegation runs it;
- tool round: a coordinator turn whose model calls a plain tool once, then answers;
- delegation: the same coordinator turn, but the tool is the sub-agent's delegation tool.

The delegation path's own cost is `delegation - tool round - child`: the middleware chain (tools,
the `<sub-agents>` listing), the child's task message and init, running it as a child turn, and
turning its output into the tool's. The target is under 1 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
import uuid
from typing import Any

from turnkit import Turnkit
from turnkit.agents import Agent
from turnkit.middleware import Agents
from turnkit.models import ModelContext
from turnkit.sessions import InMemorySessionStore
from turnkit.types import Message, ModelRequest, ModelResponse, Part, ToolRequest

TARGET_MS = 1.0
BATCHES = 7


def _answer(text: str) -> ModelResponse:
    return ModelResponse(message=Message(role="model", content=[Part(text=text)]), finish_reason="stop")


def _calls(tool: str) -> ModelResponse:
    request = ToolRequest(name=tool, ref="1", input={"task": "look it up"})
    return ModelResponse(
        message=Message(role="model", content=[Part(tool_request=request)]), finish_reason="stop"
    )


def _app() -> tuple[Turnkit, dict[str, Agent[Any]]]:
    ai = Turnkit()
    child_reply = _answer("found it")

    async def child_model(request: ModelRequest, ctx: ModelContext) -> ModelResponse:
        return child_reply

    def coordinator_model(tool: str) -> Any:
        ask, done = _calls(tool), _answer("done")

        async def model(request: ModelRequest, ctx: ModelContext) -> ModelResponse:
            return done if request.messages[-1].role == "tool" else ask

        return model

    ai.define_model(name="child", fn=child_model)
    for tool in ("lookup", "delegate_to_helper", "delegate_to_keeper"):
        ai.define_model(name=f"coordinator_{tool}", fn=coordinator_model(tool))

    @ai.tool
    async def lookup(task: str) -> dict[str, Any]:
        """Look something up (async, as the delegation tool is: no worker thread)."""
        return {"response": "found it", "artifacts": []}

    agents = {
        "helper": ai.define_agent("helper", model="child", system="Help.", description="Helps."),
        "keeper": ai.define_agent(
            "keeper", model="child", system="Help.", description="Remembers.", store=InMemorySessionStore()
        ),
        "tool": ai.define_agent("tool", model="coordinator_lookup", system="Coordinate.", tools=["lookup"]),
        "to_helper": ai.define_agent(
            "to_helper",
            model="coordinator_delegate_to_helper",
            system="Coordinate.",
            use=[Agents(agents=["helper"])],
        ),
        "to_keeper": ai.define_agent(
            "to_keeper",
            model="coordinator_delegate_to_keeper",
            system="Coordinate.",
            use=[Agents(agents=["keeper"])],
        ),
    }
    return ai, agents


async def _cpu_per_turn(agent: Agent[Any], turns: int, init: Any = None) -> float:
    """Median process CPU (ms) per turn over the batches; `init()` gives each turn's init."""
    message = [{"message": {"role": "user", "content": [{"text": "look it up"}]}}]
    for _ in range(min(50, turns)):  # warm-up
        await agent.run(init() if init else None, message)
    samples = []
    for _ in range(BATCHES):
        gc.collect()
        start = time.process_time_ns()
        for _ in range(turns):
            await agent.run(init() if init else None, message)
        samples.append((time.process_time_ns() - start) / turns / 1e6)
    return statistics.median(samples)


async def main(turns: int) -> int:
    _, agents = _app()
    tool_round = await _cpu_per_turn(agents["tool"], turns)
    rows = []
    for kind, child, coordinator, init in (
        ("client-managed", "helper", "to_helper", None),
        ("server-managed", "keeper", "to_keeper", lambda: {"sessionId": str(uuid.uuid4())}),
    ):
        child_ms = await _cpu_per_turn(agents[child], turns, init)
        delegation_ms = await _cpu_per_turn(agents[coordinator], turns)
        rows.append((kind, child_ms, delegation_ms, delegation_ms - tool_round - child_ms))

    print(f"delegation cost, process CPU per turn (ms), median of {BATCHES} batches of {turns} turns")
    print(f"  coordinator turn with one plain tool round: {tool_round:.3f}")
    print(f"  {'sub-agent':<16} {'child turn':>10} {'delegation':>11} {'overhead':>9}")
    for kind, child_ms, delegation_ms, overhead in rows:
        print(f"  {kind:<16} {child_ms:>10.3f} {delegation_ms:>11.3f} {overhead:>9.3f}")
    print("targets:")
    ok = True
    for kind, _, _, overhead in rows:
        passed = overhead < TARGET_MS
        ok = ok and passed
        print(
            f"  {'PASS' if passed else 'MISS'}  {kind}: framework CPU per delegation over the child turn "
            f"< {TARGET_MS:g} ms: {overhead:.3f} ms"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=300, help="turns per batch (default 300)")
    raise SystemExit(asyncio.run(main(parser.parse_args().turns)))
