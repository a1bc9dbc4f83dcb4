"""The OpenAI Agents SDK half of `benchmarks/stores.py`: one long conversation in a `SQLiteSession`.

Runs in its own virtualenv (see `env.py`) with the `openai-agents` version `stores.py` pins:

    python openai_agents_sessions.py [--turns 200] [--warmup 3]

Session storage only, no model and no `Runner`: the SDK's runner cannot run without a model
provider, so each turn does what `Runner.run(agent, input, session=session)` does with its
session: `get_items()` (the history the model would be sent), `add_items([user item])` (the input,
saved before the model call) and `add_items([assistant item])` (the output, saved after it). The
user item is `{"role": "user", "content": <200 chars>}`, the assistant item the
`ResponseOutputMessage` (`output_text` content) a model call would return, dumped as the runner
stores it (`model_dump(exclude_unset=True)`). So the turnkit/SDK ratio compares turnkit's whole
agent turn with the SDK's storage work alone: a lower bound on the SDK's cost per turn.

`SQLiteSession(session_id, <file in a temporary directory>)` with its defaults (WAL, a thread-local
connection, `asyncio.to_thread` per call). 3 warm-up turns in another session and database file,
`gc.collect()`, then N timed turns; storage measured with `store_workload` after the session is
created (N=0) and after turns 10/100/200. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import shutil
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from agents import SQLiteSession
from openai.types.responses import ResponseOutputMessage, ResponseOutputText
from store_workload import checkpoints, history_json_bytes, reply, sqlite_bytes, user_message


def assistant_item(turn: int) -> dict[str, Any]:
    """The output item a model call would have produced for this turn, as the runner stores it."""
    message = ResponseOutputMessage(
        id=f"msg_{turn:08d}",
        content=[ResponseOutputText(annotations=[], text=reply(turn), type="output_text")],
        role="assistant",
        status="completed",
        type="message",
    )
    return message.model_dump(exclude_unset=True)


async def run_turn(session: SQLiteSession, turn: int, assistant: dict[str, Any]) -> None:
    """One turn's session traffic, in the runner's order."""
    history = await session.get_items()
    if len(history) != 2 * (turn - 1):
        raise RuntimeError(f"turn {turn}: history has {len(history)} items")
    await session.add_items([{"role": "user", "content": user_message(turn)}])
    await session.add_items([assistant])


def _text(item: dict[str, Any]) -> tuple[str, str]:
    if item.get("role") == "user":
        return "user", item["content"]
    return "model", "".join(part["text"] for part in item["content"])


async def run(turns: int, warmup: int, tmp: Path) -> dict[str, Any]:
    """Warm-up session, then the measured one."""
    warm = SQLiteSession("warmup", tmp / "warmup.sqlite")
    try:
        for turn in range(1, warmup + 1):
            await run_turn(warm, turn, assistant_item(turn))
    finally:
        warm.close()

    path = tmp / "sessions.sqlite"
    session = SQLiteSession("bench", path)
    try:
        points = checkpoints(turns)
        bytes_at: dict[str, Any] = {}
        if 0 in points:
            bytes_at["0"] = sqlite_bytes(path)
        # The model's output exists before the runner saves it: build it outside the timed turn.
        outputs = [assistant_item(turn) for turn in range(1, turns + 1)]
        cpu_ms: list[float] = []
        wall_ms: list[float] = []
        gc.collect()
        for turn in range(1, turns + 1):
            cpu0, wall0 = time.process_time(), time.perf_counter()
            await run_turn(session, turn, outputs[turn - 1])
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            cpu_ms.append(round(cpu * 1000, 4))
            wall_ms.append(round(wall * 1000, 4))
            if turn in points:
                bytes_at[str(turn)] = sqlite_bytes(path)
        history = [_text(item) for item in await session.get_items()]
    finally:
        session.close()
    if len(history) != 2 * turns:
        raise RuntimeError(f"stored history has {len(history)} items, expected {2 * turns}")
    return {
        "cpu_ms": cpu_ms,
        "wall_ms": wall_ms,
        "bytes_at": bytes_at,
        "history_json_bytes": history_json_bytes(history),
    }


def main() -> None:
    """Run the session benchmark and print one JSON object."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="openai-agents-sessions-"))
    try:
        result = asyncio.run(run(args.turns, args.warmup, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        json.dumps(
            {
                "framework": "openai-agents",
                "version": version("openai-agents"),
                "versions": {n: version(n) for n in ("openai-agents", "openai")},
                "python": sys.version.split()[0],
                "turns": args.turns,
                "results": {"sqlite": result},
                "errors": {},
                "notes": [
                    "OpenAI Agents SDK: SQLiteSession storage only (no model call, no Runner): per turn "
                    "get_items() + add_items([user]) + add_items([assistant output message]), as "
                    "Runner.run does with a session; the ratio is against turnkit's full agent turn",
                ],
            }
        )
    )


if __name__ == "__main__":
    main()
