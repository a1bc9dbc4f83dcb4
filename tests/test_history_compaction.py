"""`HistoryCompaction`: the model gets a bounded history, the session store keeps every message."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from turnkit import Turnkit, TurnkitError
from turnkit._tools import tool_from_function
from turnkit.middleware import HistoryCompaction
from turnkit.sessions import InMemorySessionStore
from turnkit.testing import ProgrammableModel, define_programmable_model
from turnkit.types import Message, ModelRequest, Part


def reply(t: str) -> dict[str, Any]:
    return {"message": {"role": "model", "content": [{"text": t}]}, "finishReason": "stop"}


def texts(request: ModelRequest) -> list[str]:
    return [m.text for m in request.messages if m.role != "system"]


def app() -> tuple[Turnkit, ProgrammableModel]:
    ai = Turnkit(model="programmableModel")
    return ai, define_programmable_model(ai)


async def test_drop_sends_the_latest_whole_turns_within_budget_and_the_store_keeps_all() -> None:
    ai, pm = app()
    store = InMemorySessionStore()
    agent = ai.define_agent(
        name="a", system="Be brief.", store=store, use=[HistoryCompaction(max_messages=4)]
    )
    pm.program([reply(f"answer {i}") for i in range(6)])
    chat = agent.chat()
    for i in range(6):
        res = await chat.send(f"question {i}")
    # Five earlier turns and the new question are 11 messages; whole turns go from the start until
    # at most 4 remain, so the model gets the last full turn and the new question.
    assert texts(pm.requests[-1]) == ["question 4", "answer 4", "question 5"]
    assert pm.requests[-1].messages[0].role == "system"  # the system prompt is always sent
    assert texts(pm.requests[1]) == ["question 0", "answer 0", "question 1"]  # already over at turn 2
    snap = await store.get_snapshot(snapshot_id=res.raw.snapshot_id)
    assert snap is not None and snap.state is not None
    assert [m.text for m in snap.state.messages or []] == [
        t for i in range(6) for t in (f"question {i}", f"answer {i}")
    ]


async def test_a_history_within_budget_is_sent_as_it_is() -> None:
    ai, pm = app()
    agent = ai.define_agent(name="a", store=InMemorySessionStore(), use=[HistoryCompaction(max_messages=10)])
    pm.program([reply("one"), reply("two")])
    chat = agent.chat()
    await chat.send("hi")
    await chat.send("again")
    assert texts(pm.requests[-1]) == ["hi", "one", "again"]


async def test_max_chars_counts_the_json_of_the_messages() -> None:
    ai, pm = app()
    pm.program([reply("a" * 50) for _ in range(6)])
    plain = ai.define_agent(name="plain", store=InMemorySessionStore()).chat()
    await plain.send("q" * 50)
    await plain.send("q" * 50)
    three = sum(len(m.to_json()) for m in pm.requests[-1].messages)  # a whole turn and a question
    budget = three + 10
    agent = ai.define_agent(name="a", store=InMemorySessionStore(), use=[HistoryCompaction(max_chars=budget)])
    chat = agent.chat()
    for _ in range(4):
        await chat.send("q" * 50)
    sent = [m for m in pm.requests[-1].messages if m.role != "system"]
    assert sum(len(m.to_json()) for m in sent) <= budget
    assert len(sent) == 3  # one whole earlier turn and the question fit; two turns would not


async def test_the_latest_turn_goes_whole_even_over_budget_with_its_tool_calls() -> None:
    ai, pm = app()

    def lookup(city: str) -> str:
        """Look a city up."""
        return f"{city}: sunny"

    agent = ai.define_agent(
        name="a",
        store=InMemorySessionStore(),
        tools=[tool_from_function(lookup)],
        use=[HistoryCompaction(max_messages=1)],
    )
    call = {
        "message": {
            "role": "model",
            "content": [{"toolRequest": {"name": "lookup", "ref": "1", "input": {"city": "Oslo"}}}],
        }
    }
    pm.program([reply("first"), call, reply("Oslo is sunny")])
    chat = agent.chat()
    await chat.send("hello")
    await chat.send("weather in Oslo?")
    # The second model call of the turn sees the question, the tool request and its response: a
    # tool response is never a place to cut, and the turn itself is never cut.
    last = pm.requests[-1].messages
    assert last[0].text == "weather in Oslo?" and len(last) == 3
    assert last[1].content[0].tool_request is not None and last[2].content[0].tool_response is not None


async def test_summarize_puts_a_summary_of_the_dropped_turns_in_the_system_message() -> None:
    ai, pm = app()
    seen: list[list[str]] = []

    async def summarize(messages: Sequence[Message]) -> str:
        seen.append([m.text for m in messages])
        return f"{len(messages)} earlier messages"

    mw = HistoryCompaction(max_messages=2, strategy="summarize", summarizer=summarize)
    agent = ai.define_agent(name="a", system="Be brief.", store=InMemorySessionStore(), use=[mw])
    pm.program([reply(f"answer {i}") for i in range(3)])
    chat = agent.chat()
    for i in range(3):
        await chat.send(f"question {i}")
    last = pm.requests[-1]
    assert texts(last) == ["question 2"]
    system = last.messages[0]
    assert system.role == "system" and "Be brief." in system.text
    assert "Summary of the earlier conversation:\n4 earlier messages" in system.text
    assert seen == [["question 0", "answer 0"], ["question 0", "answer 0", "question 1", "answer 1"]]


async def test_a_summary_is_made_once_for_the_same_dropped_messages() -> None:
    calls: list[int] = []

    def summarize(messages: Sequence[Message]) -> str:
        calls.append(len(messages))
        return "earlier"

    mw = HistoryCompaction(max_messages=1, strategy="summarize", summarizer=summarize)
    ai, pm = app()
    pm.program([reply("a"), reply("b"), reply("c")])
    for _ in range(2):  # two independent generate calls over the same history
        await ai.generate(
            messages=[
                Message(role="user", content=[Part(text="old")]),
                Message(role="model", content=[Part(text="x")]),
            ],
            prompt="new",
            use=[mw],
        )
    assert calls == [2]


def wire(role: str, *parts: dict[str, Any]) -> Message:
    return Message.from_wire({"role": role, "content": list(parts)})


def described(request: ModelRequest) -> list[str]:
    """Each message as `role:text`, or `role:request`/`role:response` for a tool part."""
    out = []
    for m in request.messages:
        part = m.content[0]
        kind = "request" if part.tool_request else "response" if part.tool_response else part.text
        out.append(f"{m.role}:{kind}")
    return out


async def test_system_messages_stay_where_they_were() -> None:
    ai, pm = app()
    pm.program([reply("x")])
    history = [
        wire("system", {"text": "Be brief."}),
        wire("user", {"text": "q0"}),
        wire("model", {"text": "a0"}),
        wire("user", {"text": "q1"}),
        wire("model", {"text": "a1"}),
        wire("system", {"text": "From here on, answer in French."}),
    ]
    await ai.generate(messages=history, prompt="q2", use=[HistoryCompaction(max_messages=3)])
    # The oldest turn goes; the instruction given between turns still comes after the turn before it
    # (not moved to the front, where it would read as the opening instruction), and is not counted.
    assert described(pm.requests[-1]) == [
        "system:Be brief.",
        "user:q1",
        "model:a1",
        "system:From here on, answer in French.",
        "user:q2",
    ]


@pytest.mark.parametrize("max_messages", [2, 3, 4])
async def test_an_earlier_turn_with_a_tool_round_is_dropped_whole(max_messages: int) -> None:
    ai, pm = app()
    pm.program([reply("x")])
    history = [
        wire("user", {"text": "q0"}),
        wire("model", {"text": "a0"}),
        wire("user", {"text": "weather?"}),
        wire("model", {"toolRequest": {"name": "lookup", "ref": "1", "input": {}}}),
        wire("tool", {"toolResponse": {"name": "lookup", "ref": "1", "output": "sunny"}}),
        wire("model", {"text": "sunny"}),
    ]
    await ai.generate(messages=history, prompt="q2", use=[HistoryCompaction(max_messages=max_messages)])
    # Cutting at the tool request or its response would fit the budget, but would send a response
    # without its request (or a turn without its question): the whole tool-round turn goes instead.
    assert described(pm.requests[-1]) == ["user:q2"]


async def test_a_tool_round_is_kept_whole_when_its_turn_fits() -> None:
    ai, pm = app()
    pm.program([reply("x")])
    history = [
        wire("user", {"text": "q0"}),
        wire("model", {"text": "a0"}),
        wire("user", {"text": "weather?"}),
        wire("model", {"toolRequest": {"name": "lookup", "ref": "1", "input": {}}}),
        wire("tool", {"toolResponse": {"name": "lookup", "ref": "1", "output": "sunny"}}),
        wire("model", {"text": "sunny"}),
    ]
    await ai.generate(messages=history, prompt="q2", use=[HistoryCompaction(max_messages=5)])
    assert described(pm.requests[-1]) == [
        "user:weather?",
        "model:request",
        "tool:response",
        "model:sunny",
        "user:q2",
    ]


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({}, "max_messages and/or max_chars"),
        ({"max_messages": 0}, "max_messages"),
        ({"max_chars": -5}, "max_chars"),
        ({"max_messages": True}, "max_messages"),
        ({"max_messages": 3, "strategy": "shrink"}, "strategy"),
        ({"max_messages": 3, "strategy": "summarize"}, "summarizer"),
    ],
)
def test_bad_options_are_refused_by_name(options: dict[str, Any], named: str) -> None:
    with pytest.raises(TurnkitError) as err:
        HistoryCompaction(**options)
    assert err.value.status == "INVALID_ARGUMENT" and named in err.value.message
