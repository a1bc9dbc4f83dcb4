"""A user's program with mistakes: each line marked `# expect: CODE` must get that mypy error."""

from __future__ import annotations

from typing import TypedDict

from pydantic import BaseModel

from turnkit import Turnkit
from turnkit.agents import Agent, AgentContext, AgentSession

ai = Turnkit(model="programmableModel")


class TaskState(BaseModel):
    tasks: list[str] = []


class OtherState(BaseModel):
    flag: bool = False


class Counter(TypedDict):
    count: int


class Answer(BaseModel):
    text: str


ai.define_agent("a", max_turn=3)  # expect: call-arg
ai.define_agent("b", max_turns="five")  # expect: arg-type
ai.define_agent("c", store=42)  # expect: arg-type
ai.define_agent("d", on_conflict="wait")  # expect: arg-type
ai.define_prompt_agent("e", promt="x")  # expect: call-arg
ai.define_prompt(nme="f")  # expect: call-arg
ai.prompt("g", varient="x")  # expect: call-arg
tasks = ai.define_agent("h", state_schema=TaskState)
mislabelled: Agent[OtherState] = ai.define_agent("k", state_schema=TaskState)  # expect: arg-type
counter = ai.define_agent("i", state_schema=Counter)


async def custom(sess: AgentSession[OtherState], ctx: AgentContext) -> None:
    return None


ai.define_custom_agent("j", custom, state_schema=TaskState)  # expect: arg-type


async def tool_body() -> None:
    session = ai.current_session(TaskState)
    await session.update_custom(lambda s: 5)  # expect: arg-type, return-value
    state = await session.get_custom()
    print(state.tasks)
    print(state.nosuch)  # expect: attr-defined
    await session.update_custom(lambda s: s.model_copy(update={"tasks": 1}).nosuch)  # expect: attr-defined


async def main() -> None:
    chat = tasks.chat()
    if chat.state is not None:
        print(chat.state.nosuch)  # expect: attr-defined
    res = await chat.send("hi")
    if res.state is not None:
        print(res.state.nosuch)  # expect: attr-defined
    count_chat = counter.chat()
    if count_chat.state is not None:
        print(count_chat.state["nosuch"])  # expect: typeddict-item
    await ai.generate("q", outptu=Answer)  # expect: call-arg
    answer = await ai.generate("q", output=Answer)
    if answer.output is not None:
        print(answer.output.nosuch)  # expect: attr-defined
    wrong: int = answer.output  # expect: assignment
    print(wrong)
    print(chat.state.nosuch)  # expect: attr-defined
    print(res.custom.nosuch)  # expect: attr-defined
    async for chunk in chat.send_stream("hi"):
        print(chunk.state.nosuch)  # expect: attr-defined
    streamed = await ai.generate_stream("q", output=Answer)
    print(streamed.text, streamed.nosuch)  # expect: attr-defined
    status: str = await tasks.abort("x")  # expect: assignment
    print(status)
    tasks.chat(state=OtherState())  # expect: arg-type
    chat_status: str = await chat.abort()  # expect: assignment
    print(chat_status)


class HalfStore:
    async def get_snapshot(self, *, snapshot_id: str | None = None) -> None:
        return None


ai.define_agent("half", store=HalfStore())  # expect: arg-type
