"""`turnkit chat`: a line-by-line conversation with an agent in the terminal (or through a pipe).

Each line is one turn, its answer streamed as it comes. Lines starting with `/` are commands (see
`HELP`). With a file or SQLite store the REPL remembers the last session of each agent in a small
file next to the sessions, so the next run continues that conversation.

The loop itself is synchronous: a line is read outside the event loop, so Ctrl-C at the prompt
leaves at once, while Ctrl-C during a turn stops just that turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from turnkit._app import Turnkit
from turnkit._suggest import did_you_mean
from turnkit._targets import load_module, load_target
from turnkit._terminal import Style, colour_wanted, enable_line_editing
from turnkit.agents import Agent, AgentChat, AgentChunk, AgentInterrupt, AgentResponse
from turnkit.errors import TurnkitError
from turnkit.sessions import FileSessionStore, SqliteSessionStore, check_id
from turnkit.types import Part, SessionSnapshot, SessionState

__all__ = [
    "HELP",
    "LAST_SESSION_FILE",
    "ChatRepl",
    "chat_agent",
    "latest_completed",
    "read_stdin_line",
    "remember_session",
    "remembered_session",
    "resolve_agent",
    "use_model",
]

HELP = """\
commands:
  /new           start a fresh session
  /resume ID     continue the session ID
  /state         show the session's custom state, message count and snapshot id
  /help          show this help
  /quit          leave (Ctrl-D too); Ctrl-C stops a running answer"""

LAST_SESSION_FILE = "last-session.json"
DENIED = {"approved": False, "reason": "denied by the user"}  # the tool's output when you answer n
ReadLine = Callable[[str], str | None]


def resolve_agent(target: object, name: str | None = None) -> Agent:
    """The agent `target` names: an `Agent`, or a `Turnkit` app with `name` (or only one agent)."""
    if isinstance(target, Agent):
        if name is not None and name != target.name:
            raise TurnkitError("INVALID_ARGUMENT", f"the target is agent {target.name!r}, not {name!r}")
        return target
    if not isinstance(target, Turnkit):
        raise TurnkitError(
            "INVALID_ARGUMENT", f"expected an Agent or a Turnkit app, got {type(target).__name__}"
        )
    names = sorted(target.registry.names("agent"))
    if name is None:
        if len(names) != 1:
            listed = ", ".join(names) or "none"
            raise TurnkitError(
                "INVALID_ARGUMENT", f"pick an agent with --agent NAME; the app defines: {listed}"
            )
        name = names[0]
    if name not in names:
        raise TurnkitError(
            "NOT_FOUND",
            f"no agent {name!r}{did_you_mean(name, names)}; the app defines: {', '.join(names) or 'none'}",
        )
    return target.agent(name)


def _agents_in(module: object) -> dict[str, Agent]:
    """The agents a module defines: its `Agent` globals and those of its `Turnkit` apps, by name."""
    found: dict[str, Agent] = {}
    for value in vars(module).values():
        if isinstance(value, Agent):
            found.setdefault(value.name, value)
        elif isinstance(value, Turnkit):
            for name in value.registry.names("agent"):
                found.setdefault(name, value.agent(name))
    return found


def chat_agent(spec: str, name: str | None = None) -> Agent:
    """The agent `turnkit chat SPEC [--agent NAME]` talks to. SPEC is `FILE.py:ATTR` (an agent or an
    app, see `resolve_agent`) or just `FILE.py` (or a module): then the agent `name`, else the
    only agent the file defines."""
    if ":" in spec:
        return resolve_agent(load_target(spec), name)
    agents = _agents_in(load_module(spec))
    listed = ", ".join(sorted(agents)) or "none"
    if name is None:
        if len(agents) == 1:
            return next(iter(agents.values()))
        if not agents:
            raise TurnkitError("NOT_FOUND", f"{spec} defines no agent")
        raise TurnkitError(
            "INVALID_ARGUMENT", f"{spec} defines several agents: {listed}; pick one with {spec}:NAME"
        )
    if name not in agents:
        raise TurnkitError(
            "NOT_FOUND", f"no agent {name!r}{did_you_mean(name, agents)}; {spec} defines: {listed}"
        )
    return agents[name]


def use_model(agent: Agent, model: str | None) -> None:
    """Make `model` the app's default (what agents without their own model use); check it exists."""
    ai = Turnkit(registry=agent.registry)  # a view of the app that defined the agent
    if model:
        ai.default_model = model
    name = ai.default_model
    if name and ai.registry.get("model", name) is None:
        names = sorted(ai.registry.names("model"))
        raise TurnkitError(
            "NOT_FOUND",
            f"unknown model {name!r}{did_you_mean(name, names)}; registered models: {', '.join(names) or 'none'}",
        )


