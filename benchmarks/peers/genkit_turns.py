"""Genkit peer for `benchmarks/turns.py`: one long conversation with a Genkit agent, per store mode.

Runs INSIDE the benchmark's own virtualenv that has `genkit==0.12.0` (see `benchmarks/peers/env.py`),
never in turnkit's environment:

    benchmarks/.venvs/genkit-0.12.0/bin/python benchmarks/peers/genkit_turns.py [--turns 200]

For each mode it defines an agent with `ai.define_agent(model=..., store=...)` over a model whose
function returns a fixed short reply (no inference), opens `chat = agent.chat()` and awaits
`chat.send("message N")` once per turn:

- `none`: no store; Genkit's client-managed mode (the chat ships the whole history every turn).
- `memory`: `InMemorySessionStore()`.
- `file`: `FileSessionStore(<temp dir>)`; also bytes on disk after turns 10/50/100/200 and the
  compact JSON size of the final stored history.

Per turn it records the process CPU time (`time.process_time()`, all threads) and the wall time
(`time.perf_counter()`) of the `send` call, in milliseconds. It prints one JSON object on stdout:
`{"peer": "genkit", "version": ..., "turns": N, "results": {mode: {...}}, "notes": [...]}`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from genkit import ActionRunContext, Message, ModelRequest, ModelResponse, Part
from genkit.exp import FileSessionStore, Genkit, InMemorySessionStore

MODES = ("none", "memory", "file")
CHECKPOINTS = (10, 50, 100, 200)
REPLY_TEXT = "ok, noted."
REPLY = ModelResponse(
    message=Message(role="model", content=[Part.from_text(REPLY_TEXT)]), finish_reason="stop"
)


async def fixed_reply(request: ModelRequest, ctx: ActionRunContext) -> ModelResponse:
    """The programmable model: always the same short reply, no inference."""
    return REPLY


def make_store(mode: str, directory: Path) -> Any:
    """The session store for a mode (None for client-managed state)."""
    if mode == "memory":
        return InMemorySessionStore()
    if mode == "file":
        return FileSessionStore(str(directory))
    return None


def dir_bytes(directory: Path) -> int:
    """Total size of the files under `directory`."""
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def history_json_bytes(messages: list[Message]) -> int:
    """Size of the history as compact wire JSON (camelCase, no nulls), UTF-8."""
    wire = [m.model_dump(mode="json", by_alias=True, exclude_none=True) for m in messages]
    return len(json.dumps(wire, separators=(",", ":"), ensure_ascii=False).encode())


async def run_mode(ai: Genkit, mode: str, turns: int, warmup: int, tmp: Path) -> dict[str, Any]:
    """Run a warm-up chat, then one measured `turns`-turn conversation; return its numbers."""
    # The warm-up uses its own agent and store so it leaves nothing in the measured store dir.
    warm_agent = ai.define_agent(
        name=f"warmup_{mode}", model="fixedReply", store=make_store(mode, tmp / f"warmup-{mode}")
    )
    warm_chat = warm_agent.chat()
    for i in range(warmup):
        await warm_chat.send(f"warm-up {i}")

    store_dir = tmp / mode
    agent = ai.define_agent(name=f"bench_{mode}", model="fixedReply", store=make_store(mode, store_dir))
    chat = agent.chat()
    cpu_ms: list[float] = []
    wall_ms: list[float] = []
    bytes_at: dict[str, int] = {}
    files_at: dict[str, int] = {}
    gc.collect()
    for turn in range(1, turns + 1):
        message = f"message {turn}"
        cpu0, wall0 = time.process_time(), time.perf_counter()
        response = await chat.send(message)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        cpu_ms.append(round(cpu * 1000, 4))
        wall_ms.append(round(wall * 1000, 4))
        if response.text != REPLY_TEXT:
            raise RuntimeError(f"{mode} turn {turn}: unexpected reply {response.text!r}")
        if mode == "file" and turn in CHECKPOINTS:
            bytes_at[str(turn)] = dir_bytes(store_dir)
            files_at[str(turn)] = sum(1 for p in store_dir.iterdir() if p.is_file())

    result: dict[str, Any] = {"cpu_ms": cpu_ms, "wall_ms": wall_ms}
    if mode == "file":
        # The store's own copy of the final history, not the client's running view.
        snapshot = await agent.get_snapshot(snapshot_id=chat.snapshot_id)
        messages = list(snapshot.state.messages or []) if snapshot and snapshot.state else []
        if len(messages) != 2 * turns:
            raise RuntimeError(f"stored history has {len(messages)} messages, expected {2 * turns}")
        result |= {
            "bytes_at": bytes_at,
            "files_at": files_at,
            "history_json_bytes": history_json_bytes(messages),
        }
    return result


async def run(turns: int, warmup: int, modes: list[str]) -> dict[str, Any]:
    """Run every requested mode in this process and build the report."""
    ai = Genkit()
    ai.define_model(name="fixedReply", fn=fixed_reply)
    results: dict[str, Any] = {}
    tmp = Path(tempfile.mkdtemp(prefix="genkit-turns-"))
    try:
        for mode in modes:
            results[mode] = await run_mode(ai, mode, turns, warmup, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "peer": "genkit",
        "version": version("genkit"),
        "python": sys.version.split()[0],
        "turns": turns,
        "results": results,
        "notes": [
            "none = Genkit client-managed state (define_agent without a store): the chat sends the "
            "whole history with every turn",
            "file = FileSessionStore: one full-history <snapshotId>.json (indent=2) per turn",
        ],
    }


def main() -> None:
    """Parse arguments, run, and print the JSON report as the only thing on stdout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=200, help="turns per conversation (default 200)")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up turns per mode, not measured")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of none,memory,file")
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if unknown := set(modes) - set(MODES):
        parser.error(f"unknown modes: {sorted(unknown)}")
    # Keep stdout for the JSON alone: anything the library prints goes to stderr.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    report = asyncio.run(run(args.turns, args.warmup, modes))
    out.write(json.dumps(report) + "\n")
    out.flush()


if __name__ == "__main__":
    main()
