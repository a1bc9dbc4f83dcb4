"""Long sessions: what a 2,000-turn session costs per turn, cold, and in model request bytes.

Run (from the repo root; PostgreSQL and Redis as for `sessions_scale.py`):

    .venv/bin/python benchmarks/long_session.py [--turns 2000] [--stores file,sqlite,postgres,redis]
                                                [--compact 40] [--quick] [--json]

Per durable store (a place of its own, dropped afterwards): one agent session of `--turns` turns
through the real runtime (`agent.chat().send(...)`, the programmable model answering a fixed
76-character reply at once, the store with its defaults), timing every turn (wall, and CPU of
this process). Then:

- per-turn cost: median wall and CPU of turns 1-10 and of the last 10, and their ratio;
- cold load: a new process opens the store from its URL and continues the session by id; the
  time from opening the store to the end of that first turn (the history read back whole), and
  the process's start-up to that point;
- model request bytes: the JSON size of the request the model gets at turn 10 and at the last
  turn (it carries the whole history), and the same session continued with
  `HistoryCompaction(max_messages=--compact)` (the last turn's request, and the store still
  holding every message, checked).

Targets (PASS/MISS; exit status 1 on a MISS): median wall per turn over the last 10 turns within
1.5x of turns 1-10, per store. `--quick` runs 300 turns.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale_common import (
    DURABLE,
    PG_URL,
    REDIS_URL,
    REPLY,
    Place,
    close_store,
    place,
    print_verdicts,
    ratio,
    verdict,
)

from turnkit import Turnkit
from turnkit.middleware import HistoryCompaction
from turnkit.models import ModelContext
from turnkit.sessions._url import store_from_url
from turnkit.testing import define_programmable_model
from turnkit.types import Message, ModelRequest, ModelResponse, Part

MAX_RATIO = 1.5
WINDOW = 10


class Model:
    """The benchmark model: answers REPLY; measures the request's JSON size only when asked (the
    measuring itself costs as much as the history is long, so not on timed turns)."""

    def __init__(self) -> None:
        self.measure = False
        self.sizes: list[int] = []
        self.reply = ModelResponse(
            message=Message(role="model", content=[Part(text=REPLY)]), finish_reason="stop"
        )

    def __call__(self, request: ModelRequest, ctx: ModelContext) -> ModelResponse:
        if self.measure:
            self.sizes.append(len(request.to_json()))
        return self.reply


def app(model: Model) -> Turnkit:
    """A Turnkit app whose default model is `model`, keeping no request log."""
    ai = Turnkit(model="programmableModel")
    pm = define_programmable_model(ai)
    pm.handler = model
    pm.requests = _Forgetful()
    return ai


class _Forgetful(list[ModelRequest]):
    def append(self, item: ModelRequest) -> None:
        pass


def user_text(turn: int) -> str:
    """The user's message of turn N: about 60 characters."""
    return f"turn {turn}: and what about the next thing on the list, please?"


async def long_run(where: Place, turns: int, compact: int) -> dict[str, Any]:
    """The long session in one store: per-turn timings, request sizes, the compacted continuation."""
    model = Model()
    ai = app(model)
    store = where.open()
    try:
        agent = ai.define_agent(name="long", store=store)
        chat = agent.chat()
        walls: list[float] = []
        cpus: list[float] = []
        gc.collect()
        for turn in range(1, turns + 1):
            model.measure = turn in (WINDOW, turns)
            c0, w0 = time.process_time(), time.perf_counter()
            res = await chat.send(user_text(turn))
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            if model.measure:
                wall, cpu = float("nan"), float("nan")  # measuring the request is not the turn's cost
            walls.append(wall)
            cpus.append(cpu)
        last = await store.get_snapshot(snapshot_id=res.raw.snapshot_id or "")
        assert last is not None and last.session_id is not None
        session_id = last.session_id
        bytes_early, bytes_late = model.sizes
        # The same session, continued with the history compacted for the model.
        compacted = ai.define_agent(
            name="compacted", store=store, use=[HistoryCompaction(max_messages=compact)]
        )
        model.measure = True
        await compacted.chat(session_id=session_id).send(user_text(turns + 1))
        kept = await store.get_snapshot(session_id=session_id)
        stored_messages = len(kept.state.messages or []) if kept is not None and kept.state else 0
    finally:
        await close_store(store)

    def window(values: list[float], first: bool) -> float:
        measured = [v for v in values if v == v]  # NaN: a turn whose request was measured, left out
        return statistics.median(measured[:WINDOW] if first else measured[-WINDOW:])

    return {
        "session_id": session_id,
        "first_wall_ms": round(window(walls, True) * 1000, 3),
        "last_wall_ms": round(window(walls, False) * 1000, 3),
        "first_cpu_ms": round(window(cpus, True) * 1000, 3),
        "last_cpu_ms": round(window(cpus, False) * 1000, 3),
        "request_bytes_turn_10": bytes_early,
        "request_bytes_last": bytes_late,
        "request_bytes_compacted": model.sizes[-1],
        "stored_messages_after_compacted_turn": stored_messages,
    }


