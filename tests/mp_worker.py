"""A turnkit process for the cross-process tests: runs turns against a store named by URL.

    python mp_worker.py continue URL SESSION ROUNDS TAG   ROUNDS turns continuing SESSION by id
    python mp_worker.py detach URL SESSION                a detached turn that blocks until aborted
    python mp_worker.py hang URL SESSION                  an attached turn whose model never answers
    python mp_worker.py abort URL SNAPSHOT                abort a snapshot's turn, wherever it runs

Each prints JSON lines (`{"event": ...}`) so the test can follow it.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from turnkit import Turnkit
from turnkit.agents import Agent, AgentContext, AgentSession, TurnContext
from turnkit.sessions import store_from_url
from turnkit.testing import define_programmable_model
from turnkit.types import AgentInput


def say(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, "at": time.time(), **fields}), flush=True)


def build(url: str) -> tuple[Turnkit, Agent, Agent]:
    ai = Turnkit(model="programmableModel")
    pm = define_programmable_model(ai)
    # Each reply says how many messages the model saw: a linear history makes it exact.
    pm.handler = lambda request, ctx: {
        "message": {"role": "model", "content": [{"text": f"seen {len(request.messages)}"}]},
        "finishReason": "stop",
    }
    store = store_from_url(url)
    chatty = ai.define_agent(name="chatty", store=store, lease_wait=120)

    async def blocking_fn(sess: AgentSession, ctx: AgentContext) -> object:
        async def turn(item: AgentInput, tc: TurnContext) -> None:
            say("started", snapshot=tc.snapshot_id)
            try:
                await tc.wait_aborted()
            finally:  # the runtime cancels the handler when the abort arrives
                say("aborted")

        await sess.run(turn)
        return await sess.result()

    blocking = ai.define_custom_agent(name="blocking", fn=blocking_fn, store=store, heartbeat_interval=0.1)
    return ai, chatty, blocking


async def main(argv: list[str]) -> None:
    command, url, target = argv[0], argv[1], argv[2]
    ai, chatty, blocking = build(url)
    if command == "continue":
        rounds, tag = int(argv[3]), argv[4]
        for i in range(rounds):
            res = await chatty.chat(session_id=target).send(f"{tag}-{i}")
            res.assert_valid()
        say("done", rounds=rounds)
    elif command == "detach":
        task = await blocking.chat(session_id=target).detach("work")
        say("detached", snapshot=task.snapshot_id)
        while blocking._background:  # noqa: ASYNC110 - until the background turn ends (after its abort)
            await asyncio.sleep(0.01)
        say("finished")
    elif command == "hang":
        pm = ai.registry.lookup("model", "programmableModel").fn
        pm.gate = asyncio.Event()  # never set: the model call hangs mid-turn
        sending = asyncio.ensure_future(chatty.chat(session_id=target).send("hang"))
        await pm.wait_for_calls(1)
        say("in-turn")
        await sending
    elif command == "abort":
        previous = await blocking.abort(target)
        say("abort-sent", previous=previous)
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
