"""Backpressure on streams: a slow reader never makes the server keep every undelivered chunk.

The coalescing rules are tested on `ChunkBuffer` itself; then an agent that streams 100,000 chunks
runs in process with a reader that only starts reading once the turn is over, and over HTTP in a
real server process whose memory is measured while a real socket reader pauses.

Run as a script (`python tests/test_backpressure.py serve [--unbounded]`) this file is that server;
`BACKPRESSURE_SERVER_ARGS=--unbounded` makes the HTTP test measure the server without the bound
(the figure before the fix: ~110 MiB, against ~2 MiB with it).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import jsonpatch
import pytest

from turnkit import Turnkit
from turnkit.agents import AgentContext, AgentSession, TurnContext
from turnkit.agents._chunk_buffer import MAX_QUEUED_CHUNKS, UNKNOWN_STATE, ChunkBuffer
from turnkit.http._wire import FrameReader
from turnkit.sessions import InMemorySessionStore
from turnkit.types import (
    AgentInput,
    AgentStreamChunk,
    Artifact,
    JsonPatchOperation,
    Message,
    ModelResponseChunk,
    Part,
    ToolRequest,
    TurnEnd,
)

CHUNKS = 100_000
PATCH_EVERY = 500  # the flood agent updates its custom state every this many chunks
ARTIFACT_EVERY = 5_000


# --- building chunks and reading a stream the way a client does ----------------------------------


def text(t: str, index: int = 0, role: str = "model") -> AgentStreamChunk:
    return AgentStreamChunk(model_chunk=ModelResponseChunk(role=role, index=index, content=[Part(text=t)]))  # type: ignore[arg-type]


def thought(t: str) -> AgentStreamChunk:
    return AgentStreamChunk(
        model_chunk=ModelResponseChunk(role="model", index=0, content=[Part(reasoning=t)])
    )


def tool_request(name: str) -> AgentStreamChunk:
    part = Part(tool_request=ToolRequest(name=name, ref=name))
    return AgentStreamChunk(model_chunk=ModelResponseChunk(role="model", index=0, content=[part]))


def patch(*ops: dict[str, Any]) -> AgentStreamChunk:
    return AgentStreamChunk(custom_patch=[JsonPatchOperation.model_validate(op) for op in ops])


def artifact(name: str | None, t: str) -> AgentStreamChunk:
    return AgentStreamChunk(artifact=Artifact(name=name, parts=[Part(text=t)]))


def turn_end() -> AgentStreamChunk:
    return AgentStreamChunk(turn_end=TurnEnd(finish_reason="stop"))


class View:
    """What a reader builds from a stream: per turn, text and reasoning by message, the custom state,
    the artifacts by name (unnamed ones in order), and the tool requests in order."""

    def __init__(self) -> None:
        self.turns: list[dict[str, Any]] = [self._new_turn()]
        self.custom: Any = None

    @staticmethod
    def _new_turn() -> dict[str, Any]:
        return {"text": {}, "reasoning": {}, "named": {}, "unnamed": [], "tools": []}

    def read(self, chunk: dict[str, Any]) -> None:
        turn = self.turns[-1]
        if "modelChunk" in chunk:
            mc = chunk["modelChunk"]
            key = (mc.get("role"), mc.get("index"))
            for part in mc.get("content", []):
                for kind in ("text", "reasoning"):
                    if kind in part:
                        turn[kind][key] = turn[kind].get(key, "") + part[kind]
                if "toolRequest" in part:
                    turn["tools"].append(part["toolRequest"]["name"])
        if "customPatch" in chunk:
            self.custom = jsonpatch.apply_patch({"v": self.custom}, _rooted(chunk["customPatch"]))["v"]
        if "artifact" in chunk:
            art = chunk["artifact"]
            if art.get("name") is None:
                turn["unnamed"].append(art)
            else:
                turn["named"][art["name"]] = art
        if "turnEnd" in chunk:
            turn["custom"] = self.custom
            self.turns.append(self._new_turn())


def _rooted(ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The patch moved under /v, so that a replacement of the whole document ("") applies too."""
    return [
        {**op, "path": "/v" + op["path"], **({"from": "/v" + op["from"]} if "from" in op else {})}
        for op in ops
    ]


