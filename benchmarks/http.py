"""HTTP serving under concurrent streaming clients: turnkit vs Genkit 0.12 (genkit-fastapi).

Run (from the repo root):

    .venv/bin/python benchmarks/http.py [--levels 10,50,200] [--duration 8] [--max-turns 6000]
                                        [--chunks 4] [--turns-per-chat 10] [--skip-peer] [--json]

Servers, one uvicorn worker each, on 127.0.0.1, started afresh for every concurrency level, with
the same uvicorn settings (`--loop asyncio --http h11` by default: the implementations both
environments have; access log off):

- turnkit: `create_app(ai)` serving one agent, `bench`, over `InMemorySessionStore()` (server-
  managed), whose model is turnkit's programmable model answering a fixed 76-character reply,
  streamed in `--chunks` pieces (no inference). Started as `python benchmarks/http.py --serve`.
- Genkit: `benchmarks/peers/genkit_http_server.py`, the same agent (`InMemorySessionStore()`,
  the same reply in the same pieces) served by `genkit_fastapi.serve_agent`, run in its own
  virtualenv with `genkit==0.12.0` and `genkit-fastapi==0.12.0` (`benchmarks/.venvs/`, created
  on first use, never in turnkit's venv).

Load (this process, separate from the servers): N concurrent clients on one `httpx.AsyncClient`,
each a loop of streaming turns (`POST /agents/bench`, `Accept: text/event-stream`): a chat of
`--turns-per-chat` turns continued by `snapshotId`, then a new chat. Every turn is checked (all
chunks, the reply text, `finishReason: stop`); anything else counts as an error. Each level gets a
1 s warm-up at min(N, 10) clients, then runs until `--duration` seconds have passed or
`--max-turns` turns have started, whichever is first (turns in flight then finish).

Per server and level it reports turns per second (completed turns / wall time of the level),
turn latency p50/p99 (request sent -> terminal `result` frame), time to first chunk p50/p99
(request sent -> first `modelChunk` frame), the server's CPU per turn (from /proc) and the load
generator's CPU use, then the ratios turnkit/Genkit. `--json` prints one JSON object instead.
The exit status is 1 when a level had errors or the peer failed, else 0.
"""

# ruff: noqa: E402  (the import path is fixed before the other imports)
from __future__ import annotations

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
# This file is named http.py: with its folder on the import path (as when run as a script) it would
# shadow the standard library's `http` package, which httpx and uvicorn import.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCHMARKS]

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import IO, Any

import httpx


