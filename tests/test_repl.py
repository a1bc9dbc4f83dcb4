"""`turnkit chat` and the example assistant: the safe calculator, the tools' custom state, and the
real REPL process driven through a pipe (echo and programmable models; one run on the local model)."""

from __future__ import annotations

import importlib.util
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from turnkit.testing import define_programmable_model

TURNKIT = str(Path(sys.executable).with_name("turnkit"))
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "assistant.py"
TARGET = f"{EXAMPLE}:assistant"
ID = r"[0-9a-f-]{36}"

# An app with two agents: `helper` (in-memory store, an approval tool written as the README teaches:
# it interrupts unless restarted) and `scratch` (no store). Its model answers "you said X"; "fail"
# fails the turn; "slow" streams a chunk, then waits; "delete X" calls the tool, whose output it repeats.
TEST_APP = '''
import asyncio
import json
from turnkit import ModelResponseChunk, Part, ToolContext, Turnkit, TurnkitError
from turnkit.sessions import InMemorySessionStore
from turnkit.testing import define_programmable_model

ai = Turnkit(model="programmableModel")
pm = define_programmable_model(ai)


@ai.tool()
def delete_file(path: str, ctx: ToolContext) -> str:
    """Delete a file, after asking the user."""
    if not ctx.resumed:
        ctx.interrupt({"question": f"delete {path}?"})
    return f"deleted {path} (resumed with {json.dumps(ctx.resumed)})"


async def answer(request, ctx):
    last = request.messages[-1]
    if last.role == "tool":
        output = last.content[0].tool_response.output
        return {"message": {"role": "model", "content": [{"text": f"tool said {json.dumps(output)}"}]}}
    text = last.text
    if text == "fail":
        raise TurnkitError("UNAVAILABLE", "the model is down")
    if text == "slow":
        ctx.send_chunk(ModelResponseChunk(role="model", index=0, content=[Part(text="thinking...")]))
        await asyncio.sleep(60)
    if text.startswith("delete "):
        call = {"name": "delete_file", "ref": "r1", "input": {"path": text[len("delete "):]}}
        return {"message": {"role": "model", "content": [{"toolRequest": call}]}}
    return {"message": {"role": "model", "content": [{"text": f"you said {text}"}]}}


pm.handler = answer
helper = ai.define_agent(name="helper", tools=[delete_file], store=InMemorySessionStore())
scratch = ai.define_agent(name="scratch")
'''


# --- the example module ----------------------------------------------------------------------------


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """A fresh import of examples/assistant.py keeping its sessions under tmp_path."""
    monkeypatch.setenv("TURNKIT_SESSIONS_DIR", str(tmp_path / "sessions"))
    monkeypatch.delenv("TURNKIT_MODEL", raising=False)
    name = f"assistant_example_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(name, None)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1 + 2 * 3", "7"),
        ("(1 + 2) * 3", "9"),
        ("-2 ** 2", "-4"),
        ("(-2) ** 3", "-8"),
        ("--3 + +1", "4"),
        ("7 / 2", "3.5"),
        ("7 // 2", "3"),
        ("-7 // 2", "-4"),
        ("7 % 3", "1"),
        ("2 ** -1", "0.5"),
        ("0.1 + 0.2", "0.3"),
        ("10 / 4 * 2", "5"),
        ("1.5e3 + 1", "1501"),
        ("2 ** 100", str(2**100)),
        ("  12 * (3 + 4)  ", "84"),
    ],
)
def test_calculator_evaluates_arithmetic(example: ModuleType, expression: str, expected: str) -> None:
    assert example.format_number(example.evaluate(expression)) == expected


