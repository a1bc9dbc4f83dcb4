"""Real servers to break on purpose: a private Redis server per test (stopped, restarted, wiped at
will without touching the shared one), and short stops of the shared PostgreSQL cluster."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import IN_CI


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_until(check: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {seconds}s")
        time.sleep(0.02)


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


class PrivateRedis:
    """A redis-server of this test's own, on a free port, with its data in `directory`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server (loading `dump.rdb` if a `stop(save=True)` left one)."""
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
        )
        _wait_until(lambda: _accepts(self.port), 10, "redis-server did not start")

    def stop(self, *, save: bool) -> None:
        """Shut the server down: `save=True` keeps its data for the next start, False loses it."""
        subprocess.run(
            ["redis-cli", "-p", str(self.port), "shutdown", "save" if save else "nosave"],
            capture_output=True,
            check=False,
        )
        if self.proc is not None:
            self.proc.wait(10)
            self.proc = None
        if not save:
            (self.directory / "dump.rdb").unlink(missing_ok=True)

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        message = "redis-server is not installed"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.close()


def _postgres_cluster() -> list[str]:
    version = sorted(p.name for p in Path("/etc/postgresql").iterdir())[0]
    return ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main"]


def postgres_is_up() -> bool:
    return _accepts(5432)


@contextlib.contextmanager
def postgres_stopped() -> Iterator[None]:
    """Stop the shared PostgreSQL cluster for the block (keep it short: others use it), then start
    it again whatever happens."""
    if not Path("/etc/postgresql").is_dir() or shutil.which("pg_ctlcluster") is None:
        pytest.skip("no local PostgreSQL cluster to stop")
    subprocess.run([*_postgres_cluster(), "stop", "-m", "fast"], check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run([*_postgres_cluster(), "start"], check=False, capture_output=True)
        _wait_until(postgres_is_up, 30, "PostgreSQL did not come back")
