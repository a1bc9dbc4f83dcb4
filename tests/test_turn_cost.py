"""What keeps a turn's cost flat: a client-managed chat's history is text-checked once, not on every
turn; the checks that replaced whole-history walks and per-turn tasks still catch what they must."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from typing import Any

import pytest

import turnkit._valid_text as valid_text
from turnkit import Turnkit
from turnkit._valid_text import check_model_text, check_state_text, trust_state_text
from turnkit.agents import AgentChat
from turnkit.agents._agent_session import _plain_positionals
from turnkit.agents._chunk_buffer import ChunkBuffer
from turnkit.agents._turn import TurnContext
from turnkit.errors import TurnkitError
from turnkit.sessions._store import check_id
from turnkit.testing import define_programmable_model
from turnkit.types import AgentInput, AgentStreamChunk, Message, Part, SessionState, TurnEnd

LONE = "bad \ud800 text"


def _message(text: str) -> Message:
    return Message(role="user", content=[Part(text=text)])


@pytest.fixture
def checked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of every model `check_model_text` encodes (it is what walks a history)."""
    paths: list[str] = []
    real = valid_text.check_model_text

    def recording(model: Any, what: str) -> None:
        paths.append(what)
        real(model, what)

    monkeypatch.setattr(valid_text, "check_model_text", recording)
    return paths


