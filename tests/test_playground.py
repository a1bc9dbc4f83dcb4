"""The playground page (`turnkit serve app.py --ui`, at /ui/) in a real headless Chromium.

`tests/playground/playground.mjs` drives Debian's `chromium` through npm `playwright-core` (pinned
in tests/playground/package.json; it never downloads a browser) against `turnkit serve
tests/ai_sdk/app.py --ui` on 127.0.0.1: it types messages and sees the streamed answers, a tool
call with custom state, an artifact, approves an interrupt, branches from an earlier snapshot,
aborts a background turn and denies an interrupt of a client-managed agent, then the test checks
what the page showed. The screenshot is saved as `$TURNKIT_SCREENSHOT_DIR/turnkit-playground.png`
(default: the temp directory). Chromium is installed with apt-get when missing (as root, as in
CI); without it, node or npm the tests skip, except in CI.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from frontend_support import PLAYGROUND, PLAYWRIGHT_VERSION, chromium, npm_install, serve_frontends
from interop.harness import node, run_json
from store_case_postgres import DSN, require_postgres

SCREENSHOT = Path(os.environ.get("TURNKIT_SCREENSHOT_DIR", tempfile.gettempdir())) / "turnkit-playground.png"


@contextlib.contextmanager
def store_url(kind: str, tmp: Path) -> Iterator[str | None]:
    """The session store of the served `chat` agent, as a store URL (None: in memory)."""
    if kind == "memory":
        yield None
    elif kind == "sqlite":
        yield f"sqlite:{tmp / 'sessions.db'}"
    else:
        require_postgres()
        import psycopg

        schema = f"tk_test_ui_{uuid.uuid4().hex[:12]}"
        try:
            yield f"{DSN}?schema={schema}"
        finally:
            with psycopg.connect(DSN, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def browse(kind: str, tmp: Path, screenshot: Path) -> dict[str, Any]:
    """Run the browser scenario against a served app; what the page showed."""
    exe = node()
    browser = chromium()
    npm_install(PLAYGROUND, {"playwright-core": PLAYWRIGHT_VERSION})
    with store_url(kind, tmp) as url, serve_frontends("--ui", store_url=url) as base:
        return run_json(
            [exe, str(PLAYGROUND / "playground.mjs"), base, browser, str(screenshot)], timeout=180
        )


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return browse("memory", tmp_path_factory.mktemp("ui"), SCREENSHOT)


def test_page_lists_agents_and_streams_an_answer(page: dict[str, Any]) -> None:
    assert page["agents"] == ["chat", "stateless"] and page["kind"] == "server-managed"
    assert page["hello"] == "echo: slow hello there (turn 1)"
    # The answer grew word by word on the page (a word every 50 ms from the model).
    partial = [t for t in page["helloTexts"] if t != page["hello"]]
    assert len(partial) >= 2 and all(page["hello"].startswith(t) for t in partial), page["helloTexts"]


def test_tool_call_custom_state_and_artifact_show(page: dict[str, Any]) -> None:
    assert page["stateTool"] == '→ {"mood":"happy"}'
    assert page["state"] == {"mood": "happy", "changes": 1}
    assert page["artifacts"] == ["notes: report notes v1"]


def test_interrupt_is_approved_from_the_page(page: dict[str, Any]) -> None:
    assert "approve launch?" in page["question"]
    assert page["approvedOutput"] == '→ {"action":"launch","approved":true}'
    assert page["afterApproval"] == 'tool said [{"action":"launch","approved":true}]'
    assert SCREENSHOT.stat().st_size > 10_000


def test_branching_from_an_earlier_snapshot(page: dict[str, Any]) -> None:
    assert page["snapshots"][-1] == "after “slow hello there”" and len(page["snapshots"]) == 5
    # The page went back to the first turn: its history, and no custom state yet.
    assert page["branchedLog"] == ["slow hello there", "echo: slow hello there (turn 1)"]
    assert page["branchedState"] is None
    assert page["afterBranch"] == "echo: again (turn 2)"
    assert page["branchSnapshots"] == ["after “again”", "after “slow hello there”"]


def test_background_turn_is_aborted(page: dict[str, Any]) -> None:
    assert page["taskBefore"] == "pending" and page["taskAfter"] == "aborted"


def test_client_managed_agent_and_denied_interrupt(page: dict[str, Any]) -> None:
    assert page["statelessKind"] == "client-managed" and page["detachDisabled"] is True
    assert page["deniedOutput"] == '→ {"approved":false,"reason":"denied in the playground"}'
    assert page["afterDenial"] == 'tool said [{"approved":false,"reason":"denied in the playground"}]'
    assert page["statelessCount"] == "echo: count (turn 3)"  # the page kept the client's state


def test_page_is_self_contained_and_error_free(page: dict[str, Any]) -> None:
    assert page["external"] == []  # nothing fetched from anywhere but the server
    assert page["consoleErrors"] == [] and page["error"] is None


def test_api_parameter_points_the_page_elsewhere(page: dict[str, Any]) -> None:
    assert page["elsewhereError"] == "NOT_FOUND: no route /elsewhere/agents"
    assert page["otherOriginError"] == (
        '?api= must be a path on this server (such as /api/), not "http://example.invalid/api/"'
    )
    assert page["externalAfterOtherOrigin"] == 0  # the other site was never asked


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_playground_works_with_other_stores(kind: str, tmp_path: Path) -> None:
    seen = browse(kind, tmp_path, tmp_path / "shot.png")
    assert seen["afterApproval"] == 'tool said [{"action":"launch","approved":true}]'
    assert seen["afterBranch"] == "echo: again (turn 2)" and seen["taskAfter"] == "aborted"
    assert seen["consoleErrors"] == []


def test_ui_is_served_only_with_the_flag() -> None:
    with serve_frontends() as base:
        response = httpx.get(f"{base}/ui/")
        assert response.status_code == 404
    with serve_frontends("--ui") as base:
        redirect = httpx.get(f"{base}/ui")
        assert redirect.status_code == 307 and redirect.headers["location"] == f"{base}/ui/"
        for path, kind in [
            ("/ui/", "text/html"),
            ("/ui/playground.js", "javascript"),
            ("/ui/playground.css", "text/css"),
        ]:
            response = httpx.get(base + path)
            assert response.status_code == 200 and kind in response.headers["content-type"], path
        assert httpx.get(f"{base}/agents").json()["agents"][0]["name"] == "chat"  # the agents still answer
