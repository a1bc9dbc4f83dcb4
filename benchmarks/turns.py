"""Per-turn cost and storage growth over one long conversation: turnkit vs Genkit 0.12.

Run (from the repo root):

    .venv/bin/python benchmarks/turns.py [--turns 200] [--skip-peer] [--json]

Workload, identical on both sides (it mirrors `benchmarks/peers/genkit_turns.py`): a model that
always returns the fixed short reply "ok, noted." (no inference), an agent over it with no store
(client-managed state), `InMemorySessionStore()` and `FileSessionStore(<temp dir>)` (each store's
defaults), 3 warm-up turns on a separate agent and store, `gc.collect()`, then one conversation of
N turns, each `await chat.send("message N")`, timing every `send` with `time.process_time()` (CPU
of all threads) and `time.perf_counter()` (wall). gc stays enabled on both sides. For the file
store it also records the bytes under the store directory after turns 10/50/100/200 and the size
of the final stored history as compact camelCase JSON without nulls.

The Genkit half runs `benchmarks/peers/genkit_turns.py` in its own virtualenv with
`genkit==0.12.0` (created under `benchmarks/.venvs/` on first use, never in turnkit's venv).

It prints: the per-turn CPU and wall (ms) of turns 1-10 and N-9..N per store, for both
frameworks; a summary of the median CPU and wall per window with the Genkit/turnkit ratio and each
framework's growth (last window / first window); bytes on disk at the checkpoints and their
ratio to the history JSON; then one PASS/MISS line per target:

- turnkit median CPU per turn in the last window <= 1 ms, per store;
- turnkit median CPU per turn in the last window <= 1.5x its first window, per store;
- turnkit file store bytes after the last turn <= 2x the JSON size of the final history.

`--skip-peer` runs turnkit only; `--json` prints one JSON object instead of the tables. The exit
status is 1 when a target is missed or the peer failed, else 0.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
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
from turnkit.testing import define_programmable_model
from turnkit.types import Message, ModelRequest, ModelResponse, Part

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS))

from peers.env import PeerError, run_peer  # noqa: E402  (needs benchmarks/ on sys.path)

PEER_SCRIPT = BENCHMARKS / "peers" / "genkit_turns.py"
PEER_PACKAGES = ["genkit==0.12.0"]
MODES = ("none", "memory", "file")
CHECKPOINTS = (10, 50, 100, 200)
WINDOW = 10
REPLY_TEXT = "ok, noted."
FIXED_RESPONSE = ModelResponse(
    message=Message(role="model", content=[Part(text=REPLY_TEXT)]), finish_reason="stop"
)

# The targets from the issue.
MAX_CPU_MS = 1.0
MAX_GROWTH = 1.5
MAX_DISK_RATIO = 2.0


def fixed_reply(request: ModelRequest, ctx: ModelContext) -> ModelResponse:
    """The programmable model's handler: always the same short reply, no inference."""
    return FIXED_RESPONSE


def make_store(mode: str, directory: Path) -> SessionStore | None:
    """The session store for a mode (None for client-managed state)."""
    if mode == "memory":
        return InMemorySessionStore()
    if mode == "file":
        return FileSessionStore(directory)
    return None


def dir_bytes(directory: Path) -> int:
    """Total size of the files under `directory` (what the peer measures too)."""
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def history_json_bytes(messages: list[Message]) -> int:
    """Size of the history as compact wire JSON (camelCase, no nulls), UTF-8, as the peer measures it."""
    wire = [m.model_dump(mode="json", by_alias=True, exclude_none=True) for m in messages]
    return len(json.dumps(wire, separators=(",", ":"), ensure_ascii=False).encode())


# --- turnkit side -----------------------------------------------------------------------------------


class _NullList(list[ModelRequest]):
    """A list that forgets what is appended to it (the programmable model's request log)."""

    def append(self, item: ModelRequest) -> None:
        """Drop `item`."""


async def run_mode(
    ai: Turnkit, mode: str, turns: int, warmup: int, tmp: Path, label: str = ""
) -> dict[str, Any]:
    """Run a warm-up chat, then one measured `turns`-turn conversation; return its numbers."""
    # The warm-up uses its own agent and store so it leaves nothing in the measured store dir.
    warm_agent = ai.define_agent(name=f"warmup_{mode}{label}", store=make_store(mode, tmp / f"warmup-{mode}"))
    warm_chat = warm_agent.chat()
    for i in range(warmup):
        await warm_chat.send(f"warm-up {i}")

    store_dir = tmp / mode
    agent = ai.define_agent(name=f"bench_{mode}{label}", store=make_store(mode, store_dir))
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
            raise RuntimeError(f"{mode} turn {turn}: unexpected reply {response.text!r} ({response.error})")
        if mode == "file" and (turn in CHECKPOINTS or turn == turns):
            bytes_at[str(turn)] = dir_bytes(store_dir)
            files_at[str(turn)] = sum(1 for p in store_dir.rglob("*") if p.is_file())

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