@pytest.mark.parametrize("expression", ["1 / 0", "1 // 0", "5 % 0", "1 / (2 - 2)", "0.0 ** -1"])
def test_calculator_division_by_zero(example: ModuleType, expression: str) -> None:
    with pytest.raises(example.CalcError, match="division by zero"):
        example.evaluate(expression)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("x + 1", "names are not allowed"),
        ("__import__('os').system('true')", "function calls are not allowed"),
        ("abs(-1)", "function calls are not allowed"),
        ("(1).real", "attributes are not allowed"),
        ("'a' * 3", "only numbers"),
        ("True + 1", "only numbers"),
        ("1j * 1j", "only numbers"),
        ("[1, 2]", "List expressions are not allowed"),
        ("1 < 2", "Compare expressions are not allowed"),
        ("1 if 1 else 2", "IfExp expressions are not allowed"),
        ("lambda: 1", "Lambda expressions are not allowed"),
        ("2 ^ 3", "write powers as a \\*\\* b"),
        ("1 << 2", "BinOp expressions are not allowed"),
        ("~1", "UnaryOp expressions are not allowed"),
        ("1 +", "not an arithmetic expression"),
        ("import os", "not an arithmetic expression"),
        ("1\x00", "not an arithmetic expression"),
    ],
)
def test_calculator_rejects_everything_else(example: ModuleType, expression: str, message: str) -> None:
    with pytest.raises(example.CalcError, match=message):
        example.evaluate(expression)


@pytest.mark.parametrize(
    "expression",
    [
        "2 ** 100000",
        "9 ** 9 ** 9",
        "10 ** 1000 * 10 ** 1000",
        "(10 ** 1000) ** 3",
        "2.0 ** 5000",
        "1e308 * 10",
    ],
)
def test_calculator_rejects_huge_numbers(example: ModuleType, expression: str) -> None:
    started = time.monotonic()
    with pytest.raises(example.CalcError, match=r"too large|limited to"):
        example.evaluate(expression)
    assert time.monotonic() - started < 1


def test_calculator_bounds_the_expression_length(example: ModuleType) -> None:
    with pytest.raises(example.CalcError, match="limited to 200 characters"):
        example.evaluate("1 + " * 60 + "1")


async def test_tools_answer_errors_as_text_outside_a_session(example: ModuleType) -> None:
    assert await example.calculate.fn(expression="6 * 7") == "6 * 7 = 42"
    assert await example.calculate.fn(expression="1 / 0") == "Error: division by zero"
    assert await example.calculate.fn(expression="open('x')") == "Error: function calls are not allowed"
    assert (await example.get_weather.fn(city="oslo")).startswith("Oslo: overcast")
    assert (await example.get_weather.fn(city="Atlantis")).startswith("No weather data for 'Atlantis'")


async def test_tools_record_cities_and_calculations_in_custom_state(example: ModuleType) -> None:
    pm = define_programmable_model(example.ai)
    example.ai.default_model = "programmableModel"
    weather = {"toolRequest": {"name": "get_weather", "ref": "1", "input": {"city": "oslo"}}}
    calc = {"toolRequest": {"name": "calculate", "ref": "2", "input": {"expression": "6*7"}}}
    pm.responses = [
        {"message": {"role": "model", "content": [weather]}},
        {"message": {"role": "model", "content": [{"text": "Cold."}]}},
        {"message": {"role": "model", "content": [calc]}},
        {"message": {"role": "model", "content": [{"text": "42."}]}},
    ]
    chat = example.assistant.chat()
    first = await chat.send("Weather in Oslo?")
    assert first.text == "Cold." and first.session_state.custom == {"cities": ["Oslo"], "calculations": 0}
    second = await chat.send("6 times 7?")
    assert second.session_state.custom == {"cities": ["Oslo"], "calculations": 1}
    tool_message = second.messages[-2]
    assert tool_message.role == "tool"
    assert tool_message.content[0].tool_response is not None
    assert tool_message.content[0].tool_response.output == "6*7 = 42"
    # The turns are in the file store, where a later process finds them.
    snap = await example.assistant.get_snapshot(session_id=second.session_id)
    assert snap is not None and snap.state is not None and len(snap.state.messages or []) == 8


# --- the REPL through a pipe ---------------------------------------------------------------------


