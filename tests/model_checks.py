"""Checks every real model provider must pass, shared by the provider test files."""

from __future__ import annotations

from typing import Any

from turnkit import Turnkit


async def check_tool_loop(ai: Turnkit, config: dict[str, Any]) -> None:
    """A forced tool call runs the tool once and the model then answers in text."""
    seen: list[str] = []

    @ai.tool()
    def get_weather(city: str) -> dict[str, Any]:
        """Get the current weather for a city."""
        seen.append(city)
        return {"city": city, "temp_c": 21, "sky": "sunny"}

    resp = await ai.generate(
        prompt="What's the weather in Paris?", tools=["get_weather"], tool_choice="required", config=config
    )
    assert len(seen) == 1 and isinstance(seen[0], str)
    assert [m.role for m in resp.messages] == ["user", "model", "tool", "model"]
    assert resp.finish_reason in ("stop", "length") and resp.text.strip()
