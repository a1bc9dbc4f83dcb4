"""The playground: a single page at `/ui/` to try an app's agents in a browser.

`turnkit serve app.py --ui` serves it beside the agents. The page (`playground/`: HTML, CSS and
plain JavaScript, no build step, nothing fetched from elsewhere) talks to the Genkit-protocol
routes of the same server: pick an agent, chat with streamed text, see tool calls and results,
approve or deny interrupts, watch custom state and artifacts change, walk the snapshots of the
current branch and branch from one, run a turn in the background and abort it. When the agents
live elsewhere than beside `/ui/` (an ASGI app mounting them under `/api`), open `/ui/?api=/api/`.
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

__all__ = ["PLAYGROUND_DIR", "UI_ENV", "playground_if_asked", "playground_routes", "with_playground"]

PLAYGROUND_DIR = Path(__file__).resolve().parent / "playground"
UI_ENV = "TURNKIT_SERVE_UI"


def playground_routes(path: str = "/ui") -> list[Route | Mount]:
    """The page's routes: `{path}/` and its files (`{path}` redirects there, so that the page's
    relative links resolve under it whatever prefix the app is mounted at)."""

    async def to_page(request: Request) -> Response:
        return RedirectResponse(str(request.url.replace(path=request.url.path + "/")), status_code=307)

    return [
        Route(path, to_page, methods=["GET", "HEAD"]),
        Mount(path, app=StaticFiles(directory=PLAYGROUND_DIR, html=True)),
    ]


def with_playground(app: ASGIApp, path: str = "/ui") -> Starlette:
    """`app` (the agents' server) with the playground at `path`; everything else goes to `app`."""
    return Starlette(routes=[*playground_routes(path), Mount("/", app=app)])


def playground_if_asked(app: ASGIApp, ui: bool | None = None) -> ASGIApp:
    """`app` with the playground when `ui` (`turnkit serve --ui`) is set; `None` reads the
    choice from the environment, where worker and reload processes find it."""
    if ui is None:
        ui = os.environ.get(UI_ENV) == "1"
    elif ui:
        os.environ[UI_ENV] = "1"  # uvicorn's worker processes load the app again: tell them
    return with_playground(app) if ui else app
