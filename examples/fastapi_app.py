"""A FastAPI app serving its agents under `/api`, behind the app's own authentication.

    pip install fastapi            # (in turnkit's `dev` extra)
    turnkit serve examples/fastapi_app.py
    curl -H 'Authorization: Bearer alice-token' http://127.0.0.1:8000/me
    curl -H 'Authorization: Bearer alice-token' -H 'Content-Type: application/json' \
         -d '{"data": {"message": {"role": "user", "content": [{"text": "Who am I?"}]}}}' \
         http://127.0.0.1:8000/api/agents/support

`current_user` is an ordinary FastAPI dependency (bearer token -> `User`, 401 otherwise). The agents
are mounted with `create_app(ai, context_provider=agent_context)`, and `agent_context` calls that same
dependency, so one check guards both: a request without a valid token gets 401 from `/me` and from
`/api/agents/...` alike. What it returns reaches every turn (`ctx.context["auth"]` in tools) and the
session store, where `"tenant"` keeps each organisation's sessions apart: a session id of acme's is
not found for globex's users. The tenant here is the organisation, not the user: Alice and Bob
(both at acme) can each open a session of the other's if they know its id. To keep users' sessions
private, make the tenant the user (`user.id`, or `f"{user.org}/{user.id}"`). To serve one agent at a path of your own instead, mount
`serve_agent(support, context_provider=agent_context)`: it answers at `/api/support`.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from pydantic import BaseModel

from turnkit import ToolContext, Turnkit, TurnkitError
from turnkit.http import create_app
from turnkit.models.llamacpp import LlamaCpp
from turnkit.sessions import InMemorySessionStore
from turnkit.testing import define_echo_model

ai = Turnkit(plugins=[LlamaCpp()], model=os.environ.get("TURNKIT_MODEL") or "llamacpp/smollm2")
define_echo_model(ai)


class User(BaseModel):
    """Who is calling."""

    id: str
    name: str
    org: str


# A stand-in for your identity provider: bearer token -> user.
USERS = {
    "alice-token": User(id="alice", name="Alice", org="acme"),
    "bob-token": User(id="bob", name="Bob", org="acme"),
    "carol-token": User(id="carol", name="Carol", org="globex"),
}


def current_user(authorization: Annotated[str | None, Header()] = None) -> User:
    """The FastAPI dependency: the user of the bearer token, else 401."""
    scheme, _, token = (authorization or "").partition(" ")
    user = USERS.get(token) if scheme.lower() == "bearer" else None
    if user is None:
        raise HTTPException(401, "send Authorization: Bearer <token>", headers={"WWW-Authenticate": "Bearer"})
    return user


def agent_context(request: Request) -> dict[str, Any]:
    """The agents' `context_provider`: the same dependency, its 401 as turnkit's UNAUTHENTICATED."""
    try:
        user = current_user(request.headers.get("authorization"))
    except HTTPException as exc:
        raise TurnkitError("UNAUTHENTICATED", str(exc.detail)) from None
    return {"auth": user.model_dump(), "tenant": user.org}


@ai.tool()
def my_account(ctx: ToolContext) -> dict[str, Any]:
    """The signed-in user's account: name and organisation."""
    auth = ctx.context.get("auth") or {}
    return {"name": auth.get("name"), "organisation": auth.get("org")}


support = ai.define_agent(
    name="support",
    system="You are the support assistant. Use my_account to learn who you are talking to.",
    tools=[my_account],
    store=InMemorySessionStore(),
)

app = FastAPI(title="turnkit with FastAPI")


@app.get("/me")
def me(user: Annotated[User, Depends(current_user)]) -> User:
    """Who the token belongs to (a plain FastAPI route, guarded by the same dependency)."""
    return user


app.mount("/api", create_app(ai, context_provider=agent_context))
