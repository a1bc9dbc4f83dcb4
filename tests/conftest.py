"""Shared fixtures: an app with the programmable and echo models, and the shared reference folder."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from turnkit import Turnkit
from turnkit.testing import ProgrammableModel, define_echo_model, define_programmable_model

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REFERENCE = (
    Path(os.environ.get("TURNKIT_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "reference"
)


def require_reference(name: str) -> Path:
    """The path of a file in ../shared/reference; skip when absent (fail in CI, where it must be there)."""
    path = REFERENCE / name
    if not path.exists():
        if IN_CI:
            pytest.fail(f"{path} is missing; CI runs with ../shared beside the clone")
        pytest.skip(f"{path} not found (set TURNKIT_SHARED to the shared/ folder)")
    return path


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
