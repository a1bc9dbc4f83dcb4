"""A program that ran a detached turn to completion exits, on every store.

On Python 3.11 `asyncio.wait_for` (inside stores and drivers) can swallow a cancellation that
arrives as its own wait ends. The runtime cancelled its abort watcher and heartbeat without
waiting for them, and a watcher that swallowed the cancel idled forever, so `asyncio.run` never
returned from its shutdown. Each test runs the smallest such program in a fresh interpreter (this
one: the project's oldest supported Python in CI) and fails if it does not exit in time.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from test_store_contract import STORES

# The program as a user would write it: define an agent with a store, detach a turn, wait for it,
# return from main. Nothing is closed or cancelled by hand.
PROGRAM = """
import asyncio
import sys

from turnkit import Turnkit
from turnkit.agents import AgentSession
from turnkit.sessions import store_from_url
from turnkit.types import Message, Part


async def main() -> None:
    ai = Turnkit()

    async def fn(sess: AgentSession, ctx: object) -> object:
        async def handle_turn(inp: object) -> None:
            await sess.add_messages(Message(role="model", content=[Part(text="hello")]))

        await sess.run(handle_turn)
        return await sess.result()

    agent = ai.define_custom_agent(name="exiter", fn=fn, store=store_from_url(sys.argv[1]))
    chat = agent.chat()
    task = await chat.detach("hi")
    snapshot = await task.wait()
    print("turn", snapshot.status, flush=True)


asyncio.run(main())
print("exited", flush=True)
"""

# Generous for a cold interpreter on a busy 2-core machine; a hang never ends at all.
EXIT_WITHIN = 60.0


def store_url(name: str, tmp_path: Path) -> str:
    if name == "memory":
        return "memory:"
    url = STORES[name](tmp_path).url
    assert url is not None, f"the {name} store case has no URL"
    return url


@pytest.mark.parametrize("name", sorted(STORES))
def test_program_that_awaited_a_detached_turn_exits(name: str, tmp_path: Path) -> None:
    url = store_url(name, tmp_path)
    try:
        done = subprocess.run(
            [sys.executable, "-c", PROGRAM, url],
            capture_output=True,
            text=True,
            timeout=EXIT_WITHIN,
            cwd=tmp_path,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the program did not exit within {EXIT_WITHIN}s on {name}; it printed {exc.stdout!r}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["turn completed", "exited"], done.stderr