@pytest.fixture
def strings_walked(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A one-item list: how many strings `check_text` has looked at so far."""
    count = [0]
    real = valid_text._invalid

    def counting(text: str) -> int | None:
        count[0] += 1
        return real(text)

    monkeypatch.setattr(valid_text, "_invalid", counting)
    return count


def _client_managed_chat(**chat_args: Any) -> AgentChat[Any]:
    ai = Turnkit(model="programmableModel")
    define_programmable_model(ai).handler = lambda request, ctx: {
        "message": {"role": "model", "content": [{"text": "ok"}]}
    }
    return ai.define_agent(name="a").chat(**chat_args)


async def test_a_client_managed_chat_does_not_recheck_its_whole_history_each_turn(
    checked: list[str], strings_walked: list[int]
) -> None:
    chat = _client_managed_chat()
    per_turn = []
    for turn in range(30):
        before = strings_walked[0]
        await chat.send(f"message {turn}")
        per_turn.append(strings_walked[0] - before)
    assert len(chat.messages) == 60
    # Flat: the last turn looks at no more strings than the second (its id, not its history).
    assert per_turn[-1] == per_turn[1] <= 2, per_turn
    # The state a turn hands back is sent with the next one: nothing of it is walked again.
    assert not [p for p in checked if p.startswith("init.state")], checked


async def test_a_state_the_chat_was_given_is_checked_once_then_trusted(checked: list[str]) -> None:
    history = [_message(f"m{i}") for i in range(10)]
    chat = _client_managed_chat(messages=history)
    for turn in range(5):
        await chat.send(f"more {turn}")
    assert [p for p in checked if p.startswith("init.state")] == ["init.state"]


async def test_a_bad_message_in_a_state_built_from_a_chat_is_still_refused() -> None:
    chat = _client_managed_chat()
    await chat.send("hello")
    state = chat.session_state
    assert state.messages is not None
    state.messages.append(_message(LONE))  # the chat's copy: the chat itself is unaffected
    resumed = _client_managed_chat(session_state=state)
    with pytest.raises(TurnkitError) as err:
        await resumed.send("next")
    assert err.value.status == "INVALID_ARGUMENT"
    assert err.value.details == {"path": "init.state.messages.2.content.0.text", "index": 4}
    assert (await chat.send("the first chat goes on")).text == "ok"


def test_a_trusted_state_is_checked_from_where_its_history_grew() -> None:
    state = SessionState(messages=[_message("a"), _message("b")])
    trust_state_text(state)
    check_state_text(state, "init.state")  # nothing new: passes without a walk
    assert state.messages is not None
    state.messages.append(_message(LONE))
    with pytest.raises(TurnkitError) as err:
        check_state_text(state, "init.state")
    assert err.value.details == {"path": "init.state.messages.2.content.0.text", "index": 4}


def test_a_trusted_state_whose_history_was_replaced_is_walked_whole() -> None:
    state = SessionState(messages=[_message("a"), _message("b")])
    trust_state_text(state)
    state.messages = [_message(LONE), _message("b")]  # same length, another list
    with pytest.raises(TurnkitError) as err:
        check_state_text(state, "s")
    assert err.value.details["path"] == "s.messages.0.content.0.text"


def test_a_trusted_state_still_has_its_custom_state_checked() -> None:
    state = SessionState(messages=[_message("a")], custom={"note": "fine"})
    trust_state_text(state)
    state.custom = {"note": LONE}
    with pytest.raises(TurnkitError) as err:
        check_state_text(state, "init.state")
    assert err.value.details["path"] == "init.state.custom.note"


def test_trust_ends_with_the_state() -> None:
    state = SessionState(messages=[_message("a")])
    trust_state_text(state)
    key = id(state)
    assert key in valid_text._checked
    del state
    assert key not in valid_text._checked


@pytest.mark.parametrize(
    ("item", "path"),
    [
        (AgentInput(message=_message(LONE)), "input.message.content.0.text"),
        (
            AgentInput(message=Message(role="user", content=[Part(text="x", metadata={"k": [LONE]})])),
            "input.message.content.0.metadata.k.0",
        ),
    ],
)
def test_one_encoding_finds_a_surrogate_anywhere_and_the_walk_names_it(item: AgentInput, path: str) -> None:
    with pytest.raises(TurnkitError) as err:
        check_model_text(item, "input")
    assert err.value.status == "INVALID_ARGUMENT"
    assert err.value.details is not None and err.value.details["path"] == path


def test_valid_text_passes_the_one_encoding() -> None:
    check_model_text(AgentInput(message=_message("fine \U0001f600 é")), "input")


# --- per-turn machinery that replaced tasks and copies ----------------------------------------------


async def test_an_abort_callback_runs_once_and_at_once_when_already_aborted() -> None:
    turn = TurnContext(snapshot_id=None, parent_snapshot_id=None, turn_index=0, emit=print, context={})
    calls: list[str] = []
    turn._call_on_abort(lambda: calls.append("first"))
    turn.abort()
    turn.abort()
    assert calls == ["first"]
    turn._call_on_abort(lambda: calls.append("late"))  # already aborted: called now
    assert calls == ["first", "late"]
    other = TurnContext(snapshot_id=None, parent_snapshot_id=None, turn_index=0, emit=print, context={})
    other._call_on_abort(lambda: calls.append("forgotten"))
    other._call_on_abort(None)
    other.abort()
    assert calls == ["first", "late"]
    await other.wait_aborted()  # the awaitable signal still works


async def test_a_chunk_buffer_reader_cancelled_while_waiting_leaves_the_next_chunk_for_the_next_get() -> None:
    buffer = ChunkBuffer()
    reader = asyncio.ensure_future(buffer.get())
    await asyncio.sleep(0)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    chunk = AgentStreamChunk(turn_end=TurnEnd(finish_reason="stop"))
    buffer.put(chunk)
    assert await asyncio.wait_for(buffer.get(), 1) is chunk
    waiting = asyncio.ensure_future(buffer.get())
    await asyncio.sleep(0)
    buffer.close()
    assert await asyncio.wait_for(waiting, 1) is None


async def test_a_response_session_state_is_a_stable_copy_of_the_chat_state() -> None:
    chat = _client_managed_chat()
    response = await chat.send("hello")
    state = response.session_state
    assert state is response.session_state
    assert [m.text for m in state.messages or []] == ["hello", "ok"]
    assert state.messages is not None
    state.messages.append(_message("not the chat's"))
    assert len(chat.messages) == 2
    await chat.send("again")
    assert [m.text for m in response.messages][:2] == ["hello", "ok"]
    assert len(response.session_state.messages or []) == 3  # what it was, plus the caller's append


def _one(item: Any) -> None: ...
def _two(item: Any, turn: Any) -> None: ...
def _defaulted(item: Any, turn: Any = None) -> None: ...
def _star(*args: Any) -> None: ...
def _mixed(a: Any, /, b: Any, c: Any = 1, *, d: Any) -> None: ...
async def _coroutine(item: Any, turn: Any) -> None: ...


@functools.wraps(_one)
def _wrapped(*args: Any) -> None: ...


@pytest.mark.parametrize("fn", [_one, _two, _defaulted, _star, _mixed, _coroutine, lambda x: x])
def test_positionals_read_off_the_code_agree_with_inspect(fn: Callable[..., Any]) -> None:
    params = inspect.signature(fn).parameters.values()
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    accepted = 2 if any(p.kind is p.VAR_POSITIONAL for p in params) else len(positional)
    required = sum(1 for p in positional if p.default is p.empty)
    assert _plain_positionals(fn) == (accepted, required)


def test_a_wrapped_function_is_left_to_inspect() -> None:
    assert _plain_positionals(_wrapped) is None
    assert _plain_positionals(functools.partial(_two, 1)) is None


@pytest.mark.parametrize("value", ["a", "0f8c-uuid", "with space", "é-unicode", "a" * 256])
def test_usable_ids_pass(value: str) -> None:
    assert check_id(value, "id") == value


@pytest.mark.parametrize("value", ["a\x00", "a\x1f", "a\x7f", "a\x85", "a\ud800"])
def test_ids_with_control_characters_or_surrogates_are_refused(value: str) -> None:
    with pytest.raises(TurnkitError) as err:
        check_id(value, "id")
    assert err.value.status == "INVALID_ARGUMENT"