def view_of(chunks: list[AgentStreamChunk]) -> View:
    view = View()
    for chunk in chunks:
        view.read(chunk.to_wire())
    return view


def drain(buffer: ChunkBuffer) -> list[AgentStreamChunk]:
    async def take() -> list[AgentStreamChunk]:
        buffer.close()
        out = []
        while (chunk := await buffer.get()) is not None:
            out.append(chunk)
        return out

    return asyncio.run(take())


# --- the coalescing rules --------------------------------------------------------------------------


def test_a_reader_that_keeps_up_gets_every_chunk_as_it_was_sent() -> None:
    buffer = ChunkBuffer(limit=4)
    sent = [text("a"), text("b"), patch({"op": "replace", "path": "", "value": 1}), text("c")]
    for chunk in sent:
        buffer.put(chunk)
    assert not buffer.coalescing
    assert [id(c) for c in drain(buffer)] == [id(c) for c in sent]  # the very objects, untouched


def test_text_deltas_beyond_the_bound_are_merged_per_message() -> None:
    buffer = ChunkBuffer(limit=2)
    sent = [text("a"), text("b"), text("c"), text("d"), text("x", index=1), text("y", index=1), text("e")]
    for chunk in sent:
        buffer.put(chunk)
    got = drain(buffer)
    assert [c.model_chunk.text for c in got if c.model_chunk] == ["a", "b", "cd", "xy", "e"]
    assert [c.model_chunk.index for c in got if c.model_chunk] == [0, 0, 0, 1, 0]
    assert view_of(got).turns == view_of(sent).turns


def test_reasoning_merges_apart_from_text_and_tool_requests_keep_their_place() -> None:
    buffer = ChunkBuffer(limit=2)
    sent = [
        text("a"),
        text("b"),
        thought("t1"),
        thought("t2"),
        text("c"),
        tool_request("t"),
        text("d"),
        text("e"),
    ]
    for chunk in sent:
        buffer.put(chunk)
    got = [c.to_wire()["modelChunk"]["content"][0] for c in drain(buffer)]
    assert got == [
        {"text": "a"},
        {"text": "b"},
        {"reasoning": "t1t2"},
        {"text": "c"},
        {"toolRequest": {"name": "t", "ref": "t"}},  # text after it never jumps ahead of it
        {"text": "de"},
    ]


def test_patches_with_a_known_result_collapse_into_one_replacement() -> None:
    buffer = ChunkBuffer(limit=2)
    buffer.put(text("a"))
    buffer.put(text("b"))
    state: dict[str, Any] = {"n": 0, "items": []}
    sent = []
    for i in range(1, 50):
        ops = [{"op": "replace", "path": "/n", "value": i}, {"op": "add", "path": "/items/-", "value": i}]
        state = {"n": i, "items": [*state["items"], i]}
        sent.append(patch(*ops))
        buffer.put(sent[-1], json.loads(json.dumps(state)))
    got = drain(buffer)[2:]
    assert len(got) == 1
    assert [op.to_wire() for op in got[0].custom_patch or []] == [
        {"op": "replace", "path": "", "value": state}
    ]


def test_patches_of_unknown_result_are_kept_after_the_replacement() -> None:
    buffer = ChunkBuffer(limit=1)
    buffer.put(text("a"))
    buffer.put(patch({"op": "add", "path": "/a", "value": 1}), {"a": 1})
    buffer.put(patch({"op": "add", "path": "/b", "value": 2}))  # e.g. reshaped by a chunk_transform
    buffer.put(patch({"op": "remove", "path": "/a"}))
    got = drain(buffer)
    assert [op.to_wire() for op in got[1].custom_patch or []] == [
        {"op": "replace", "path": "", "value": {"a": 1}},
        {"op": "add", "path": "/b", "value": 2},
        {"op": "remove", "path": "/a"},
    ]
    # ... until a patch with a known result supersedes them all.
    buffer = ChunkBuffer(limit=1)
    buffer.put(text("a"))
    buffer.put(patch({"op": "add", "path": "/b", "value": 2}))
    buffer.put(patch({"op": "add", "path": "/c", "value": 3}), {"b": 2, "c": 3})
    got = drain(buffer)
    assert [op.to_wire() for op in got[1].custom_patch or []] == [
        {"op": "replace", "path": "", "value": {"b": 2, "c": 3}}
    ]


