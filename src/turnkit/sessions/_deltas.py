"""How the engine encodes and applies state changes between a snapshot and its parent (internal)."""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jsonpatch
from pydantic_core import to_jsonable_python

from turnkit.errors import TurnkitError
from turnkit.types import Artifact, Message, SessionState

Segments = tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class Node:
    """The materialised state of one snapshot at one state revision, owned by the cache."""

    srev: int
    depth: int
    session_id: str | None
    segments: Segments | None
    messages: tuple[Message, ...] | None
    custom: Any  # JSON data; only copies of it ever leave the engine
    custom_text: str
    artifacts: tuple[Artifact, ...] | None


def dumps(value: Any) -> str:
    """Compact JSON text, the form records and comparisons use."""
    return json.dumps(value, separators=(",", ":"))


def data_loss(message: str) -> TurnkitError:
    """The error for stored data that cannot be read back as written."""
    return TurnkitError("DATA_LOSS", message, public=False)


def is_prefix(prefix: Sequence[Message], messages: Sequence[Message]) -> bool:
    """Whether `messages` starts with `prefix`."""
    # Identity first: on the hot path the caller's history holds the very objects we cached.
    # (list equality compares identity before value, in C)
    return len(prefix) <= len(messages) and list(messages[: len(prefix)]) == list(prefix)


def same_state(state: SessionState, node: Node) -> bool:
    """Whether `state` holds exactly what the cached `node` holds."""
    if state.session_id != node.session_id:
        return False
    if (state.messages is None) != (node.messages is None) or (state.artifacts is None) != (
        node.artifacts is None
    ):
        return False
    if (
        state.messages is not None
        and node.messages is not None
        and (len(state.messages) != len(node.messages) or not is_prefix(node.messages, state.messages))
    ):
        return False
    if state.artifacts is not None and node.artifacts is not None:
        if len(state.artifacts) != len(node.artifacts):
            return False
        if not all(a is b or a == b for a, b in zip(state.artifacts, node.artifacts, strict=True)):
            return False
    return dumps(to_jsonable_python(state.custom)) == node.custom_text


def custom_delta(parent: Node, custom: Any, custom_text: str) -> dict[str, Any]:
    """The record fields for a custom state change: a JSON patch, or the value when that is smaller."""
    # Compare JSON texts, not values: in Python 1 == True == 1.0, in JSON they differ.
    if custom_text == parent.custom_text:
        return {}
    if isinstance(custom, dict | list) and type(custom) is type(parent.custom):
        patch = jsonpatch.make_patch(parent.custom, custom).patch
        patch_text = dumps(patch)
        if len(patch_text) < len(custom_text):
            # jsonpatch diffs with ==, which misses 1 -> True; keep the patch only if it reproduces us.
            rebuilt = jsonpatch.apply_patch(copy.deepcopy(parent.custom), patch, in_place=True)
            if dumps(rebuilt) == custom_text:
                return {"cpatch": patch}
    return {"cval": custom}


def apply_custom(custom: Any, delta: dict[str, Any]) -> Any:
    """Custom state after one delta record."""
    if "cval" in delta:
        return delta["cval"]
    if "cpatch" in delta:
        try:
            return jsonpatch.apply_patch(custom, delta["cpatch"], in_place=True)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            raise data_loss(f"custom state patch does not apply: {exc}") from exc
    return custom


def artifacts_delta(parent: Sequence[Artifact], artifacts: tuple[Artifact, ...] | None) -> dict[str, Any]:
    """The record fields for an artifact change: positions replaced, artifacts appended."""
    new = artifacts or ()
    out: dict[str, Any] = {}
    changed = [
        [i, a.to_wire()] for i, (p, a) in enumerate(zip(parent, new, strict=False)) if a is not p and a != p
    ]
    if changed:
        out["aset"] = changed
    if len(new) > len(parent):
        out["aadd"] = [a.to_wire() for a in new[len(parent) :]]
    if artifacts is None:
        out["anull"] = True
    return out


def apply_artifacts(artifacts: list[Artifact] | None, delta: dict[str, Any]) -> list[Artifact] | None:
    """Artifacts after one delta record."""
    out = list(artifacts or [])
    try:
        for index, artifact in delta.get("aset", ()):
            out[index] = Artifact.model_validate(artifact)
    except IndexError as exc:
        raise data_loss("artifact delta does not fit its parent") from exc
    out.extend(Artifact.model_validate(a) for a in delta.get("aadd", ()))
    return None if delta.get("anull") else out
