"""Many replicas: 1, 2 and 4 `turnkit serve` processes sharing one store, no sticky sessions.

Run (from the repo root; PostgreSQL on 127.0.0.1:5432 db `test`, Redis on 127.0.0.1:6379):

    .venv/bin/python benchmarks/replicas.py [--replicas 1,2,4] [--stores postgres,redis]
                                            [--clients 32] [--writers 2] [--duration 8] [--quick] [--json]

For each store (a schema or key prefix of its own, dropped afterwards) and replica count N, N
separate `turnkit serve` processes (one worker each, their own ports) serve the same app: agent
`chat` over the store (`store=<url>`), the programmable model answering a fixed reply at once.
Each is what one machine behind a load balancer would run; they share nothing but the store.

Load (this process): `--clients` clients, each on a keep-alive connection to every replica, send
turns for `--duration` seconds (JSON answers, `POST /agents/chat` with `init.sessionId`), each turn
to a replica picked at random, so consecutive turns of a session land on different replicas.
Every session has `--writers` clients sending turns to it at the same time (on different replicas
as it happens), which the store's session lease must line up; a session ends after
`--turns-per-session` turns per writer.

At the end every session's latest history is read back (getSnapshot by session id) and checked:
every acknowledged turn's user message appears exactly once, each writer's in the order it sent
them, each followed by the model's reply, and nothing else: a fork (two turns built on the same
parent, one lost) would break this. Reported per store and N: turns/s, p50/p99 latency, CPU per
turn of the replicas together and of the store's server (from /proc), forks, errors.

Targets (PASS/MISS; exit status 1 on a MISS or error): zero forks and zero failed turns, for every
store and N. Throughput on two cores is bound by the machine, not by the replica count: the CPU per
turn is the figure that extrapolates (turns/s per core = 1000 / (replica + store CPU ms per turn)).
`--quick` runs 3 s per configuration with 16 clients.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale_common import (
    PG_URL,
    REDIS_URL,
    REPLY,
    Place,
    ProtocolError,
    RawClient,
    percentile,
    place,
    print_verdicts,
    verdict,
)

HOST = "127.0.0.1"
TURNKIT = Path(sys.executable).parent / "turnkit"  # the command of this environment
AGENT = "chat"
APP = '''"""The app every replica serves (written by benchmarks/replicas.py)."""
import os

from turnkit import Turnkit
from turnkit.testing import define_programmable_model
from turnkit.types import Message, ModelResponse, Part

REPLY = {reply!r}
ai = Turnkit(model="programmableModel")
model = define_programmable_model(ai)
answer = ModelResponse(message=Message(role="model", content=[Part(text=REPLY)]), finish_reason="stop")
model.handler = lambda request, ctx: answer


class Forgetful(list):
    def append(self, item):  # the model keeps no request log
        pass


model.requests = Forgetful()
ai.define_agent(name="chat", store=os.environ["TURNKIT_BENCH_STORE"], lease_wait=60.0)
'''


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of a process (0 when it is gone or unreadable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def store_server_pids(kind: str) -> list[int]:
    """The processes of the store's server on this machine (postgres or redis-server), if visible."""
    name = "postgres" if kind == "postgres" else "redis-server"
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


class Fleet:
    """N `turnkit serve` processes of the app on their own ports."""

    def __init__(self, app: Path, store_url: str, count: int) -> None:
        self.ports = [free_port() for _ in range(count)]
        env = {**os.environ, "TURNKIT_BENCH_STORE": store_url}
        self.procs = [
            subprocess.Popen(
                [
                    str(TURNKIT),
                    "serve",
                    str(app),
                    "--port",
                    str(p),
                    "--log-level",
                    "warning",
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            for p in self.ports
        ]

    async def ready(self, within: float = 60.0) -> None:
        """Wait until every replica accepts connections."""
        deadline = time.monotonic() + within
        for port, proc in zip(self.ports, self.procs, strict=True):
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"a replica exited: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}"
                    )
                try:
                    _, writer = await asyncio.open_connection(HOST, port)
                    writer.close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"replica on port {port} did not start") from None
                    await asyncio.sleep(0.1)

    def cpu(self) -> float:
        """CPU seconds used by the replicas so far."""
        return sum(cpu_of(p.pid) for p in self.procs)

    def stop(self) -> None:
        """Stop every replica."""
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