def test_named_artifacts_keep_the_latest_and_unnamed_ones_all_stay() -> None:
    buffer = ChunkBuffer(limit=1)
    buffer.put(text("a"))
    for i in range(5):
        buffer.put(artifact("progress", str(i)))
        buffer.put(artifact(None, f"log {i}"))
    got = drain(buffer)
    arts = [c.artifact for c in got if c.artifact]
    assert [(a.name, a.parts[0].text) for a in arts] == [("progress", "4")] + [
        (None, f"log {i}") for i in range(5)
    ]


def test_nothing_merges_across_a_turn_end() -> None:
    buffer = ChunkBuffer(limit=1)
    sent = [text("a"), text("b"), patch({"op": "replace", "path": "", "value": 1}), turn_end()]
    sent += [text("c"), text("d"), patch({"op": "replace", "path": "", "value": 2}), turn_end()]
    for chunk in sent:
        custom = chunk.custom_patch[0].value if chunk.custom_patch else UNKNOWN_STATE
        buffer.put(chunk, custom)
    got = drain(buffer)
    assert [c.turn_end is not None for c in got] == [False, False, False, True, False, False, True]
    assert view_of(got).turns == view_of(sent).turns


def test_memory_stays_bounded_without_a_reader_and_coalescing_stops_once_it_catches_up() -> None:
    buffer = ChunkBuffer(limit=8)
    for i in range(100_000):
        buffer.put(text(f"{i} "))
        if i % 100 == 0:
            buffer.put(patch({"op": "replace", "path": "/n", "value": i}), {"n": i})
            buffer.put(artifact("progress", str(i)))
    assert len(buffer) <= 8 + 3  # the bound, plus one merged text, patch and artifact

    async def catch_up() -> None:
        while len(buffer) >= 4:
            await buffer.get()
        assert not buffer.coalescing
        chunk = text("fresh")
        buffer.put(chunk)
        while (got := await buffer.get()) is not chunk:
            assert got is not None

    asyncio.run(catch_up())


def _random_stream(rng: random.Random, n: int) -> list[tuple[AgentStreamChunk, Any]]:
    """A stream with every kind of chunk in random order, each patch with its resulting state."""
    out: list[tuple[AgentStreamChunk, Any]] = []
    state: dict[str, Any] = {}
    patched = False
    for _ in range(n):
        roll = rng.random()
        if roll < 0.5:
            out.append((text(rng.choice("abc"), index=rng.choice([0, 0, 1])), UNKNOWN_STATE))
        elif roll < 0.55:
            out.append((thought(rng.choice("xy")), UNKNOWN_STATE))
        elif roll < 0.58:
            out.append((tool_request(rng.choice("pq")), UNKNOWN_STATE))
        elif roll < 0.75:
            key = rng.choice("klm")
            if key in state and rng.random() < 0.3:
                op: dict[str, Any] = {"op": "remove", "path": f"/{key}"}
                del state[key]
            else:
                state[key] = rng.randrange(100)
                op = {"op": "add", "path": f"/{key}", "value": state[key]}
            if not patched or rng.random() < 0.1:  # the whole state first, and now and then again
                patched = True
                out.append((patch({"op": "replace", "path": "", "value": dict(state)}), dict(state)))
            else:
                known = dict(state) if rng.random() < 0.9 else UNKNOWN_STATE
                out.append((patch(op), known))
        elif roll < 0.85:
            out.append((artifact(rng.choice(["p", "q", None]), str(rng.randrange(100))), UNKNOWN_STATE))
        elif roll < 0.87:
            out.append((turn_end(), UNKNOWN_STATE))
        else:
            out.append((text(rng.choice("de"), role="user"), UNKNOWN_STATE))
    return out


@pytest.mark.parametrize("seed", range(20))
def test_a_slow_reader_builds_what_a_fast_one_does(seed: int) -> None:
    rng = random.Random(seed)
    stream = _random_stream(rng, 3_000)
    buffer = ChunkBuffer(limit=rng.choice([2, 5, 16]))
    got: list[AgentStreamChunk] = []

    async def run() -> None:
        for chunk, custom in stream:
            buffer.put(chunk, custom)
            while rng.random() < 0.3 and buffer.ready:  # a reader that reads now and then
                got.append(await buffer.get())  # type: ignore[arg-type]
        buffer.close()
        while (chunk := await buffer.get()) is not None:
            got.append(chunk)

    asyncio.run(run())
    assert len(got) < len(stream)  # it did coalesce
    fast, slow = view_of([c for c, _ in stream]), view_of(got)
    assert slow.custom == fast.custom
    for a, b in zip(slow.turns, fast.turns, strict=True):
        assert a == b