def read_stdin_line(prompt: str) -> str | None:
    """Read one line from stdin showing `prompt`; None at end of input."""
    try:
        return input(prompt)
    except EOFError:
        return None


def _last_session_path(agent: Agent) -> Path | None:
    """Where the REPL remembers sessions: beside the agent's file or SQLite store, if it has one."""
    store = agent.store
    if isinstance(store, FileSessionStore):
        return store.directory / LAST_SESSION_FILE
    if isinstance(store, SqliteSessionStore) and str(store.path) != ":memory:":
        return Path(store.path).parent / LAST_SESSION_FILE
    return None


def remembered_session(agent: Agent) -> str | None:
    """The id of the session this agent's REPL used last, if its store is a directory."""
    path = _last_session_path(agent)
    if path is None:
        return None
    try:
        found = json.loads(path.read_text("utf-8")).get(agent.name)
    except (OSError, ValueError, AttributeError):
        return None
    return found if isinstance(found, str) else None


def remember_session(agent: Agent, session_id: str) -> None:
    """Record `session_id` as this agent's last session (a no-op without a directory store)."""
    path = _last_session_path(agent)
    if path is None:
        return
    try:
        known = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    known[agent.name] = session_id
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(known, indent=2) + "\n", "utf-8")
    os.replace(tmp, path)


async def latest_completed(agent: Agent, session_id: str) -> SessionSnapshot | None:
    """The session's newest completed snapshot (what its next turn starts from), or None."""
    snap = await agent.get_snapshot(session_id=session_id)
    while snap is not None and snap.status not in (None, "completed"):
        if not snap.parent_id:
            return None
        snap = await agent.get_snapshot(snap.parent_id)
    return snap


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, TurnkitError):
        return f"error ({exc.status}): {exc.message}"
    return f"error: {type(exc).__name__}: {exc}"


