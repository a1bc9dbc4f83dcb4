"""Hints ("did you mean ...?") for names typed on the command line: agents, models, attributes."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["did_you_mean"]


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`" (did you mean 'x'?)"` naming the known names closest to `name` (up to three), else `""`.

    Case is ignored when comparing, so `Assistant` finds `assistant`.
    """
    by_folded: dict[str, str] = {}
    for candidate in known:
        by_folded.setdefault(candidate.casefold(), candidate)
    close = difflib.get_close_matches(name.casefold(), list(by_folded), n=3, cutoff=0.6)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(by_folded[c]) for c in close) + "?)"
