"""Durable session stores over one long conversation: turnkit's SQLite, Postgres and Redis stores
against LangGraph's SqliteSaver / PostgresSaver and the OpenAI Agents SDK's SQLiteSession.

Run (from the repo root; PostgreSQL on 127.0.0.1:5432, database `test`, trust auth, and Redis on
127.0.0.1:6379, with `psql` and `redis-cli` on PATH):

    .venv/bin/python benchmarks/stores.py [--turns 200] [--stores sqlite,postgres,redis]
                                          [--skip-peers] [--json]

Workload, the same for every framework (`peers/store_workload.py`): turn N sends a 200-character
user message and the model answers a 400-character reply, both fixed-seed pseudo-random text. Each
store gets 3 warm-up turns in a store of its own (own database file / schema / key prefix), then
one N-turn conversation timed turn by turn (wall with `time.perf_counter()`, CPU of this process
with `time.process_time()`; gc enabled, `gc.collect()` first). Storage is measured between turns,
after setup (N=0) and after turns 10/100/200, by one function per kind of database for every
framework:

- SQLite: `file` = page_count * page_size (the database file once its WAL is checkpointed) and
  `payload` = the bytes of every column of every row;
- PostgreSQL: `payload` = the bytes of every column of every live row of the store's tables
  (octet_length of text / bytea, pg_column_size of other types), and `relations` = pg_total_relation_size of those tables (8 KiB pages, indexes, TOAST, free
  space maps and dead rows: dominated by fixed per-table overhead while the data is small);
- Redis: `payload` = key names plus values under the store's prefix, and `memory` = the sum of
  `MEMORY USAGE`.

Targets use the first measure of each kind (SQLite `file`, Postgres `payload`, Redis `payload`);
the table shows both.

turnkit side (this process): `Turnkit(model="programmableModel")` with the programmable model's
handler returning the turn's precomputed reply (its request log dropped), `define_agent(store=...)`
and one `chat()`, `await chat.send(message)` per turn: the whole agent turn, store included. Stores
come from `store_from_url`: `sqlite:<temp dir>/sessions.db`, `<pg url>?schema=<own schema>`,
`<redis url>?prefix=<own prefix>`, each with its defaults, dropped afterwards.

Peers, each in its own pinned virtualenv under `benchmarks/.venvs/` (`peers/env.py`):
`peers/langgraph_stores.py` (SqliteSaver on a file and PostgresSaver in its own schema, a one-node
graph invoked per turn; also with the beta DeltaChannel) and `peers/openai_agents_sessions.py`
(`SQLiteSession` on a file: storage calls only, there is no model call in that SDK without a
provider; see its docstring).

Targets (exit status 1 when one is missed or a store or peer failed):
- turnkit SQLite median wall per turn at turns 191-200 <= 3 ms; Postgres <= 5 ms;
- turnkit bytes after 200 turns <= 1.5x the compact JSON of the history, per store;
- turnkit growth of bytes from turn 100 to 200 <= 2.1x, per store.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from turnkit import Turnkit
from turnkit.models import ModelContext
from turnkit.sessions import FileSessionStore, InMemorySessionStore, SessionStore
from turnkit.sessions._url import store_from_url
from turnkit.testing import define_programmable_model
from turnkit.types import Message, ModelRequest, ModelResponse, Part

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS))

from peers.env import PeerError, run_peer  # noqa: E402  (needs benchmarks/ on sys.path)
from peers.store_workload import (  # noqa: E402
    checkpoints,
    expected_history,
    history_json_bytes,
    pg_bytes,
    pg_create_schema,
    pg_drop_schema,
    redis_bytes,
    redis_delete_prefix,
    reply,
    sqlite_bytes,
    summary_windows,
    user_message,
)

PEERS = BENCHMARKS / "peers"
LANGGRAPH_PACKAGES = [
    "langgraph==1.2.22",
    "langgraph-checkpoint==4.3.2",
    "langgraph-checkpoint-sqlite==3.1.2",
    "langgraph-checkpoint-postgres==3.2.0",
    "psycopg[binary]==3.3.9",
]
AGENTS_PACKAGES = ["openai-agents==0.24.0"]

KINDS = ("sqlite", "postgres", "redis")
# The measure each kind's targets use, then the other one shown.
MEASURES = {
    "sqlite": ("file", "payload"),
    "postgres": ("payload", "relations"),
    "redis": ("payload", "memory"),
}

# The targets from the issue.
MAX_WALL_MS = {"sqlite": 3.0, "postgres": 5.0}
MAX_BYTES_OVER_HISTORY = 1.5
MAX_GROWTH = 2.1

# Display order, one row per (framework, mode): label, kind of database.
ROWS = (
    ("turnkit", "sqlite", "turnkit SqliteSessionStore", "sqlite"),
    ("turnkit", "sqlite-full", "turnkit SqliteSessionStore FULL", "sqlite"),
    ("langgraph", "sqlite", "LangGraph SqliteSaver", "sqlite"),
    ("langgraph", "sqlite-delta", "LangGraph SqliteSaver+Delta", "sqlite"),
    ("agents", "sqlite", "Agents SDK SQLiteSession", "sqlite"),
    ("turnkit", "postgres", "turnkit PostgresSessionStore", "postgres"),
    ("langgraph", "postgres", "LangGraph PostgresSaver", "postgres"),
    ("langgraph", "postgres-delta", "LangGraph PostgresSaver+Delta", "postgres"),
    ("turnkit", "redis", "turnkit RedisSessionStore", "redis"),
)


# --- turnkit side -----------------------------------------------------------------------------------


class _NullList(list[ModelRequest]):
    """A list that forgets what is appended to it (the programmable model's request log)."""

    def append(self, item: ModelRequest) -> None:
        """Drop `item`."""


class _Replies:
    """The programmable model's handler: this turn's precomputed reply, no inference."""

    def __init__(self, turns: int) -> None:
        self.responses = [
            ModelResponse(message=Message(role="model", content=[Part(text=reply(t))]), finish_reason="stop")
            for t in range(1, turns + 1)
        ]
        self.turn = 1

    def __call__(self, request: ModelRequest, ctx: ModelContext) -> ModelResponse:
        return self.responses[self.turn - 1]


class _Target:
    """Where one turnkit store lives, how to open it, measure it and clean it up."""

    def __init__(self, kind: str, tag: str, tmp: Path, args: argparse.Namespace) -> None:
        self.kind = kind
        self.args = args
        unique = f"{os.getpid()}_{tag}"
        self.path = tmp / f"{tag}.sqlite"
        self.dir = tmp / tag
        self.schema = f"tkbench_tk_{unique}"
        self.prefix = f"tkbench:{unique}:"

    def open(self) -> SessionStore:
        """The store (a stand-in file / in-memory store with --stand-in)."""
        if self.args.stand_in:
            return FileSessionStore(self.dir) if self.kind.startswith("sqlite") else InMemorySessionStore()
        if self.kind == "sqlite":
            return store_from_url(f"sqlite:{self.path}")
        if self.kind == "sqlite-full":
            from turnkit.sessions._sqlite import SqliteSessionStore

            return SqliteSessionStore(self.path, synchronous="FULL")
        if self.kind == "postgres":
            pg_create_schema(self.args.pg_url, self.schema)
            return store_from_url(_with_query(self.args.pg_url, "schema", self.schema))
        return store_from_url(_with_query(self.args.redis_url, "prefix", self.prefix))

    def measure(self, store: SessionStore) -> dict[str, int]:
        """Bytes stored, by the kind's shared measuring function."""
        if self.args.stand_in:
            return _stand_in_bytes(store, self.dir)
        if self.kind.startswith("sqlite"):
            return sqlite_bytes(self.path)
        if self.kind == "postgres":
            return pg_bytes(self.args.pg_url, self.schema)
        return redis_bytes(self.args.redis_url, self.prefix)

    def clean(self) -> None:
        """Drop what the store left behind (files go with the temp dir)."""
        if self.args.stand_in:
            return
        try:
            if self.kind == "postgres":
                pg_drop_schema(self.args.pg_url, self.schema)
            elif self.kind == "redis":
                redis_delete_prefix(self.args.redis_url, self.prefix)
        except (RuntimeError, OSError) as exc:  # do not hide the error that got us here
            print(f"stores.py: cleaning up {self.kind} failed: {exc}", file=sys.stderr)


def _with_query(url: str, key: str, value: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{key}={value}"


def _stand_in_bytes(store: SessionStore, directory: Path) -> dict[str, int]:
    if isinstance(store, FileSessionStore):
        size = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
        return {"file": size, "payload": size}
    chars = store.backend.stored_bytes() if isinstance(store, InMemorySessionStore) else 0
    return {"payload": chars, "relations": chars, "memory": chars}


async def _close(store: SessionStore) -> None:
    aclose = getattr(store, "aclose", None)
    if aclose is not None:
        await aclose()
        return
    close = getattr(store, "close", None)
    if close is not None:
        result = close()
        if asyncio.iscoroutine(result):
            await result


async def run_kind(
    ai: Turnkit, replies: _Replies, kind: str, turns: int, warmup: int, tmp: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Warm-up conversation in a store of its own, then the measured one."""
    warm = _Target(kind, f"{kind}_warm", tmp, args)
    try:
        store = warm.open()
        try:
            chat = ai.define_agent(name=f"warmup_{kind}", store=store).chat()
            for turn in range(1, warmup + 1):
                replies.turn = turn
                await chat.send(user_message(turn))
        finally:
            await _close(store)
    finally:
        warm.clean()

    target = _Target(kind, kind, tmp, args)
    try:
        store = target.open()
        try:
            agent = ai.define_agent(name=f"bench_{kind}", store=store)
            # Connect and create the schema before the first timed turn (a read of nothing).
            await store.get_snapshot(session_id="no-such-session")
            points = checkpoints(turns)
            bytes_at: dict[str, Any] = {"0": target.measure(store)} if 0 in points else {}
            chat = agent.chat()
            cpu_ms: list[float] = []
            wall_ms: list[float] = []
            gc.collect()
            for turn in range(1, turns + 1):
                replies.turn = turn
                message = user_message(turn)
                cpu0, wall0 = time.process_time(), time.perf_counter()
                response = await chat.send(message)
                wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
                cpu_ms.append(round(cpu * 1000, 4))
                wall_ms.append(round(wall * 1000, 4))
                if response.text != replies.responses[turn - 1].text:
                    raise RuntimeError(f"turn {turn}: unexpected reply ({response.error})")
                if turn in points:
                    bytes_at[str(turn)] = target.measure(store)
            # The store's own copy of the final history, read through a cold cache.
            if hasattr(store, "clear_cache"):
                store.clear_cache()
            snapshot = await store.get_snapshot(snapshot_id=chat.snapshot_id)
            messages = list(snapshot.state.messages or []) if snapshot and snapshot.state else []
        finally:
            await _close(store)
    finally:
        target.clean()
    pairs = [("user" if m.role == "user" else "model", m.text) for m in messages]
    if pairs != expected_history(turns):
        raise RuntimeError(f"the stored history differs from the conversation ({len(pairs)} messages)")
    wire = [m.model_dump(mode="json", by_alias=True, exclude_none=True) for m in messages]
    return {
        "cpu_ms": cpu_ms,
        "wall_ms": wall_ms,
        "bytes_at": bytes_at,
        "history_json_bytes": history_json_bytes(pairs),
        "wire_json_bytes": len(json.dumps(wire, separators=(",", ":"), ensure_ascii=False).encode()),
        "store": type(store).__name__,
    }


async def run_turnkit(kinds: list[str], turns: int, warmup: int, args: argparse.Namespace) -> dict[str, Any]:
    """Every requested store, one after another, in this process."""
    ai = Turnkit(model="programmableModel")
    pm = define_programmable_model(ai)
    replies = _Replies(max(turns, warmup))
    pm.handler = replies
    # Keeping every request alive is not the framework's cost (as in benchmarks/turns.py).
    pm.requests = _NullList()
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    tmp = Path(tempfile.mkdtemp(prefix="turnkit-stores-"))
    try:
        for kind in [m for k in kinds for m in ((k, "sqlite-full") if k == "sqlite" else (k,))]:
            try:
                results[kind] = await run_kind(ai, replies, kind, turns, warmup, tmp, args)
            except Exception as exc:  # report the others
                errors[kind] = " ".join(f"{type(exc).__name__}: {exc}".split())
                print(f"stores.py: turnkit {kind} failed: {errors[kind]}", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    notes = [
        "turnkit: the whole agent turn (Turnkit + programmable model + define_agent(store=...) + "
        "chat.send), each store with its defaults, opened with store_from_url",
        "turnkit's SQLite store defaults to WAL + synchronous=NORMAL (no fsync per commit: durable across "
        "process crashes, not power loss); LangGraph's SqliteSaver and the Agents SDK's SQLiteSession keep "
        "SQLite's FULL (fsync per commit); the FULL row is turnkit with that setting",
    ]
    if args.stand_in:
        notes.append("STAND-IN RUN: FileSessionStore / InMemorySessionStore in place of the real stores")
    return {
        "framework": "turnkit",
        "version": version("turnkit"),
        "python": sys.version.split()[0],
        "results": results,
        "errors": errors,
        "notes": notes,
    }


# --- peers ------------------------------------------------------------------------------------------


def run_peers(args: argparse.Namespace, kinds: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """LangGraph and the Agents SDK, each in its venv; failures are reported, not raised."""
    reports: dict[str, Any] = {}
    failures: dict[str, str] = {}
    common = ["--turns", str(args.turns), "--warmup", str(args.warmup)]
    lg_modes = [
        m for m in ("sqlite", "sqlite-delta", "postgres", "postgres-delta") if m.split("-")[0] in kinds
    ]
    jobs: list[tuple[str, Path, list[str], list[str]]] = []
    if lg_modes:
        lg_args = [*common, "--modes", ",".join(lg_modes), "--pg-url", args.pg_url]
        jobs.append(("langgraph", PEERS / "langgraph_stores.py", LANGGRAPH_PACKAGES, lg_args))
    if "sqlite" in kinds:
        jobs.append(("agents", PEERS / "openai_agents_sessions.py", AGENTS_PACKAGES, common))
    for name, script, packages, peer_args in jobs:
        try:
            reports[name] = run_peer(script, packages, peer_args, timeout=600)
        except (PeerError, OSError) as exc:
            failures[name] = f"{type(exc).__name__}: {exc}"
            print(f"stores.py: peer {name} failed: {failures[name]}", file=sys.stderr)
            continue
        for mode, err in reports[name].get("errors", {}).items():
            failures[f"{name} {mode}"] = err
    return reports, failures


# --- summary ----------------------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _target(name: str, value: float | None, limit: float, unit: str) -> dict[str, Any]:
    return {
        "target": name,
        "value": value,
        "limit": limit,
        "unit": unit,
        "met": value is not None and value <= limit,
    }


def summarize(turns: int, reports: dict[str, Any], skipped: set[str]) -> dict[str, Any]:
    """Per row: median wall/CPU per window, growth, bytes, ratios to turnkit; then the targets."""
    wins = summary_windows(turns)
    first, last = wins[0][0], wins[-1][0]
    points = checkpoints(turns)
    half = turns // 2
    rows: list[dict[str, Any]] = []
    for fw, mode, label, kind in ROWS:
        res = (reports.get(fw) or {}).get("results", {}).get(mode)
        if res is None:
            continue
        primary, secondary = MEASURES[kind]
        windows = {
            w: {"wall_ms": _median(res["wall_ms"][a:b]), "cpu_ms": _median(res["cpu_ms"][a:b])}
            for w, a, b in wins
        }
        bytes_at = res["bytes_at"]

        def at(n: int, measure: str, bytes_at: dict[str, Any] = bytes_at) -> int | None:
            cell = bytes_at.get(str(n))
            return None if cell is None else cell.get(measure)

        rows.append(
            {
                "framework": fw,
                "mode": mode,
                "label": label,
                "kind": kind,
                "windows": windows,
                "wall_growth": _ratio(windows[last]["wall_ms"], windows[first]["wall_ms"]),
                "measures": {
                    m: {
                        "bytes_at": {str(n): at(n, m) for n in points},
                        "over_history": _ratio(at(turns, m), res["history_json_bytes"]),
                        "growth": _ratio(at(turns, m), at(half, m)),
                    }
                    for m in (primary, secondary)
                },
                "primary": primary,
                "history_json_bytes": res["history_json_bytes"],
            }
        )
    by_key = {(r["framework"], r["mode"]): r for r in rows}
    for row in rows:
        base = by_key.get(("turnkit", row["kind"]))
        if base is None or row is base:
            continue
        row["over_turnkit"] = {
            "wall_ms": {
                w: _ratio(row["windows"][w]["wall_ms"], base["windows"][w]["wall_ms"]) for w, _, _ in wins
            },
            "bytes": {
                m: _ratio(
                    row["measures"][m]["bytes_at"][str(turns)], base["measures"][m]["bytes_at"][str(turns)]
                )
                for m in row["measures"]
            },
        }

    targets: list[dict[str, Any]] = []
    tk_errors = (reports.get("turnkit") or {}).get("errors", {})
    for kind in KINDS:
        if kind in skipped:
            continue
        start = len(targets)
        tk_row = by_key.get(("turnkit", kind))
        name = next(r[2] for r in ROWS if r[:2] == ("turnkit", kind))
        if kind in MAX_WALL_MS:
            limit = MAX_WALL_MS[kind]
            value = None if tk_row is None else tk_row["windows"][last]["wall_ms"]
            targets.append(
                _target(f"{name}: median wall/turn at turns {last} <= {limit:g} ms", value, limit, "ms")
            )
        primary = MEASURES[kind][0]
        m = None if tk_row is None else tk_row["measures"][primary]
        targets.append(
            _target(
                f"{name}: {primary} bytes after {turns} turns <= {MAX_BYTES_OVER_HISTORY:g}x history JSON",
                None if m is None else m["over_history"],
                MAX_BYTES_OVER_HISTORY,
                "x",
            )
        )
        targets.append(
            _target(
                f"{name}: {primary} bytes growth turns {half} -> {turns} <= {MAX_GROWTH:g}x",
                None if m is None else m["growth"],
                MAX_GROWTH,
                "x",
            )
        )
        if tk_row is None and kind in tk_errors:
            for t in targets[start:]:
                t["error"] = tk_errors[kind]
    return {"windows": [w for w, _, _ in wins], "checkpoints": points, "rows": rows, "targets": targets}


# --- report -----------------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str = ".3f", suffix: str = "") -> str:
    return "n/a" if value is None else format(value, spec) + suffix


def _kb(value: int | None) -> str:
    return "-" if value is None else f"{value / 1024:.1f}"


def print_report(
    turns: int, reports: dict[str, Any], summary: dict[str, Any], failures: dict[str, str]
) -> None:
    """The human-readable tables."""
    tk = reports["turnkit"]
    head = [f"turnkit {tk['version']}"]
    if "langgraph" in reports:
        v = reports["langgraph"]["versions"]
        head.append(
            f"LangGraph {v['langgraph']} (checkpoint {v['langgraph-checkpoint']}, -sqlite "
            f"{v['langgraph-checkpoint-sqlite']}, -postgres {v['langgraph-checkpoint-postgres']}, "
            f"psycopg {v['psycopg']})"
        )
    if "agents" in reports:
        head.append(f"OpenAI Agents SDK {reports['agents']['version']}")
    print(
        f"stores.py: one {turns}-turn conversation per store; 200-char user message, "
        f"400-char reply; Python {tk['python']}"
    )
    print("  " + "; ".join(head))

    wins = summary["windows"]
    first, last = wins[0], wins[-1]
    print("\nmedian per turn (ms): wall [CPU of the client process]; vs tk = wall / turnkit's same store")
    print(
        f"  {'store':<33}{'turns ' + first:>20}{'turns ' + last:>20}{'growth':>8}"
        f"{'vs tk ' + first:>14}{'vs tk ' + last:>16}"
    )
    for row in summary["rows"]:
        cells = "".join(
            f"{row['windows'][w]['wall_ms']:.3f} [{row['windows'][w]['cpu_ms']:.2f}]".rjust(20) for w in wins
        )
        ratios = row.get("over_turnkit", {}).get("wall_ms", {})
        print(
            f"  {row['label']:<33}{cells}{_fmt(row['wall_growth'], '.2f', 'x'):>8}"
            f"{_fmt(ratios.get(first), '.2f', 'x') if ratios else '':>14}"
            f"{_fmt(ratios.get(last), '.2f', 'x') if ratios else '':>16}"
        )

    points = summary["checkpoints"]
    hist = {r["history_json_bytes"] for r in summary["rows"]}
    print(
        f"\nbytes stored after turn N (KiB); x hist = bytes after {turns} / history JSON "
        f"({', '.join(str(h) for h in sorted(hist))} B); growth = N={turns} / N={turns // 2}; "
        f"vs tk = bytes / turnkit's same store"
    )
    print(
        f"  {'store':<33}{'measure':<11}"
        + "".join(f"{'N=' + str(n):>10}" for n in points)
        + f"{'x hist':>9}{'growth':>8}{'vs tk':>9}"
    )
    for row in summary["rows"]:
        for i, (measure, m) in enumerate(row["measures"].items()):
            vs = row.get("over_turnkit", {}).get("bytes", {}).get(measure)
            print(
                f"  {row['label'] if i == 0 else '':<33}{measure + ('*' if measure == row['primary'] else ''):<11}"
                + "".join(f"{_kb(m['bytes_at'][str(n)]):>10}" for n in points)
                + f"{_fmt(m['over_history'], '.2f', 'x'):>9}{_fmt(m['growth'], '.2f', 'x'):>8}"
                + f"{_fmt(vs, '.1f', 'x') if 'over_turnkit' in row else '':>9}"
            )
    print("  (* = the measure the targets use for that kind of database)")

    notes = [
        *tk["notes"],
        "SQLite file = page_count * page_size (database after a WAL checkpoint), payload = bytes of every "
        "column of every row; Postgres payload = bytes of every column of every live row (octet_length of text/bytea, "
        "pg_column_size of other types), relations = pg_total_relation_size (N=0 is the empty schema's fixed overhead); "
        "Redis payload = key names + values under the prefix, memory = MEMORY USAGE; the same function "
        "measures every framework's store of one kind",
        "history JSON = compact JSON of the final history in turnkit's wire shape "
        '({"role":..,"content":[{"text":..}]}), read back from each store',
        "CPU is this client process only (database servers' work is not in it); wall is what the targets use",
    ]
    for name in ("langgraph", "agents"):
        notes += (reports.get(name) or {}).get("notes", [])
    print("\nnotes:")
    for note in notes:
        print(f"  - {note}")
    if failures:
        print("\nfailures:")
        for name, err in failures.items():
            print(f"  - {name}: {err}")

    print("\ntargets:")
    for t in summary["targets"]:
        value = _fmt(t["value"], ".3f", t["unit"] if t["unit"] == "x" else " " + t["unit"])
        extra = f" ({t['error']})" if "error" in t else ""
        print(f"  {'PASS' if t['met'] else 'MISS'}  {t['target']}: {value}{extra}")


def main() -> None:
    """Parse arguments, run turnkit here and the peers in their venvs, print the report."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--turns", type=int, default=200, help="turns per conversation (default 200)")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up turns per store (default 3)")
    parser.add_argument(
        "--stores",
        default=",".join(KINDS),
        help="comma-separated kinds to run: sqlite,postgres,redis (default all)",
    )
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--skip-peers", action="store_true", help="run turnkit only")
    parser.add_argument(
        "--stand-in",
        action="store_true",
        help="development only: FileSessionStore for sqlite, InMemorySessionStore for the others",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    args = parser.parse_args()
    kinds = [k for k in args.stores.split(",") if k]
    if not kinds or set(kinds) - set(KINDS):
        parser.error(f"--stores takes a comma-separated subset of {','.join(KINDS)}")
    if args.turns < 1:
        parser.error("--turns must be at least 1")

    started = time.perf_counter()
    reports: dict[str, Any] = {"turnkit": asyncio.run(run_turnkit(kinds, args.turns, args.warmup, args))}
    failures = {f"turnkit {k}": e for k, e in reports["turnkit"]["errors"].items()}
    if not args.skip_peers:
        peer_reports, peer_failures = run_peers(args, kinds)
        reports |= peer_reports
        failures |= peer_failures
    summary = summarize(args.turns, reports, set(KINDS) - set(kinds))
    elapsed = time.perf_counter() - started
    if args.json:
        print(
            json.dumps(
                {
                    "turns": args.turns,
                    "reports": reports,
                    "failures": failures,
                    "elapsed_s": elapsed,
                    **summary,
                }
            )
        )
    else:
        print_report(args.turns, reports, summary, failures)
        print(f"\n(run time {elapsed:.0f} s)")
    missed = not all(t["met"] for t in summary["targets"])
    sys.exit(1 if missed or failures else 0)


if __name__ == "__main__":
    main()