# --- a flood of chunks from a real agent ------------------------------------------------------------


def flood_app() -> Turnkit:
    """An app with `flood`: each turn streams CHUNKS text deltas, a custom-state update every
    PATCH_EVERY chunks and a `progress` artifact every ARTIFACT_EVERY; its answer is the whole text."""
    ai = Turnkit()
    store = InMemorySessionStore()

    async def flood(sess: AgentSession[Any], ctx: AgentContext) -> Any:
        async def turn(_item: AgentInput, turn: TurnContext) -> None:
            pieces = []
            for i in range(CHUNKS):
                piece = f"{i} "
                pieces.append(piece)
                turn.send_chunk(ModelResponseChunk(role="model", index=0, content=[Part(text=piece)]))
                if i % PATCH_EVERY == 0:
                    await sess.update_custom(
                        lambda c, i=i: {"sent": i, "marks": [*(c or {}).get("marks", []), i]}
                    )
                if i % ARTIFACT_EVERY == 0:
                    await sess.add_artifacts([Artifact(name="progress", parts=[Part(text=str(i))])])
                if i % 100 == 0:
                    await asyncio.sleep(0)  # a real model yields while it streams
            await sess.add_messages([Message(role="model", content=[Part(text="".join(pieces))])])

        await sess.run(turn)
        return await sess.result()

    ai.define_custom_agent(name="flood", fn=flood, store=store)
    return ai


def expected_text() -> str:
    return "".join(f"{i} " for i in range(CHUNKS))


async def test_in_process_a_reader_that_starts_after_the_turn_still_gets_the_whole_result() -> None:
    agent = flood_app().registry.lookup("agent", "flood")
    conn = await agent.stream_bidi()
    await conn.send_text("go")
    await conn.close()
    output = await conn.output()  # the turn ran to its end with nobody reading
    assert output.finish_reason == "stop"
    assert len(conn._chunks) < MAX_QUEUED_CHUNKS + 10
    view = View()
    async for chunk in conn.receive():
        view.read(chunk.to_wire())
    turn = view.turns[0]
    assert turn["text"][("model", 0)] == expected_text()
    snap = await agent.get_snapshot(output.snapshot_id)
    assert snap is not None and snap.state is not None
    assert turn["custom"] == snap.state.custom
    assert turn["named"]["progress"]["parts"] == [{"text": str(CHUNKS - ARTIFACT_EVERY)}]


@pytest.mark.parametrize("reshape_patches", [False, True])
async def test_collapsed_patches_carry_the_state_clients_see(reshape_patches: bool) -> None:
    """Through a state_transform (hiding `secret`) and a chunk_transform that rebuilds patch chunks
    (so their resulting state is unknown to the buffer), a late reader still ends with the custom
    state clients are shown."""
    ai = Turnkit()

    async def many_updates(sess: AgentSession[Any], ctx: AgentContext) -> Any:
        async def turn(_item: AgentInput, turn: TurnContext) -> None:
            for i in range(2_000):
                turn.send_chunk(ModelResponseChunk(role="model", index=0, content=[Part(text="x")]))
                if i % 7 == 0:
                    await sess.update_custom(
                        lambda c, i=i: {"n": i, "secret": f"s{i}", "seen": [*(c or {}).get("seen", []), i]}
                    )

        await sess.run(turn)
        return await sess.result()

    def hide(state: Any) -> Any:
        custom = {k: v for k, v in (state.custom or {}).items() if k != "secret"}
        return state.model_copy(update={"custom": custom})

    def rebuild(chunk: AgentStreamChunk) -> AgentStreamChunk:
        return chunk.model_copy() if chunk.custom_patch is not None else chunk

    agent = ai.define_custom_agent(
        name="updates",
        fn=many_updates,
        state_transform=hide,
        chunk_transform=rebuild if reshape_patches else None,
    )
    conn = await agent.stream_bidi()
    await conn.send_text("go")
    await conn.close()
    output = await conn.output()
    assert len(conn._chunks) < MAX_QUEUED_CHUNKS + 10
    view = View()
    async for chunk in conn.receive():
        view.read(chunk.to_wire())
    assert output.state is not None
    assert view.turns[0]["custom"] == output.state.custom
    assert output.state.custom["n"] == 1995 and "secret" not in output.state.custom


