"""Tracing: the span tree of agent turns (tool call, interrupt, failure, detached), its names and
attributes (OpenTelemetry GenAI conventions and Genkit's), content recording, and token usage per
turn, read back from the OpenTelemetry SDK's in-memory exporter."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from turnkit import Turnkit, TurnkitError
from turnkit._tracing import configure, reset_configuration, root_span, tracing_active
from turnkit.sessions import InMemorySessionStore
from turnkit.sessions._memory import MemoryBackend
from turnkit.testing import ProgrammableModel, define_programmable_model
from turnkit.types import AgentFinishReason, AgentInput, Message, Part

USAGE = {"inputTokens": 7, "outputTokens": 3, "totalTokens": 10}


def reply(text: str) -> dict[str, Any]:
    return {"message": {"role": "model", "content": [{"text": text}]}, "finishReason": "stop", "usage": USAGE}


def tool_call(name: str, args: dict[str, Any], ref: str = "r1") -> dict[str, Any]:
    content = [{"toolRequest": {"name": name, "input": args, "ref": ref}}]
    return {"message": {"role": "model", "content": content}, "finishReason": "stop", "usage": USAGE}


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    configure(tracer_provider=provider, record_content=True)
    yield exporter
    reset_configuration()


@pytest.fixture
def app() -> tuple[Turnkit, ProgrammableModel]:
    ai = Turnkit()
    pm = define_programmable_model(ai, name="test/prog")

    @ai.tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    ai.define_interrupt(name="approve", description="Ask the user to approve.")
    return ai, pm


def by_name(exporter: InMemorySpanExporter) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for span in exporter.get_finished_spans():
        out.setdefault(span.name, []).append(span)
    return out


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent else None


def sid(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_turn_with_a_tool_call_is_one_tree(spans: InMemorySpanExporter, app: Any) -> None:
    ai, pm = app
    pm.program([tool_call("get_weather", {"city": "Paris"}), reply("It is sunny.")])
    agent = ai.define_agent("weather", model="test/prog", tools=["get_weather"], store=InMemorySessionStore())
    chat = agent.chat()
    res = await chat.send("Weather in Paris?")

    found = by_name(spans)
    assert sorted(found) == ["chat test/prog", "execute_tool get_weather", "generate", "invoke_agent weather"]
    (turn,) = found["invoke_agent weather"]
    (gen,) = found["generate"]
    model_calls = found["chat test/prog"]
    (tool,) = found["execute_tool get_weather"]
    assert len(model_calls) == 2
    # The tree: turn -> generate -> (model, tool, model); one trace.
    assert parent_of(turn) is None
    assert parent_of(gen) == sid(turn)
    assert all(parent_of(m) == sid(gen) for m in model_calls)
    assert parent_of(tool) == sid(gen)
    assert len({s.context.trace_id for s in (turn, gen, tool, *model_calls) if s.context}) == 1

    t = attrs(turn)
    assert t["gen_ai.operation.name"] == "invoke_agent"
    assert t["gen_ai.agent.name"] == "weather"
    assert t["turnkit.session.id"] == res.output.session_id == t["gen_ai.conversation.id"]
    assert t["turnkit.snapshot.id"] == res.output.snapshot_id
    assert "turnkit.snapshot.parent_id" not in t
    assert t["turnkit.turn.index"] == 0
    assert t["turnkit.turn.finish_reason"] == "stop"
    assert t["gen_ai.usage.input_tokens"] == 14 and t["gen_ai.usage.output_tokens"] == 6
    assert t["genkit:name"] == "weather" and t["genkit:type"] == "action"
    assert t["genkit:metadata:subtype"] == "agent" and t["genkit:isRoot"] is True
    assert t["genkit:state"] == "success"
    assert "Weather in Paris?" in t["genkit:input"] and "It is sunny." in t["genkit:output"]

    m = attrs(model_calls[0])
    assert m["gen_ai.operation.name"] == "chat"
    assert m["gen_ai.request.model"] == "test/prog"
    assert m["gen_ai.provider.name"] == "test"
    assert tuple(m["gen_ai.response.finish_reasons"]) == ("stop",)
    assert m["gen_ai.usage.input_tokens"] == 7 and m["gen_ai.usage.output_tokens"] == 3
    assert m["genkit:metadata:subtype"] == "model" and m["genkit:state"] == "success"
    assert m["genkit:path"] == "/{weather,t:action,s:agent}/{generate,t:util}/{test%2Fprog,t:action,s:model}"
    assert json.loads(m["genkit:input"])["messages"][0]["content"][0]["text"] == "Weather in Paris?"

    k = attrs(tool)
    assert k["gen_ai.operation.name"] == "execute_tool"
    assert k["gen_ai.tool.name"] == "get_weather" and k["gen_ai.tool.call.id"] == "r1"
    assert k["genkit:metadata:subtype"] == "tool" and k["genkit:state"] == "success"
    assert json.loads(k["genkit:input"]) == {"city": "Paris"}
    assert json.loads(k["genkit:output"]) == "sunny in Paris"
    assert "turnkit.tool.interrupted" not in k

    g = attrs(gen)
    assert g["genkit:type"] == "util" and g["gen_ai.usage.input_tokens"] == 14

    # Token usage summed over the turn's model calls, on the agent's output.
    assert res.output.usage is not None
    assert (res.output.usage.input_tokens, res.output.usage.output_tokens) == (14, 6)
    assert res.usage is res.output.usage
    assert "usage" not in res.output.to_wire()  # Genkit's AgentOutput has no such field

    # The next turn (a new connection: its turn index counts within it) follows the first snapshot.
    spans.clear()
    pm.program([reply("Still sunny.")])
    res2 = await chat.send("And now?")
    (turn2,) = by_name(spans)["invoke_agent weather"]
    t2 = attrs(turn2)
    assert t2["turnkit.turn.index"] == 0
    assert t2["turnkit.snapshot.parent_id"] == res.output.snapshot_id
    assert t2["turnkit.snapshot.id"] == res2.output.snapshot_id
    assert res2.output.usage is not None and res2.output.usage.input_tokens == 7


async def test_an_interrupt_marks_the_tool_span_and_is_not_an_error(
    spans: InMemorySpanExporter, app: Any
) -> None:
    ai, pm = app
    pm.program([tool_call("approve", {"what": "refund"})])
    agent = ai.define_agent("desk", model="test/prog", tools=["approve"])
    out = await agent.run(None, [{"message": {"role": "user", "content": [{"text": "refund me"}]}}])
    assert out.finish_reason == AgentFinishReason.INTERRUPTED

    found = by_name(spans)
    (tool,) = found["execute_tool approve"]
    (turn,) = found["invoke_agent desk"]
    (gen,) = found["generate"]
    assert attrs(tool)["turnkit.tool.interrupted"] is True
    assert attrs(tool)["genkit:state"] == "success"
    assert tool.status.status_code == StatusCode.UNSET
    assert tuple(attrs(gen)["gen_ai.response.finish_reasons"]) == ("interrupted",)
    assert attrs(turn)["turnkit.turn.finish_reason"] == "interrupted"
    assert turn.status.status_code == StatusCode.UNSET
    # A client-managed agent has no snapshots: no snapshot attributes, the session id still.
    assert "turnkit.snapshot.id" not in attrs(turn) and attrs(turn)["turnkit.session.id"] == out.session_id


async def test_a_failure_sets_error_status_and_records_the_exception(
    spans: InMemorySpanExporter, app: Any
) -> None:
    ai, pm = app

    def broken(request: Any, ctx: Any) -> Any:
        raise RuntimeError("model backend down")

    pm.handler = broken
    agent = ai.define_agent("fragile", model="test/prog", store=InMemorySessionStore())
    out = await agent.run(None, [{"message": {"role": "user", "content": [{"text": "hi"}]}}])
    assert out.finish_reason == AgentFinishReason.FAILED

    found = by_name(spans)
    (model_call,) = found["chat test/prog"]
    (turn,) = found["invoke_agent fragile"]
    for span in (model_call, found["generate"][0], turn):
        assert span.status.status_code == StatusCode.ERROR
        assert attrs(span)["genkit:state"] == "error"
    assert "model backend down" in (model_call.status.description or "")
    assert [e.name for e in model_call.events] == ["exception"]
    assert model_call.events[0].attributes is not None
    assert model_call.events[0].attributes["exception.type"] == "RuntimeError"
    assert attrs(turn)["turnkit.turn.finish_reason"] == "failed"
    assert attrs(turn)["error.type"] == "INTERNAL"


async def test_a_detached_turn_gets_its_own_trace_linked_to_the_request(
    spans: InMemorySpanExporter, app: Any
) -> None:
    ai, pm = app
    pm.program([tool_call("get_weather", {"city": "Oslo"}), reply("Cold.")])
    agent = ai.define_agent("slow", model="test/prog", tools=["get_weather"], store=InMemorySessionStore())
    provider_tracer = spans_tracer()
    with provider_tracer.start_as_current_span("POST /agents/slow") as request_span:
        task = await agent.chat().detach("weather in Oslo, take your time")
    snapshot = await task.wait()
    assert snapshot.status == "completed"

    found = by_name(spans)
    (turn,) = found["invoke_agent slow"]
    (request,) = found["POST /agents/slow"]
    assert turn.context is not None and request.context is not None
    assert turn.context.trace_id != request.context.trace_id  # its own trace...
    assert parent_of(turn) is None
    (link,) = turn.links  # ...linked to the request that started it
    assert link.context.trace_id == request_span.get_span_context().trace_id
    assert link.context.span_id == request_span.get_span_context().span_id
    t = attrs(turn)
    assert t["turnkit.turn.detached"] is True
    assert t["turnkit.snapshot.id"] == snapshot.snapshot_id
    assert t["turnkit.session.id"] == snapshot.session_id
    assert t["turnkit.turn.finish_reason"] == "stop"
    # The turn's work nests under it, in its trace.
    (gen,) = found["generate"]
    assert parent_of(gen) == sid(turn)
    (tool,) = found["execute_tool get_weather"]
    assert tool.context is not None and tool.context.trace_id == turn.context.trace_id


def spans_tracer() -> Any:
    from turnkit._tracing import _tracer

    return _tracer()


async def test_content_is_not_recorded_when_recording_is_off(
    spans: InMemorySpanExporter, app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ai, pm = app
    configure(record_content=False)
    pm.program([tool_call("get_weather", {"city": "Rome"}), reply("secret answer")])
    agent = ai.define_agent("quiet", model="test/prog", tools=["get_weather"])
    await agent.run(None, [{"message": {"role": "user", "content": [{"text": "secret question"}]}}])
    finished = spans.get_finished_spans()
    assert len(finished) == 5
    for span in finished:
        assert "genkit:input" not in attrs(span) and "genkit:output" not in attrs(span)
        assert "secret" not in json.dumps(attrs(span), default=str)


def test_content_recording_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from turnkit._tracing import content_recording

    reset_configuration()
    monkeypatch.delenv("TURNKIT_TRACE_CONTENT", raising=False)
    monkeypatch.delenv("GENKIT_ENV", raising=False)
    assert content_recording() is False  # production default
    monkeypatch.setenv("GENKIT_ENV", "dev")
    assert content_recording() is True  # development default
    monkeypatch.setenv("TURNKIT_TRACE_CONTENT", "0")
    assert content_recording() is False
    monkeypatch.delenv("GENKIT_ENV")
    monkeypatch.setenv("TURNKIT_TRACE_CONTENT", "1")
    assert content_recording() is True
    configure(record_content=False)
    assert content_recording() is False
    reset_configuration()


async def test_disabled_tracing_records_nothing_but_still_sums_usage(
    spans: InMemorySpanExporter, app: Any
) -> None:
    ai, pm = app
    configure(enabled=False)
    assert not tracing_active()
    pm.program([tool_call("get_weather", {"city": "Lima"}), reply("Mild.")])
    agent = ai.define_agent("off", model="test/prog", tools=["get_weather"])
    out = await agent.run(None, [{"message": {"role": "user", "content": [{"text": "hi"}]}}])
    assert spans.get_finished_spans() == ()
    assert out.usage is not None and (out.usage.input_tokens, out.usage.output_tokens) == (14, 6)


async def test_without_an_sdk_provider_nothing_is_active(app: Any) -> None:
    reset_configuration()
    assert not tracing_active()  # the suite sets no global provider
    ai, pm = app
    pm.program([reply("ok")])
    agent = ai.define_agent("plain", model="test/prog")
    out = await agent.run(None, [{"message": {"role": "user", "content": [{"text": "hi"}]}}])
    assert out.usage is not None and out.usage.output_tokens == 3


async def test_streamed_turns_carry_usage(spans: InMemorySpanExporter, app: Any) -> None:
    ai, pm = app
    pm.program(
        [reply("streamed")], chunks=[[{"content": [{"text": "stream"}]}, {"content": [{"text": "ed"}]}]]
    )
    agent = ai.define_agent("streamy", model="test/prog", store=InMemorySessionStore())
    turn = agent.chat().send_stream("go")
    texts = [c.text async for c in turn]  # type: ignore[attr-defined]
    res = await turn
    assert "".join(t for t in texts if t) == "streamed"
    assert res.output.usage is not None and res.output.usage.total_tokens == 10


async def test_turns_of_one_connection_count_up_and_chain_snapshots(
    spans: InMemorySpanExporter, app: Any
) -> None:
    ai, pm = app
    pm.program([reply("one"), reply("two")])
    agent = ai.define_agent("pair", model="test/prog", store=InMemorySessionStore())
    user = {"message": {"role": "user", "content": [{"text": "hi"}]}}
    out = await agent.run(None, [user, user])
    turns = sorted(by_name(spans)["invoke_agent pair"], key=lambda s: attrs(s)["turnkit.turn.index"])
    assert [attrs(t)["turnkit.turn.index"] for t in turns] == [0, 1]
    assert attrs(turns[1])["turnkit.snapshot.parent_id"] == attrs(turns[0])["turnkit.snapshot.id"]
    assert attrs(turns[1])["turnkit.snapshot.id"] == out.snapshot_id
    assert out.usage is not None and out.usage.input_tokens == 7  # the last turn's own usage


async def test_an_agent_called_from_a_tool_nests_under_that_tool_call(
    spans: InMemorySpanExporter, app: Any
) -> None:
    ai, pm = app
    expert_model = define_programmable_model(ai, name="test/expert")
    expert_model.program([reply("42")])
    expert = ai.define_agent("expert", model="test/expert")

    @ai.tool
    async def ask_expert(question: str) -> str:
        """Delegate a question to the expert agent."""
        user = {"message": {"role": "user", "content": [{"text": question}]}}
        out = await expert.run(None, [user])
        return out.message.text if out.message else ""

    pm.program([tool_call("ask_expert", {"question": "the answer?"}), reply("It is 42.")])
    lead = ai.define_agent("lead", model="test/prog", tools=["ask_expert"])
    await lead.run(None, [{"message": {"role": "user", "content": [{"text": "ask"}]}}])

    found = by_name(spans)
    (tool,) = found["execute_tool ask_expert"]
    (sub_turn,) = found["invoke_agent expert"]
    (lead_turn,) = found["invoke_agent lead"]
    assert parent_of(sub_turn) == sid(tool)
    assert sub_turn.context is not None and lead_turn.context is not None
    assert sub_turn.context.trace_id == lead_turn.context.trace_id
    assert "genkit:isRoot" not in attrs(sub_turn)
    assert attrs(sub_turn)["genkit:path"].startswith("/{lead,t:action,s:agent}/{generate,t:util}/")
    (expert_call,) = found["chat test/expert"]
    assert parent_of(expert_call) in {sid(s) for s in found["generate"]}


async def test_a_session_continued_by_another_app_keeps_its_session_id(
    spans: InMemorySpanExporter, tmp_path: Any
) -> None:
    # Two apps over one SQLite file stand for two processes serving the same sessions.
    url = f"sqlite:///{tmp_path / 'sessions.db'}"
    agents = []
    for _ in range(2):
        ai = Turnkit()
        pm = define_programmable_model(ai, name="test/prog")
        pm.program([reply("hello")])
        agents.append(ai.define_agent("shared", model="test/prog", store=url))
    first = await agents[0].chat().send("hi")
    chat = await agents[1].load_chat(session_id=first.output.session_id)
    await chat.send("again")
    turns = by_name(spans)["invoke_agent shared"]
    assert [attrs(t)["turnkit.session.id"] for t in turns] == [first.output.session_id] * 2
    assert attrs(turns[1])["turnkit.snapshot.parent_id"] == first.output.snapshot_id


class _FlakyBackend(MemoryBackend):
    """An in-memory store whose writes fail while `down` (an unreachable store)."""

    down = False

    async def put_record(self, *args: Any, **kwargs: Any) -> Any:
        if self.down:
            raise TurnkitError("UNAVAILABLE", "store unreachable at 10.0.0.7")
        return await super().put_record(*args, **kwargs)


async def test_a_turn_whose_save_fails_is_traced_as_failed(spans: InMemorySpanExporter, app: Any) -> None:
    ai, pm = app
    pm.program([reply("one"), reply("two")])
    backend = _FlakyBackend()
    agent = ai.define_agent("saver", model="test/prog", store=InMemorySessionStore(backend=backend))
    await agent.chat().send("one")
    spans.clear()
    backend.down = True
    with pytest.raises(TurnkitError) as caught:
        await agent.chat().send("two")
    assert caught.value.status == "UNAVAILABLE"

    (turn,) = by_name(spans)["invoke_agent saver"]
    t = attrs(turn)
    assert turn.status.status_code == StatusCode.ERROR
    assert t["genkit:state"] == "error" and t["error.type"] == "UNAVAILABLE"
    assert t["turnkit.turn.finish_reason"] == "failed"
    assert "genkit:output" not in t  # the handler's answer was not kept
    assert [e.name for e in turn.events] == ["exception"]
    assert "store unreachable" in str(dict(turn.events[0].attributes or {}))  # content is recorded here


async def _finished(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    """The finished span `name`, once a background turn has ended it (10 s at most)."""
    async with asyncio.timeout(10):
        while True:
            found = by_name(exporter).get(name)
            if found:
                return found[0]
            await asyncio.sleep(0.01)


async def test_a_turn_detached_midway_is_marked_on_its_span(spans: InMemorySpanExporter, app: Any) -> None:
    ai, pm = app
    pm.program([reply("done in the background")])
    pm.gate = asyncio.Event()
    agent = ai.define_agent("midway", model="test/prog", store=InMemorySessionStore())
    conn = await agent.stream_bidi()
    await conn.send(AgentInput(message=Message(role="user", content=[Part(text="go")])))
    await pm.wait_for_calls(1)  # the turn is running, attached
    detached = await conn.detach()
    assert detached.finish_reason == "detached"
    pm.gate.set()

    turn = await _finished(spans, "invoke_agent midway")
    t = attrs(turn)
    assert t["turnkit.turn.detached"] is True
    assert [e.name for e in turn.events] == ["detached"]
    assert t["turnkit.snapshot.id"] == detached.snapshot_id
    assert t["turnkit.turn.finish_reason"] == "stop" and t["genkit:state"] == "success"


async def test_with_content_off_a_failure_keeps_its_type_not_its_text(
    spans: InMemorySpanExporter, app: Any
) -> None:
    ai, pm = app
    configure(record_content=False)

    def broken(request: Any, ctx: Any) -> Any:
        raise RuntimeError("cannot reach db for user alice@example.com")

    pm.handler = broken
    agent = ai.define_agent("private", model="test/prog")
    out = await agent.run(None, [{"message": {"role": "user", "content": [{"text": "hi"}]}}])
    assert out.finish_reason == AgentFinishReason.FAILED

    found = by_name(spans)
    (model_call,) = found["chat test/prog"]
    (turn,) = found["invoke_agent private"]
    for span in (model_call, found["generate"][0], turn):
        assert span.status.status_code == StatusCode.ERROR and attrs(span)["genkit:state"] == "error"
        recorded = json.dumps(
            [attrs(span), span.status.description, [dict(e.attributes or {}) for e in span.events]],
            default=str,
        )
        assert "alice" not in recorded and "Traceback" not in recorded
    assert model_call.status.description == "RuntimeError"
    (event,) = model_call.events
    assert event.name == "exception" and dict(event.attributes or {}) == {
        "exception.type": "RuntimeError",
        "exception.escaped": False,
    }
    assert attrs(model_call)["error.type"] == "RuntimeError"
    assert attrs(turn)["error.type"] == attrs(turn)["genkit:error"] == "INTERNAL"


async def test_an_agent_run_as_its_own_action_has_one_agent_span(
    spans: InMemorySpanExporter, app: Any
) -> None:
    """The Developer UI runs an agent under its action span: the turn inside is Genkit's
    `runTurn-<n>` flow step, not a second span named for the agent."""
    ai, pm = app
    pm.program([reply("one"), reply("two")])
    agent = ai.define_agent("helper", model="test/prog", store=InMemorySessionStore())
    user = {"message": {"role": "user", "content": [{"text": "hi"}]}}
    with root_span("helper", "agent", user):
        await agent.run(None, [user, user])

    finished = spans.get_finished_spans()
    agent_named = [s for s in finished if attrs(s)["genkit:name"] == "helper"]
    (action,) = agent_named
    turns = sorted((s for s in finished if s.name.startswith("runTurn-")), key=lambda s: s.name)
    assert [s.name for s in turns] == ["runTurn-1", "runTurn-2"]
    for i, turn in enumerate(turns, start=1):
        t = attrs(turn)
        assert parent_of(turn) == sid(action)
        assert t["genkit:name"] == f"runTurn-{i}" and t["genkit:type"] == "flowStep"
        assert "genkit:metadata:subtype" not in t
        assert t["genkit:path"] == f"/{{helper,t:action,s:agent}}/{{runTurn-{i},t:flowStep}}"
        assert t["gen_ai.operation.name"] == "invoke_agent" and t["gen_ai.agent.name"] == "helper"
    (first_generate, _) = sorted(by_name(spans)["generate"], key=lambda s: s.start_time or 0)
    assert attrs(first_generate)["genkit:path"].startswith(
        "/{helper,t:action,s:agent}/{runTurn-1,t:flowStep}/"
    )