class Session:
    """What the load sent to one session: each writer's acknowledged messages, in order."""

    def __init__(self, writers: int) -> None:
        self.id = str(uuid.uuid4())
        self.sent: list[list[str]] = [[] for _ in range(writers)]


async def drive(
    ports: list[int], args: argparse.Namespace
) -> tuple[list[Session], list[float], list[str], float]:
    """The load: returns the sessions, turn latencies, errors and the wall time."""
    sessions: list[Session] = []
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.perf_counter() + args.duration
    path = f"/agents/{AGENT}"
    rng = random.Random(11)

    async def writer(session: Session, index: int, clients: list[RawClient]) -> None:
        for n in range(args.turns_per_session):
            if time.perf_counter() >= deadline:
                return
            text = f"{session.id[:8]} writer {index} turn {n}"
            body = json.dumps(
                {
                    "data": {"message": {"role": "user", "content": [{"text": text}]}},
                    "init": {"sessionId": session.id},
                }
            ).encode()
            client = clients[rng.randrange(len(clients))]  # any replica: no stickiness
            t0 = time.perf_counter()
            try:
                status, data = await asyncio.wait_for(client.call(path, body), 120)
                result = json.loads(data).get("result") if status == 200 else None
                if (
                    result is None
                    or "".join(p.get("text", "") for p in result["message"]["content"]) != REPLY
                ):
                    raise ProtocolError(f"HTTP {status}: {data[:200]!r}")
            except (
                ProtocolError,
                OSError,
                asyncio.IncompleteReadError,
                TimeoutError,
                ValueError,
                KeyError,
            ) as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:300])
                await client.close()
                continue
            latencies.append(time.perf_counter() - t0)
            session.sent[index].append(text)

    async def client_group(group: int) -> None:
        # One keep-alive connection per replica for each of this group's writers.
        conns = [[RawClient(HOST, p) for p in ports] for _ in range(args.writers)]
        try:
            while time.perf_counter() < deadline:
                session = Session(args.writers)
                sessions.append(session)
                await asyncio.gather(*(writer(session, i, conns[i]) for i in range(args.writers)))
        finally:
            for row in conns:
                for c in row:
                    await c.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client_group(g) for g in range(max(1, args.clients // args.writers))))
    return sessions, latencies, errors, time.perf_counter() - t0


async def forks(ports: list[int], sessions: list[Session]) -> tuple[int, list[str]]:
    """Read back every session's latest history and count those that do not hold exactly what
    was acknowledged (see the module docstring)."""
    client = RawClient(HOST, ports[0])
    bad: list[str] = []
    try:
        for s in sessions:
            if not any(s.sent):
                continue
            body = json.dumps({"data": {"sessionId": s.id}}).encode()
            status, data = await client.call(f"/agents/{AGENT}/getSnapshot", body)
            messages = json.loads(data)["result"]["state"]["messages"] if status == 200 else []
            texts = ["".join(p.get("text", "") for p in m["content"]) for m in messages]
            users, replies = texts[0::2], texts[1::2]
            ok = replies == [REPLY] * len(users) and len(texts) % 2 == 0
            ok = ok and sorted(users) == sorted(t for w in s.sent for t in w)
            for sent in s.sent:  # each writer's turns in the order it sent them
                mine = [u for u in users if u in set(sent)]
                ok = ok and mine == sent
            if not ok:
                bad.append(f"session {s.id}: {len(users)} turns stored, {sum(map(len, s.sent))} acknowledged")
    finally:
        await client.close()
    return len(bad), bad[:3]


def run_config(kind: str, where: Place, app: Path, count: int, args: argparse.Namespace) -> dict[str, Any]:
    """One store and replica count: start the fleet, warm it, load it, check it, stop it."""
    fleet = Fleet(app, where.url, count)
    try:
        asyncio.run(fleet.ready())
        warm = argparse.Namespace(**{**vars(args), "duration": 1.0})
        asyncio.run(drive(fleet.ports, warm))
        store_pids = store_server_pids(kind)
        cpu0, store0 = fleet.cpu(), sum(cpu_of(p) for p in store_pids)
        sessions, latencies, errors, wall = asyncio.run(drive(fleet.ports, args))
        cpu1, store1 = fleet.cpu(), sum(cpu_of(p) for p in store_pids)
        forked, samples = asyncio.run(forks(fleet.ports, sessions))
    finally:
        fleet.stop()
    done = len(latencies)
    row = {
        "store": kind,
        "replicas": count,
        "turns": done,
        "sessions": len(sessions),
        "errors": len(errors),
        "error_samples": sorted(set(errors))[:3],
        "forks": forked,
        "fork_samples": samples,
        "turns_per_s": round(done / wall, 1) if wall else None,
        "p50_ms": _ms(percentile(latencies, 50)),
        "p99_ms": _ms(percentile(latencies, 99)),
        "replica_cpu_ms_per_turn": round((cpu1 - cpu0) * 1000 / done, 3) if done else None,
        "store_cpu_ms_per_turn": round((store1 - store0) * 1000 / done, 3) if done and store_pids else None,
    }
    print(
        f"replicas.py: {kind} x{count}: {done} turns, {row['turns_per_s']} turns/s, {forked} forks, "
        f"{len(errors)} errors",
        file=sys.stderr,
    )
    return row


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def main() -> None:
    """Parse arguments, run every store and replica count, print the table and the verdicts."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--replicas", default="1,2,4", help="replica counts (default 1,2,4)")
    parser.add_argument("--stores", default="postgres,redis", help="store kinds (default postgres,redis)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (default 32)")
    parser.add_argument(
        "--writers", type=int, default=2, help="clients writing to each session at once (default 2)"
    )
    parser.add_argument("--turns-per-session", type=int, default=10, help="turns each writer sends a session")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of load per configuration")
    parser.add_argument("--quick", action="store_true", help="3 s per configuration, 16 clients: a trial run")
    parser.add_argument("--pg-url", default=PG_URL)
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.clients = 3.0, 16
    if args.writers < 1 or args.clients < args.writers or args.duration <= 0:
        parser.error("--writers must be >= 1, --clients >= --writers, --duration > 0")
    counts = [int(n) for n in args.replicas.split(",") if n]
    rows: list[dict[str, Any]] = []
    failed: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="turnkit-replicas-") as tmp:
        app = Path(tmp) / "replica_app.py"
        app.write_text(APP.format(reply=REPLY))
        for kind in [k for k in args.stores.split(",") if k]:
            try:
                with place(kind, args.pg_url, args.redis_url) as where:
                    for count in counts:
                        rows.append(run_config(kind, where, app, count, args))
            except Exception as exc:  # report the other stores anyway
                failed[kind] = f"{type(exc).__name__}: {exc}"[:300]
                print(f"replicas.py: {kind} failed: {failed[kind]}", file=sys.stderr)
    verdicts = [
        verdict(f"{r['store']} x{r['replicas']}: forks + failed turns", r["forks"] + r["errors"], 0, unit="")
        for r in rows
    ]
    report = {
        "config": {k: v for k, v in vars(args).items() if k != "json"},
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
    """The human-readable table and verdicts."""
    cfg = report["config"]
    print(
        f"`turnkit serve` replicas on one store, {cfg['clients']} clients, {cfg['writers']} writers per session, "
        f"each turn to a random replica, {cfg['duration']} s per row, {os.cpu_count()} CPUs"
    )
    cols = [
        ("store", "store", 8),
        ("replicas", "replicas", 8),
        ("turns", "turns", 6),
        ("sessions", "sessions", 8),
        ("turns/s", "turns_per_s", 8),
        ("p50 ms", "p50_ms", 7),
        ("p99 ms", "p99_ms", 7),
        ("replica cpu ms/turn", "replica_cpu_ms_per_turn", 19),
        ("store cpu ms/turn", "store_cpu_ms_per_turn", 17),
        ("forks", "forks", 5),
        ("errors", "errors", 6),
    ]
    print()
    print("  ".join(f"{t:>{w}}" for t, _, w in cols))
    for row in report["rows"]:
        print("  ".join(f"{'-' if row.get(k) is None else row[k]!s:>{w}}" for _, k, w in cols))
        for sample in row["error_samples"] + row["fork_samples"]:
            print(f"    {sample}")
    for kind, why in report["failed"].items():
        print(f"{kind} FAILED: {why}")
    print()
    print_verdicts(report["targets"])


if __name__ == "__main__":
    main()