class ChatRepl:
    """The REPL over one agent: `run()` reads lines until /quit or end of input; returns the exit code."""

    def __init__(
        self,
        agent: Agent,
        *,
        read_line: ReadLine = read_stdin_line,
        out: IO[str] | None = None,
        interactive: bool | None = None,
        colour: bool | None = None,
    ) -> None:
        self.agent = agent
        self.read_line = read_line
        self.out = out or sys.stdout
        self.interactive = sys.stdin.isatty() if interactive is None else interactive
        self.style = Style(colour_wanted(self.out) if colour is None else colour)
        self.chat: AgentChat | None = None
        self.session_id = ""
        self._at_line_start = True

    @property
    def server_managed(self) -> bool:
        """Whether the agent keeps sessions in a store (so they can be resumed)."""
        return self.agent.store is not None

    # --- output --------------------------------------------------------------------------------

    def say(self, text: str = "", *styles: str) -> None:
        """Print a whole line, in `styles` on a colour terminal (after ending an open streamed line)."""
        text = self.style.paint(text, *styles)
        if not self._at_line_start:
            text = "\n" + text
        self.out.write(text + "\n")
        self.out.flush()
        self._at_line_start = True

    def end_line(self) -> None:
        """End a streamed line that is still open."""
        if not self._at_line_start:
            self._stream("\n")

    def _stream(self, text: str) -> None:
        if text:
            self.out.write(text)
            self.out.flush()
            self._at_line_start = text.endswith("\n")

    def _read(self, prompt: str) -> str | None:
        try:
            return self.read_line(
                self.style.paint(prompt, "bold", "green", prompt=True) if self.interactive else ""
            )
        except KeyboardInterrupt:
            self.say()  # leave the terminal on a fresh line
            return None

    # --- the loop ------------------------------------------------------------------------------

    def run(self, *, session_id: str | None = None, new: bool = False) -> int:
        """Start (or resume) a session, then read and answer lines until /quit or end of input."""
        if self.interactive and self.read_line is read_stdin_line:
            enable_line_editing()
        with asyncio.Runner() as runner:
            runner.run(self.start(session_id=session_id, new=new))
            self.say(
                f"talking to {self.agent.name}: type a message, /help for commands, /quit to leave", "dim"
            )
            while (line := self._read("you> ")) is not None:
                line = line.strip()
                if not line:
                    continue
                if line.startswith("/"):
                    if not runner.run(self.command(line)):
                        break
                    continue
                response = runner.run(self.send(line))
                while response is not None and response.interrupts:
                    answers = self._ask(response.interrupts)
                    if answers is None:
                        return 0
                    response = runner.run(self.answer(*answers))
        return 0

    async def start(self, *, session_id: str | None = None, new: bool = False) -> None:
        """Open the session to talk in: `session_id`, else (unless `new`) the remembered one, else a new one."""
        if not self.server_managed:
            if session_id:
                self.say(f"agent {self.agent.name!r} keeps no sessions (no store); ignoring --session")
            await self.new_session()
            return
        if session_id:
            check_id(session_id, "session id")
        wanted = session_id or (None if new else remembered_session(self.agent))
        if wanted and await self.resume_session(wanted, required=False):
            return
        await self.new_session(wanted if session_id else None)

    # --- sessions ------------------------------------------------------------------------------

    async def new_session(self, session_id: str | None = None) -> None:
        """Switch to a fresh session (with `session_id`, or a new id)."""
        self.session_id = session_id or str(uuid.uuid4())
        if self.server_managed:
            self.chat = self.agent.chat(session_id=self.session_id)
            remember_session(self.agent, self.session_id)
        else:
            self.chat = self.agent.chat(session_state=SessionState(session_id=self.session_id))
        self.say(f"new session {self.session_id}", "dim")

    async def resume_session(self, session_id: str, *, required: bool = True) -> bool:
        """Switch to an existing session; False (after a message when `required`) if there is none."""
        if not self.server_managed:
            self.say(
                f"error: agent {self.agent.name!r} keeps no sessions (it has no store); nothing to resume",
                "red",
            )
            return False
        try:
            snap = await latest_completed(self.agent, session_id)
        except TurnkitError as exc:
            snap = None
            if required:
                self.say(_error_text(exc), "red")
                return False
        if snap is None:
            if required:
                self.say(f"error: no session {session_id!r} (still in session {self.session_id})", "red")
            return False
        self.chat = self.agent.chat(session_id=session_id)
        self.session_id = session_id
        remember_session(self.agent, session_id)
        count = len(snap.state.messages or []) if snap.state else 0
        self.say(f"resuming session {session_id} ({count} messages)", "dim")
        return True

    async def current_state(self) -> tuple[SessionState | None, str | None]:
        """The session's state as its next turn will see it, and the snapshot id holding it."""
        if not self.server_managed:
            return (self.chat.session_state if self.chat else None), None
        snap = await latest_completed(self.agent, self.session_id)
        return (snap.state, snap.snapshot_id) if snap else (None, None)

    # --- commands ------------------------------------------------------------------------------

    async def command(self, line: str) -> bool:
        """Run a /command; False when the REPL should end."""
        name, _, arg = line.partition(" ")
        arg = arg.strip()
        try:
            if name in ("/quit", "/exit"):
                return False
            if name == "/new":
                await self.new_session()
            elif name == "/resume" and arg:
                await self.resume_session(arg)
            elif name == "/state":
                await self.show_state()
            elif name == "/help":
                self.say(HELP)
            elif name == "/resume":
                self.say("usage: /resume SESSION_ID")
            else:
                self.say(f"unknown command {name}")
                self.say(HELP)
        except Exception as exc:  # a command must never end the REPL with a traceback
            self.say(_error_text(exc), "red")
        return True

    async def show_state(self) -> None:
        """Print the session id, snapshot id, message count and custom state."""
        state, snapshot_id = await self.current_state()
        messages = len(state.messages or []) if state else 0
        self.say(f"session   {self.session_id}")
        if self.server_managed:
            self.say(f"snapshot  {snapshot_id or '(none yet)'}")
        self.say(f"messages  {messages}")
        custom = state.custom if state else None
        self.say(f"custom    {'(none)' if custom is None else _compact(custom)}")

    # --- turns ---------------------------------------------------------------------------------

    async def send(self, text: str) -> AgentResponse | None:
        """Send one message and stream the answer; None when the turn failed to run at all."""
        assert self.chat is not None
        turn = self.chat.send_stream(text)
        streamed = False
        try:
            async for chunk in turn.stream:
                streamed = self._show_chunk(chunk) or streamed
            response = await turn.response
        except asyncio.CancelledError:
            return await self._stopped(turn.abort())
        except Exception as exc:
            self.say(_error_text(exc), "red")
            return None
        return self._finish(response, streamed=streamed)

    async def answer(self, restart: list[Part], respond: list[Part]) -> AgentResponse | None:
        """Answer the last turn's interrupts (tools to run again, tool responses); show the outcome."""
        assert self.chat is not None
        task = asyncio.ensure_future(self.chat.resume(restart=restart, respond=respond))
        try:
            response = await asyncio.shield(task)
        except asyncio.CancelledError:
            return await self._stopped(self._abort_resume(task))
        except Exception as exc:
            self.say(_error_text(exc), "red")
            return None
        return self._finish(response, streamed=False)

    async def _abort_resume(self, task: asyncio.Future[AgentResponse]) -> AgentResponse:
        assert self.chat is not None
        if not task.done():  # chat.abort() with no turn running would abort the chat's snapshot
            await self.chat.abort()
        return await task

    async def _stopped(self, stopping: Any) -> AgentResponse | None:
        """After Ctrl-C during a turn: stop it, clear the cancellation, and carry on."""
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        with contextlib.suppress(Exception):
            await stopping
        self.say("(stopped)", "yellow")
        return None

    def _show_chunk(self, chunk: AgentChunk[Any]) -> bool:
        """Print a streamed chunk: model text as it comes, tool calls and results on lines of their own.

        Returns whether it printed model text.
        """
        model_chunk = chunk.raw.model_chunk
        if model_chunk is None:
            return False
        if model_chunk.role == "tool":
            for part in model_chunk.content:
                if part.tool_response is not None:
                    self.say(f"  = {part.tool_response.name}: {_compact(part.tool_response.output)}", "cyan")
            return False
        for request in chunk.tool_requests:
            assert request.tool_request is not None
            if request.is_interrupt:  # streamed as it happens; the REPL asks once the turn ends
                continue
            self.say(f"  > {request.tool_request.name} {_compact(request.tool_request.input)}", "cyan")
        self._stream(chunk.text)
        return bool(chunk.text)

    def _finish(self, response: AgentResponse, *, streamed: bool) -> AgentResponse:
        """Show the end of a turn: its text unless streamed, its error, or why it ended early."""
        if not streamed:
            self._stream(response.text)
        if response.error is not None:
            self.say(_error_text(response.error), "red")
        elif response.finish_reason not in (None, "stop", "interrupted") and response.finish_reason:
            self.say(f"(turn ended: {response.finish_reason})", "yellow")
        elif not response.text.strip() and not response.interrupts:
            self.say("(no answer)", "yellow")
        self.end_line()
        return response

    def _ask(self, interrupts: list[AgentInterrupt]) -> tuple[list[Part], list[Part]] | None:
        """Ask y/n about each interrupted tool request, answering as the README teaches: yes runs
        the tool again (`restart`, `ctx.resumed == {"approved": True}`), no gives it the output
        `DENIED`. Returns `(restart, respond)`; None at end of input."""
        restart: list[Part] = []
        respond: list[Part] = []
        for interrupt in interrupts:
            note = (
                f" ({_compact(interrupt.data)})"
                if isinstance(interrupt.data, dict) and interrupt.data
                else ""
            )
            self.say(f"the agent wants to run {interrupt.name} {_compact(interrupt.input)}{note}", "yellow")
            while True:
                reply = self._read("allow? [y/n] ")
                if reply is None:
                    return None
                reply = reply.strip().lower()
                if reply in ("y", "yes", "n", "no"):
                    break
                self.say("please answer y or n")
            if reply.startswith("y"):
                restart.append(interrupt.restart({"approved": True}))
            else:
                respond.append(interrupt.respond(dict(DENIED)))
        return restart, respond
