"""`tune_gc()` and `turnkit serve`'s use of it (process-wide settings: each test restores them)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from turnkit import TurnkitError
from turnkit.http import tune_gc
from turnkit.http._serve import GC_ENV, TARGET_ENV, app_from_env, main

APP = """
from turnkit import Turnkit
ai = Turnkit()
"""


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_tune_gc_freezes_what_is_alive_and_collects_the_young_less_often() -> None:
    gc.unfreeze()
    older = gc.get_threshold()[1:]
    tune_gc(5000)
    assert gc.get_threshold() == (5000, *older)
    assert gc.get_freeze_count() > 0


class Node:
    """A reference-cycle member that can be watched through a weak reference."""

    def __init__(self) -> None:
        self.me = self


def cycle() -> weakref.ref[Node]:
    return weakref.ref(Node())  # the cycle is garbage at once: only gc can free it


def test_tune_gc_twice_collects_garbage_first_and_keeps_the_threshold() -> None:
    gc.unfreeze()
    older = gc.get_threshold()[1:]
    tune_gc(5000)
    frozen = gc.get_freeze_count()
    gone = cycle()
    tune_gc(5000)
    # The second call collected the garbage made since the first rather than freezing it, and set
    # the same threshold (not a multiple of the first call's), the older generations untouched.
    assert gone() is None
    assert gc.get_threshold() == (5000, *older)
    assert gc.get_freeze_count() >= frozen
    later = cycle()
    gc.collect()
    assert later() is None  # cycles made after the freeze are still collected


def test_what_was_alive_at_the_freeze_is_never_collected() -> None:
    gc.unfreeze()
    alive = Node()
    watch = weakref.ref(alive)
    tune_gc()
    del alive  # garbage now, but frozen: the documented cost of tune_gc
    gc.collect()
    assert watch() is not None
    gc.unfreeze()
    gc.collect()
    assert watch() is None


@pytest.mark.parametrize("threshold", [0, -1, True, 2.5, "7000"])
def test_tune_gc_refuses_a_threshold_that_is_not_a_positive_int(threshold: object) -> None:
    with pytest.raises(TurnkitError) as err:
        tune_gc(threshold)  # type: ignore[arg-type]
    assert err.value.status == "INVALID_ARGUMENT" and "threshold" in err.value.message


@pytest.mark.parametrize(("setting", "tuned"), [("1", True), ("0", False), (None, True)])
def test_worker_processes_tune_unless_told_not_to(
    setting: str | None, tuned: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "app.py"
    target.write_text(APP)
    monkeypatch.setenv(TARGET_ENV, str(target))
    if setting is None:
        monkeypatch.delenv(GC_ENV, raising=False)
    else:
        monkeypatch.setenv(GC_ENV, setting)
    gc.set_threshold(700, 10, 10)
    app_from_env()
    assert (gc.get_threshold()[0] != 700) is tuned


def test_serve_accepts_no_gc_tuning(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--no-gc-tuning" in capsys.readouterr().out
