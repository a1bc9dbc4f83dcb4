"""A report written in the background: progress in custom state, polled, and abortable.

    turnkit serve examples/report.py
    python examples/report.py "solar panels"        # the same from Python: detach, poll, abort

`report` is a custom agent: each turn writes one section per outline heading with the model and,
after each, records its progress in the session's custom state (`sections_done`, `current`,
`sections`). A client starts it detached (`chat.detach(topic)`, or over HTTP a turn with
`"detach": true`) and gets a pending snapshot id at once. Polling that snapshot (`task.poll()`,
`POST /agents/report/getSnapshot`) shows the custom state as of the last heartbeat (every
`heartbeat_interval` seconds), and `task.abort()` (`POST /agents/report/abort`) stops the turn
wherever it runs; the aborted snapshot keeps the sections written so far. When it completes, the
report is an artifact named `report`. `$REPORT_SECTION_SECONDS` adds a pause after each section
(default 1) so there is time to watch; the model is `$TURNKIT_MODEL` or the local SmolLM2
(`TURNKIT_MODEL=echoModel` for no model at all).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from turnkit import AgentInput, Artifact, Message, Part, Turnkit
from turnkit.agents import AgentContext, AgentResult, AgentSession, TurnContext
from turnkit.models.llamacpp import LlamaCpp
from turnkit.sessions import SqliteSessionStore
from turnkit.testing import define_echo_model

ai = Turnkit(plugins=[LlamaCpp()], model=os.environ.get("TURNKIT_MODEL") or "llamacpp/smollm2")
define_echo_model(ai)

SESSIONS_DIR = os.environ.get("TURNKIT_SESSIONS_DIR") or os.path.join(".turnkit", "sessions")
OUTLINE = ["Summary", "Background", "Findings", "Risks", "Recommendations"]


def section_pause() -> float:
    """Seconds to wait after each section (`$REPORT_SECTION_SECONDS`, default 1)."""
    return float(os.environ.get("REPORT_SECTION_SECONDS", "1"))


class Progress(BaseModel):
    """The custom state a poller reads: how far the report is, and what is written."""

    topic: str = ""
    sections_done: int = 0
    sections_total: int = len(OUTLINE)
    current: str | None = None
    sections: dict[str, str] = {}


def recorded(index: int, text: str) -> Callable[[Progress | None], Progress]:
    """The custom-state update for section `index` written as `text`."""

    def record(state: Progress | None) -> Progress:
        state = state or Progress()
        state.sections[OUTLINE[index]] = text
        state.sections_done = index + 1
        state.current = OUTLINE[index + 1] if index + 1 < len(OUTLINE) else None
        return state

    return record


async def write_report(sess: AgentSession[Progress], ctx: AgentContext) -> AgentResult:
    """The agent: one report per turn, a section at a time, progress after each."""

    async def handle_turn(item: AgentInput, turn: TurnContext) -> None:
        topic = item.message.text.strip() if item.message else ""
        topic = topic or "an unnamed topic"
        await sess.update_custom(lambda _old: Progress(topic=topic, current=OUTLINE[0]))
        for index, heading in enumerate(OUTLINE):
            answer = await ai.generate(
                f"Write the '{heading}' section of a short report on {topic}, in two sentences.",
                config={"temperature": 0.3},
            )
            await sess.update_custom(recorded(index, answer.text.strip()))
            await asyncio.sleep(section_pause())  # an abort cancels the turn here, or in the model call
        final = await sess.get_custom()
        body = "\n\n".join(f"## {h}\n{final.sections[h]}" for h in OUTLINE) if final else ""
        await sess.add_artifacts([Artifact(name="report", parts=[Part(text=f"# {topic}\n\n{body}")])])
        reply = f"The report on {topic} is ready ({len(OUTLINE)} sections, artifact 'report')."
        await sess.add_messages([Message(role="model", content=[Part(text=reply)])])

    await sess.run(handle_turn)
    return await sess.result()


report = ai.define_custom_agent(
    name="report",
    fn=write_report,
    store=SqliteSessionStore(os.path.join(SESSIONS_DIR, "reports.db")),
    state_schema=Progress,
    heartbeat_interval=0.5,  # how often a running report's progress reaches the store
    description="Writes a report on a topic in the background.",
)


async def demo(topic: str, abort_after: int = 2) -> dict[str, Any]:
    """Start a report, print its progress as polled, abort it after `abort_after` sections."""
    task = await report.chat().detach(topic)
    print(f"started: pending snapshot {task.snapshot_id}")
    async for snap in task.poll(0.25):
        state = snap.state.custom if snap.state else None
        done = state.sections_done if isinstance(state, Progress) else 0
        print(f"{snap.status}: {done}/{len(OUTLINE)} sections")
        if done >= abort_after and snap.status == "pending":
            print(f"abort -> was {await task.abort()}")
    final = await task.poll()
    if final is None:
        return {"status": "gone"}
    return {"status": str(final.status), "custom": final.state.custom if final.state else None}


if __name__ == "__main__":
    print(asyncio.run(demo(" ".join(sys.argv[1:]) or "solar panels")))
