"""A small assistant with two tools and a conversation that survives restarts.

    turnkit chat examples/assistant.py:assistant

The model is the local SmolLM2 (`llamacpp/smollm2`) unless `$TURNKIT_MODEL` or `--model` names
another; `--model echoModel` repeats your messages back, which needs no model at all. Sessions are
kept in a SQLite database, `sessions.db` in `.turnkit/sessions` (or `$TURNKIT_SESSIONS_DIR`), so a
second run picks up the conversation where the first one stopped.
"""

from __future__ import annotations

import ast
import math
import operator
import os
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from turnkit import Turnkit, TurnkitError
from turnkit.models.llamacpp import LlamaCpp
from turnkit.sessions import SqliteSessionStore
from turnkit.testing import define_echo_model

ai = Turnkit(plugins=[LlamaCpp()], model=os.environ.get("TURNKIT_MODEL") or "llamacpp/smollm2")
define_echo_model(ai)  # "echoModel": an offline stand-in that answers with your own words

SESSIONS_DIR = os.environ.get("TURNKIT_SESSIONS_DIR") or os.path.join(".turnkit", "sessions")


class AssistantState(BaseModel):
    """What the assistant keeps besides the messages: the cities asked about, and a calculation count."""

    cities: list[str] = []
    calculations: int = 0


# --- weather -------------------------------------------------------------------------------------

WEATHER = {
    "amsterdam": "light rain, 11 °C, wind 24 km/h from the south-west",
    "chicago": "partly cloudy, 20 °C, humidity 55%",
    "lisbon": "sunny, 24 °C, light breeze",
    "miami": "hot and humid, 31 °C, thunderstorms later",
    "oslo": "overcast, 6 °C, chance of snow overnight",
    "seattle": "drizzle, 12 °C, grey all day",
    "tokyo": "clear, 18 °C, humidity 40%",
}


async def _remember(update: Callable[[AssistantState], None]) -> None:
    """Apply `update` to the custom state of the session this tool runs in (if it runs in one)."""
    try:
        session = ai.current_session()
    except TurnkitError:  # called outside an agent turn, e.g. from a plain `ai.generate`
        return

    def apply(old: Any) -> AssistantState:
        state = AssistantState.model_validate(old or {})
        update(state)
        return state

    await session.update_custom(apply)


@ai.tool()
async def get_weather(city: str) -> str:
    """Current weather for a city (from a local table: Amsterdam, Chicago, Lisbon, Miami, Oslo, ...)."""
    key = city.strip().lower()
    report = WEATHER.get(key)
    if report is None:
        known = ", ".join(name.title() for name in WEATHER)
        return f"No weather data for {city!r}. Known cities: {known}."
    await _remember(lambda s: s.cities.append(key.title()))
    return f"{key.title()}: {report}"


# --- calculator ----------------------------------------------------------------------------------


class CalcError(ValueError):
    """An expression the calculator refuses or cannot evaluate."""


_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
MAX_EXPRESSION = 200  # characters
MAX_EXPONENT = 1000
MAX_BITS = 4096  # integers beyond about 1200 digits are refused


def _check_size(value: float) -> float:
    if isinstance(value, complex):
        raise CalcError("the result is not a real number")
    if isinstance(value, int) and value.bit_length() > MAX_BITS:
        raise CalcError("the result is too large")
    if isinstance(value, float) and not math.isfinite(value):
        raise CalcError("the result is too large")
    return value


def _power(base: float, exponent: float) -> float:
    if abs(exponent) > MAX_EXPONENT:
        raise CalcError(f"exponents are limited to ±{MAX_EXPONENT}")
    whole = isinstance(base, int) and isinstance(exponent, int)
    if whole and exponent > 0 and max(int(base).bit_length(), 1) * exponent > MAX_BITS * 2:
        raise CalcError("the result is too large")
    result: float = base**exponent
    return result


def _eval(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise CalcError(f"only numbers are allowed, not {node.value!r}")
        return _check_size(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _check_size(_UNARY[type(node.op)](_eval(node.operand)))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            return _check_size(_power(left, right))
        return _check_size(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitXor):
        raise CalcError("'^' is not allowed; write powers as a ** b")
    what = {ast.Name: "names", ast.Call: "function calls", ast.Attribute: "attributes"}.get(type(node))
    raise CalcError(f"{what or type(node).__name__ + ' expressions'} are not allowed")


def evaluate(expression: str) -> float:
    """The value of an arithmetic expression: numbers, + - * / // % **, unary minus, parentheses.

    Anything else (names, calls, attributes, strings, comparisons, ...) raises `CalcError`, as do
    division by zero, exponents beyond ±1000 and results too large to print.
    """
    if len(expression) > MAX_EXPRESSION:
        raise CalcError(f"expressions are limited to {MAX_EXPRESSION} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError):  # ValueError: NUL characters
        raise CalcError(f"not an arithmetic expression: {expression!r}") from None
    try:
        return _eval(tree)
    except ZeroDivisionError:
        raise CalcError("division by zero") from None
    except OverflowError:
        raise CalcError("the result is too large") from None


def format_number(value: float) -> str:
    """A number as a calculator shows it: integers exactly, floats to 12 significant digits."""
    return str(value) if isinstance(value, int) else f"{value:.12g}"


@ai.tool()
async def calculate(expression: str) -> str:
    """Calculator: compute the value of an arithmetic expression such as 12 * (3 + 4) or 2 ** 10."""
    try:
        result = format_number(evaluate(expression))
    except CalcError as exc:
        return f"Error: {exc}"

    def count(state: AssistantState) -> None:
        state.calculations += 1

    await _remember(count)
    return f"{expression.strip()} = {result}"


# --- the agent -----------------------------------------------------------------------------------

assistant = ai.define_agent(
    name="assistant",
    system=(
        "You are a concise, helpful assistant. Use get_weather for questions about the weather and "
        "calculate for any arithmetic. Answer in one or two sentences."
    ),
    tools=[get_weather, calculate],
    config={"temperature": 0},  # the small local model picks its tools more reliably without sampling
    store=SqliteSessionStore(os.path.join(SESSIONS_DIR, "sessions.db")),
    state_schema=AssistantState,
)