# --- over HTTP, with a real slow reader --------------------------------------------------------------


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _start_server() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "serve", *os.environ.get("BACKPRESSURE_SERVER_ARGS", "").split()],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("port "):
        proc.kill()
        raise AssertionError(f"the server did not start: {line!r}")
    return proc, f"127.0.0.1:{line.split()[1]}"


def _slow_stream(address: str, session_id: str) -> socket.socket:
    """Start a streamed turn on a socket whose receive buffer is tiny, reading only the headers."""
    host, port = address.split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    body = json.dumps(
        {
            "data": {"message": {"role": "user", "content": [{"text": "go"}]}},
            "init": {"sessionId": session_id},
        }
    )
    request = (
        f"POST /agents/flood?stream=true HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}"
    )
    sock.sendall(request.encode())
    return sock


def _read_all(sock: socket.socket) -> bytes:
    data = bytearray()
    while piece := sock.recv(1 << 20):
        data += piece
    return bytes(data)


def _dechunk(raw: bytes) -> bytes:
    """The body of an HTTP/1.1 response sent with chunked transfer coding."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    body = bytearray()
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return bytes(body)
        body += rest[:size]
        rest = rest[size + 2 :]


def test_a_slow_http_reader_costs_the_server_bounded_memory_and_gets_the_full_result() -> None:
    proc, address = _start_server()
    try:
        with httpx.Client(base_url=f"http://{address}", timeout=60) as client:
            # Warm up (imports, first turn), so that what grows next is the stream's own cost.
            warm = client.post(
                "/agents/flood", json={"data": {"message": {"role": "user", "content": [{"text": "hi"}]}}}
            )
            assert warm.status_code == 200, warm.text
            before = _rss_bytes(proc.pid)
            sock = _slow_stream(address, "slow-reader")
            # The reader reads nothing: the turn still runs to its end and stores its snapshot.
            deadline = time.monotonic() + 120
            while True:
                found = client.post("/agents/flood/getSnapshot", json={"data": {"sessionId": "slow-reader"}})
                if found.status_code == 200:
                    break
                assert found.status_code == 404, found.text
                assert time.monotonic() < deadline, "the turn did not finish while its reader paused"
                time.sleep(0.2)
            grown = _rss_bytes(proc.pid) - before
            print(f"\nserver RSS growth with a paused reader of {CHUNKS} chunks: {grown / 2**20:.1f} MiB")
            raw = _read_all(sock)
            sock.close()
            snapshot = found.json()["result"]
    finally:
        proc.kill()
        proc.wait(10)
    frames = FrameReader().feed(_dechunk(raw).decode("ascii"))
    assert "result" in frames[-1], frames[-1]
    result = frames[-1]["result"]
    view = View()
    for frame in frames[:-1]:
        view.read(frame["message"])
    turn = view.turns[0]
    assert turn["text"][("model", 0)] == expected_text() == result["message"]["content"][0]["text"]
    assert turn["custom"] == snapshot["state"]["custom"]
    assert turn["custom"]["marks"] == list(range(0, CHUNKS, PATCH_EVERY))
    # Coalesced: only what the sockets took before the reader paused came one by one.
    assert len(frames) < CHUNKS
    # Unbounded, this grew by ~170 MiB (see --unbounded); bounded, by a few.
    assert grown < 40 * 2**20, f"server RSS grew by {grown / 2**20:.1f} MiB"


def _serve(unbounded: bool) -> None:
    import uvicorn

    from turnkit.http import create_app

    if unbounded:  # how the server behaved before the bound, to measure the difference
        ChunkBuffer.__init__.__defaults__ = (10**12,)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    print("port", sock.getsockname()[1], flush=True)
    config = uvicorn.Config(create_app(flood_app()), log_level="warning", access_log=False, lifespan="off")
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))


if __name__ == "__main__" and sys.argv[1:2] == ["serve"]:
    _serve(unbounded="--unbounded" in sys.argv)
