"""Genkit peer for `benchmarks/http.py`: one Genkit agent served over HTTP by `genkit-fastapi`.

Runs INSIDE the peer virtualenv with `genkit==0.12.0` and `genkit-fastapi==0.12.0` (see
`benchmarks/peers/env.py`), never in turnkit's environment:

    benchmarks/.venvs/genkit-fastapi-0.12.0/bin/python benchmarks/peers/genkit_http_server.py --port 8124

It serves `POST /agents/bench` (+ `/getSnapshot`, `/abort`) on 127.0.0.1 with one uvicorn worker:
an agent over `InMemorySessionStore()` (server-managed, like turnkit's benchmark agent) whose
model streams a fixed reply in `--chunks` pieces and returns it, with no inference. uvicorn runs
with `--loop` and `--http` as given (the benchmark passes the same values to both servers).
`GET /agents` answers 200 so the benchmark can tell when the server is up.
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI
from genkit import ActionRunContext, Message, ModelRequest, ModelResponse, ModelResponseChunk, Part, Role
from genkit.exp import Genkit, InMemorySessionStore
from genkit_fastapi import serve_agent

REPLY = "The quick brown fox jumps over the lazy dog, then naps in the afternoon sun."


def split(text: str, n: int) -> list[str]:
    """`text` cut into `n` consecutive pieces of about equal length (the same cut as turnkit's side)."""
    size = -(-len(text) // n)
    return [text[i : i + size] for i in range(0, len(text), size)]


def build_app(chunks: int) -> FastAPI:
    """The FastAPI app serving the benchmark agent at /agents/bench."""
    pieces = split(REPLY, chunks)
    reply = ModelResponse(
        message=Message(role=Role.MODEL, content=[Part.from_text(REPLY)]), finish_reason="stop"
    )

    async def fixed_reply(request: ModelRequest, ctx: ActionRunContext) -> ModelResponse:
        for piece in pieces:
            ctx.send_chunk(ModelResponseChunk(role=Role.MODEL, content=[Part.from_text(piece)]))
        return reply

    ai = Genkit()
    ai.define_model(name="fixedReply", fn=fixed_reply)
    agent = ai.define_agent(name="bench", model="fixedReply", store=InMemorySessionStore())
    app = FastAPI()
    app.include_router(serve_agent(agent, base_path="/agents/bench"))

    @app.get("/agents")
    async def agents() -> dict[str, list[str]]:
        return {"agents": ["bench"]}

    return app


def main() -> None:
    """Serve on 127.0.0.1:PORT until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks", type=int, default=4, help="streamed chunks per reply (default 4)")
    parser.add_argument("--loop", default="asyncio", help="uvicorn event loop (default asyncio)")
    parser.add_argument("--http", default="h11", help="uvicorn HTTP implementation (default h11)")
    args = parser.parse_args()
    uvicorn.run(
        build_app(args.chunks),
        host="127.0.0.1",
        port=args.port,
        workers=1,
        loop=args.loop,
        http=args.http,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
