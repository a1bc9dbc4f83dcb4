"""What `turnkit chat` does differently in a terminal: colour and line editing with history.

Colour is on when the output is a terminal and `$NO_COLOR` is unset or empty (https://no-color.org);
piped output stays plain text. Line editing (arrow keys, Ctrl-R, ...) comes from the standard
`readline` module, which `input()` uses once it is imported; the lines typed are kept in
`$TURNKIT_HISTORY_FILE` (default `~/.turnkit_history`) so the next run can recall them.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from pathlib import Path
from typing import IO

__all__ = ["HISTORY_ENV", "HISTORY_LENGTH", "Style", "colour_wanted", "enable_line_editing", "history_path"]

HISTORY_ENV = "TURNKIT_HISTORY_FILE"
HISTORY_LENGTH = 1000  # lines kept in the history file

_CODES = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}


def colour_wanted(stream: IO[str]) -> bool:
    """Whether to colour what goes to `stream`: a terminal (not a dumb one), and no `$NO_COLOR`."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Style:
    """ANSI colours for the REPL's output, or plain text when disabled."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def paint(self, text: str, *styles: str, prompt: bool = False) -> str:
        """`text` in `styles` (names from bold, dim, red, green, yellow, cyan).

        With `prompt`, the escape codes are marked invisible (readline's \\001 ... \\002) so that
        line editing still knows how wide the prompt is.
        """
        if not self.enabled or not styles or not text:
            return text
        start = "\033[" + ";".join(_CODES[s] for s in styles) + "m"
        end = "\033[0m"
        if prompt:
            start, end = f"\001{start}\002", f"\001{end}\002"
        return f"{start}{text}{end}"


def history_path() -> Path:
    """The file the chat history is kept in: `$TURNKIT_HISTORY_FILE`, else `~/.turnkit_history`."""
    configured = os.environ.get(HISTORY_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".turnkit_history"


def enable_line_editing(path: Path | None = None) -> bool:
    """Turn on readline editing for `input()` and load/save the history at `path` (default:
    `history_path()`); False when this Python has no readline."""
    try:
        import readline
    except ImportError:  # e.g. Windows without pyreadline
        return False
    path = path or history_path()
    with contextlib.suppress(OSError):
        readline.read_history_file(path)
    readline.set_history_length(HISTORY_LENGTH)

    def save() -> None:
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            readline.write_history_file(path)

    atexit.register(save)
    return True
