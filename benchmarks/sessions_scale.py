"""Many sessions: does a store slow down as it holds more of them?

Run (from the repo root; PostgreSQL on 127.0.0.1:5432 db `test` and Redis on 127.0.0.1:6379 for
those stores, `psql` and `redis-cli` on PATH for the clean-up):

    .venv/bin/python benchmarks/sessions_scale.py [--sizes 10000,100000] [--samples 300]
                                                  [--stores file,sqlite,postgres,redis] [--quick] [--json]

For each durable store (in a place of its own, dropped afterwards), sessions are loaded up to each
size through the store's own API (`save_snapshot`, one completed snapshot per session holding a
two-message chat, `--concurrency` saves in flight; the file store skips fsync while loading only),
then (PostgreSQL's tables vacuumed and analyzed, as after any bulk load) a new store instance
(cold cache, every default) measures, each operation timed alone on
`--samples` sessions picked at random:

- lookup: `get_snapshot(session_id=...)`, the latest snapshot of a session;
- continue: one agent turn continuing the session (`agent.chat(session_id=...).send(...)`, the
  programmable model answering at once): lease, load, save, as a server does per request;
- list: `list_sessions(limit=50, cursor=...)` from a random place in the tenant's sessions.

Targets (PASS/MISS; exit status 1 on a MISS): lookup and continue p50 at the largest size within
1.5x of the smallest size, per store. p99 and its ratio are shown too (noisy on a shared machine).
`--quick` runs sizes 1,000 and 10,000 with 100 samples.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale_common import (
    DURABLE,
    PG_URL,
    REDIS_URL,
    benchmark_app,
    close_store,
    ms,
    percentile,
    place,
    print_verdicts,
    ratio,
    verdict,
)

from turnkit.sessions import SessionStore
from turnkit.sessions._listing import encode_cursor
from turnkit.types import Message, Part, SessionSnapshot, SessionState

LIST_LIMIT = 50
WARM_UP = 20  # operations of each kind run untimed first, on sessions of their own
MAX_RATIO = 1.5


def session_snapshot(session_id: str, n: int) -> SessionSnapshot:
    """The one snapshot a loaded session has: a completed two-message chat."""
    messages = [
        Message(role="user", content=[Part(text=f"hello from session {n}, what is the weather like today?")]),
        Message(role="model", content=[Part(text="Sunny, 21 degrees, a light breeze from the west.")]),
    ]
    return SessionSnapshot(
        snapshot_id=str(uuid.UUID(int=random.getrandbits(128))),
        session_id=session_id,
        status="completed",
        created_at=datetime.now(UTC).isoformat(),
        state=SessionState(session_id=session_id, messages=messages),
    )


async def load(store: SessionStore, ids: list[str], start: int, concurrency: int) -> None:
    """Save one snapshot for each of ids[start:], `concurrency` at a time."""
    gate = asyncio.Semaphore(concurrency)

    async def one(n: int) -> None:
        async with gate:
            snap = session_snapshot(ids[n], n)

            def write(_old: SessionSnapshot | None) -> SessionSnapshot:
                return snap

            await store.save_snapshot(snap.snapshot_id, write)

    for first in range(start, len(ids), 5000):  # in slices: a bounded number of pending tasks
        await asyncio.gather(*(one(n) for n in range(first, min(first + 5000, len(ids)))))


async def timed(samples: list[str], op: Any) -> list[float]:
    """Wall seconds of `op(session_id)` for each sample, one at a time."""
    out = []
    for sid in samples:
        t0 = time.perf_counter()
        await op(sid)
        out.append(time.perf_counter() - t0)
    return out


async def measure(kind: str, url_place: Any, ids: list[str], size: int, samples: int) -> dict[str, Any]:
    """Lookup, continue and list timings on a fresh store instance holding `size` sessions."""
    store = url_place.open()
    try:
        ai = benchmark_app()
        agent = ai.define_agent(name=f"scale_{kind}_{size}", store=store)
        await store.get_snapshot(session_id="warm-up: no such session")  # connect, open, index
        await store.list_sessions(limit=1)
        rng = random.Random(size)
        picks = rng.sample(range(size), min(samples * 3 + WARM_UP, size))
        warm, picks = picks[:WARM_UP], picks[WARM_UP:]
        lookups, continues, lists = picks[:samples], picks[samples : 2 * samples], picks[2 * samples :]

        async def lookup(sid: str) -> None:
            assert await store.get_snapshot(session_id=sid) is not None, sid

        async def go_on(sid: str) -> None:
            reply = await agent.chat(session_id=sid).send("and tomorrow?")
            assert reply.text, sid

        async def page(sid: str) -> None:
            got = await store.list_sessions(limit=LIST_LIMIT, cursor=encode_cursor(sid))
            assert got.sessions or got.next_cursor is None, sid

        result: dict[str, Any] = {"store": kind, "sessions": size}
        for op in (lookup, go_on, page):  # connections, caches, code paths warm before timing
            await timed([ids[n] for n in warm], op)
        gc.collect()
        for name, op, chosen in (
            ("lookup", lookup, lookups),
            ("continue", go_on, continues),
            ("list", page, lists),
        ):
            walls = await timed([ids[n] for n in chosen or lookups], op)
            result[f"{name}_ms_p50"] = ms(percentile(walls, 50))
            result[f"{name}_ms_p99"] = ms(percentile(walls, 99))
        return result
    finally:
        await close_store(store)


async def run_store(kind: str, sizes: list[int], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Load and measure one store at every size (each size adds sessions to the previous ones)."""
    rng = random.Random(7)
    ids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(max(sizes))]
    rows = []
    with place(kind, args.pg_url, args.redis_url) as where:
        loaded = 0
        for size in sizes:
            store = where.open(bulk=True)
            try:
                if loaded == 0:
                    await store.list_sessions(limit=1)  # as an app's first use: the store starts indexed
                t0 = time.perf_counter()
                await load(store, ids[:size], loaded, args.concurrency)
                load_s = time.perf_counter() - t0
            finally:
                await close_store(store)
            print(
                f"sessions_scale.py: {kind}: {size} sessions loaded ({size - loaded} in {load_s:.1f} s)",
                file=sys.stderr,
            )
            loaded = size
            where.settle()
            row = await measure(kind, where, ids, size, args.samples)
            row["load_s"] = round(load_s, 1)
            rows.append(row)
    return rows


