"""Refusing text that cannot be stored or sent: strings that are not valid Unicode.

JSON lets a client send a lone surrogate (`"\\ud800"`), and Python keeps it in a `str`, but no
UTF-8 encoder (a store, a model's API, a log) accepts it. Checked where input comes in, it is an
INVALID_ARGUMENT naming the field, before the turn, instead of an internal error deep inside it.
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from pydantic import BaseModel
from pydantic_core import PydanticSerializationError

from turnkit.errors import TurnkitError

if TYPE_CHECKING:
    from turnkit.types import SessionState

__all__ = ["check_model_text", "check_request_text", "check_state_text", "check_text", "trust_state_text"]

# In a JSON text, a surrogate can only come from a `\uD800`-`\uDFFF` escape (raw surrogate bytes are
# not UTF-8 and fail to decode): a body without one needs no walk.
_SURROGATE_ESCAPE: Final = re.compile(rb"\\u[dD][89abcdefABCDEF]")


def _invalid(text: str) -> int | None:
    """The index of the first character of `text` that UTF-8 cannot encode, or None."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def check_text(value: Any, what: str) -> None:
    """Raise INVALID_ARGUMENT if a string in `value` (JSON data: keys too) is not valid Unicode,
    naming where: the path to it under `what` (e.g. `data.message.content.0.text` for `what=""`)."""
    stack: list[tuple[Any, str]] = [(value, what)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            at = _invalid(item)
            if at is not None:
                raise TurnkitError(
                    "INVALID_ARGUMENT",
                    f"{path} is not valid text: character {at} is {item[at]!r}, a lone surrogate "
                    "(send text as valid UTF-8 / paired surrogates)",
                    details={"path": path, "index": at},
                )
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and _invalid(key) is not None:
                    stack.append((key, f"{_join(path, key)} (a key)"))
                stack.append((child, _join(path, key)))
        elif isinstance(item, list | tuple):
            stack.extend((child, _join(path, i)) for i, child in enumerate(item))


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def check_model_text(model: BaseModel, what: str) -> None:
    """`check_text(model.to_wire(), what)` for a wire model, at the cost of encoding it once: the
    encoder refuses exactly the string values UTF-8 cannot hold, and only then is the data walked to
    say where. (Both make U+FFFD of a lone surrogate in a dict key, so neither refuses one; an
    encoding failure of another kind is left to surface where it did before.)"""
    try:
        model.__pydantic_serializer__.to_json(model)
    except PydanticSerializationError:
        check_text(model.to_wire(), what)  # type: ignore[attr-defined]


def check_request_text(raw: bytes, body: Any) -> None:
    """`check_text` for a parsed JSON request body, walking it only when its raw text could hold a
    surrogate (so well-formed requests cost one scan of their bytes)."""
    if _SURROGATE_ESCAPE.search(raw) is not None:
        check_text(body, "")


# --- session states sent back by a client-managed chat ----------------------------------------------
#
# A client-managed chat sends its whole state with every turn, and that state is (by identity) the
# one the runtime handed out after the previous turn. Walking its whole history again would make the
# per-turn cost grow with the conversation, so the runtime remembers which states it handed out (or
# already checked) and how many messages and artifacts they held: only what was added since is
# walked. A state it never saw (built by the caller, or from JSON) is walked whole.


@dataclass(slots=True)
class _Checked:
    """What of one live `SessionState` is known to be valid text."""

    ref: weakref.ref[Any]
    messages: list[Any] | None  # the list object checked (a replaced list is checked again)
    message_count: int
    artifacts: list[Any] | None
    artifact_count: int


# Keyed by id(): states are unhashable pydantic models. An entry goes when its state dies, before
# the id can be reused.
_checked: dict[int, _Checked] = {}


def _forget(key: int, ref: weakref.ref[Any]) -> None:
    entry = _checked.get(key)
    if entry is not None and entry.ref is ref:  # (a state trusted again has a newer entry)
        _checked.pop(key, None)  # pop: the callback may run on any thread, during a collection


def trust_state_text(state: SessionState) -> None:
    """Remember that `state`'s messages and artifacts, as they are now, are valid text (the runtime
    built it, or `check_state_text` walked it): sent back, only what is added to them is checked."""
    key = id(state)
    ref = weakref.ref(state, lambda r, key=key: _forget(key, r))  # type: ignore[misc]
    messages, artifacts = state.messages, state.artifacts
    _checked[key] = _Checked(
        ref, messages, len(messages) if messages else 0, artifacts, len(artifacts) if artifacts else 0
    )


def check_state_text(state: SessionState, what: str) -> None:
    """`check_text` for a whole session state (paths as for `check_text(state.to_wire(), what)`),
    walking only the messages and artifacts added since `trust_state_text(state)`, if it was
    trusted; the custom state and the id are always checked. Trusts `state` once it passed."""
    entry = _checked.get(id(state))
    if entry is None or entry.ref() is not state:
        check_model_text(state, what)
        trust_state_text(state)
        return
    if state.session_id is not None:
        check_text(state.session_id, f"{what}.sessionId")
    if state.custom is not None:
        check_text(state.custom, f"{what}.custom")
    grown = False
    lists: tuple[tuple[str, list[Any] | None, list[Any] | None, int], ...] = (
        ("messages", state.messages, entry.messages, entry.message_count),
        ("artifacts", state.artifacts, entry.artifacts, entry.artifact_count),
    )
    for name, items, known, count in lists:
        if items is None or (items is known and len(items) == count):
            continue  # the common case: nothing added since it was checked
        grown = True
        # The same list, only grown: its first `count` items were checked (a shrunk or replaced
        # list is walked whole).
        start = count if items is known and len(items) > count else 0
        for index in range(start, len(items)):
            check_model_text(items[index], f"{what}.{name}.{index}")
    if grown:
        trust_state_text(state)
