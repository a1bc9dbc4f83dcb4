"""Shared fixtures: an app with the programmable and echo models, and the shipped reference files."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from turnkit import Turnkit
from turnkit.testing import ProgrammableModel, define_echo_model, define_programmable_model

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# Genkit's conformance spec and wire schema, shipped with the tests (Apache-2.0, see reference/LICENSE).
REFERENCE = Path(__file__).resolve().parent / "reference"


def require_reference(name: str) -> Path:
    """The path of a file shipped in tests/reference."""
    path = REFERENCE / name
    assert path.exists(), f"{path} is missing from the checkout"
    return path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out the live provider tests unless TURNKIT_LIVE_TESTS=1: the suite needs no network."""
    if os.environ.get("TURNKIT_LIVE_TESTS") == "1":
        return
    live = [item for item in items if item.get_closest_marker("live")]
    if live:
        config.hook.pytest_deselected(items=live)
        items[:] = [item for item in items if not item.get_closest_marker("live")]


def require_service(name: str, host: str, port: int) -> None:
    """Skip when a server is unreachable on this machine; in CI, where it must run, fail instead."""
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError as exc:
        message = f"{name} is not reachable at {host}:{port} ({exc})"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def ai() -> Turnkit:
    """A fresh app whose default model is the programmable model."""
    app = Turnkit(model="programmableModel")
    define_echo_model(app)
    return app


@pytest.fixture
def pm(ai: Turnkit) -> ProgrammableModel:
    """The programmable model registered on `ai`."""
    return define_programmable_model(ai)
