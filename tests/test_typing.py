"""The public API is typed: `mypy --strict` over user-style programs reports each deliberate mistake
(misspelled options, wrong option types, state and output typed by their schemas) at its line, and
finds nothing wrong in a correct program.

The programs live in tests/typing_cases/; a line marked `# expect: code[, code]` must get exactly
those mypy error codes, and no other line of either file may get any.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CASES = Path(__file__).resolve().parent / "typing_cases"
CORRECT = CASES / "correct_usage.py"
MISTAKES = CASES / "mistakes.py"
ERROR = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+): error: .*\[(?P<code>[a-z-]+)\]$")
EXPECT = re.compile(r"#\s*expect:\s*(?P<codes>[a-z, -]+)$")


def expected_errors(path: Path) -> dict[int, set[str]]:
    """The error codes each `# expect:` line of `path` must get."""
    found: dict[int, set[str]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        match = EXPECT.search(line)
        if match:
            found[number] = {code.strip() for code in match["codes"].split(",")}
    return found


@pytest.fixture(scope="module")
def reported() -> dict[str, dict[int, set[str]]]:
    """mypy --strict's errors over both programs: file name -> line -> error codes."""
    # A cache kept between runs makes this take seconds instead of a minute.
    cache = Path(tempfile.gettempdir()) / "turnkit-typing-test-mypy-cache"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            # Only the user's files are judged; turnkit's own typing is checked on its own.
            "--follow-imports=silent",
            "--cache-dir",
            str(cache),
            "--no-error-summary",
            "--show-error-codes",
            str(CORRECT),
            str(MISTAKES),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode in (0, 1), f"mypy crashed:\n{result.stdout}\n{result.stderr}"
    errors: dict[str, dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
    for line in result.stdout.splitlines():
        match = ERROR.match(line)
        if match:
            errors[Path(match["path"]).name][int(match["line"])].add(match["code"])
        elif ": error:" in line:
            pytest.fail(f"unparsed mypy error: {line}")
    return errors


def test_a_correct_program_passes_mypy_strict(reported: dict[str, dict[int, set[str]]]) -> None:
    assert dict(reported.get(CORRECT.name, {})) == {}


def test_each_mistake_is_reported_at_its_line(reported: dict[str, dict[int, set[str]]]) -> None:
    expected = expected_errors(MISTAKES)
    assert len(expected) >= 15  # the file is read as intended
    got = {line: codes for line, codes in reported.get(MISTAKES.name, {}).items()}
    missing = {
        line: codes - got.get(line, set()) for line, codes in expected.items() if codes - got.get(line, set())
    }
    unexpected = {line: codes for line, codes in got.items() if line not in expected}
    assert not missing, f"mistakes mypy did not report (line: codes): {missing}"
    assert not unexpected, f"errors on lines without a mistake (line: codes): {unexpected}"


def test_expect_markers_are_read() -> None:
    assert expected_errors(MISTAKES)[min(expected_errors(MISTAKES))] == {"call-arg"}
