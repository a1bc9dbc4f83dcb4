"""`serve_agent(agent)`: one agent's routes, mounted under any path of a real server, like
genkit-fastapi's `serve_agent` (`Mount("/api", app=serve_agent(weather))` answers at
`/api/weatherAgent`), driven by raw HTTP and by `remote_agent`."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount

from http_support import demo_app, serve_async, text_reply, tool_call, user
from turnkit import TurnkitError
from turnkit.agents import AgentError
from turnkit.http import remote_agent, serve_agent


def tenant_of(request: Request) -> dict[str, Any]:
    tenant = request.headers.get("x-tenant")
    if tenant is None:
        raise TurnkitError("UNAUTHENTICATED", "who are you?")
    return {"tenant": tenant}


async def test_mounted_at_a_prefix_and_at_a_custom_path() -> None:
    demo = demo_app()
    weather = demo.ai.define_agent(name="weatherAgent", store=demo.store, tools=["whoami"])
    site = Starlette(
        routes=[
            Mount("/api", app=serve_agent(weather, context_provider=tenant_of)),
            Mount("/v2", app=serve_agent(demo.ai.agent("counter"), base_path="/tally/counter/")),
        ]
    )
    async with serve_async(site) as url:
        headers = {"x-tenant": "acme"}
        async with remote_agent(f"{url}/api/weatherAgent", headers=headers) as agent:
            demo.pm.program([tool_call("whoami"), text_reply("sunny"), text_reply("still sunny")])
            chat = agent.chat()
            first = await chat.send("weather?")
            assert first.text == "sunny" and first.snapshot_id
            assert demo.seen["whoami"] == {"tenant": "acme"}  # the context provider's answer
            second = await chat.send("and now?")
            assert second.text == "still sunny"
            assert [m.role for m in second.messages] == ["user", "model", "tool", "model", "user", "model"]
            snap = await agent.get_snapshot(second.snapshot_id)  # {url}/getSnapshot under the mount
            assert snap is not None and snap.parent_id == first.snapshot_id
            assert second.snapshot_id is not None
            assert await agent.abort(second.snapshot_id) == "completed"  # {url}/abort under the mount

        async with remote_agent(f"{url}/v2/tally/counter") as counter:
            chat = counter.chat()
            await chat.send("x")
            response = await chat.send("y")
            assert response.text == "count 2" and response.custom == {"count": 2}


async def test_routes_frames_and_errors_under_the_mount() -> None:
    demo = demo_app()
    site = Starlette(routes=[Mount("/api", app=serve_agent(demo.ai.agent("counter")))])
    async with serve_async(site) as url, httpx.AsyncClient(base_url=url, timeout=10) as http:
        body = {"data": {"message": user("x")}, "init": {}}
        streamed = await http.post("/api/counter?stream=true", json=body)
        assert streamed.headers["content-type"].startswith("text/event-stream")
        frames = [json.loads(f.removeprefix(b"data: ")) for f in streamed.content.split(b"\n\n")[:-1]]
        assert frames[-1]["result"]["message"]["content"][0]["text"] == "count 1"
        assert frames[0] == {
            "message": {"customPatch": [{"op": "replace", "path": "", "value": {"count": 1}}]}
        }

        plain = await http.post("/api/counter", json=body)
        assert plain.json()["result"]["finishReason"] == "stop"

        missing = await http.post("/api/counter/getSnapshot", json={"data": {"snapshotId": "nope"}})
        assert missing.status_code == 404 and missing.json()["error"]["status"] == "NOT_FOUND"
        aborted = await http.post("/api/counter/abort", json={"data": {"snapshotId": "nope"}})
        assert aborted.json() == {"result": {"snapshotId": "nope"}}

        for resp, code, status in (
            (await http.post("/api/chat", json=body), 404, "NOT_FOUND"),  # only the one agent
            (await http.get("/api/counter"), 405, "UNIMPLEMENTED"),
            (await http.post("/api/counter", json={"data": 3}), 400, "INVALID_ARGUMENT"),
            (
                await http.post("/api/counter", content=b"{}", headers={"content-type": "text/plain"}),
                415,
                None,
            ),
        ):
            assert resp.status_code == code, resp.text
            error = resp.json()["error"]
            assert set(error) == {"status", "message", "details"}
            assert status is None or error["status"] == status


async def test_a_failed_turn_hides_internal_errors() -> None:
    demo = demo_app()
    site = Starlette(routes=[Mount("/api", app=serve_agent(demo.ai.agent("chat")))])
    async with serve_async(site) as url, remote_agent(f"{url}/api/chat") as agent:
        demo.pm.program([tool_call("explode")])
        with pytest.raises(AgentError) as failure:
            await agent.chat().send("boom")
        assert (failure.value.status, failure.value.message) == ("INTERNAL", "internal error")
        assert failure.value.response.finish_reason == "failed"


@pytest.mark.parametrize("base_path", ["", "/", "weather", "/{name}"])
def test_a_bad_base_path_is_refused(base_path: str) -> None:
    agent = demo_app().ai.agent("counter")
    with pytest.raises(TurnkitError) as caught:
        serve_agent(agent, base_path=base_path)
    assert caught.value.status == "INVALID_ARGUMENT" and "base_path" in caught.value.message
