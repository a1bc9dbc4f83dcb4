"""The URLs `turnkit serve` prints at start: one per agent route, wherever the app mounts them.

The served app is walked as Starlette routes and mounts (`create_app`, `serve_agent`, a FastAPI or
Starlette app mounting either, the playground wrapper). An agent route is recognised by its
`.../getSnapshot` sibling; when its path is the `{name}` template of `create_app`, the names come
from that app's own `GET .../agents` listing, asked in-process (a listing that needs credentials
leaves the template printed as it is).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Any

from starlette.routing import Mount, Route

__all__ = ["AgentUrl", "agent_urls", "base_url", "describe_urls"]

SNAPSHOT_SUFFIX = "/getSnapshot"
EXTRA_ROUTES = ("/getSnapshot", "/abort", "/uiMessageStream")


class AgentUrl:
    """An agent's turn URL (`POST`), its name, and the routes beside it (`/getSnapshot`, ...)."""

    def __init__(self, name: str, url: str, extras: Sequence[str]) -> None:
        self.name = name
        self.url = url
        self.extras = list(extras)

    def __repr__(self) -> str:
        return f"AgentUrl({self.name!r}, {self.url!r})"


def base_url(host: str, port: int) -> str:
    """`http://HOST:PORT` (IPv6 addresses in brackets)."""
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}"


def _routes_of(app: Any) -> list[Any]:
    routes = getattr(app, "routes", None)
    return list(routes) if isinstance(routes, list) else []


def _agent_bases(routes: list[Any], prefix: str) -> Iterator[tuple[str, list[str], str | None]]:
    """`(turn path, extra suffixes, listing path or None)` for each agent route under `routes`."""
    paths = {r.path for r in routes if isinstance(r, Route)}
    for route in routes:
        if isinstance(route, Mount):
            yield from _agent_bases(_routes_of(route), prefix + route.path)
        elif isinstance(route, Route) and route.path.endswith(SNAPSHOT_SUFFIX):
            base = route.path[: -len(SNAPSHOT_SUFFIX)]
            extras = [s for s in EXTRA_ROUTES if base + s in paths]
            parent = base.rsplit("/", 1)[0]
            listing = prefix + parent if "{" in base and parent in paths else None
            yield prefix + base, extras, listing


async def _listed_names(app: Any, path: str) -> list[str] | None:
    """The agent names `GET path` lists (None when it refuses or fails)."""
    import httpx

    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://turnkit.local") as client:
            reply = await client.get(path, timeout=10)
        if reply.status_code != 200:
            return None
        return [str(entry["name"]) for entry in reply.json()["agents"]]
    except Exception:  # the banner is a courtesy: never fail the server's start over it
        return None


def agent_urls(app: Any, root: str) -> list[AgentUrl]:
    """Every agent route `app` serves, as full URLs under `root` (`http://host:port`)."""
    found: list[AgentUrl] = []
    for base, extras, listing in _agent_bases(_routes_of(app), ""):
        if "{" not in base:
            found.append(AgentUrl(base.rsplit("/", 1)[-1], root + base, extras))
            continue
        names = asyncio.run(_listed_names(app, listing)) if listing else None
        if names is None:
            found.append(AgentUrl("{name}", root + base, extras))
        else:
            start = base.index("{")
            end = base.index("}", start) + 1
            found.extend(AgentUrl(n, root + base[:start] + n + base[end:], extras) for n in names)
    return found


def describe_urls(app: Any, root: str, *, ui: bool = False) -> str:
    """The lines `turnkit serve` prints: each agent's turn URL (and the playground's)."""
    urls = agent_urls(app, root)
    lines = []
    if urls:
        width = max(len(u.name) for u in urls)
        for u in urls:
            also = f"  (also {', '.join(u.extras)})" if u.extras else ""
            lines.append(f"agent {u.name:<{width}}  POST {u.url}{also}")
    else:
        lines.append(f"no agent routes found; serving {root}")
    if ui:
        lines.append(f"playground  {root}/ui/")
    return "\n".join(lines)
