# src/assistant.py
# ruff: noqa: ASYNC250 - the seed reads the terminal with input(), as written
# Seed 000's "Complete Working Example" as written; only the import lines are turnkit's.
# The test runs it with GEMINI_API_KEY and GOOGLE_GEMINI_BASE_URL pointing at a local Gemini server.
import uuid

from pydantic import BaseModel

from turnkit import AgentInit
from turnkit import Turnkit as Genkit
from turnkit.models.google_genai import GoogleAI
from turnkit.sessions import InMemorySessionStore

ai = Genkit(
    plugins=[GoogleAI()],
    model="googleai/gemini-2.0-flash",
)

# ── Tools ───────────────────────────────────────────────────────────────────


class WeatherInput(BaseModel):
    city: str


class CalcInput(BaseModel):
    expression: str


@ai.tool()
async def get_weather(input: WeatherInput) -> str:
    """Get current weather for a city."""
    data = {
        "chicago": "Partly cloudy, 68°F, humidity 55%",
        "seattle": "Overcast and rainy, 54°F",
        "miami": "Sunny, 87°F, humidity 78%",
    }
    return data.get(input.city.lower(), f"Weather data unavailable for {input.city}")


@ai.tool()
async def calculate(input: CalcInput) -> str:
    """Evaluate a simple math expression."""
    try:
        # In production: use a safe evaluator
        result = eval(input.expression, {"__builtins__": {}}, {})
        return str(result)
    except Exception as e:
        return f"Error: {e}"


# ── Agent ────────────────────────────────────────────────────────────────────

session_store = InMemorySessionStore()

assistant = ai.define_agent(
    name="personalAssistant",
    model="googleai/gemini-2.0-flash",
    system="""You are a helpful personal assistant.
You have access to weather and calculator tools.
Remember context across our conversation.
Be concise — 1-2 sentences per response unless asked for more.""",
    tools=[get_weather, calculate],
    store=session_store,
)

# ── CLI ───────────────────────────────────────────────────────────────────────


async def chat():
    session_id = str(uuid.uuid4())
    print(f"Session: {session_id}")
    print('Type "quit" to exit, "new" to start a fresh session.\n')

    conn = await assistant.stream_bidi(init=AgentInit(session_id=session_id))

    while True:
        try:
            user_input = input("You: ").strip()
        except (EOFError, KeyboardInterrupt):
            break

        if not user_input:
            continue
        if user_input.lower() == "quit":
            break
        if user_input.lower() == "new":
            await conn.close()
            await conn.output()
            session_id = str(uuid.uuid4())
            conn = await assistant.stream_bidi(init=AgentInit(session_id=session_id))
            print(f"New session: {session_id}")
            continue

        await conn.send_text(user_input)
        print("Assistant: ", end="", flush=True)
        async for chunk in conn.receive():
            if chunk.model_chunk and chunk.model_chunk.text:
                print(chunk.model_chunk.text, end="", flush=True)
        print()  # newline

    await conn.close()
    await conn.output()
    print("Goodbye.")


if __name__ == "__main__":
    ai.run_main(chat())