async def run_traced(ai: Turnkit, turns: int, warmup: int, tmp: Path) -> dict[str, Any] | None:
    """The memory-store conversation again with the OpenTelemetry SDK recording every span into an
    in-memory exporter: what tracing adds per turn. None without the SDK (turnkit[otel])."""
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    except ImportError:
        return None
    from turnkit._tracing import configure, reset_configuration

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    configure(tracer_provider=provider)
    try:
        result = await run_mode(ai, "memory", turns, warmup, tmp / "traced", label="_traced")
    finally:
        reset_configuration()
    result["spans_per_turn"] = len(exporter.get_finished_spans()) / (turns + warmup)
    return result


def print_tracing(tk: dict[str, Any], turns: int) -> None:
    """What tracing with the SDK and an in-memory exporter adds per turn (memory store, last window)."""
    traced = tk.get("tracing")
    if traced is None:
        print("\ntracing: the OpenTelemetry SDK is not installed (turnkit[otel]); not measured")
        return
    label, a, b = windows(turns)[-1]
    plain = median(tk["results"]["memory"]["cpu_ms"][a:b])
    with_sdk = median(traced["cpu_ms"][a:b])
    print(
        f"\ntracing (memory store, turns {label}, OpenTelemetry SDK + in-memory exporter, "
        f"{traced['spans_per_turn']:.0f} spans/turn): CPU/turn {with_sdk:.3f} ms vs {plain:.3f} ms "
        f"untraced: +{with_sdk - plain:.3f} ms per turn"
    )


async def run_turnkit(turns: int, warmup: int) -> dict[str, Any]:
    """Every store mode in this process, like the peer does."""
    ai = Turnkit(model="programmableModel")
    pm = define_programmable_model(ai)
    pm.handler = fixed_reply
    # The programmable model records every request; drop them so it stays as cheap as the peer's
    # bare model function (keeping 200 requests alive is not the framework's cost).
    pm.requests = _NullList()
    results: dict[str, Any] = {}
    tmp = Path(tempfile.mkdtemp(prefix="turnkit-turns-"))
    try:
        for mode in MODES:
            results[mode] = await run_mode(ai, mode, turns, warmup, tmp)
        traced = await run_traced(ai, turns, warmup, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "framework": "turnkit",
        "version": version("turnkit"),
        "python": sys.version.split()[0],
        "turns": turns,
        "results": results,
        "tracing": traced,
        "notes": [
            "none = client-managed state (define_agent without a store): the chat sends the whole "
            "history with every turn",
            "file = FileSessionStore defaults (fsync=True): message log appended per turn, one "
            "delta record per snapshot",
        ],
    }


# --- report -----------------------------------------------------------------------------------------


def windows(turns: int) -> list[tuple[str, int, int]]:
    """The first and last WINDOW turns as (label, start index, end index)."""
    first = (f"1-{min(WINDOW, turns)}", 0, min(WINDOW, turns))
    if turns <= WINDOW:
        return [first]
    lo = max(turns - WINDOW, WINDOW)
    return [first, (f"{lo + 1}-{turns}", lo, turns)]


def median(values: list[float]) -> float:
    """The median of a non-empty list."""
    return float(statistics.median(values))