def chat(
    *args: str, stdin: str = "", cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `turnkit chat ARGS` in `cwd` with `stdin` piped in."""
    base = {k: v for k, v in os.environ.items() if k not in ("TURNKIT_MODEL", "TURNKIT_SESSIONS_DIR")}
    return subprocess.run(
        [TURNKIT, "chat", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**base, **(env or {})},
    )


def echo_chat(stdin: str, cwd: Path, *args: str) -> str:
    """The stdout of a successful echo-model chat with the example assistant."""
    out = chat(TARGET, "--model", "echoModel", *args, stdin=stdin, cwd=cwd)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    return out.stdout


GREETING = "talking to assistant: type a message, /help for commands, /quit to leave\n"


def test_chat_streams_answers_and_resumes_the_last_session_on_the_next_run(tmp_path: Path) -> None:
    first = echo_chat("hello there\nsecond message\n/state\n/quit\n", tmp_path)
    match = re.fullmatch(
        f"new session ({ID})\n{GREETING}"
        "Echo: hello there\n"
        "Echo: second message\n"
        f"session   ({ID})\nsnapshot  ({ID})\nmessages  4\ncustom    \\(none\\)\n",
        first,
    )
    assert match, first
    session_id, snapshot_id = match[1], match[3]
    assert match[2] == session_id
    # The default store directory is .turnkit/sessions under the working directory.
    assert (tmp_path / ".turnkit" / "sessions" / "last-session.json").is_file()

    second = echo_chat("/state\nand a third\n/state\n", tmp_path)  # ends at EOF, no /quit
    assert second == (
        f"resuming session {session_id} (4 messages)\n{GREETING}"
        f"session   {session_id}\nsnapshot  {snapshot_id}\nmessages  4\ncustom    (none)\n"
        "Echo: and a third\n"
        f"session   {session_id}\nsnapshot  {second.split('snapshot  ')[2][:36]}\nmessages  6\ncustom    (none)\n"
    )
    assert second.split("snapshot  ")[2][:36] != snapshot_id


def test_new_and_resume_switch_sessions(tmp_path: Path) -> None:
    first = echo_chat("one\n/quit\n", tmp_path)
    old = re.match(f"new session ({ID})", first)
    assert old
    out = echo_chat(f"/new\n/state\ntwo\n/resume {old[1]}\n/state\n/quit\n", tmp_path)
    lines = out.splitlines()
    assert lines[0] == f"resuming session {old[1]} (2 messages)"
    new = re.fullmatch(f"new session ({ID})", lines[2])
    assert new and new[1] != old[1]
    assert lines[3:7] == [f"session   {new[1]}", "snapshot  (none yet)", "messages  0", "custom    (none)"]
    assert lines[7] == "Echo: two"
    assert lines[8] == f"resuming session {old[1]} (2 messages)"
    assert lines[9] == f"session   {old[1]}" and lines[11] == "messages  2"
    # The session resumed last is the one the next run continues; --new starts afresh.
    assert echo_chat("", tmp_path).startswith(f"resuming session {old[1]} (2 messages)\n")
    fresh = re.match(f"new session ({ID})\n", echo_chat("", tmp_path, "--new"))
    assert fresh and fresh[1] not in (old[1], new[1])


def test_session_flag_and_sessions_dir_from_the_environment(tmp_path: Path) -> None:
    sessions = tmp_path / "elsewhere"
    env = {"TURNKIT_SESSIONS_DIR": str(sessions)}
    run = chat(TARGET, "--model", "echoModel", "--session", "my-notes", stdin="hi\n", cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout == f"new session my-notes\n{GREETING}Echo: hi\n"
    again = chat(TARGET, "--model", "echoModel", "--session", "my-notes", stdin="", cwd=tmp_path, env=env)
    assert again.stdout.startswith("resuming session my-notes (2 messages)\n")
    assert (sessions / "last-session.json").is_file() and not (tmp_path / ".turnkit").exists()


def test_unknown_commands_show_help_and_resume_errors_keep_the_session(tmp_path: Path) -> None:
    out = echo_chat("/frobnicate\n/resume no-such-session\n/resume\n/help\nstill here\n", tmp_path)
    sid = re.match(f"new session ({ID})", out)
    assert sid
    body = out.split(GREETING, 1)[1]
    help_lines = body.splitlines()[1:7]
    assert body.startswith("unknown command /frobnicate\ncommands:\n")
    assert any("/resume ID" in line for line in help_lines) and any("/quit" in line for line in help_lines)
    assert f"error: no session 'no-such-session' (still in session {sid[1]})\n" in body
    assert "usage: /resume SESSION_ID\n" in body
    assert body.endswith("Echo: still here\n")


def test_eof_right_away_exits_cleanly(tmp_path: Path) -> None:
    out = echo_chat("", tmp_path)
    assert re.fullmatch(f"new session {ID}\n{GREETING}", out)


@pytest.fixture
def test_app(tmp_path: Path) -> Path:
    path = tmp_path / "repl_app.py"
    path.write_text(TEST_APP)
    return path


def test_failed_turns_are_printed_and_the_repl_goes_on(tmp_path: Path, test_app: Path) -> None:
    out = chat(f"{test_app}:ai", "--agent", "helper", stdin="fail\nhi\n/state\n", cwd=tmp_path)
    assert out.returncode == 0 and out.stderr == ""
    body = out.stdout.split("/quit to leave\n", 1)[1]
    assert body.startswith("error (UNAVAILABLE): the model is down\nyou said hi\n")
    assert "messages  2\n" in body  # the failed turn left no messages behind
    assert "Traceback" not in out.stdout + out.stderr


def test_interrupts_ask_and_answer_as_the_readme_teaches(tmp_path: Path, test_app: Path) -> None:
    """y restarts the tool (`ctx.resumed == {"approved": true}`), so it runs for real; n answers the
    call with a denial, which the model reads as the tool's output."""
    stdin = "delete notes.txt\nmaybe\ny\ndelete keep.txt\nn\n/state\n"
    out = chat(f"{test_app}:helper", stdin=stdin, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    body = out.stdout.split("/quit to leave\n", 1)[1]
    assert body.startswith(
        'the agent wants to run delete_file {"path": "notes.txt"} ({"question": "delete notes.txt?"})\n'
        "please answer y or n\n"
        'tool said "deleted notes.txt (resumed with {\\"approved\\": true})"\n'
        'the agent wants to run delete_file {"path": "keep.txt"} ({"question": "delete keep.txt?"})\n'
        'tool said {"approved": false, "reason": "denied by the user"}\n'
    ), body
    assert "messages  8\n" in body  # user, model (call), tool, model for each of the two turns


def test_ctrl_c_stops_a_streaming_answer_and_the_repl_goes_on(tmp_path: Path, test_app: Path) -> None:
    proc = subprocess.Popen(
        [TURNKIT, "chat", f"{test_app}:helper"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(b"slow\n")
        proc.stdin.flush()
        seen = b""
        deadline = time.monotonic() + 30
        while b"thinking..." not in seen:  # streamed before the turn ends
            assert time.monotonic() < deadline, seen
            if select.select([proc.stdout], [], [], 0.1)[0]:
                seen += os.read(proc.stdout.fileno(), 4096)
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(b"hi again\n", timeout=30)
    finally:
        proc.kill()
    out = (seen + rest).decode()
    assert proc.returncode == 0, err
    assert out.endswith("thinking...\n(stopped)\nyou said hi again\n"), out


def test_client_managed_agents_chat_without_resuming(tmp_path: Path, test_app: Path) -> None:
    out = chat(f"{test_app}:ai", "--agent", "scratch", stdin="one\ntwo\n/state\n/resume x\n", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    body = out.stdout.split("/quit to leave\n", 1)[1]
    sid = re.match(f"new session ({ID})", out.stdout)
    assert sid
    assert body == (
        "you said one\nyou said two\n"
        f"session   {sid[1]}\nmessages  4\ncustom    (none)\n"
        "error: agent 'scratch' keeps no sessions (it has no store); nothing to resume\n"
    )


def test_bad_targets_agents_and_models_exit_2(tmp_path: Path, test_app: Path) -> None:
    several = chat(f"{test_app}:ai", cwd=tmp_path)
    assert several.returncode == 2
    assert "pick an agent with --agent NAME; the app defines: helper, scratch" in several.stderr
    missing = chat(f"{test_app}:ai", "--agent", "nobody", cwd=tmp_path)
    assert missing.returncode == 2 and "no agent 'nobody'" in missing.stderr
    not_agent = chat(f"{test_app}:pm", cwd=tmp_path)
    assert not_agent.returncode == 2 and "expected an Agent or a Turnkit app" in not_agent.stderr
    no_file = chat(f"{tmp_path / 'nope.py'}:ai", cwd=tmp_path)
    assert no_file.returncode == 2 and "no such file" in no_file.stderr
    model = chat(TARGET, "--model", "nope", cwd=tmp_path)
    assert model.returncode == 2 and "unknown model 'nope'" in model.stderr and "echoModel" in model.stderr
    both = chat(TARGET, "--new", "--session", "x", cwd=tmp_path)
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


def test_chat_help() -> None:
    out = subprocess.run([TURNKIT, "chat", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for flag in ("TARGET", "--agent", "--session", "--new", "--model"):
        assert flag in out.stdout
    top = subprocess.run([TURNKIT, "--help"], capture_output=True, text=True, timeout=60)
    assert "chat" in top.stdout and "generate" in top.stdout


@pytest.mark.model
def test_chat_with_the_local_model(tmp_path: Path) -> None:
    out = chat(TARGET, "--new", stdin="Say hello to me.\n/quit\n", cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    answer = out.stdout.split("/quit to leave\n", 1)[1]
    assert answer.strip() and answer.endswith("\n")
    assert "error" not in answer and "(no answer)" not in answer


# --- FILE.py without :NAME, "did you mean" -------------------------------------------------------


def test_a_file_alone_names_its_only_agent_or_lists_them(tmp_path: Path, test_app: Path) -> None:
    one = tmp_path / "one_agent.py"
    one.write_text(
        "from turnkit import Turnkit\nfrom turnkit.testing import define_echo_model\n"
        'ai = Turnkit(model="echoModel")\ndefine_echo_model(ai)\nsolo = ai.define_agent(name="solo")\n'
    )
    out = chat(str(one), stdin="hi\n", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "talking to solo:" in out.stdout and out.stdout.endswith("Echo: hi\n")
    several = chat(str(test_app), cwd=tmp_path)
    assert several.returncode == 2
    assert (
        f"{test_app} defines several agents: helper, scratch; pick one with {test_app}:NAME" in several.stderr
    )
    picked = chat(str(test_app), "--agent", "helper", stdin="hi\n", cwd=tmp_path)
    assert picked.returncode == 0 and picked.stdout.endswith("you said hi\n")
    none = tmp_path / "no_agents.py"
    none.write_text("x = 1\n")
    empty = chat(str(none), cwd=tmp_path)
    assert empty.returncode == 2 and "defines no agent" in empty.stderr


def test_unknown_agents_models_and_attributes_get_a_did_you_mean(tmp_path: Path, test_app: Path) -> None:
    agent = chat(f"{test_app}:ai", "--agent", "helpr", cwd=tmp_path)
    assert agent.returncode == 2
    assert "no agent 'helpr' (did you mean 'helper'?); the app defines: helper, scratch" in agent.stderr
    in_file = chat(str(test_app), "--agent", "scrach", cwd=tmp_path)
    assert in_file.returncode == 2 and "did you mean 'scratch'?" in in_file.stderr
    attribute = chat(f"{test_app}:helpr", cwd=tmp_path)
    assert (
        attribute.returncode == 2 and "has no attribute 'helpr' (did you mean 'helper'?)" in attribute.stderr
    )
    model = chat(TARGET, "--model", "echomodel", cwd=tmp_path)
    assert model.returncode == 2 and "unknown model 'echomodel' (did you mean 'echoModel'?)" in model.stderr


# --- a real terminal: colour, line editing, history ----------------------------------------------

SGR = re.compile(r"\x1b\[[0-9;]*m")  # colour codes (readline's own mode switches are not colours)


class Terminal:
    """`turnkit chat ARGS` on a pseudo-terminal: type keys, wait for text to appear."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            [TURNKIT, "chat", *args], stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env
        )
        os.close(slave)
        self.seen = b""
        self.transcript = ""  # everything read so far

    def expect(self, text: str, timeout: float = 60) -> None:
        """Read until `text` has appeared since the last `expect`."""
        deadline = time.monotonic() + timeout
        while text.encode() not in self.seen:
            assert time.monotonic() < deadline, f"{text!r} never came: {self.seen!r}"
            if select.select([self.master], [], [], 0.1)[0]:
                try:
                    self.seen += os.read(self.master, 4096)
                except OSError:  # the process ended and closed the terminal
                    break
        assert text.encode() in self.seen, self.seen
        self.transcript += self.seen.decode(errors="replace")
        self.seen = self.seen.split(text.encode(), 1)[1]

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def close(self) -> int:
        try:
            return self.proc.wait(timeout=30)
        finally:
            self.proc.kill()
            os.close(self.master)


def terminal_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in ("TURNKIT_MODEL", "NO_COLOR")}
    return {
        **base,
        "TERM": "xterm",
        "HOME": str(tmp_path),
        "TURNKIT_SESSIONS_DIR": str(tmp_path / "sessions"),
        "TURNKIT_HISTORY_FILE": str(tmp_path / "history"),
        **extra,
    }


def test_colour_on_a_terminal_and_none_with_no_color(tmp_path: Path, test_app: Path) -> None:
    term = Terminal([f"{test_app}:helper"], tmp_path, terminal_env(tmp_path))
    term.expect("you> ")
    term.type("fail\r")
    term.expect("the model is down")
    term.expect("you> ")
    term.type("\x04")  # Ctrl-D
    assert term.close() == 0
    assert "\x1b[31merror (UNAVAILABLE): the model is down\x1b[0m" in term.transcript
    assert "\x1b[1;32myou> \x1b[0m" in term.transcript and "\x1b[2mnew session " in term.transcript

    plain = Terminal([f"{test_app}:helper"], tmp_path, terminal_env(tmp_path, NO_COLOR="1"))
    plain.expect("you> ")
    plain.type("fail\r")
    plain.expect("you> ")
    plain.type("\x04")
    assert plain.close() == 0
    assert "error (UNAVAILABLE): the model is down" in plain.transcript
    assert not SGR.search(plain.transcript), plain.transcript


def test_line_editing_and_history_across_runs(tmp_path: Path) -> None:
    env = terminal_env(tmp_path, NO_COLOR="1")
    first = Terminal([TARGET, "--model", "echoModel"], tmp_path, env)
    first.expect("you> ")
    first.type("helo\x1b[Dl\r")  # left arrow, then insert the missing letter
    first.expect("Echo: hello")
    first.expect("you> ")
    first.type("second line\r")
    first.expect("Echo: second line")
    first.expect("you> ")
    first.type("/quit\r")
    assert first.close() == 0
    assert (tmp_path / "history").read_text().splitlines()[-3:] == ["hello", "second line", "/quit"]

    again = Terminal([TARGET, "--model", "echoModel"], tmp_path, env)
    again.expect("you> ")
    again.type("\x1b[A\x1b[A\x1b[A\r")  # up three times: "hello" from the last run
    again.expect("Echo: hello")
    again.expect("you> ")
    again.type("\x04")
    assert again.close() == 0