def cold_turn(url: str, session_id: str) -> None:
    """In a new process: open the store, continue the session once; print the timings as JSON."""
    started = time.perf_counter()  # imports are done by now
    model = Model()
    ai = app(model)

    async def go() -> float:
        t0 = time.perf_counter()
        store = store_from_url(url)
        try:
            res = await ai.define_agent(name="long", store=store).chat(session_id=session_id).send("one more")
            assert res.text == REPLY
            return time.perf_counter() - t0
        finally:
            await close_store(store)

    open_to_turn = asyncio.run(go())
    print(
        json.dumps(
            {
                "open_to_turn_ms": round(open_to_turn * 1000, 2),
                "started_to_turn_ms": round((time.perf_counter() - started) * 1000, 2),
            }
        )
    )


def run_store(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """Everything for one store kind."""
    with place(kind, args.pg_url, args.redis_url) as where:
        t0 = time.perf_counter()
        row = asyncio.run(long_run(where, args.turns, args.compact))
        row["session_s"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        cmd = [sys.executable, str(Path(__file__).resolve()), "--cold", where.url, row["session_id"]]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600)
        row.update(json.loads(out.stdout))
        row["process_to_turn_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    row["store"] = kind
    row["wall_ratio"] = ratio(row["last_wall_ms"], row["first_wall_ms"])
    row["cpu_ratio"] = ratio(row["last_cpu_ms"], row["first_cpu_ms"])
    print(f"long_session.py: {kind}: {args.turns} turns in {row['session_s']} s", file=sys.stderr)
    return row


def main() -> None:
    """Parse arguments, run every store, print the table and the verdicts."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--turns", type=int, default=2000, help="turns in the session (default 2000)")
    parser.add_argument(
        "--stores", default=",".join(DURABLE), help=f"store kinds (default {','.join(DURABLE)})"
    )
    parser.add_argument("--compact", type=int, default=40, help="HistoryCompaction max_messages (default 40)")
    parser.add_argument("--quick", action="store_true", help="300 turns: a trial run")
    parser.add_argument("--pg-url", default=PG_URL)
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--cold", nargs=2, metavar=("URL", "SESSION_ID"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cold:
        cold_turn(*args.cold)
        return
    if args.quick:
        args.turns = 300
    if args.turns < 2 * WINDOW:
        parser.error(f"--turns must be at least {2 * WINDOW}")
    rows, failed = [], {}
    for kind in [k for k in args.stores.split(",") if k]:
        try:
            rows.append(run_store(kind, args))
        except Exception as exc:  # report the other stores anyway
            failed[kind] = f"{type(exc).__name__}: {exc}"[:300]
            print(f"long_session.py: {kind} failed: {failed[kind]}", file=sys.stderr)
    verdicts = [
        verdict(
            f"{r['store']} median wall per turn, last {WINDOW} vs first {WINDOW} of {args.turns}",
            r["wall_ratio"],
            MAX_RATIO,
        )
        for r in rows
    ]
    report = {
        "turns": args.turns,
        "compact": args.compact,
        "rows": rows,
        "failed": failed,
        "targets": verdicts,
    }
    if args.json:
        print(json.dumps(report))
    else:
        print_table(report)
    sys.exit(1 if failed or not all(v["pass"] for v in verdicts) else 0)


def print_table(report: dict[str, Any]) -> None:
    """The human-readable tables and verdicts."""
    n = report["turns"]
    print(f"One session of {n} turns per store; medians of turns 1-{WINDOW} and {n - WINDOW + 1}-{n} (ms)")
    cols = [
        ("store", "store", 8),
        ("wall first", "first_wall_ms", 10),
        ("wall last", "last_wall_ms", 9),
        ("ratio", "wall_ratio", 5),
        ("cpu first", "first_cpu_ms", 9),
        ("cpu last", "last_cpu_ms", 8),
        ("ratio", "cpu_ratio", 5),
        ("cold open->turn", "open_to_turn_ms", 15),
        ("new process->turn", "process_to_turn_ms", 17),
    ]
    print("  ".join(f"{t:>{w}}" for t, _, w in cols))
    for row in report["rows"]:
        print("  ".join(f"{'-' if row.get(k) is None else row[k]!s:>{w}}" for _, k, w in cols))
    print()
    print(
        f"Model request bytes (JSON): turn {WINDOW}, turn {n} (whole history), and turn {n + 1} with "
        f"HistoryCompaction(max_messages={report['compact']}); messages the store still holds after it"
    )
    for row in report["rows"]:
        print(
            f"{row['store']:>8}  {row['request_bytes_turn_10']:>8}  {row['request_bytes_last']:>9}  "
            f"{row['request_bytes_compacted']:>8}  stored: {row['stored_messages_after_compacted_turn']}"
        )
    for kind, why in report["failed"].items():
        print(f"{kind} FAILED: {why}")
    print()
    print_verdicts(report["targets"])


if __name__ == "__main__":
    main()
