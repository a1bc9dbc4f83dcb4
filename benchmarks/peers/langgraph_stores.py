"""The LangGraph half of `benchmarks/stores.py`: one long conversation per checkpointer.

Runs in its own virtualenv (see `env.py`) with langgraph, langgraph-checkpoint-sqlite,
langgraph-checkpoint-postgres and psycopg[binary] at the versions `stores.py` pins:

    python langgraph_stores.py [--turns 200] [--warmup 3] [--modes sqlite,postgres]
                               [--pg-url postgresql://postgres@127.0.0.1:5432/test]

The graph: `StateGraph` over `{"messages": Annotated[list, add_messages]}` with one node that returns
the turn's fixed-seed 400-character reply as an `AIMessage`, compiled with a checkpointer and
invoked once per turn with the thread id and the 200-character user message
(`graph.invoke({"messages": [{"role": "user", "content": ...}]}, {"configurable": {"thread_id": ...}})`),
the way a LangGraph chat app runs a turn. Modes:

- `sqlite`: `SqliteSaver` on a database file in a temporary directory (`sqlite3.connect`, as
  `SqliteSaver.from_conn_string` does);
- `postgres`: `PostgresSaver.from_conn_string` (one connection, autocommit) with its tables in a
  fresh schema of its own (`search_path`), dropped afterwards;
- `sqlite-delta` / `postgres-delta`: the same with the messages channel declared as LangGraph's
  beta `DeltaChannel(_messages_delta_reducer)` (stores writes, not the whole list, per checkpoint).

Default durability ("async": the checkpoint is written in a background thread, and `invoke`
waits for it before returning, so every timed turn includes its writes). Each mode: 3 warm-up turns
on another thread (another database file / schema), `gc.collect()`, then N timed turns; storage
measured with `store_workload` after setup (N=0) and after turns 10/100/200. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Any, TypedDict
from urllib.parse import quote

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langgraph.channels.delta import DeltaChannel
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import _messages_delta_reducer, add_messages
from store_workload import (
    checkpoints,
    history_json_bytes,
    pg_bytes,
    pg_create_schema,
    pg_drop_schema,
    reply,
    sqlite_bytes,
    user_message,
)

MODES = ("sqlite", "postgres", "sqlite-delta", "postgres-delta")

# The reply the node returns on the current turn (set before each invoke, like turnkit's handler).
_CURRENT: list[str] = [""]


class State(TypedDict):
    """The default chat state: a message list merged by `add_messages`."""

    messages: Annotated[list[BaseMessage], add_messages]


class DeltaState(TypedDict):
    """The same state with the messages as LangGraph's beta delta channel."""

    messages: Annotated[list[BaseMessage], DeltaChannel(_messages_delta_reducer)]


def respond(state: dict[str, Any]) -> dict[str, Any]:
    """The only node: answer with this turn's reply (no model call)."""
    return {"messages": [AIMessage(content=_CURRENT[0])]}


def build_graph(checkpointer: Any, delta: bool) -> Any:
    """One node, START -> respond -> END, over the default or the delta messages channel."""
    builder = StateGraph(DeltaState if delta else State)
    builder.add_node("respond", respond)
    builder.add_edge(START, "respond")
    builder.add_edge("respond", END)
    return builder.compile(checkpointer=checkpointer)


def run_turn(graph: Any, thread: str, turn: int) -> None:
    """One turn: invoke the graph with the user message; check the answer."""
    _CURRENT[0] = reply(turn)
    out = graph.invoke(
        {"messages": [{"role": "user", "content": user_message(turn)}]},
        {"configurable": {"thread_id": thread}},
    )
    if out["messages"][-1].content != _CURRENT[0]:
        raise RuntimeError(f"turn {turn}: unexpected reply")


def history_of(graph: Any, thread: str) -> list[tuple[str, str]]:
    """The stored history of a thread, read back through the checkpointer."""
    values = graph.get_state({"configurable": {"thread_id": thread}}).values
    return [("user" if isinstance(m, HumanMessage) else "model", m.content) for m in values["messages"]]


