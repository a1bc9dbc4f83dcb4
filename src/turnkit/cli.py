"""The `turnkit` command line: `turnkit generate "..."` streams an answer from a model; `turnkit chat
FILE.py:NAME` talks to an agent in a REPL (see `turnkit.repl`)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import inspect
import os
import sys
from typing import Any

from turnkit.app import Turnkit
from turnkit.errors import TurnkitError
from turnkit.http.serve import add_serve_command
from turnkit.targets import load_target

LOCAL_DEFAULT_MODEL = "llamacpp/smollm2"


def default_app() -> Turnkit:
    """An app with the local llama.cpp model when the `local` extra is installed."""
    plugins = []
    if importlib.util.find_spec("llama_cpp") is not None:
        from turnkit.models.llamacpp import LlamaCpp

        plugins.append(LlamaCpp())
    return Turnkit(plugins=plugins)


def _app_of(args: argparse.Namespace) -> Turnkit:
    if args.app:
        app = load_target(args.app)
        if not isinstance(app, Turnkit):
            raise TurnkitError("INVALID_ARGUMENT", f"{args.app} is not a Turnkit app")
        return app
    return default_app()


async def _generate(args: argparse.Namespace) -> int:
    ai = _app_of(args)
    model = args.model or os.environ.get("TURNKIT_MODEL") or ai.default_model or LOCAL_DEFAULT_MODEL
    if ai.registry.get("model", model) is None:
        known = (
            ", ".join(sorted(ai.registry.names("model")))
            or "none (install turnkit[local] for the local model)"
        )
        raise TurnkitError("NOT_FOUND", f"unknown model {model!r}; registered models: {known}")
    config: dict[str, Any] = {}
    if args.max_tokens is not None:
        config["maxOutputTokens"] = args.max_tokens
    if args.temperature is not None:
        config["temperature"] = args.temperature
    stream = ai.generate_stream(args.prompt, system=args.system, model=model, config=config or None)
    async for chunk in stream:
        sys.stdout.write(chunk.text)
        sys.stdout.flush()
    response = await stream.response
    if not response.text.strip():
        sys.stdout.write("(the model returned no text)")
    sys.stdout.write("\n")
    return 0


def _chat(args: argparse.Namespace) -> int:
    from turnkit.repl import ChatRepl, resolve_agent, use_model

    agent = resolve_agent(load_target(args.target), args.agent)
    use_model(agent, args.model)
    return ChatRepl(agent).run(session_id=args.session, new=args.new)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `turnkit` command and its subcommands."""
    parser = argparse.ArgumentParser(prog="turnkit", description="Stateful, multi-turn LLM agents.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = sub.add_parser(
        "generate",
        help="stream a model's answer to a prompt",
        description="Stream a model's answer to PROMPT.",
    )
    gen.add_argument("prompt", help="the prompt text")
    gen.add_argument("--model", help=f"model name (default: $TURNKIT_MODEL, else {LOCAL_DEFAULT_MODEL})")
    gen.add_argument("--system", help="a system prompt")
    gen.add_argument(
        "--app", help="use the Turnkit app at FILE.py:NAME or MODULE:NAME instead of the default"
    )
    gen.add_argument("--max-tokens", type=int, help="maximum tokens to generate")
    gen.add_argument("--temperature", type=float, help="sampling temperature")
    gen.set_defaults(handler=_generate)

    chat = sub.add_parser(
        "chat",
        help="talk to an agent in a REPL",
        description="Talk to an agent: each line is a turn, answers stream; /help lists the commands. "
        "Sessions kept in a FileSessionStore resume automatically on the next run.",
    )
    chat.add_argument(
        "target", metavar="TARGET", help="FILE.py:NAME or MODULE:NAME of an Agent or a Turnkit app"
    )
    chat.add_argument("--agent", help="the agent's name, when TARGET is an app with several agents")
    fresh = chat.add_mutually_exclusive_group()
    fresh.add_argument("--session", metavar="ID", help="continue (or start) the session ID")
    fresh.add_argument(
        "--new", action="store_true", help="start a new session instead of resuming the last one"
    )
    chat.add_argument("--model", help="model for agents that use the app's default model")
    chat.set_defaults(handler=_chat)
    add_serve_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the `turnkit` command; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        outcome = args.handler(args)
        code: int = asyncio.run(outcome) if inspect.iscoroutine(outcome) else outcome
        return code
    except TurnkitError as exc:
        print(f"turnkit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
