"""The standard middleware that bring tools: ToolApproval, Artifacts, Filesystem, Skills."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from turnkit import Turnkit, TurnkitError
from turnkit.middleware import Artifacts, Filesystem, Skills, ToolApproval
from turnkit.sessions import InMemorySessionStore
from turnkit.testing import ProgrammableModel
from turnkit.types import ModelRequest


def text(t: str) -> dict[str, Any]:
    return {"message": {"role": "model", "content": [{"text": t}]}, "finishReason": "stop"}


def call(name: str, inp: Any = None, ref: str = "1") -> dict[str, Any]:
    return {
        "message": {"role": "model", "content": [{"toolRequest": {"name": name, "ref": ref, "input": inp}}]}
    }


def outputs(request: ModelRequest) -> list[Any]:
    return [p.tool_response.output for p in request.messages[-1].content if p.tool_response]


def system_of(request: ModelRequest) -> str:
    return "\n".join(m.text for m in request.messages if m.role == "system")


# --- ToolApproval --------------------------------------------------------------------------------


async def test_tool_approval_interrupts_unlisted_tools_then_approves_or_denies_on_resume(
    ai: Turnkit, pm: ProgrammableModel
) -> None:
    ran: list[str] = []

    @ai.tool
    def deploy() -> str:
        """Deploy."""
        ran.append("deploy")
        return "deployed"

    @ai.tool
    def status() -> str:
        """Status."""
        ran.append("status")
        return "green"

    agent = ai.define_agent(
        "ops",
        tools=["deploy", "status"],
        store=InMemorySessionStore(),
        use=[ToolApproval(allowed_tools=["status"])],
    )
    chat = agent.chat()
    pm.program([call("status"), call("deploy", ref="2"), text("deployed it")])
    first = await chat.send("ship it")
    assert first.finish_reason == "interrupted" and ran == ["status"]
    [pending] = first.interrupts
    assert pending.name == "deploy" and pending.data == {
        "message": "tool 'deploy' needs approval",
        "toolApproval": True,
    }
    done = await chat.resume(restart=[pending.restart({"toolApproved": True})])
    assert done.text == "deployed it" and ran == ["status", "deploy"]

    pm.program([call("deploy", ref="3"), text("fine, not deployed")])
    again = await chat.send("ship again")
    await chat.resume(restart=[again.interrupts[0].restart({"toolApproved": False})])
    assert ran == ["status", "deploy"]
    assert outputs(pm.requests[-1]) == ["error: the user denied the call of tool 'deploy'"]


@pytest.mark.parametrize(
    ("resumed", "runs"),
    [
        (True, True),
        ({"toolApproved": True}, True),
        ({"approved": True}, True),
        ({"note": "go ahead"}, True),
        ({"toolApproved": "false"}, False),
        ({"toolApproved": 0}, False),
        ({"toolApproved": None}, False),
        ({"approved": False}, False),
        ({"approved": "yes"}, False),
        ("no", False),
    ],
)
async def test_tool_approval_approves_only_an_explicit_true(
    ai: Turnkit, pm: ProgrammableModel, resumed: Any, runs: bool
) -> None:
    ran: list[str] = []

    @ai.tool
    def deploy() -> str:
        """Deploy."""
        ran.append("deploy")
        return "deployed"

    agent = ai.define_agent("ops", tools=["deploy"], store=InMemorySessionStore(), use=[ToolApproval()])
    chat = agent.chat()
    pm.program([call("deploy"), text("done")])
    first = await chat.send("ship it")
    await chat.resume(restart=[first.interrupts[0].restart(resumed)])
    assert ran == (["deploy"] if runs else [])
    denied = outputs(pm.requests[-1]) == ["error: the user denied the call of tool 'deploy'"]
    assert denied is not runs


async def test_tool_approval_checks_its_configuration() -> None:
    with pytest.raises(TurnkitError, match="allowed_tools"):
        ToolApproval(allowed_tools="status")


# --- Artifacts -----------------------------------------------------------------------------------


async def test_artifacts_tools_read_and_write_the_session_and_list_it(
    ai: Turnkit, pm: ProgrammableModel
) -> None:
    agent = ai.define_agent("writer", store=InMemorySessionStore(), use=[Artifacts()])
    pm.program(
        [
            call("write_artifact", {"name": "plan.md", "content": "step 1"}),
            call("read_artifact", {"name": "plan.md"}, ref="2"),
            call("read_artifact", {"name": "missing"}, ref="3"),
            text("done"),
        ]
    )
    chat = agent.chat()
    await chat.send("plan")
    assert {t.name for t in pm.requests[0].tools or []} == {"read_artifact", "write_artifact"}
    assert "no artifacts yet" in system_of(pm.requests[0])
    assert "- plan.md (6 chars)" in system_of(pm.requests[1])  # listed as it is at each model call
    assert outputs(pm.requests[2]) == [{"name": "plan.md", "found": True, "content": "step 1"}]
    assert outputs(pm.requests[3])[0]["found"] is False
    snap = await agent.get_snapshot(session_id=chat.session_id)
    assert snap is not None and snap.state is not None
    assert [a.name for a in snap.state.artifacts or []] == ["plan.md"]


async def test_readonly_artifacts_and_no_session(ai: Turnkit, pm: ProgrammableModel) -> None:
    pm.program([call("read_artifact", {"name": "x"}), text("ok")])
    res = await ai.generate("x", use=[Artifacts(readonly=True)])
    assert [t.name for t in pm.requests[0].tools or []] == ["read_artifact"]
    assert (
        outputs(pm.requests[1])[0]["found"] is False
        and "no agent session" in outputs(pm.requests[1])[0]["content"]
    )
    assert res.text == "ok"


# --- Filesystem ----------------------------------------------------------------------------------


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "a.txt").write_text("one\ntwo\nthree\n")
    (tmp_path / "secret.txt").write_text("top secret")
    os.symlink(tmp_path / "secret.txt", root / "link.txt")
    os.symlink(tmp_path, root / "up")
    return root


async def fs_call(ai: Turnkit, pm: ProgrammableModel, fs: Filesystem, name: str, inp: dict[str, Any]) -> Any:
    pm.program([call(name, inp), text("ok")])
    await ai.generate("x", use=[fs])
    return outputs(pm.requests[-1])[0]


async def test_filesystem_lists_reads_writes_and_edits_inside_the_root(
    ai: Turnkit, pm: ProgrammableModel, sandbox: Path
) -> None:
    fs = Filesystem(root_dir=sandbox, allow_write_access=True)
    listed = await fs_call(ai, pm, fs, "list_files", {"dir_path": "docs"})
    assert listed == [{"path": "a.txt", "isDirectory": False, "size": 14}]
    assert (
        await fs_call(ai, pm, fs, "read_file", {"file_path": "docs/a.txt", "offset": 2, "limit": 1})
        == "two\n"
    )
    assert (
        await fs_call(ai, pm, fs, "write_file", {"file_path": "new/b.txt", "content": "x x"})
        == "wrote new/b.txt"
    )
    edits = {"file_path": "new/b.txt", "edits": [{"old_string": "x", "new_string": "y", "replace_all": True}]}
    assert (await fs_call(ai, pm, fs, "edit_file", edits)).startswith("edited")
    assert (sandbox / "new" / "b.txt").read_text() == "y y"
    ambiguous = {"file_path": "new/b.txt", "edits": [{"old_string": "y", "new_string": "z"}]}
    assert "occurs 2 times" in await fs_call(ai, pm, fs, "edit_file", ambiguous)
    readonly = Filesystem(root_dir=sandbox)
    pm.program([text("ok")])
    await ai.generate("x", use=[readonly])
    assert [t.name for t in pm.requests[-1].tools or []] == ["list_files", "read_file"]


@pytest.mark.parametrize(
    ("tool", "inp"),
    [
        ("read_file", {"file_path": "../secret.txt"}),
        ("read_file", {"file_path": "docs/../../secret.txt"}),
        ("read_file", {"file_path": "link.txt"}),
        ("read_file", {"file_path": "up/secret.txt"}),
        ("list_files", {"dir_path": "up"}),
        ("write_file", {"file_path": "../planted.txt", "content": "x"}),
        ("write_file", {"file_path": "up/planted.txt", "content": "x"}),
        ("edit_file", {"file_path": "link.txt", "edits": [{"old_string": "top", "new_string": "no"}]}),
    ],
)
async def test_filesystem_refuses_paths_that_leave_the_root(
    ai: Turnkit, pm: ProgrammableModel, sandbox: Path, tool: str, inp: dict[str, Any]
) -> None:
    fs = Filesystem(root_dir=sandbox, allow_write_access=True)
    out = await fs_call(ai, pm, fs, tool, inp)
    assert "leads outside the root directory" in out
    assert (sandbox.parent / "secret.txt").read_text() == "top secret"
    assert not (sandbox.parent / "planted.txt").exists()


async def test_filesystem_listing_skips_links_out_of_the_root(
    ai: Turnkit, pm: ProgrammableModel, sandbox: Path
) -> None:
    listed = await fs_call(ai, pm, Filesystem(root_dir=sandbox), "list_files", {})
    assert [e["path"] for e in listed] == ["docs"]


@pytest.mark.parametrize(
    ("tool", "inp", "said"),
    [
        ("read_file", {"file_path": "a\x00b"}, "NUL character"),
        ("write_file", {"file_path": "a\x00b", "content": "x"}, "NUL character"),
        ("write_file", {"file_path": "", "content": "x"}, "is a directory"),
        ("write_file", {"file_path": "docs", "content": "x"}, "is a directory"),
        ("write_file", {"file_path": "docs/a.txt/x", "content": "x"}, "operating system refused"),
        (
            "edit_file",
            {"file_path": "bin.txt", "edits": [{"old_string": "a", "new_string": "b"}]},
            "not UTF-8",
        ),
        ("read_file", {"file_path": "/etc/passwd"}, "absolute path '/etc/passwd' is outside the root"),
    ],
)
async def test_filesystem_os_errors_are_the_tools_error_output_not_a_failed_call(
    ai: Turnkit, pm: ProgrammableModel, sandbox: Path, tool: str, inp: dict[str, Any], said: str
) -> None:
    (sandbox / "bin.txt").write_bytes(b"\xff\xfe\x00abc")
    fs = Filesystem(root_dir=sandbox, allow_write_access=True)
    out = await fs_call(ai, pm, fs, tool, inp)
    assert out.startswith("error: invalid input for tool") and said in out
    assert (sandbox / "bin.txt").read_bytes() == b"\xff\xfe\x00abc"


async def test_filesystem_listing_skips_dangling_links_and_takes_absolute_paths_inside_the_root(
    ai: Turnkit, pm: ProgrammableModel, sandbox: Path
) -> None:
    os.symlink(sandbox / "missing", sandbox / "dangling")
    fs = Filesystem(root_dir=sandbox)
    for recursive in (False, True):
        listed = await fs_call(ai, pm, fs, "list_files", {"recursive": recursive})
        assert "dangling" not in [e["path"] for e in listed] and "docs" in [e["path"] for e in listed]
    inside = str(sandbox / "docs" / "a.txt")
    assert await fs_call(ai, pm, fs, "read_file", {"file_path": inside}) == "one\ntwo\nthree\n"


def test_filesystem_needs_an_existing_root(tmp_path: Path) -> None:
    with pytest.raises(TurnkitError, match="not a directory"):
        Filesystem(root_dir=tmp_path / "missing")


# --- Skills --------------------------------------------------------------------------------------


async def test_skills_are_listed_and_loaded_on_demand(
    ai: Turnkit, pm: ProgrammableModel, tmp_path: Path
) -> None:
    (tmp_path / "haiku").mkdir()
    (tmp_path / "haiku" / "SKILL.md").write_text(
        "---\nname: haiku\ndescription: Write haiku.\n---\nFive, seven, five.\n"
    )
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "SKILL.md").write_text("No front matter.\n")
    (tmp_path / "empty").mkdir()
    pm.program(
        [
            call("use_skill", {"skill_name": "haiku"}),
            call("use_skill", {"skill_name": "nope"}, ref="2"),
            text("ok"),
        ]
    )
    await ai.generate("x", use=[Skills(skill_paths=[str(tmp_path)])])
    listing = system_of(pm.requests[0])
    assert "<skills>" in listing and "- haiku: Write haiku." in listing and "- plain\n" in listing
    assert "empty" not in listing
    assert outputs(pm.requests[1])[0].endswith("Five, seven, five.\n")
    assert "no skill named 'nope'" in outputs(pm.requests[2])[0]


async def test_no_skills_no_tool(ai: Turnkit, pm: ProgrammableModel, tmp_path: Path) -> None:
    pm.program([text("ok")])
    await ai.generate("x", use=[Skills(skill_paths=[str(tmp_path)])])
    assert not pm.requests[0].tools and "<skills>" not in system_of(pm.requests[0])


async def test_skills_are_scanned_once_then_only_when_changed_off_the_event_loop(
    ai: Turnkit, pm: ProgrammableModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from turnkit.middleware import _skills

    scans: list[bool] = []  # whether each scan ran on the event loop's thread
    real_scan = _skills.scan

    def counting_scan(paths: Any) -> Any:
        scans.append(threading.current_thread() is threading.main_thread())
        return real_scan(paths)

    monkeypatch.setattr(_skills, "scan", counting_scan)
    (tmp_path / "haiku").mkdir()
    (tmp_path / "haiku" / "SKILL.md").write_text("---\ndescription: Write haiku.\n---\nFive.\n")
    skills = Skills(skill_paths=[str(tmp_path)])
    for _ in range(3):
        pm.program([text("ok")])
        await ai.generate("x", use=[skills])
    assert len(scans) == 1  # the first use; nothing changed since
    (tmp_path / "limerick").mkdir()
    (tmp_path / "limerick" / "SKILL.md").write_text("---\ndescription: Write limericks.\n---\n")
    pm.program([text("ok")])
    await ai.generate("x", use=[skills])
    assert scans[1:] == [False]  # the change was seen, and read in a worker thread
    assert "- limerick: Write limericks." in system_of(pm.requests[-1])


async def test_an_unreadable_skill_is_skipped_with_a_warning(
    ai: Turnkit, pm: ProgrammableModel, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "SKILL.md").write_text("---\ndescription: Fine.\n---\n")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "SKILL.md").write_text("unreadable")
    real_read = Path.read_text

    def read_text(self: Path, *args: Any, **kwargs: Any) -> str:
        if self.parent.name == "bad":
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self, *args, **kwargs)

    pm.program([text("ok")])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Path, "read_text", read_text)
        await ai.generate("x", use=[Skills(skill_paths=[str(tmp_path)])])
    listing = system_of(pm.requests[0])
    assert "- good: Fine." in listing and "bad" not in listing
    assert any("skipping skill" in r.message and "bad" in r.message for r in caplog.records)
