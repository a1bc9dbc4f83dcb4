"""The Genkit Developer UI for turnkit apps: `genkit start -- turnkit dev app.py`.

`serve_dev` runs Genkit's reflection API (v1) for an app on 127.0.0.1, announces it to the Genkit
CLI with a runtime file under `.genkit/runtimes/` (written once the server listens, removed on
exit), and sends the app's traces to `$GENKIT_TELEMETRY_SERVER` when the OpenTelemetry SDK is
installed (`turnkit[otel]`).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import os
import signal
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from turnkit._devui._actions import Action, list_actions
from turnkit._devui._server import RUNTIME_VERSION, create_reflection_app
from turnkit._registry import Registry
from turnkit.errors import TurnkitError

__all__ = ["Action", "RuntimeFile", "create_reflection_app", "list_actions", "serve_dev", "setup_dev_tracing"]

log = logging.getLogger("turnkit.devui")


class RuntimeFile:
    """The file through which the Genkit CLI finds a running app's reflection server."""

    def __init__(self, directory: Path, url: str, port: int) -> None:
        pid = os.getpid()
        now = datetime.now(UTC)
        self.runtime_id = f"{pid}-{port}"
        self.path = directory / f"{self.runtime_id}-{int(now.timestamp() * 1000)}.json"
        self.content = {
            "reflectionApiSpecVersion": 1,
            "id": self.runtime_id,
            "pid": pid,
            "genkitVersion": RUNTIME_VERSION,
            "reflectionServerUrl": url,
            "timestamp": now.isoformat(),
        }

    def write(self) -> None:
        """Write the file (atomically: the CLI may read it the moment it appears).

        The partial file is written beside the runtimes directory (same filesystem, so the rename
        is atomic), not in it: the CLI's watcher parses every file added there.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.parent.parent / f".{self.path.name}.tmp"
        try:
            partial.write_text(json.dumps(self.content), encoding="utf-8")
            os.replace(partial, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()  # left only when writing or renaming failed
        atexit.register(self.remove)

    def remove(self) -> None:
        """Remove the file; the CLI then drops the runtime."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


_exporting_to: list[str] = []  # the telemetry server this process already sends spans to


def setup_dev_tracing(server_url: str | None = None) -> bool:
    """Install an OpenTelemetry SDK tracer provider that sends spans to Genkit's telemetry server
    (`server_url`, else `$GENKIT_TELEMETRY_SERVER`); True once spans go there.

    Does nothing without the SDK or a server URL, or a second time. A provider the app set itself
    is kept, with the telemetry server added to it.
    """
    server = server_url or os.environ.get("GENKIT_TELEMETRY_SERVER")
    if _exporting_to:
        return True
    if not server:
        log.warning(
            "GENKIT_TELEMETRY_SERVER is not set: traces reach the Developer UI once the CLI says where"
        )
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider

        from turnkit._devui._export import TelemetryServerProcessor
    except ImportError:
        log.warning("the OpenTelemetry SDK is not installed (pip install 'turnkit[otel]'): no traces")
        return False
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        provider = current
    elif isinstance(current, trace.ProxyTracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    else:
        return False
    realtime = os.environ.get("GENKIT_ENABLE_REALTIME_TELEMETRY") == "true"
    provider.add_span_processor(TelemetryServerProcessor(server, realtime=realtime))
    _exporting_to.append(server)
    return True


async def serve_dev(
    registry: Registry,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    runtime_dir: str | Path | None = None,
    ready: asyncio.Event | None = None,
) -> None:
    """Serve the reflection API for `registry` until the process is told to stop.

    `port` 0 picks a free one. The runtime file goes to `runtime_dir` (default
    `./.genkit/runtimes`, where `genkit start` run from the project root looks).
    """
    try:
        import uvicorn
    except ImportError:
        raise TurnkitError(
            "FAILED_PRECONDITION", "the Developer UI server needs turnkit[server] (starlette, uvicorn)"
        ) from None
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    _Server = _make_server_class()
    config = uvicorn.Config(
        create_reflection_app(registry, on_telemetry_server=setup_dev_tracing),
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
    server = _Server(config)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        # Stop cleanly (runtime file removed, exit status 0): the CLI stops its app with SIGTERM.
        loop.add_signal_handler(signum, server.stop)
    serving = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started and not serving.done():  # noqa: ASYNC110 - uvicorn offers only a flag
        await asyncio.sleep(0.01)
    if serving.done():
        await serving  # raises what stopped it
        return
    directory = Path(runtime_dir) if runtime_dir is not None else Path.cwd() / ".genkit" / "runtimes"
    runtime = RuntimeFile(directory, f"http://{host}:{bound_port}", bound_port)
    runtime.write()
    log.info("Genkit reflection API for turnkit at http://%s:%d (%s)", host, bound_port, runtime.path)
    if ready is not None:
        ready.set()
    try:
        await serving
    finally:
        runtime.remove()
        sock.close()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def _make_server_class() -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, minus its own signal handling (it re-raises SIGTERM after shutdown)."""

        def capture_signals(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]
            return contextlib.nullcontext()

        def stop(self) -> None:
            self.should_exit = True

    return Server