def _load(name: str, path: Path) -> Any:
    """A module of benchmarks/, loaded by path (benchmarks/ stays off the import path)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _load_peers_env() -> Any:
    """`benchmarks/peers/env.py`."""
    return _load("peers.env", BENCHMARKS / "peers" / "env.py")


_peers = _load_peers_env()
_common = _load("scale_common", BENCHMARKS / "scale_common.py")
RawClient = _common.RawClient
PeerError, ensure_venv = _peers.PeerError, _peers.ensure_venv

PEER_SCRIPT = BENCHMARKS / "peers" / "genkit_http_server.py"
# The event loop and HTTP parser pins give the peer what turnkit's `server` extra brings, so both
# servers run the same uvicorn implementations.
PEER_PACKAGES = ["genkit-fastapi==0.12.0", "genkit==0.12.0", "uvloop==0.23.0", "httptools==0.9.0"]
TARGET_SERVER_CPU_MS = 0.6
PEER_VENV = "genkit-fastapi-0.12.0"
HOST = "127.0.0.1"
AGENT = "bench"
# The same text and cut as benchmarks/peers/genkit_http_server.py.
REPLY = "The quick brown fox jumps over the lazy dog, then naps in the afternoon sun."
WARMUP_SECONDS = 1.0
REQUEST_TIMEOUT = 60.0


def split(text: str, n: int) -> list[str]:
    """`text` cut into `n` consecutive pieces of about equal length."""
    size = -(-len(text) // n)
    return [text[i : i + size] for i in range(0, len(text), size)]


# --- the turnkit server (run as `http.py --serve`) ------------------------------------------------


def build_turnkit(chunks: int) -> Any:
    """The turnkit benchmark app: agent `bench` over an in-memory store, a fixed streamed reply."""
    from turnkit import Turnkit
    from turnkit.models import ModelContext
    from turnkit.sessions import InMemorySessionStore
    from turnkit.testing import define_programmable_model
    from turnkit.types import Message, ModelRequest, ModelResponse, ModelResponseChunk, Part

    pieces = split(REPLY, chunks)
    reply = ModelResponse(message=Message(role="model", content=[Part(text=REPLY)]), finish_reason="stop")

    def fixed_reply(request: ModelRequest, ctx: ModelContext) -> ModelResponse:
        for piece in pieces:
            ctx.send_chunk(ModelResponseChunk(role="model", content=[Part(text=piece)]))
        return reply

    ai = Turnkit(model="programmableModel")
    pm = define_programmable_model(ai)
    pm.handler = fixed_reply
    ai.define_agent(name=AGENT, store=InMemorySessionStore())
    return ai


def serve_turnkit(port: int, chunks: int, loop: str, http: str, gc_tuning: bool) -> None:
    """Serve the turnkit benchmark agent on 127.0.0.1:PORT until killed, the garbage collector
    tuned as `turnkit serve` tunes it unless `gc_tuning` is off."""
    import uvicorn

    from turnkit.http import create_app, tune_gc

    app = create_app(build_turnkit(chunks))
    if gc_tuning:
        tune_gc()
    uvicorn.run(
        app,
        host=HOST,
        port=port,
        workers=1,
        loop=loop,
        http=http,
        log_level="warning",
        access_log=False,
    )


def turn_cost(chunks: int, turns: int, turns_per_chat: int, loop: str, clients: int, gc_tuning: bool) -> None:
    """Print the CPU milliseconds per turn of the same agent run in process, without HTTP, by
    `clients` concurrent chats (as many as the level's clients: concurrency changes what a turn
    costs): what the server's CPU per turn would be if serving cost nothing."""
    from turnkit.types import AgentInit, AgentInput, Message, Part

    agent = build_turnkit(chunks).registry.lookup("agent", AGENT)
    if gc_tuning:
        from turnkit.http import tune_gc

        tune_gc()  # as the server process does

    async def user(index: int, n: int) -> None:
        snapshot: str | None = None
        for i in range(n):
            init = AgentInit(snapshot_id=snapshot if i % turns_per_chat else None)
            conn = await agent.stream_bidi(init)
            text = f"user {index} turn {i}"
            await conn.send(AgentInput(message=Message(role="user", content=[Part(text=text)])))
            await conn.close()
            while not conn.finished:
                async for _chunk in conn.receive():
                    pass
            snapshot = (await conn.output()).snapshot_id
            await asyncio.sleep(0)  # interleave the chats, as requests from many clients do

    async def run(n: int) -> None:
        await asyncio.gather(*(user(c, n) for c in range(clients)))

    per_client = max(1, turns // clients)

    async def measured() -> float:
        await run(max(1, min(per_client, 200 // clients)))  # warm-up: imports, caches
        cpu0 = time.process_time()
        await run(per_client)
        return time.process_time() - cpu0

    seconds = run_async(measured(), loop)
    print(json.dumps({"turn_cpu_ms": round(seconds * 1000 / (per_client * clients), 3)}))


def run_async(coro: Any, loop: str) -> Any:
    """Run `coro` on uvloop when `loop` is "uvloop", else on asyncio's default loop."""
    if loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
    return asyncio.run(coro)


# --- running a server -----------------------------------------------------------------------------


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds used so far by process `pid` (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


@contextlib.contextmanager
def running(cmd: list[str], port: int, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[str]]:
    """Run a server process for the block, once it answers on 127.0.0.1:PORT."""
    with tempfile.TemporaryFile(mode="w+") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, text=True
        )
        try:
            _wait_until_serving(proc, log, f"http://{HOST}:{port}")
            yield proc
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)


def _wait_until_serving(proc: subprocess.Popen[str], log: IO[str], base: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read()[-4000:]}")
        try:
            if httpx.get(f"{base}/agents", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"server did not answer on {base} within {timeout} s")
        time.sleep(0.1)


def peer_env() -> dict[str, str]:
    """This environment minus what would leak turnkit's venv into the peer process."""
    env = dict(os.environ)
    for key in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP"):
        env.pop(key, None)
    return env


# --- the load ------------------------------------------------------------------------------------


@dataclass
class Load:
    """What one measured run saw."""

    latencies: list[float] = field(default_factory=list)  # seconds, per completed turn
    first_chunks: list[float] = field(default_factory=list)  # seconds to the first modelChunk
    errors: list[str] = field(default_factory=list)
    started: int = 0


class TurnError(Exception):
    """A turn that did not stream and end as expected."""


async def one_turn(
    client: Any, path: str, init: dict[str, Any], text: str, chunks: int
) -> tuple[float, float, str]:
    """Run one streaming turn; returns (latency, time to first chunk, snapshot id)."""
    body = json.dumps({"data": {"message": {"role": "user", "content": [{"text": text}]}}, "init": init})
    t0 = time.perf_counter()
    first: float | None = None
    seen = 0
    buffer = b""
    outcome: tuple[float, float, str] | None = None
    async for piece in client.stream(path, body.encode()):
        buffer += piece
        while (end := buffer.find(b"\n\n")) >= 0:
            frame, buffer = buffer[:end], buffer[end + 2 :]
            if outcome is not None:
                raise TurnError(f"a frame after the result: {frame[:100]!r}")
            if not frame.startswith(b"data: "):
                raise TurnError(f"not a data frame: {frame[:100]!r}")
            if frame.startswith(b'data: {"message":{"modelChunk"'):
                seen += 1
                if first is None:
                    first = time.perf_counter() - t0
                continue
            if frame.startswith(b'data: {"message"'):
                continue
            payload = json.loads(frame[6:])
            latency = time.perf_counter() - t0
            result = payload.get("result")
            if result is None:
                raise TurnError(f"error frame: {payload}")
            message_text = "".join(
                p.get("text", "") for p in (result.get("message") or {}).get("content", [])
            )
            if result.get("finishReason") != "stop" or message_text != REPLY:
                raise TurnError(f"unexpected result: {str(result)[:300]}")
            if seen != chunks or first is None:
                raise TurnError(f"{seen} model chunks, expected {chunks}")
            outcome = latency, first, result["snapshotId"]
    if outcome is None or buffer:
        raise TurnError("the stream ended without a result frame")
    return outcome


async def run_load(
    url: str, clients: int, duration: float, max_turns: int, chunks: int, turns_per_chat: int
) -> tuple[Load, float, float]:
    """N clients, one keep-alive connection each, looping over streaming turns until the time or
    turn budget is spent. Returns what was measured, the wall time and this process's CPU time."""
    load = Load()
    where = httpx.URL(url)
    host, port, path = where.host, where.port or 80, where.raw_path.decode()
    deadline = time.perf_counter() + duration

    async def user(index: int) -> None:
        client = RawClient(host, port)
        snapshot: str | None = None
        turn = 0
        try:
            while time.perf_counter() < deadline and load.started < max_turns:
                load.started += 1
                if turn % turns_per_chat == 0:
                    snapshot = None
                init = {"snapshotId": snapshot} if snapshot else {}
                try:
                    async with asyncio.timeout(REQUEST_TIMEOUT):
                        latency, first, snapshot = await one_turn(
                            client, path, init, f"user {index} turn {turn}", chunks
                        )
                except (
                    TimeoutError,
                    TurnError,
                    _common.ProtocolError,
                    OSError,
                    asyncio.IncompleteReadError,
                    ValueError,
                    KeyError,
                ) as exc:
                    load.errors.append(f"{type(exc).__name__}: {exc}"[:300])
                    snapshot = None
                    await client.close()  # the connection's state is unknown: start afresh
                else:
                    load.latencies.append(latency)
                    load.first_chunks.append(first)
                turn += 1
        finally:
            await client.close()

    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(user(i) for i in range(clients)))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return load, wall, cpu


def percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank q-th percentile (q in 0..100), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def measure(
    name: str, cmd: list[str], port: int, env: dict[str, str] | None, level: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Start the server, warm it up, run one level, stop it; return the level's numbers."""
    url = f"http://{HOST}:{port}/agents/{AGENT}"
    with running(cmd, port, env) as proc:
        warm_up = run_load(url, min(level, 10), WARMUP_SECONDS, 10**9, args.chunks, args.turns_per_chat)
        run_async(warm_up, args.loadgen_loop)
        server_cpu0 = cpu_seconds(proc.pid)
        load, wall, gen_cpu = run_async(
            run_load(url, level, args.duration, args.max_turns, args.chunks, args.turns_per_chat),
            args.loadgen_loop,
        )
        server_cpu1 = cpu_seconds(proc.pid)
    done = len(load.latencies)
    server_cpu = server_cpu1 - server_cpu0 if server_cpu0 is not None and server_cpu1 is not None else None
    ms = 1000.0
    result = {
        "server": name,
        "clients": level,
        "turns": done,
        "errors": len(load.errors),
        "error_samples": sorted(set(load.errors))[:3],
        "wall_s": round(wall, 3),
        "turns_per_s": round(done / wall, 1) if wall > 0 else None,
        "latency_ms_p50": _ms(percentile(load.latencies, 50), ms),
        "latency_ms_p99": _ms(percentile(load.latencies, 99), ms),
        "first_chunk_ms_p50": _ms(percentile(load.first_chunks, 50), ms),
        "first_chunk_ms_p99": _ms(percentile(load.first_chunks, 99), ms),
        "server_cpu_ms_per_turn": round(server_cpu * ms / done, 3)
        if server_cpu is not None and done
        else None,
        "loadgen_cpu_pct": round(100 * gen_cpu / wall, 1) if wall > 0 else None,
    }
    print(
        f"http.py: {name:8s} {level:4d} clients: {done} turns, {result['turns_per_s']} turns/s, "
        f"p50 {result['latency_ms_p50']} ms, {len(load.errors)} errors",
        file=sys.stderr,
    )
    return result


def _ms(seconds: float | None, scale: float) -> float | None:
    return None if seconds is None else round(seconds * scale, 2)


# --- report --------------------------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is zero."""
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 2)


def print_report(report: dict[str, Any]) -> None:
    """The human-readable tables."""
    cfg = report["config"]
    print(
        f"HTTP streaming turns, one uvicorn worker each (loop={cfg['loop']}, http={cfg['http']}; turnkit's "
        f"GC {'tuned as by turnkit serve' if cfg['turnkit_gc_tuning'] else 'at the defaults'}), "
        f"{cfg['chunks']} chunks per reply, chats of {cfg['turns_per_chat']} turns, "
        f"{cfg['duration']} s or {cfg['max_turns']} turns per level; "
        f"turnkit {cfg['turnkit']}, genkit {cfg['genkit'] or '-'} + genkit-fastapi {cfg['genkit_fastapi'] or '-'}, "
        f"Python {cfg['python']}, {cfg['cpus']} CPUs"
    )
    cols = [
        ("server", "server", 8),
        ("clients", "clients", 7),
        ("turns", "turns", 6),
        ("errors", "errors", 6),
        ("turns/s", "turns_per_s", 8),
        ("p50 ms", "latency_ms_p50", 8),
        ("p99 ms", "latency_ms_p99", 8),
        ("ttfc p50", "first_chunk_ms_p50", 8),
        ("ttfc p99", "first_chunk_ms_p99", 8),
        ("srv cpu ms/turn", "server_cpu_ms_per_turn", 15),
        ("of which turn", "turn_cpu_ms", 13),
        ("serving", "serving_cpu_ms", 7),
        ("loadgen cpu%", "loadgen_cpu_pct", 12),
    ]
    print()
    print("  ".join(f"{title:>{width}}" for title, _, width in cols))
    for row in report["results"]:
        print("  ".join(f"{_fmt(row.get(key)):>{width}}" for _, key, width in cols))
    if report["ratios"]:
        print()
        print("turnkit / Genkit (turns/s: higher is better for turnkit; latency, ttfc, cpu: lower is better)")
        print(
            f"{'clients':>7}  {'turns/s':>8}  {'p50':>6}  {'p99':>6}  {'ttfc p50':>8}  {'ttfc p99':>8}  {'srv cpu':>7}"
        )
        for r in report["ratios"]:
            print(
                f"{r['clients']:>7}  {_fmt(r['turns_per_s'], 'x'):>8}  {_fmt(r['latency_p50'], 'x'):>6}  "
                f"{_fmt(r['latency_p99'], 'x'):>6}  {_fmt(r['first_chunk_p50'], 'x'):>8}  "
                f"{_fmt(r['first_chunk_p99'], 'x'):>8}  {_fmt(r['server_cpu'], 'x'):>7}"
            )
    if report["peer_error"]:
        print(f"\nGenkit peer FAILED: {report['peer_error']}")
    print()
    for t in report["targets"]:
        print(f"{'PASS' if t['pass'] else 'MISS'}  {t['target']}: {_fmt(t['value'])} ms")


def _fmt(value: Any, suffix: str = "") -> str:
    return "-" if value is None else f"{value}{suffix}"


def main() -> None:
    """Parse arguments; serve (with --serve) or run the whole benchmark and print the report."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--levels", default="10,50,200", help="concurrent clients per level (default 10,50,200)"
    )
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per level (default 8)")
    parser.add_argument(
        "--max-turns", type=int, default=20000, help="turns per level at most (default 20000)"
    )
    parser.add_argument("--chunks", type=int, default=4, help="streamed chunks per reply (default 4)")
    parser.add_argument(
        "--turns-per-chat", type=int, default=10, help="turns before a client starts a new chat"
    )
    parser.add_argument(
        "--loop",
        default="auto",
        help="uvicorn --loop for both servers: uvloop or asyncio (default: uvloop if installed)",
    )
    parser.add_argument(
        "--http",
        default="auto",
        help="uvicorn --http for both servers: httptools or h11 (default: httptools if installed)",
    )
    parser.add_argument(
        "--turn-samples", type=int, default=2000, help="in-process turns timed for the turn's own cost"
    )
    parser.add_argument(
        "--no-gc-tuning", action="store_true", help="run turnkit's server without `turnkit serve`'s GC tuning"
    )
    parser.add_argument("--skip-peer", action="store_true", help="run turnkit only (no Genkit)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--turn-cost", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--clients", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.loop = _available(args.loop, "uvloop", "asyncio")
    args.http = _available(args.http, "httptools", "h11")
    args.loadgen_loop = args.loop
    if args.turn_cost:
        turn_cost(
            args.chunks,
            args.turn_samples,
            args.turns_per_chat,
            args.loop,
            args.clients,
            not args.no_gc_tuning,
        )
        return
    if args.serve:
        serve_turnkit(args.port, args.chunks, args.loop, args.http, not args.no_gc_tuning)
        return
    levels = [int(n) for n in args.levels.split(",") if n]
    if not levels or min(levels) < 1 or args.duration <= 0 or args.max_turns < 1 or args.chunks < 1:
        parser.error("levels, duration, max turns and chunks must be positive")

    uv = ["--chunks", str(args.chunks), "--loop", args.loop, "--http", args.http]
    peer: Path | None = None
    peer_error: str | None = None
    if not args.skip_peer:
        try:
            peer = ensure_venv(PEER_PACKAGES, name=PEER_VENV)
        except (PeerError, OSError, subprocess.CalledProcessError) as exc:
            peer_error = f"{type(exc).__name__}: {exc}"
            print(
                f"http.py: the Genkit peer is unavailable, reporting turnkit only: {peer_error}",
                file=sys.stderr,
            )

    results: list[dict[str, Any]] = []
    ratios: list[dict[str, Any]] = []
    for level in levels:
        port = free_port()
        tk_cmd = [sys.executable, str(Path(__file__).resolve()), "--serve", "--port", str(port), *uv]
        tk_cmd += ["--no-gc-tuning"] if args.no_gc_tuning else []
        tk = measure("turnkit", tk_cmd, port, None, level, args)
        turn_cpu_ms = in_process_turn_cpu_ms(args, level)
        tk["turn_cpu_ms"] = turn_cpu_ms
        if tk["server_cpu_ms_per_turn"] is not None:
            tk["serving_cpu_ms"] = round(tk["server_cpu_ms_per_turn"] - turn_cpu_ms, 3)
        results.append(tk)
        if peer is None:
            continue
        port = free_port()
        gk_cmd = [str(peer), str(PEER_SCRIPT), "--port", str(port), *uv]
        try:
            gk = measure("genkit", gk_cmd, port, peer_env(), level, args)
        except (RuntimeError, TimeoutError) as exc:
            peer_error = f"{type(exc).__name__}: {exc}"
            print(f"http.py: the Genkit server failed: {peer_error}", file=sys.stderr)
            peer = None
            continue
        results.append(gk)
        ratios.append(
            {
                "clients": level,
                "turns_per_s": ratio(tk["turns_per_s"], gk["turns_per_s"]),
                "latency_p50": ratio(tk["latency_ms_p50"], gk["latency_ms_p50"]),
                "latency_p99": ratio(tk["latency_ms_p99"], gk["latency_ms_p99"]),
                "first_chunk_p50": ratio(tk["first_chunk_ms_p50"], gk["first_chunk_ms_p50"]),
                "first_chunk_p99": ratio(tk["first_chunk_ms_p99"], gk["first_chunk_ms_p99"]),
                "server_cpu": ratio(tk["server_cpu_ms_per_turn"], gk["server_cpu_ms_per_turn"]),
            }
        )

    report = {
        "config": {
            "levels": levels,
            "duration": args.duration,
            "max_turns": args.max_turns,
            "chunks": args.chunks,
            "turns_per_chat": args.turns_per_chat,
            "loop": args.loop,
            "http": args.http,
            "turnkit_gc_tuning": not args.no_gc_tuning,
            "turnkit": version("turnkit"),
            "genkit": _peer_version(peer, "genkit"),
            "genkit_fastapi": _peer_version(peer, "genkit-fastapi"),
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
        },
        "results": results,
        "ratios": ratios,
        "peer_error": peer_error,
    }
    targets: list[dict[str, Any]] = [
        {
            "target": f"turnkit server CPU per streamed turn <= {TARGET_SERVER_CPU_MS} ms ({row['clients']} clients)",
            "value": row["server_cpu_ms_per_turn"],
            "pass": row["server_cpu_ms_per_turn"] is not None
            and row["server_cpu_ms_per_turn"] <= TARGET_SERVER_CPU_MS,
        }
        for row in results
        if row["server"] == "turnkit"
    ]
    report["targets"] = targets
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report)
    failed = any(r["errors"] for r in results) or peer_error is not None
    failed = failed or not all(t["pass"] for t in targets)
    sys.exit(1 if failed else 0)


def in_process_turn_cpu_ms(args: argparse.Namespace, clients: int) -> float:
    """The turn's own CPU cost at this concurrency, from a `--turn-cost` process of its own."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--turn-cost", "--clients", str(clients)]
    cmd += ["--turn-samples", str(args.turn_samples), "--chunks", str(args.chunks)]
    cmd += ["--turns-per-chat", str(args.turns_per_chat), "--loop", args.loop]
    cmd += ["--no-gc-tuning"] if args.no_gc_tuning else []
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    value: float = json.loads(out)["turn_cpu_ms"]
    print(f"http.py: the turn alone, in process, {clients} chats at once: {value} ms CPU", file=sys.stderr)
    return value


def _available(choice: str, fast: str, fallback: str) -> str:
    """`choice`, or for "auto" the `fast` implementation when it is installed here, else `fallback`."""
    if choice != "auto":
        return choice
    return fast if importlib.util.find_spec(fast) is not None else fallback


def _peer_version(python: Path | None, package: str) -> str | None:
    if python is None:
        return None
    code = f"from importlib.metadata import version; print(version({package!r}))"
    proc = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, env=peer_env(), check=False
    )
    return proc.stdout.strip() or None


if __name__ == "__main__":
    main()
