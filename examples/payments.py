"""Human approval of a payment: the agent may propose one, only a person lets it go out.

    turnkit chat examples/payments.py

`send_payment` never pays on the model's say-so. Its first call pauses the turn with an interrupt
that says what is about to happen, and `turnkit chat` asks "allow? [y/n]": yes runs the tool again
with `ctx.resumed == {"approved": True}` (the `restart` the README teaches), no answers the call with
`{"approved": False, "reason": ...}`, which the model reads as the tool's output. Over HTTP the same
answers are `resume.restart` / `resume.respond` (README, "HTTP request shapes"); with the AI SDK they
are `addToolApprovalResponse`; the playground (`turnkit serve examples/web_chat.py --ui`) shows
Approve and Deny buttons.

The wallet (balance and payments made) is the session's custom state. The model is `$TURNKIT_MODEL`
or `--model` (a hosted one picks tools far better than the local SmolLM2 default); sessions are
kept in `payments.db` in `.turnkit/sessions` (or `$TURNKIT_SESSIONS_DIR`).
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel

from turnkit import ToolContext, Turnkit
from turnkit.models.llamacpp import LlamaCpp
from turnkit.sessions import SqliteSessionStore
from turnkit.testing import define_echo_model

ai = Turnkit(plugins=[LlamaCpp()], model=os.environ.get("TURNKIT_MODEL") or "llamacpp/smollm2")
define_echo_model(ai)  # "echoModel": answers with your own words, for trying the REPL offline

SESSIONS_DIR = os.environ.get("TURNKIT_SESSIONS_DIR") or os.path.join(".turnkit", "sessions")
CURRENCY = "EUR"


class Payment(BaseModel):
    """A payment that went out."""

    to: str
    amount: float
    memo: str = ""


class Wallet(BaseModel):
    """The session's custom state: what is left, and what was paid."""

    balance: float = 500.0
    payments: list[Payment] = []


def approved(ctx: ToolContext) -> bool:
    """Whether this call is the restart of an interrupted one that a person approved."""
    return isinstance(ctx.resumed, dict) and ctx.resumed.get("approved") is True


@ai.tool()
async def send_payment(to: str, amount: float, ctx: ToolContext, memo: str = "") -> dict[str, Any]:
    """Send money (in EUR) to someone. Every payment waits for the user's approval."""
    if amount <= 0:
        return {"error": "the amount must be positive"}
    session = ai.current_session(Wallet)
    wallet = await session.get_custom()
    if wallet is not None and amount > wallet.balance:
        return {"error": f"insufficient funds: the balance is {wallet.balance:.2f} {CURRENCY}"}
    if not approved(ctx):
        # Pauses the turn; the client sees this data and answers with restart (yes) or respond (no).
        ctx.interrupt({"question": f"Pay {amount:.2f} {CURRENCY} to {to}?", "memo": memo})

    def pay(current: Wallet) -> Wallet:
        current.balance = round(current.balance - amount, 2)
        current.payments.append(Payment(to=to, amount=amount, memo=memo))
        return current

    after = await session.update_custom(pay)
    return {"paid": amount, "to": to, "balance": after.balance}


payments = ai.define_agent(
    name="payments",
    system=(
        "You help the user pay people. To pay, call send_payment; the user approves each payment. "
        "If a payment was not approved, say so and do not try again unless asked. Be brief."
    ),
    tools=[send_payment],
    config={"temperature": 0},
    store=SqliteSessionStore(os.path.join(SESSIONS_DIR, "payments.db")),
    state_schema=Wallet,
)
