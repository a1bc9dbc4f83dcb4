"""`turnkit serve FILE.py[:ATTR]`: serve a Turnkit app's agents (or any ASGI app) with uvicorn.

ATTR names a `Turnkit` app or one `Agent` (served with `create_app`) or an ASGI app; without
it, the file's `app` is used, else its `ai`. With `--workers` or `--reload`, uvicorn's worker
processes load the target again through `app_from_env` (the target travels in an environment
variable), so a plain file path works there too.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from turnkit.errors import TurnkitError
from turnkit.targets import load_module

__all__ = ["DEFAULT_ATTRS", "add_serve_command", "app_from_env", "load_app", "main", "run_serve"]

DEFAULT_ATTRS = ("app", "ai")
TARGET_ENV = "TURNKIT_SERVE_TARGET"


def load_app(spec: str) -> Any:
    """The ASGI app for `FILE.py[:ATTR]` or `MODULE[:ATTR]`: a Turnkit app wrapped by `create_app`."""
    from turnkit.app import Turnkit

    target, _, attr = spec.partition(":")
    module = load_module(target)
    names = (attr,) if attr else DEFAULT_ATTRS
    found = next((getattr(module, n) for n in names if hasattr(module, n)), None)
    if found is None:
        wanted = attr or " or ".join(DEFAULT_ATTRS)
        raise TurnkitError("NOT_FOUND", f"{target} has no attribute {wanted}")
    from turnkit.agents import Agent

    if isinstance(found, Turnkit | Agent):
        from turnkit.http.server import create_app

        return create_app(found) if isinstance(found, Turnkit) else create_app(found.ai, [found])
    if not callable(found):
        raise TurnkitError("INVALID_ARGUMENT", f"{spec} is neither a Turnkit app nor an ASGI app")
    return found


def app_from_env() -> Any:
    """The uvicorn factory for worker and reload processes: loads `$TURNKIT_SERVE_TARGET`."""
    spec = os.environ.get(TARGET_ENV)
    if not spec:
        raise TurnkitError("FAILED_PRECONDITION", f"${TARGET_ENV} is not set")
    return load_app(spec)


def _absolute(spec: str) -> str:
    target, sep, attr = spec.partition(":")
    if target.endswith(".py") or os.sep in target or "/" in target:
        target = str(Path(target).resolve())
    return f"{target}{sep}{attr}"


def run_serve(args: argparse.Namespace) -> int:
    """Serve the target until interrupted; returns the exit code."""
    import uvicorn

    if args.workers < 1:
        raise TurnkitError("INVALID_ARGUMENT", "--workers must be at least 1")
    app = load_app(args.target)  # fail here, early and once, when the target is wrong
    options: dict[str, Any] = {"host": args.host, "port": args.port, "log_level": args.log_level}
    if args.workers == 1 and not args.reload:
        uvicorn.run(app, **options)
        return 0
    os.environ[TARGET_ENV] = _absolute(args.target)
    if args.reload:
        target = args.target.partition(":")[0]
        where = Path(target).resolve().parent if target.endswith(".py") else Path.cwd()
        options.update(reload=True, reload_dirs=[str(where)])
    else:
        options["workers"] = args.workers
    uvicorn.run("turnkit.http.serve:app_from_env", factory=True, **options)
    return 0


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "target", metavar="FILE.py[:ATTR]", help="a Turnkit app or ASGI app (default attribute: app, else ai)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default: 8000)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    parser.add_argument("--reload", action="store_true", help="restart when the target's files change")
    parser.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug", "trace"]
    )
    parser.set_defaults(handler=run_serve)


def add_serve_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add `serve` to the `turnkit` command's subparsers (its handler is the sync `run_serve`)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="serve agents over HTTP",
        description="Serve a Turnkit app's agents over HTTP (POST /agents/NAME, .../getSnapshot, .../abort).",
    )
    _arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """`python -m turnkit.http.serve FILE.py[:ATTR] ...`: the serve command on its own."""
    parser = argparse.ArgumentParser(
        prog="turnkit serve", description="Serve a Turnkit app's agents over HTTP."
    )
    _arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_serve(args)
    except TurnkitError as exc:
        print(f"turnkit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
