"""`Skills`: `SKILL.md` files from folders, offered as a `<skills>` listing and a `use_skill` tool.

A skill is a folder holding `SKILL.md`, whose YAML front matter gives its `name` (default: the
folder's name) and `description`; the model sees the listing and loads a skill's full text with
`use_skill` when it needs it.

The folders are scanned once, at first use, and then again only when a folder or a `SKILL.md`
changes (its modification time), the check running in a worker thread before each model step so
the event loop never waits on the disk. A `SKILL.md` that cannot be read is skipped with a warning.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, Field

from turnkit._tools import Tool, ToolInputError, tool_from_function
from turnkit.errors import TurnkitError
from turnkit.middleware._base import (
    BaseMiddleware,
    GenerateHookParams,
    GenerateMiddlewareContext,
    NextGenerate,
    with_system_text,
)
from turnkit.types import ModelResponse

__all__ = ["Skills"]

_MARKER = "skillsListing"

log = logging.getLogger("turnkit.middleware")

# What the folders looked like at the last scan: each folder's and each SKILL.md's mtime.
Signature = tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class Skill:
    """One skill: its name, description and SKILL.md path."""

    name: str
    description: str
    path: Path


class UseSkillInput(BaseModel):
    skill_name: str = Field(description="The name of the skill to load, as listed in the system prompt.")


def _front_matter(text: str) -> dict[str, object]:
    text = text.lstrip("\ufeff")
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    if end < 0:
        return {}
    try:
        data = yaml.safe_load(text[3:end])
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def scan(paths: Sequence[Path]) -> dict[str, Skill]:
    """The skills under `paths`, by name (a later folder's skill of the same name wins); a
    `SKILL.md` that cannot be read is skipped with a warning."""
    found: dict[str, Skill] = {}
    for skill_file in _skill_files(paths):
        try:
            text = skill_file.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            log.warning("skipping skill %s: cannot read it (%s)", skill_file, exc)
            continue
        meta = _front_matter(text)
        name = str(meta.get("name") or skill_file.parent.name)
        found[name] = Skill(name, str(meta.get("description") or ""), skill_file)
    return found


def _skill_files(paths: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for root in paths:
        try:
            folders = sorted(root.iterdir()) if root.is_dir() else []
        except OSError as exc:
            log.warning("skipping skill folder %s: cannot list it (%s)", root, exc)
            continue
        for folder in folders:
            skill_file = folder / "SKILL.md"
            if not folder.name.startswith(".") and skill_file.is_file():
                files.append(skill_file)
    return files


def signature(paths: Sequence[Path]) -> Signature:
    """The modification times of the folders and their `SKILL.md` files (changes when a skill is
    added, removed or edited)."""
    marks: list[tuple[str, int]] = []
    for path in [*paths, *_skill_files(paths)]:
        try:
            marks.append((str(path), os.stat(path).st_mtime_ns))
        except OSError:
            marks.append((str(path), -1))
    return tuple(marks)


def listing(skills: dict[str, Skill]) -> str:
    """The `<skills>` block of the system prompt."""
    lines = [
        "<skills>",
        "These skills hold specialised instructions; load one with the use_skill tool when the task needs it:",
    ]
    for name in sorted(skills):
        description = skills[name].description
        lines.append(f"- {name}" + (f": {description}" if description else ""))
    lines.append("</skills>")
    return "\n".join(lines)


class Skills(BaseMiddleware):
    """Skills found in the folders of `skill_paths` (default `["skills"]`); rescanned when they change."""

    def __init__(self, *, skill_paths: Sequence[str] = ("skills",)) -> None:
        if isinstance(skill_paths, str) or not all(isinstance(p, str) for p in skill_paths):
            raise TurnkitError(
                "INVALID_ARGUMENT", f"Skills: skill_paths must be a list of folders, not {skill_paths!r}"
            )
        self.paths = [Path(p) for p in skill_paths]
        self._scanned: tuple[Signature, dict[str, Skill]] | None = None

        def use_skill(input: UseSkillInput) -> str:  # a plain function: it runs in a worker thread
            """Load a skill's full instructions."""
            skills = self.refresh()
            skill = skills.get(input.skill_name)
            if skill is None:
                known = ", ".join(sorted(skills)) or "none"
                raise ToolInputError("use_skill", f"no skill named {input.skill_name!r} (skills: {known})")
            try:
                return skill.path.read_text(encoding="utf-8", errors="replace")
            except OSError as exc:
                raise ToolInputError(
                    "use_skill", f"skill {input.skill_name!r} cannot be read: {exc}"
                ) from None

        self._tool = tool_from_function(use_skill)

    def refresh(self) -> dict[str, Skill]:
        """The skills, scanned again if the folders changed since the last scan (blocking: call it
        from a worker thread)."""
        mark = signature(self.paths)
        scanned = self._scanned
        if scanned is None or scanned[0] != mark:
            scanned = self._scanned = (mark, scan(self.paths))
        return scanned[1]

    def tools(self, ctx: GenerateMiddlewareContext) -> Sequence[Tool]:
        """`use_skill`, when there is any skill (as of the last scan; the first use scans)."""
        skills = self._scanned[1] if self._scanned is not None else self.refresh()
        found: dict[str, Skill] = ctx.state(self, dict)
        found.update(skills)
        return [self._tool] if skills else []

    async def wrap_generate(
        self, params: GenerateHookParams, ctx: GenerateMiddlewareContext, next_fn: NextGenerate
    ) -> ModelResponse:
        """List the skills in the system prompt (checking the folders for changes off the loop)."""
        skills: dict[str, Skill] = ctx.state(self, dict)
        fresh = await asyncio.to_thread(self.refresh)
        if skills:  # use_skill is offered: list the skills as they are now
            skills.clear()
            skills.update(fresh)
        if skills:
            params.request = with_system_text(params.request, listing(skills), _MARKER)
        return await next_fn(params, ctx)

    def __repr__(self) -> str:
        return f"Skills(skill_paths={[str(p) for p in self.paths]!r})"
