"""Property-based fuzzing of a real server: thousands of requests, valid and hostile, and no 5xx.

Bodies come from the server's own OpenAPI description (a small JSON-Schema-to-Hypothesis
translation below), mixed with garbage: other routes' bodies, arbitrary JSON, random bytes,
oversized bodies, wrong methods, content types and paths. Every answer must be a 2xx/4xx in
the protocol's shape, no turn may fail with INTERNAL, and the server must still work after.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from http_support import demo_app, start_server, text_reply, user
from turnkit.http import create_app

REQUESTS = 4000  # at least 2000 requests; about 15 s here, bounded well under a minute
MAX_BODY = 20_000
AGENTS = ["chat", "stateless", "counter"]

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def schema_strategy(
    schema: dict[str, Any], components: dict[str, Any], strings: st.SearchStrategy[str], depth: int = 0
) -> st.SearchStrategy[Any]:
    """Values of a JSON schema as pydantic writes them ($ref, anyOf, enum, object, array, scalars)."""

    def sub(s: dict[str, Any]) -> st.SearchStrategy[Any]:
        return schema_strategy(s, components, strings, depth + 1)

    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if depth > 6:
            return json_scalars
        return st.deferred(lambda: sub(components[name]))
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "anyOf" in schema:
        return st.one_of([sub(s) for s in schema["anyOf"]])
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        if not props:
            return st.dictionaries(st.text(max_size=8), json_values, max_size=3)
        required = set(schema.get("required", []))
        return st.fixed_dictionaries(
            {k: sub(v) for k, v in props.items() if k in required},
            optional={k: sub(v) for k, v in props.items() if k not in required},
        )
    if kind == "array":
        return st.lists(sub(schema.get("items", {})), max_size=3)
    scalars: dict[str, st.SearchStrategy[Any]] = {
        "string": strings,
        "integer": st.integers(),
        "number": st.floats(allow_nan=False, allow_infinity=False),
        "boolean": st.booleans(),
        "null": st.none(),
    }
    return scalars.get(str(kind), json_values)


def body_strategies(
    doc: dict[str, Any], strings: st.SearchStrategy[str]
) -> dict[str, st.SearchStrategy[Any]]:
    """A strategy of request bodies for every POST route of the OpenAPI document."""
    components = doc["components"]["schemas"]
    out = {}
    for path, item in doc["paths"].items():
        if "post" in item:
            schema = item["post"]["requestBody"]["content"]["application/json"]["schema"]
            out[path] = schema_strategy(schema, components, strings)
    return out


def check(resp: httpx.Response, method: str) -> None:
    """The answer is no 5xx and has the protocol's shape."""
    assert resp.status_code < 500, (resp.status_code, resp.text[:500])
    if method == "HEAD":
        return
    if resp.status_code != 200:
        error = resp.json()["error"]
        assert set(error) == {"status", "message", "details"} and error["message"], error
        return
    if resp.headers["content-type"].startswith("text/event-stream"):
        body = resp.content
        assert body.endswith(b"\n\n") and b"\r" not in body
        payloads = [json.loads(frame.removeprefix(b"data: ")) for frame in body.split(b"\n\n")[:-1]]
        assert all(f.startswith(b"data: ") for f in body.split(b"\n\n")[:-1])
        assert all("message" in p for p in payloads[:-1])
        terminal = payloads[-1]
        if "error" in terminal:  # agent misuse arrives as the stream's only frame
            assert len(payloads) == 1 and set(terminal["error"]) == {"status", "message", "details"}, terminal
            assert terminal["error"]["status"] not in ("INTERNAL", "UNKNOWN"), terminal
            return
        assert "result" in terminal, terminal
        result = terminal["result"]
    else:
        result = resp.json().get("result")
    if isinstance(result, dict) and "error" in result:
        assert result["error"].get("status") != "INTERNAL", result  # a crash inside a turn


def test_fuzz_the_server() -> None:
    demo = demo_app()
    demo.pm.handler = lambda request, ctx: text_reply("ok")
    app = create_app(demo.ai, agents=AGENTS, max_body_bytes=MAX_BODY)
    started = time.monotonic()
    with start_server(app) as url, httpx.Client(base_url=url, timeout=10) as http:
        # Real ids, so that generated lookups hit existing snapshots and sessions too.
        made = http.post("/agents/chat", json={"data": {"message": user("seed")}, "init": {}}).json()[
            "result"
        ]
        ids = [made["snapshotId"], made["sessionId"]]
        strings = st.sampled_from([*ids, "", "\x00", "../etc/passwd", "x" * 300, "é\u2028"]) | st.text(
            max_size=20
        )
        bodies = body_strategies(http.get("/openapi.json").json(), strings)
        paths = sorted(bodies)
        sent = 0

        @st.composite
        def requests(draw: Callable[[st.SearchStrategy[Any]], Any]) -> dict[str, Any]:
            path = draw(st.sampled_from(paths))
            kind = draw(st.sampled_from(["schema"] * 8 + ["other", "json", "bytes", "huge", "mutated"]))
            if kind == "schema":
                content = json.dumps(draw(bodies[path])).encode()
            elif kind == "other":
                content = json.dumps(draw(bodies[draw(st.sampled_from(paths))])).encode()
            elif kind == "json":
                content = json.dumps(draw(json_values)).encode()
            elif kind == "bytes":
                content = draw(st.binary(max_size=200))
            elif kind == "huge":
                content = b'{"data": "' + b"a" * draw(st.integers(MAX_BODY - 100, MAX_BODY + 100)) + b'"}'
            else:
                body = draw(bodies[path])
                if isinstance(body, dict) and body:
                    body[draw(st.sampled_from(sorted(body)))] = draw(json_values)
                content = json.dumps(body).encode()
            if draw(st.integers(0, 9)) == 0:
                path = draw(
                    st.sampled_from(["/agents/nobody", "/agents/chat/other", "/", "/agents/%00", "/agents/é"])
                )
            method = draw(
                st.sampled_from(["POST"] * 14 + ["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
            )
            headers = {}
            ctype = draw(st.sampled_from(["application/json"] * 8 + ["text/plain", "", "application/x+json"]))
            if ctype:
                headers["content-type"] = ctype
            accept = draw(st.sampled_from(["", "", "text/event-stream", "application/json", "*/*"]))
            if accept:
                headers["accept"] = accept
            query = draw(st.sampled_from(["", "", "", "?stream=true", "?stream=1&x=%ff"]))
            return {"method": method, "url": path + query, "content": content, "headers": headers}

        @settings(
            max_examples=REQUESTS,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(requests())
        def one_request(request: dict[str, Any]) -> None:
            nonlocal sent
            sent += 1
            check(http.request(**request), request["method"])

        one_request()
        assert sent >= 2000, sent
        # still up and still right
        demo.pm.handler = lambda request, ctx: text_reply("still here")
        after = http.post("/agents/chat", json={"data": {"message": user("ping")}, "init": {}})
        assert after.json()["result"]["message"]["content"][0]["text"] == "still here"
        assert http.get("/agents").status_code == 200
    print(f"fuzz: {sent} requests in {time.monotonic() - started:.1f}s")
