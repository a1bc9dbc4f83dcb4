"""A custom agent with its own turn loop: draft, critique, revise, then answer.

    turnkit chat examples/custom_loop.py

`define_agent` runs the usual model-and-tools loop; `define_custom_agent` hands you the session and
lets you decide what a turn is. Here each turn asks the model for a draft, asks it again (as an
editor) whether the draft answers the request, and revises until the editor says "OK" or
`MAX_REVISIONS` is reached. Only the final answer is streamed and kept in the history; how many
drafts each answer took is custom state (`/state` in the REPL shows it). Anything to set up
before the first turn or clean up after the last goes around `sess.run(...)`.

The model is `$TURNKIT_MODEL` or `--model` (default: the local SmolLM2); with `--model echoModel`
the editor never says OK, so every answer takes `MAX_REVISIONS + 1` drafts.
"""

from __future__ import annotations

import os

from pydantic import BaseModel

from turnkit import AgentInput, Message, ModelResponseChunk, Part, Turnkit
from turnkit.agents import AgentContext, AgentResult, AgentSession, TurnContext
from turnkit.models.llamacpp import LlamaCpp
from turnkit.sessions import SqliteSessionStore
from turnkit.testing import define_echo_model

ai = Turnkit(plugins=[LlamaCpp()], model=os.environ.get("TURNKIT_MODEL") or "llamacpp/smollm2")
define_echo_model(ai)

SESSIONS_DIR = os.environ.get("TURNKIT_SESSIONS_DIR") or os.path.join(".turnkit", "sessions")
MAX_REVISIONS = 2
WRITER = "You are a careful writer. Answer the user's request in at most three sentences."
EDITOR = (
    "You are an editor. Reply with exactly OK if the draft fully answers the request; "
    "otherwise reply with one sentence saying what to fix."
)


class Drafts(BaseModel):
    """The custom state: drafts written for each answer, and the editor's last note."""

    drafts_per_answer: list[int] = []
    last_note: str | None = None


async def draft_and_revise(sess: AgentSession[Drafts], ctx: AgentContext) -> AgentResult:
    """The agent function: set-up, the turn loop (`sess.run`), the result."""

    async def handle_turn(item: AgentInput, turn: TurnContext) -> None:
        request = item.message.text if item.message else ""
        history = await sess.get_messages()  # includes this turn's user message
        draft = (await ai.generate(system=WRITER, messages=history)).text
        drafts, note = 1, None
        while drafts <= MAX_REVISIONS and not turn.aborted:
            verdict = await ai.generate(f"Request: {request}\n\nDraft: {draft}", system=EDITOR)
            note = verdict.text.strip()
            if note.upper().startswith("OK"):
                break
            revision = f"Request: {request}\n\nYour draft: {draft}\n\nEditor's note: {note}\n\nRewrite it."
            draft = (await ai.generate(revision, system=WRITER)).text
            drafts += 1
        turn.send_chunk(ModelResponseChunk(role="model", index=0, content=[Part(text=draft)]))
        await sess.add_messages([Message(role="model", content=[Part(text=draft)])])

        def count(state: Drafts | None) -> Drafts:
            state = state or Drafts()
            state.drafts_per_answer.append(drafts)
            state.last_note = note
            return state

        await sess.update_custom(count)

    await sess.run(handle_turn)
    return await sess.result()


writer = ai.define_custom_agent(
    name="writer",
    fn=draft_and_revise,
    store=SqliteSessionStore(os.path.join(SESSIONS_DIR, "writer.db")),
    state_schema=Drafts,
    description="Answers after drafting, critiquing and revising.",
)
