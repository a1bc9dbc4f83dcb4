"""`turnkit serve FILE.py[:ATTR]`: serve a Turnkit app's agents (or any ASGI app) with uvicorn.

ATTR names a `Turnkit` app or one `Agent` (served with `create_app`) or an ASGI app; without
it, the file's `app` is used, else its `ai`. With `--workers` or `--reload`, uvicorn's worker
processes load the target again through `app_from_env` (the target travels in an environment
variable), so a plain file path works there too. Every serving process tunes its garbage
collector for serving once the app is loaded (`turnkit.http.tune_gc`), unless `--no-gc-tuning`.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path
from typing import Any

from turnkit._suggest import did_you_mean
from turnkit._targets import load_module
from turnkit.errors import TurnkitError
from turnkit.http._gc import tune_gc

__all__ = ["DEFAULT_ATTRS", "add_serve_command", "app_from_env", "load_app", "main", "run_serve"]

DEFAULT_ATTRS = ("app", "ai")
TARGET_ENV = "TURNKIT_SERVE_TARGET"
GC_ENV = "TURNKIT_SERVE_GC_TUNING"  # "0": worker processes leave the garbage collector as it is


def load_app(spec: str) -> Any:
    """The ASGI app for `FILE.py[:ATTR]` or `MODULE[:ATTR]`: a Turnkit app wrapped by `create_app`."""
    from turnkit._app import Turnkit

    target, _, attr = spec.partition(":")
    module = load_module(target)
    names = (attr,) if attr else DEFAULT_ATTRS
    found = next((getattr(module, n) for n in names if hasattr(module, n)), None)
    if found is None:
        wanted = attr or " or ".join(DEFAULT_ATTRS)
        hint = did_you_mean(attr, (n for n in vars(module) if not n.startswith("_"))) if attr else ""
        raise TurnkitError("NOT_FOUND", f"{target} has no attribute {wanted}{hint}")
    from turnkit.agents import Agent

    if isinstance(found, Turnkit | Agent):
        from turnkit.http._server import app_for_registry, create_app
        from turnkit.models._discovery import register_discovered

        # Providers whose keys are in the environment serve models the app names but did not register.
        register_discovered(found if isinstance(found, Turnkit) else Turnkit(registry=found.registry))
        return create_app(found) if isinstance(found, Turnkit) else app_for_registry(found.registry, [found])
    if not callable(found):
        raise TurnkitError("INVALID_ARGUMENT", f"{spec} is neither a Turnkit app nor an ASGI app")
    return found


def app_from_env() -> Any:
    """The uvicorn factory for worker and reload processes: loads `$TURNKIT_SERVE_TARGET`."""
    spec = os.environ.get(TARGET_ENV)
    if not spec:
        raise TurnkitError("FAILED_PRECONDITION", f"${TARGET_ENV} is not set")
    from turnkit.http._playground import playground_if_asked

    app = playground_if_asked(load_app(spec))
    if os.environ.get(GC_ENV, "1") == "1":
        tune_gc()
    return app


def _absolute(spec: str) -> str:
    target, sep, attr = spec.partition(":")
    if target.endswith(".py") or os.sep in target or "/" in target:
        target = str(Path(target).resolve())
    return f"{target}{sep}{attr}"


def _log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging setup plus the `turnkit` logger on the same handler, so a server shows
    turnkit's warnings (a failed turn with its traceback, a turn waiting for a busy session); as a
    library, turnkit itself only adds a NullHandler. Every worker process gets it from uvicorn."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["turnkit"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return config


def run_serve(args: argparse.Namespace) -> int:
    """Serve the target until interrupted; returns the exit code."""
    import uvicorn

    if args.workers < 1:
        raise TurnkitError("INVALID_ARGUMENT", "--workers must be at least 1")
    app = load_app(args.target)  # fail here, early and once, when the target is wrong
    from turnkit.http._playground import playground_if_asked
    from turnkit.http._urls import base_url, describe_urls

    print(describe_urls(app, base_url(args.host, args.port), ui=args.ui), flush=True)
    app = playground_if_asked(app, args.ui)
    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "log_level": args.log_level,
        "log_config": _log_config(args.log_level),
    }
    if args.workers == 1 and not args.reload:
        if not args.no_gc_tuning:
            tune_gc()  # the app is loaded: what is alive now stays for the process's life
        uvicorn.run(app, **options)
        return 0
    os.environ[TARGET_ENV] = _absolute(args.target)
    os.environ[GC_ENV] = "0" if args.no_gc_tuning else "1"
    if args.reload:
        target = args.target.partition(":")[0]
        where = Path(target).resolve().parent if target.endswith(".py") else Path.cwd()
        options.update(reload=True, reload_dirs=[str(where)])
    else:
        options["workers"] = args.workers
    uvicorn.run("turnkit.http._serve:app_from_env", factory=True, **options)
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
    parser.add_argument("--ui", action="store_true", help="also serve the playground page at /ui/")
    parser.add_argument(
        "--no-gc-tuning",
        action="store_true",
        help="leave the garbage collector at Python's defaults (see turnkit.http.tune_gc)",
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
    """`python -m turnkit.http._serve FILE.py[:ATTR] ...`: the serve command on its own."""
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
