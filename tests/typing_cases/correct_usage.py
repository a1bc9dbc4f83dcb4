"""A user's program written the way the docs show: `mypy --strict` must find nothing wrong in it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypedDict

from pydantic import BaseModel

from turnkit import GenerateResponse, GenerateStream, Turnkit
from turnkit.agents import Agent, AgentChat, AgentContext, AgentSession, AgentTurn, DetachedTask
from turnkit.http import HttpTransport, RemoteAgent, remote_agent
from turnkit.sessions import InMemorySessionStore, Session, run_with_session
from turnkit.types import SessionSnapshot, SnapshotStatus

ai = Turnkit(model="programmableModel")


class TaskState(BaseModel):
    tasks: list[str] = []
    next_id: int = 1


class Counter(TypedDict):
    count: int


class Answer(BaseModel):
    text: str
    confidence: float


@ai.tool
async def add_task(title: str) -> str:
    """Add a task."""
    session: Session[TaskState] = ai.current_session(TaskState)

    def add(state: TaskState) -> TaskState:
        return state.model_copy(update={"tasks": [*state.tasks, title], "next_id": state.next_id + 1})

    new = await session.update_custom(add)
    await session.update_custom(lambda s: {"tasks": s.tasks, "next_id": 1})  # a dict is accepted too

    def genkit_style(state: TaskState | None) -> TaskState:  # as Genkit types it: also accepted
        return state or TaskState()

    await session.update_custom(genkit_style)
    untyped = ai.current_session()
    await untyped.update_custom(lambda old: {"n": old["n"] + 1})
    print((await untyped.get_custom())["n"])
    return f"task {new.next_id - 1}"


tasks: Agent[TaskState] = ai.define_agent(
    "tasks",
    system="Manage tasks for {{user}}.",
    prompt_input={"user": "Ada"},
    messages=[{"role": "user", "content": [{"text": "hi"}]}],
    tools=[add_task],
    max_turns=3,
    store="memory://",
    state_schema=TaskState,
    description="Keeps a task list.",
)
counter = ai.define_agent("counter", state_schema=Counter, store=InMemorySessionStore())
untyped = ai.define_agent(name="plain", config={"temperature": 0})


async def custom(sess: AgentSession[TaskState], ctx: AgentContext) -> None:
    state = await sess.get_custom()
    if state is not None:
        print(state.tasks)


planner: Agent[TaskState] = ai.define_custom_agent("planner", custom, state_schema=TaskState)


async def custom_without_none_checks(sess: AgentSession[TaskState], ctx: AgentContext) -> None:
    print((await sess.get_custom()).tasks)  # typed `S`, as Session.get_custom is

    def bump(state: TaskState) -> TaskState:
        return state.model_copy(update={"next_id": state.next_id + 1})

    print((await sess.update_custom(bump)).next_id)


class RedisSessionStore:
    """Seed 000's custom store, as written there: two methods, no `context`."""

    def __init__(self, redis_client: dict[str, str]) -> None:
        self.redis = redis_client

    async def get_snapshot(
        self,
        *,
        snapshot_id: str | None = None,
        session_id: str | None = None,
    ) -> SessionSnapshot | None:
        data = self.redis.get(f"genkit:snapshot:{snapshot_id or session_id}")
        return None if data is None else SessionSnapshot.model_validate_json(data)

    async def save_snapshot(
        self,
        snapshot_id: str | None,
        fn: Callable[[SessionSnapshot | None], SessionSnapshot | None],
    ) -> SessionSnapshot | None:
        existing_data = self.redis.get(f"genkit:snapshot:{snapshot_id}")
        existing = SessionSnapshot.model_validate_json(existing_data) if existing_data else None
        new_snapshot = fn(existing)
        if new_snapshot is not None:
            self.redis[f"genkit:snapshot:{snapshot_id}"] = new_snapshot.model_dump_json()
        return new_snapshot


seed_store = RedisSessionStore({})
weather = ai.define_agent("weather", store=seed_store)
seed_custom: Agent[TaskState] = ai.define_custom_agent(
    "seedCustom", custom, store=seed_store, state_schema=TaskState
)
seed_prompted = ai.define_prompt_agent("seedPrompted", prompt="tasks", store=seed_store)


async def persisted_flow() -> None:
    session = Session(store=seed_store)
    await run_with_session(session, session.add_messages([]))
    again: Session[TaskState] = Session(session.id, store="memory:", state_schema=TaskState)
    if await again.load():
        print((await again.get_custom()).tasks)
    print(await again.save())


# Bare annotations: every generic public type defaults its parameters to Any.
def bare(
    agent: Agent,
    sess: AgentSession,
    chat: AgentChat,
    turn: AgentTurn,
    task: DetachedTask,
    remote: RemoteAgent,
    transport: HttpTransport,
    session: Session,
    stream: GenerateStream,
    response: GenerateResponse,
) -> None:
    print(agent, sess, chat, turn, task, remote, transport, session, stream, response)


# A JSON-schema state is untyped JSON alike on a local and a remote agent: `Any` for both.
json_agent = ai.define_agent("json", state_schema={"type": "object"}, store="memory:")
json_remote = remote_agent("http://localhost/agents/json", state_schema={"type": "object"})
prompted = ai.define_prompt_agent("prompted", prompt="tasks", prompt_input={"tone": "brief"})


async def main() -> None:
    chat: AgentChat[TaskState] = tasks.chat()
    res = await chat.send("add milk")
    state = res.state
    if state is not None:
        print(state.next_id, state.tasks)
    current = chat.state
    if current is not None:
        print(current.tasks)
    count_chat = counter.chat()
    if count_chat.state is not None:
        print(count_chat.state["count"] + 1)
    answer: GenerateResponse[Answer] = await ai.generate("2+2?", output=Answer)
    if answer.output is not None:
        print(answer.output.confidence)
    loose = await ai.generate("hi", output={"type": "object"})
    print(loose.output)
    greeting = ai.define_prompt("greet", prompt="Hi {{name}}", output=Answer)
    said = await greeting({"name": "Ada"})
    if said.output is not None:
        print(said.output.text)
    anything: Any = untyped.state_type.load(None)
    print(anything)
    # Custom state is typed `S` on chat, response, chunk and error: no None check needed.
    print(chat.state.tasks, res.state.next_id, res.custom.tasks, chat.custom.next_id)
    turn = chat.send_stream("more")
    async for chunk in turn:
        print(chunk.custom.tasks, chunk.state.next_id)
    print(json_agent.chat().state["any"], json_remote.chat().state["any"])
    # Client-managed, as in Genkit: messages, artifacts and the custom state (an S or its JSON).
    seeded: AgentChat[TaskState] = planner.chat(
        messages=chat.messages, artifacts=chat.artifacts, state=TaskState(tasks=["milk"])
    )
    from_json = planner.chat(state={"tasks": ["eggs"]})
    continued = planner.chat(session_state=seeded.session_state)
    print(seeded.state.tasks, from_json.state.tasks, continued.state.tasks)
    task = await chat.detach("in the background")
    print((await task.wait(0.5)).status, await chat.abort())
    await chat.resume(respond=[], metadata=None)
    before: SnapshotStatus | None = await tasks.abort("some-snapshot")
    remote_before: SnapshotStatus | None = await json_remote.abort("some-snapshot")
    print(before, remote_before)
    streamed: GenerateResponse[Answer] = await ai.generate_stream("2+2?", output=Answer)
    if streamed.output is not None:
        print(streamed.output.confidence)


ai.run_main(main())