def conversation(graph: Any, turns: int, measure: Any) -> dict[str, Any]:
    """N timed turns on a new thread; storage measured at the checkpoints."""
    thread = f"bench-{uuid.uuid4().hex}"
    points = checkpoints(turns)
    bytes_at: dict[str, Any] = {}
    if 0 in points:
        bytes_at["0"] = measure()
    cpu_ms: list[float] = []
    wall_ms: list[float] = []
    gc.collect()
    for turn in range(1, turns + 1):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        run_turn(graph, thread, turn)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        cpu_ms.append(round(cpu * 1000, 4))
        wall_ms.append(round(wall * 1000, 4))
        if turn in points:
            bytes_at[str(turn)] = measure()
    history = history_of(graph, thread)
    if len(history) != 2 * turns:
        raise RuntimeError(f"stored history has {len(history)} messages, expected {2 * turns}")
    return {
        "cpu_ms": cpu_ms,
        "wall_ms": wall_ms,
        "bytes_at": bytes_at,
        "history_json_bytes": history_json_bytes(history),
    }


def warm_up(graph: Any, warmup: int) -> None:
    """A few turns on a thread of their own, not measured."""
    thread = f"warmup-{uuid.uuid4().hex}"
    for turn in range(1, warmup + 1):
        run_turn(graph, thread, turn)


def run_sqlite(turns: int, warmup: int, delta: bool, tmp: Path) -> dict[str, Any]:
    """SqliteSaver on a file (one connection, as `from_conn_string` opens it)."""
    warm_path, path = tmp / "warmup.sqlite", tmp / "checkpoints.sqlite"
    warm = sqlite3.connect(warm_path, check_same_thread=False)
    try:
        warm_up(build_graph(SqliteSaver(warm), delta), warmup)
    finally:
        warm.close()
    conn = sqlite3.connect(path, check_same_thread=False)
    try:
        saver = SqliteSaver(conn)
        saver.setup()
        return conversation(build_graph(saver, delta), turns, lambda: sqlite_bytes(path))
    finally:
        conn.close()


def _with_schema(url: str, schema: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={quote(f'-csearch_path={schema}')}"


def run_postgres(turns: int, warmup: int, delta: bool, pg_url: str) -> dict[str, Any]:
    """PostgresSaver (one autocommit connection, as `from_conn_string` opens it) in its own schema."""
    base = f"tkbench_lg_{os.getpid()}_{'d' if delta else 'p'}"
    warm_schema, schema = f"{base}_warm", base
    try:
        pg_create_schema(pg_url, warm_schema)
        with PostgresSaver.from_conn_string(_with_schema(pg_url, warm_schema)) as saver:
            saver.setup()
            warm_up(build_graph(saver, delta), warmup)
        pg_drop_schema(pg_url, warm_schema)
        pg_create_schema(pg_url, schema)
        with PostgresSaver.from_conn_string(_with_schema(pg_url, schema)) as saver:
            saver.setup()
            return conversation(build_graph(saver, delta), turns, lambda: pg_bytes(pg_url, schema))
    finally:
        for s in (warm_schema, schema):
            pg_drop_schema(pg_url, s)


def main() -> None:
    """Run the requested modes and print one JSON object."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if unknown := set(modes) - set(MODES):
        parser.error(f"unknown modes: {sorted(unknown)}")

    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    tmp = Path(tempfile.mkdtemp(prefix="langgraph-stores-"))
    try:
        for mode in modes:
            delta = mode.endswith("-delta")
            try:
                if mode.startswith("sqlite"):
                    sub = tmp / mode
                    sub.mkdir()
                    results[mode] = run_sqlite(args.turns, args.warmup, delta, sub)
                else:
                    results[mode] = run_postgres(args.turns, args.warmup, delta, args.pg_url)
            except Exception as exc:  # one failing mode must not lose the others
                errors[mode] = f"{type(exc).__name__}: {exc}"
                print(f"langgraph_stores.py: {mode} failed: {errors[mode]}", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        json.dumps(
            {
                "framework": "langgraph",
                "version": version("langgraph"),
                "versions": {
                    n: version(n)
                    for n in (
                        "langgraph",
                        "langgraph-checkpoint",
                        "langgraph-checkpoint-sqlite",
                        "langgraph-checkpoint-postgres",
                        "psycopg",
                    )
                },
                "python": sys.version.split()[0],
                "turns": args.turns,
                "results": results,
                "errors": errors,
                "notes": [
                    "LangGraph: StateGraph with one node returning the turn's reply as an AIMessage; "
                    "messages merged by add_messages; graph.invoke per turn with the thread id; default "
                    "durability (invoke returns after the checkpoint writes); sync API",
                    "LangGraph *-delta rows: messages as the beta DeltaChannel(_messages_delta_reducer) "
                    "(opt-in, on-disk format not yet stable)",
                ],
            }
        )
    )


if __name__ == "__main__":
    main()