def summarize(turns: int, tk: dict[str, Any], gk: dict[str, Any] | None) -> dict[str, Any]:
    """Medians per window, ratios, growth, storage, and the target verdicts."""
    wins = windows(turns)
    stores: dict[str, Any] = {}
    for mode in MODES:
        row: dict[str, Any] = {}
        for fw, report in (("turnkit", tk), ("genkit", gk)):
            if report is None or mode not in report["results"]:
                continue
            res = report["results"][mode]
            per = {
                label: {"cpu_ms": median(res["cpu_ms"][a:b]), "wall_ms": median(res["wall_ms"][a:b])}
                for label, a, b in wins
            }
            first, last = wins[0][0], wins[-1][0]
            row[fw] = {
                "windows": per,
                "cpu_growth": _ratio(per[last]["cpu_ms"], per[first]["cpu_ms"]),
                "wall_growth": _ratio(per[last]["wall_ms"], per[first]["wall_ms"]),
            }
        if "turnkit" in row and "genkit" in row:
            row["genkit_over_turnkit"] = {
                label: {
                    metric: _ratio(
                        row["genkit"]["windows"][label][metric], row["turnkit"]["windows"][label][metric]
                    )
                    for metric in ("cpu_ms", "wall_ms")
                }
                for label, _, _ in wins
            }
        stores[mode] = row

    storage: dict[str, Any] = {}
    for fw, report in (("turnkit", tk), ("genkit", gk)):
        if report is None or "file" not in report["results"]:
            continue
        res = report["results"]["file"]
        # Only the size after the last turn compares with the final history (None if unrecorded).
        last_bytes = res["bytes_at"].get(str(turns))
        storage[fw] = {
            "bytes_at": res["bytes_at"],
            "files_at": res.get("files_at", {}),
            "history_json_bytes": res["history_json_bytes"],
            "bytes_over_history": _ratio(last_bytes, res["history_json_bytes"]),
        }

    last = wins[-1][0]
    targets: list[dict[str, Any]] = []
    for mode in MODES:
        t = stores[mode]["turnkit"]
        cpu_last = t["windows"][last]["cpu_ms"]
        targets.append(
            _target(
                f"turnkit {mode}: CPU/turn at turns {last} <= {MAX_CPU_MS:g} ms", cpu_last, MAX_CPU_MS, "ms"
            )
        )
    for mode in MODES:
        t = stores[mode]["turnkit"]
        targets.append(
            _target(
                f"turnkit {mode}: CPU/turn at turns {last} <= {MAX_GROWTH:g}x turns {wins[0][0]}",
                t["cpu_growth"],
                MAX_GROWTH,
                "x",
            )
        )
    targets.append(
        _target(
            f"turnkit file store after {turns} turns <= {MAX_DISK_RATIO:g}x history JSON",
            storage["turnkit"]["bytes_over_history"],
            MAX_DISK_RATIO,
            "x",
        )
    )
    return {"windows": [w[0] for w in wins], "stores": stores, "storage": storage, "targets": targets}


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _target(name: str, value: float | None, limit: float, unit: str) -> dict[str, Any]:
    ok = value is not None and value <= limit
    return {"target": name, "value": value, "limit": limit, "unit": unit, "met": ok}


def _fmt(value: float | None, spec: str = ".3f", suffix: str = "") -> str:
    return "n/a" if value is None else format(value, spec) + suffix


