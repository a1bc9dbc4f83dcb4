"""A coordinator that delegates to two specialists: a researcher and a writer.

    turnkit chat examples/coordinator.py:coordinator

The coordinator gets one tool per specialist (`delegate_to_researcher`, `delegate_to_writer`) from
the `Agents` middleware, and reads the writer's drafts, copied into its own session, with
`read_artifact` (`Artifacts(readonly=True)`). The researcher looks facts up in a small offline
almanac; the writer drafts text into artifacts and, having a session store, remembers its earlier
drafts across delegations.

The model is the local SmolLM2 (`llamacpp/smollm2`) unless `$TURNKIT_MODEL` or `--model` names
another; a small model rarely delegates well, so try a larger one. `--model echoModel` repeats your
messages back, which needs no model at all.
"""

from __future__ import annotations

import os

from turnkit import Turnkit
from turnkit.middleware import Agents, Artifacts, Retry
from turnkit.models.llamacpp import LlamaCpp
from turnkit.sessions import InMemorySessionStore
from turnkit.testing import define_echo_model

ai = Turnkit(plugins=[LlamaCpp()], model=os.environ.get("TURNKIT_MODEL") or "llamacpp/smollm2")
define_echo_model(ai)  # "echoModel": an offline stand-in that answers with your own words

ALMANAC = {
    "moon": "The Moon is about 384,400 km from Earth; its day lasts about 29.5 Earth days.",
    "mars": "Mars has two moons, Phobos and Deimos; a Martian day (sol) lasts 24 h 37 min.",
    "octopus": "An octopus has three hearts and blue, copper-based blood.",
    "honey": "Honey found in ancient Egyptian tombs was still edible after 3,000 years.",
}


@ai.tool
def almanac(topic: str) -> str:
    """Look a topic up in the almanac (one word, e.g. "moon")."""
    return ALMANAC.get(
        topic.strip().lower(), f"The almanac has nothing on {topic!r}; it knows {', '.join(ALMANAC)}."
    )


researcher = ai.define_agent(
    "researcher",
    description="Finds facts in the almanac and reports them briefly, with the topic they came from.",
    system="You are a researcher. Look the facts up with the almanac tool and report only what it says.",
    tools=["almanac"],
    use=[Retry(max_retries=2)],
)

writer = ai.define_agent(
    "writer",
    description="Writes and revises short texts (poems, summaries, notes), saving each as an artifact.",
    system=(
        "You are a writer. Write what you are asked, save it with write_artifact under a short file "
        "name, and answer with one sentence saying what you wrote."
    ),
    store=InMemorySessionStore(),  # server-managed: it keeps one session per coordinator session
    use=[Artifacts(), Retry(max_retries=2)],
)

coordinator = ai.define_agent(
    "coordinator",
    system=(
        "You coordinate specialists. Delegate fact finding to the researcher and writing to the "
        "writer, with clear self-contained tasks; read the writer's drafts with read_artifact, then "
        "answer the user yourself."
    ),
    store=InMemorySessionStore(),
    use=[
        Agents(
            agents=["researcher", "writer"], history_length=4, max_delegations=5, artifact_strategy="session"
        ),
        Artifacts(readonly=True),
    ],
)
