"""`tune_gc()` and `turnkit serve`'s use of it (process-wide settings: each test restores them)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

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


def test_tune_gc_refuses_a_threshold_below_one() -> None:
    with pytest.raises(ValueError, match="threshold"):
        tune_gc(0)


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
