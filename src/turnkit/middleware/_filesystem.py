"""`Filesystem`: tools to list, read, write and edit files, confined to one root directory.

Every path is resolved (symlinks included) before use and refused when it leads outside the root,
so neither `../` nor a symlink pointing out of the root reaches other files. Paths are relative to
the root; an absolute path is accepted only when it lies inside the root. A refused path, a missing
file, a failed edit or an operating-system error (a directory where a file should be, a file that is
not UTF-8 text, ...) comes back to the model as the tool's error output, so it can correct itself;
the call goes on.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from turnkit._tools import Tool, ToolInputError, tool_from_function
from turnkit.errors import TurnkitError
from turnkit.middleware._base import BaseMiddleware, GenerateMiddlewareContext

__all__ = ["Filesystem"]

MAX_READ_BYTES = 1024 * 1024


class ListFilesInput(BaseModel):
    dir_path: str = Field(default="", description="Directory relative to the root ('' for the root).")
    recursive: bool = Field(default=False, description="Whether to list subdirectories too.")


class ReadFileInput(BaseModel):
    file_path: str = Field(description="File path relative to the root.")
    offset: int = Field(default=0, ge=0, description="First line to return, from 1 (0: the start).")
    limit: int = Field(default=0, ge=0, description="How many lines to return (0: all).")


class WriteFileInput(BaseModel):
    file_path: str = Field(description="File path relative to the root.")
    content: str = Field(description="The file's full new content.")


class Edit(BaseModel):
    old_string: str = Field(description="The exact text to replace.")
    new_string: str = Field(description="The replacement text.")
    replace_all: bool = Field(
        default=False, description="Replace every occurrence (else exactly one must exist)."
    )


class EditFileInput(BaseModel):
    file_path: str = Field(description="File path relative to the root.")
    edits: list[Edit] = Field(description="Search-and-replace edits, applied in order.")


class Filesystem(BaseMiddleware):
    """`list_files` and `read_file` under `root_dir`; `write_file` and `edit_file` (search and
    replace) too when `allow_write_access`. `tool_name_prefix` is put before each tool's name."""

    def __init__(
        self,
        *,
        root_dir: str | os.PathLike[str],
        allow_write_access: bool = False,
        tool_name_prefix: str = "",
    ) -> None:
        if not str(root_dir).strip():
            raise TurnkitError("INVALID_ARGUMENT", "Filesystem: root_dir must not be empty")
        root = Path(root_dir).resolve()
        if not root.is_dir():
            raise TurnkitError(
                "INVALID_ARGUMENT", f"Filesystem: root_dir {str(root_dir)!r} is not a directory"
            )
        self.root = root
        self.allow_write_access = allow_write_access
        self._tools = self._make_tools(tool_name_prefix)

    def tools(self, ctx: GenerateMiddlewareContext) -> Sequence[Tool]:
        """The file tools."""
        return self._tools

    def resolve(self, tool: str, path: str) -> Path:
        """`path` (relative to the root) as an absolute path inside the root; ToolInputError if it
        leads outside, through `..` or a symlink."""
        if "\x00" in path:
            raise ToolInputError(tool, f"path {path!r} contains a NUL character")
        given = path.strip()
        if os.path.isabs(given) and not _inside(Path(given), self.root):
            raise ToolInputError(
                tool, f"absolute path {path!r} is outside the root directory; give a path relative to it"
            )
        candidate = Path(os.path.realpath(self.root / (given or ".")))
        if candidate != self.root and not candidate.is_relative_to(self.root):
            raise ToolInputError(tool, f"path {path!r} leads outside the root directory; use paths inside it")
        return candidate

    def _make_tools(self, prefix: str) -> list[Tool]:
        def list_files(input: ListFilesInput) -> list[dict[str, Any]]:
            """List the files and directories under a directory."""
            base = self.resolve(names["list"], input.dir_path)
            if not base.is_dir():
                raise ToolInputError(names["list"], f"{input.dir_path!r} is not a directory")
            found = base.rglob("*") if input.recursive else base.iterdir()
            out = []
            for entry in sorted(found):
                if entry.is_symlink() and not _inside(entry, self.root):
                    continue  # a link out of the root is not listed (and could not be read)
                is_dir = entry.is_dir()
                try:
                    size = 0 if is_dir else entry.stat().st_size
                except OSError:
                    continue  # a dangling link or a file gone meanwhile: nothing to read there
                out.append({"path": entry.relative_to(base).as_posix(), "isDirectory": is_dir, "size": size})
            return out

        def read_file(input: ReadFileInput) -> str:
            """Read a text file, optionally only `limit` lines from line `offset`."""
            path = self.resolve(names["read"], input.file_path)
            if not path.is_file():
                raise ToolInputError(names["read"], f"no file {input.file_path!r}")
            if path.stat().st_size > MAX_READ_BYTES:
                raise ToolInputError(
                    names["read"], f"{input.file_path!r} is larger than {MAX_READ_BYTES} bytes"
                )
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
            start = max(input.offset - 1, 0)
            end = len(lines) if input.limit == 0 else start + input.limit
            return "".join(lines[start:end])

        def write_file(input: WriteFileInput) -> str:
            """Create or overwrite a text file."""
            path = self.resolve(names["write"], input.file_path)
            if path.is_dir():
                raise ToolInputError(names["write"], f"{input.file_path!r} is a directory, not a file")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(input.content, encoding="utf-8")
            return f"wrote {input.file_path}"

        def edit_file(input: EditFileInput) -> str:
            """Apply search-and-replace edits to a text file."""
            path = self.resolve(names["edit"], input.file_path)
            if not path.is_file():
                raise ToolInputError(names["edit"], f"no file {input.file_path!r}")
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise ToolInputError(names["edit"], f"{input.file_path!r} is not UTF-8 text") from None
            for edit in input.edits:
                count = text.count(edit.old_string) if edit.old_string else 0
                if count == 0:
                    raise ToolInputError(
                        names["edit"], f"{edit.old_string!r} not found in {input.file_path!r}"
                    )
                if count > 1 and not edit.replace_all:
                    raise ToolInputError(
                        names["edit"],
                        f"{edit.old_string!r} occurs {count} times; set replace_all or give more context",
                    )
                text = text.replace(edit.old_string, edit.new_string, -1 if edit.replace_all else 1)
            path.write_text(text, encoding="utf-8")
            return f"edited {input.file_path} ({len(input.edits)} edits)"

        names = {
            k: f"{prefix}{k}_{'files' if k == 'list' else 'file'}" for k in ("list", "read", "write", "edit")
        }
        fns: list[Any] = [list_files, read_file]
        if self.allow_write_access:
            fns += [write_file, edit_file]
        return [
            tool_from_function(_os_errors_as_input_errors(fn, prefix), name=f"{prefix}{fn.__name__}")
            for fn in fns
        ]

    def __repr__(self) -> str:
        return f"Filesystem(root_dir={str(self.root)!r}, allow_write_access={self.allow_write_access})"


def _os_errors_as_input_errors(fn: Callable[[Any], Any], prefix: str) -> Callable[[Any], Any]:
    """`fn` with operating-system errors turned into the tool's error output (not a failed call)."""
    tool = f"{prefix}{fn.__name__}"

    @functools.wraps(fn)
    def run(input: Any) -> Any:
        try:
            return fn(input)
        except (OSError, ValueError, UnicodeError) as exc:
            if isinstance(exc, ToolInputError):
                raise
            raise ToolInputError(tool, _os_reason(exc)) from None

    return run


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = Path(exc.filename).name if exc.filename else "path"
        return f"the operating system refused: {exc.strerror} ({where})"
    return str(exc)


def _inside(path: Path, root: Path) -> bool:
    real = Path(os.path.realpath(path))
    return real == root or real.is_relative_to(root)