def print_report(turns: int, tk: dict[str, Any], gk: dict[str, Any] | None, summary: dict[str, Any]) -> None:
    """The human-readable tables."""
    print(f"turns.py: one {turns}-turn conversation, fixed short reply, per store (times in ms)")
    print(f"  turnkit {tk['version']} (Python {tk['python']})", end="")
    print(f"  vs  Genkit {gk['version']} (Python {gk['python']})" if gk else "  (peer skipped)")

    wins = windows(turns)
    for fw, report in (("turnkit", tk), ("Genkit", gk)):
        if report is None:
            continue
        print(f"\n{fw}: per-turn CPU / wall (ms)")
        print("  turn   " + "".join(f"{mode + ' cpu':>12}{mode + ' wall':>12}" for mode in MODES))
        for _, a, b in wins:
            for i in range(a, b):
                cells = "".join(
                    f"{report['results'][m]['cpu_ms'][i]:12.3f}{report['results'][m]['wall_ms'][i]:12.3f}"
                    for m in MODES
                )
                print(f"  {i + 1:>4}   {cells}")

    print("\nmedian per turn (ms); ratio = Genkit / turnkit")
    print(
        f"  {'store':<7}{'turns':<9}{'turnkit cpu':>12}{'wall':>9}{'Genkit cpu':>12}{'wall':>9}"
        f"{'cpu ratio':>11}{'wall ratio':>12}"
    )
    for mode in MODES:
        row = summary["stores"][mode]
        for label in summary["windows"]:
            t = row["turnkit"]["windows"][label]
            g = row["genkit"]["windows"][label] if "genkit" in row else {"cpu_ms": None, "wall_ms": None}
            r = row.get("genkit_over_turnkit", {}).get(label, {"cpu_ms": None, "wall_ms": None})
            print(
                f"  {mode:<7}{label:<9}{t['cpu_ms']:12.3f}{t['wall_ms']:9.3f}"
                f"{_fmt(g['cpu_ms']):>12}{_fmt(g['wall_ms']):>9}"
                f"{_fmt(r['cpu_ms'], '.1f', 'x'):>11}{_fmt(r['wall_ms'], '.1f', 'x'):>12}"
            )
    first, last = summary["windows"][0], summary["windows"][-1]
    print(f"\ngrowth of the median per turn, turns {last} / turns {first}")
    print(f"  {'store':<7}{'turnkit cpu':>12}{'wall':>9}{'Genkit cpu':>12}{'wall':>9}")
    for mode in MODES:
        row = summary["stores"][mode]
        g = row.get("genkit", {"cpu_growth": None, "wall_growth": None})
        print(
            f"  {mode:<7}{_fmt(row['turnkit']['cpu_growth'], '.2f', 'x'):>12}"
            f"{_fmt(row['turnkit']['wall_growth'], '.2f', 'x'):>9}"
            f"{_fmt(g['cpu_growth'], '.2f', 'x'):>12}{_fmt(g['wall_growth'], '.2f', 'x'):>9}"
        )

    storage = summary["storage"]
    points = sorted({int(k) for s in storage.values() for k in s["bytes_at"]})
    print("\nfile store: bytes on disk after turn N (files); history = compact JSON of the final history")
    print(
        "  "
        + f"{'':<9}"
        + "".join(f"{'N=' + str(n):>18}" for n in points)
        + f"{'history':>10}{'disk/hist':>11}"
    )
    for fw, label in (("turnkit", "turnkit"), ("genkit", "Genkit")):
        if fw not in storage:
            continue
        s = storage[fw]
        cells = "".join(
            f"{_bytes_cell(s['bytes_at'].get(str(n)), s['files_at'].get(str(n))):>18}" for n in points
        )
        print(
            f"  {label:<9}{cells}{s['history_json_bytes']:>10}{_fmt(s['bytes_over_history'], '.2f', 'x'):>11}"
        )
    if "turnkit" in storage and "genkit" in storage:
        g_at, t_at = storage["genkit"]["bytes_at"], storage["turnkit"]["bytes_at"]
        cells = "".join(f"{_fmt(_ratio(g_at.get(str(n)), t_at.get(str(n))), '.1f', 'x'):>18}" for n in points)
        print(f"  {'G/t':<9}{cells}")

    notes = [*tk["notes"], *(f"Genkit: {n}" for n in (gk or {}).get("notes", []))]
    print("\nnotes:")
    for note in notes:
        print(f"  - {note}")

    print("\ntargets:")
    for t in summary["targets"]:
        value = _fmt(t["value"], ".3f", t["unit"] if t["unit"] == "x" else " " + t["unit"])
        print(f"  {'PASS' if t['met'] else 'MISS'}  {t['target']}: {value}")


def _bytes_cell(size: int | None, files: int | None) -> str:
    if size is None:
        return "-"
    return f"{size} ({files})" if files is not None else str(size)


def main() -> None:
    """Parse arguments, run turnkit here and Genkit in its own venv, print the report."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--turns", type=int, default=200, help="turns per conversation (default 200)")
    parser.add_argument(
        "--warmup", type=int, default=3, help="warm-up turns per store, not measured (default 3)"
    )
    parser.add_argument("--skip-peer", action="store_true", help="run turnkit only (no Genkit)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    args = parser.parse_args()
    if args.turns < 1:
        parser.error("--turns must be at least 1")

    tk = asyncio.run(run_turnkit(args.turns, args.warmup))
    gk: dict[str, Any] | None = None
    peer_error: str | None = None
    if not args.skip_peer:
        try:
            gk = run_peer(
                PEER_SCRIPT, PEER_PACKAGES, ["--turns", str(args.turns), "--warmup", str(args.warmup)]
            )
        except (PeerError, OSError) as exc:
            peer_error = f"{type(exc).__name__}: {exc}"
            print(f"turns.py: the Genkit peer failed, reporting turnkit only: {peer_error}", file=sys.stderr)

    summary = summarize(args.turns, tk, gk)
    if args.json:
        report = {"turns": args.turns, "turnkit": tk, "genkit": gk, "peer_error": peer_error, **summary}
        print(json.dumps(report))
    else:
        print_report(args.turns, tk, gk, summary)
        print_tracing(tk, args.turns)
        if peer_error:
            print(f"\nGenkit peer FAILED: {peer_error}")
    missed = not all(t["met"] for t in summary["targets"])
    sys.exit(1 if missed or peer_error else 0)


if __name__ == "__main__":
    main()
