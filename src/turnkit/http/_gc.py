"""`tune_gc()`: garbage collection settings for a long-running server process.

CPython collects its youngest generation every 700 net allocations of container objects, and
every collection of the older generations walks every object still alive. A server turn allocates
thousands of short-lived objects (requests, messages, frames), and with many turns in flight the
live set is large: at 200 concurrent streaming clients about a fifth of the server's CPU per turn
went to the collector (benchmarks/http.py). Collecting the youngest generation ten times less
often, and moving what exists at start-up (modules, the app, its registry) out of the collector's
sight with `gc.freeze()`, keeps reference cycles collected while most of that cost goes away.
The freeze is for the process's life: see `tune_gc`.
"""

from __future__ import annotations

import gc
from typing import Final

from turnkit.errors import TurnkitError

__all__ = ["SERVER_GC_THRESHOLD", "tune_gc"]

SERVER_GC_THRESHOLD: Final = 7000  # youngest-generation threshold (CPython's default is 700)


def tune_gc(threshold: int = SERVER_GC_THRESHOLD) -> None:
    """Tune this process's garbage collector for serving: collect once, freeze what is alive now
    (call it after the app is loaded), and collect the youngest generation every `threshold`
    allocations instead of 700. `turnkit serve` does this unless given `--no-gc-tuning`; call it
    yourself when you start uvicorn (or another server) on a turnkit app in your own code.

    Nothing unfreezes what was frozen: an object alive at the call that later becomes garbage in
    a reference cycle is never collected (without cycles, reference counting still frees it). So
    call it once the app, its agents and stores are built, since those live for the process, and
    not while start-up garbage (a large config parsed then discarded) is still alive; call
    `gc.unfreeze()` yourself if you must. Calling it again is safe: garbage is collected before
    each freeze, so a second call only freezes what is alive then and sets the threshold anew.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
        raise TurnkitError("INVALID_ARGUMENT", f"tune_gc: threshold must be an int >= 1, not {threshold!r}")
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(threshold, older, oldest)