def main() -> None:
    """Parse arguments, run every store, print the table and the verdicts."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", default="10000,100000", help="session counts, ascending (default 10000,100000)"
    )
    parser.add_argument(
        "--samples", type=int, default=300, help="operations timed per kind and size (default 300)"
    )
    parser.add_argument(
        "--stores", default=",".join(DURABLE), help=f"store kinds (default {','.join(DURABLE)})"
    )
    parser.add_argument(
        "--concurrency", type=int, default=64, help="saves in flight while loading (default 64)"
    )
    parser.add_argument("--quick", action="store_true", help="sizes 1000,10000 and 100 samples: a trial run")
    parser.add_argument("--pg-url", default=PG_URL)
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.samples = "1000,10000", 100
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if len(sizes) < 2 or sizes != sorted(sizes) or sizes[0] < 1 or args.samples < 1:
        parser.error("--sizes needs two or more ascending positive counts, --samples a positive count")
    kinds = [k for k in args.stores.split(",") if k]

    rows: list[dict[str, Any]] = []
    failed: dict[str, str] = {}
    for kind in kinds:
        try:
            rows += asyncio.run(run_store(kind, sizes, args))
        except Exception as exc:  # report the other stores anyway
            failed[kind] = f"{type(exc).__name__}: {exc}"[:300]
            print(f"sessions_scale.py: {kind} failed: {failed[kind]}", file=sys.stderr)

    verdicts = []
    for kind in kinds:
        mine = {r["sessions"]: r for r in rows if r["store"] == kind}
        small, large = mine.get(sizes[0], {}), mine.get(sizes[-1], {})
        for op in ("lookup", "continue"):
            for q in ("p50", "p99"):
                key = f"{op}_ms_{q}"
                value = ratio(large.get(key), small.get(key))
                if large:
                    large[f"{op}_{q}_ratio"] = value
                if q == "p50":
                    verdicts.append(
                        verdict(f"{kind} {op} p50 at {sizes[-1]} vs {sizes[0]} sessions", value, MAX_RATIO)
                    )
    report = {"sizes": sizes, "samples": args.samples, "rows": rows, "failed": failed, "targets": verdicts}
    if args.json:
        print(json.dumps(report))
    else:
        print_table(report)
    sys.exit(1 if failed or not all(v["pass"] for v in verdicts) else 0)


def print_table(report: dict[str, Any]) -> None:
    """The human-readable table and verdicts."""
    print(
        f"Many sessions: {report['samples']} samples per operation, list pages of {LIST_LIMIT}; "
        "milliseconds of wall time per operation (p50 / p99); ratio = largest size / smallest"
    )
    cols = [
        ("store", "store", 8),
        ("sessions", "sessions", 8),
        ("load s", "load_s", 7),
        ("lookup p50", "lookup_ms_p50", 10),
        ("p99", "lookup_ms_p99", 7),
        ("ratio p50/p99", None, 13),
        ("continue p50", "continue_ms_p50", 12),
        ("p99", "continue_ms_p99", 7),
        ("ratio p50/p99", None, 13),
        ("list p50", "list_ms_p50", 8),
        ("p99", "list_ms_p99", 7),
    ]
    print()
    print("  ".join(f"{t:>{w}}" for t, _, w in cols))
    for row in report["rows"]:
        cells = []
        ratio_cols = iter(("lookup", "continue"))
        for _, key, width in cols:
            if key is None:
                op = next(ratio_cols)
                p50, p99 = row.get(f"{op}_p50_ratio"), row.get(f"{op}_p99_ratio")
                text = "" if p50 is None and p99 is None else f"{p50}x/{p99}x"
            else:
                value = row.get(key)
                text = "-" if value is None else str(value)
            cells.append(f"{text:>{width}}")
        print("  ".join(cells))
    for kind, why in report["failed"].items():
        print(f"{kind} FAILED: {why}")
    print()
    print_verdicts(report["targets"])


if __name__ == "__main__":
    main()
