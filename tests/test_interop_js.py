"""Interop: Genkit's JavaScript `remoteAgent()` (npm `genkit@1.42.0`, `genkit/beta/client`) run by
Node against a turnkit server on 127.0.0.1.

The server is `turnkit serve tests/interop/app.py` in its own process; the client is
`tests/interop/js_client.mjs`, run once for every scenario (one chat each), printing JSON that the
tests below check (`tests/interop/checks.py`). The npm install happens on first use and is reused
(`tests/interop/node_modules`, git-ignored). Without node or npm the tests skip, except in CI.
"""

from __future__ import annotations

from typing import Any

import pytest

from interop import checks
from interop.harness import INTEROP, node, npm_install, outcome, run_json, turnkit_server


@pytest.fixture(scope="module")
def js() -> dict[str, Any]:
    """Every scenario's outcome, from one run of the JS client against one turnkit server."""
    exe = node()
    npm_install()
    with turnkit_server() as base:
        report = run_json([exe, str(INTEROP / "js_client.mjs"), base])
    assert report["version"] == "1.42.0"
    results: dict[str, Any] = report["results"]
    return results


def test_send_continues_the_session(js: dict[str, Any]) -> None:
    checks.send(outcome(js, "send"))


def test_send_stream_streams_text(js: dict[str, Any]) -> None:
    checks.stream(outcome(js, "stream"))


def test_custom_state_patches_reach_chat_state(js: dict[str, Any]) -> None:
    checks.state(outcome(js, "state"))


def test_artifacts_stream_and_replace_by_name(js: dict[str, Any]) -> None:
    checks.artifacts(outcome(js, "artifacts"))


def test_interrupt_then_resume_with_respond(js: dict[str, Any]) -> None:
    checks.interrupt_respond(outcome(js, "interrupt_respond"), by="js")


def test_interrupt_then_resume_with_restart(js: dict[str, Any]) -> None:
    checks.interrupt_restart(outcome(js, "interrupt_restart"))


def test_failed_turn_is_agent_error(js: dict[str, Any]) -> None:
    checks.failure(outcome(js, "failure"))


def test_detach_poll_and_abort(js: dict[str, Any]) -> None:
    checks.detach(outcome(js, "detach"))


def test_load_chat_by_session_and_by_snapshot(js: dict[str, Any]) -> None:
    checks.load_chat(outcome(js, "load_chat"))


def test_get_snapshot(js: dict[str, Any]) -> None:
    v = outcome(js, "get_snapshot")
    checks.get_snapshot(v)
    # The JS client throws on any non-200 answer, so a missing snapshot is an error naming the 404.
    assert "404" in v["missing"]["message"] and "NOT_FOUND" in v["missing"]["message"], v["missing"]


def test_abort_signal_stops_the_turn_on_the_server(js: dict[str, Any]) -> None:
    checks.abort_foreground(outcome(js, "abort_foreground"))


def test_misuse_is_an_agent_error(js: dict[str, Any]) -> None:
    checks.errors(outcome(js, "errors"))


def test_misuse_status_reaches_agent_error_status(js: dict[str, Any]) -> None:
    checks.error_statuses(outcome(js, "errors"))


def test_client_managed_agent(js: dict[str, Any]) -> None:
    checks.client_managed(outcome(js, "client_managed"))
