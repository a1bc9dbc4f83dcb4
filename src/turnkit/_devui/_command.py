"""`turnkit dev TARGET`: serve an app to the Genkit Developer UI (`genkit start -- turnkit dev app.py`)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from turnkit._app import Turnkit
from turnkit._registry import Registry
from turnkit._targets import load_module, load_target
from turnkit.errors import TurnkitError

__all__ = ["add_dev_command", "registry_of_target"]


def _registry_of(obj: Any) -> Registry | None:
    registry = getattr(obj, "registry", None)
    return registry if isinstance(registry, Registry) else None


def registry_of_target(target: str) -> Registry:
    """The registry of the app TARGET names: `FILE.py:NAME` / `MODULE:NAME`, or a file or module
    holding exactly one turnkit app (a `Turnkit` object, or an agent's registry)."""
    if ":" in target.replace(os.sep, "/").rsplit("/", 1)[-1]:
        obj = load_target(target)
        registry = _registry_of(obj)
        if registry is None:
            raise TurnkitError("INVALID_ARGUMENT", f"{target} is not a Turnkit app or an agent")
        return registry
    module = load_module(target)
    apps = {name: value for name, value in vars(module).items() if isinstance(value, Turnkit)}
    if len(apps) != 1:
        found = ", ".join(sorted(apps)) or "none"
        raise TurnkitError(
            "INVALID_ARGUMENT",
            f"{target} must define exactly one Turnkit app (found: {found}); name one as {target}:NAME",
        )
    registry = _registry_of(next(iter(apps.values())))
    assert registry is not None
    return registry


async def _dev(args: argparse.Namespace) -> int:
    # The Genkit CLI sets these; set them too when run alone, so traces record contents as in dev.
    os.environ.setdefault("GENKIT_ENV", "dev")
    from turnkit._devui import serve_dev, setup_dev_tracing

    setup_dev_tracing()
    registry = registry_of_target(args.target)
    await serve_dev(registry, host=args.host, port=args.port, runtime_dir=args.runtime_dir)
    return 0


def add_dev_command(sub: Any) -> None:
    """Add `dev` to the `turnkit` command's subparsers."""
    dev = sub.add_parser(
        "dev",
        help="serve an app to the Genkit Developer UI",
        description="Serve the app's models, tools, prompts and agents to the Genkit Developer UI "
        "(Genkit's reflection API): run it as `genkit start -- turnkit dev app.py` from the project "
        "root. Traces go to $GENKIT_TELEMETRY_SERVER when turnkit[otel] is installed.",
    )
    dev.add_argument(
        "target",
        metavar="TARGET",
        help="FILE.py or MODULE holding one Turnkit app, or FILE.py:NAME / MODULE:NAME",
    )
    dev.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    dev.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("GENKIT_REFLECTION_PORT", "0")),
        help="port of the reflection API (default: $GENKIT_REFLECTION_PORT, else a free one)",
    )
    dev.add_argument(
        "--runtime-dir", help="where the runtime file goes (default ./.genkit/runtimes, as the CLI expects)"
    )
    dev.set_defaults(handler=_dev)
