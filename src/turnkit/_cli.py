"""The `turnkit` command line: `turnkit generate "..."` streams an answer from a model; `turnkit chat
FILE.py:NAME` talks to an agent in a REPL (see `turnkit._repl`)."""

from __future__ import annotations

import argparse
import asyncio
import difflib
import inspect
import os
import sys
from typing import Any

from turnkit._app import Turnkit
from turnkit._devui._command import add_dev_command
from turnkit._suggest import did_you_mean
from turnkit._targets import load_target
from turnkit.errors import TurnkitError
from turnkit.http._serve import add_serve_command
from turnkit.models._discovery import discovered_plugins, provider_status, register_discovered

LOCAL_DEFAULT_MODEL = "llamacpp/smollm2"


def default_app() -> Turnkit:
    """An app with every provider usable here: installed extras whose keys are in the environment
    (`turnkit models` lists them), the local llama.cpp model included when the `local` extra is."""
    return Turnkit(plugins=discovered_plugins())


def _app_of(args: argparse.Namespace) -> Turnkit:
    if args.app:
        app = load_target(args.app)
        if not isinstance(app, Turnkit):
            raise TurnkitError("INVALID_ARGUMENT", f"{args.app} is not a Turnkit app")
        register_discovered(app)
        return app
    return default_app()


def _unknown_model(ai: Turnkit, model: str) -> TurnkitError:
    """Why `model` cannot be used: its provider's reason (no key, no extra) when the prefix names a
    provider turnkit knows, else NOT_FOUND with the closest registered names and provider prefixes."""
    prefix, _, rest = model.partition("/")
    providers = provider_status()
    for p in providers:
        if p.name == prefix and not p.available:
            return TurnkitError(
                "FAILED_PRECONDITION",
                f"model {model!r} needs the {p.name} provider, which is not usable here: {p.reason} "
                "(`turnkit models` lists the providers)",
            )
    names = sorted(ai.registry.names("model"))
    guesses = list(names)
    if rest and prefix not in {p.name for p in providers}:  # a misspelt provider prefix?
        close = difflib.get_close_matches(prefix.casefold(), [p.name for p in providers], n=1, cutoff=0.6)
        guesses += [f"{c}/{rest}" for c in close]
    known = ", ".join(names) or "none"
    return TurnkitError(
        "NOT_FOUND",
        f"unknown model {model!r}{did_you_mean(model, guesses)}; registered models: {known} "
        "(`turnkit models` lists the providers)",
    )


def _prompt_of(arg: str) -> str:
    """The prompt: the argument, or all of stdin when it is `-` (less one trailing newline)."""
    if arg != "-":
        return arg
    text = sys.stdin.read()
    if text.endswith("\n"):  # the newline that ends the input (echo, a file) is not part of the prompt
        text = text[:-2] if text.endswith("\r\n") else text[:-1]
    if not text.strip():
        raise TurnkitError("INVALID_ARGUMENT", "the prompt read from stdin (`-`) is empty")
    return text


async def _generate(args: argparse.Namespace) -> int:
    ai = _app_of(args)
    model = args.model or os.environ.get("TURNKIT_MODEL") or ai.default_model or LOCAL_DEFAULT_MODEL
    if ai.registry.get("model", model) is None:
        raise _unknown_model(ai, model)
    config: dict[str, Any] = {}
    if args.max_tokens is not None:
        config["maxOutputTokens"] = args.max_tokens
    if args.temperature is not None:
        config["temperature"] = args.temperature
    prompt = _prompt_of(args.prompt)
    stream = ai.generate_stream(prompt, system=args.system, model=model, config=config or None)
    async for chunk in stream:
        sys.stdout.write(chunk.text)
        sys.stdout.flush()
    response = await stream.response
    if not response.text.strip():
        sys.stdout.write("(the model returned no text)")
    sys.stdout.write("\n")
    return 0


def _chat(args: argparse.Namespace) -> int:
    from turnkit._repl import ChatRepl, chat_agent, use_model

    agent = chat_agent(args.target, args.agent)
    register_discovered(Turnkit(registry=agent.registry))
    use_model(agent, args.model)
    return ChatRepl(agent).run(session_id=args.session, new=args.new)


def _models(args: argparse.Namespace) -> int:
    for p in provider_status():
        mark = "available" if p.available else "unavailable"
        print(f"{p.name:<10} {mark:<12} {p.reason}  (e.g. --model {p.example})")
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("turnkit")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `turnkit` command and its subcommands."""
    parser = argparse.ArgumentParser(prog="turnkit", description="Stateful, multi-turn LLM agents.")
    parser.add_argument("--version", action="version", version=f"turnkit {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = sub.add_parser(
        "generate",
        help="stream a model's answer to a prompt",
        description="Stream a model's answer to PROMPT.",
    )
    gen.add_argument("prompt", help="the prompt text, or - to read it from stdin")
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
        "target",
        metavar="TARGET",
        help="FILE.py:NAME or MODULE:NAME of an Agent or a Turnkit app; FILE.py alone picks its only agent",
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
    add_dev_command(sub)
    models = sub.add_parser(
        "models",
        help="list the model providers usable here",
        description="List the model providers: those usable here (extra installed, key set) and why "
        "the others are not. generate, chat and serve register every usable one.",
    )
    models.set_defaults(handler=_models)
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
