"""Load what a command line names: `path/to/file.py[:NAME]` or `package.module[:NAME]`."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from turnkit._suggest import did_you_mean
from turnkit.errors import TurnkitError

__all__ = ["load_module", "load_target"]


def load_module(target: str) -> ModuleType:
    """Import a Python file (by path) or a module (by dotted name)."""
    if target.endswith(".py") or os.sep in target or "/" in target:
        path = Path(target).resolve()
        if not path.is_file():
            raise TurnkitError("NOT_FOUND", f"no such file: {target}")
        if str(path.parent) not in sys.path:
            sys.path.insert(0, str(path.parent))  # so the file can import its neighbours
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise TurnkitError("INVALID_ARGUMENT", f"cannot load {target} as Python")
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        raise TurnkitError("NOT_FOUND", f"no module {target!r}: {exc}") from None


def load_target(spec: str) -> Any:
    """The object `FILE.py:NAME` or `MODULE:NAME` names."""
    target, _, attr = spec.partition(":")
    if not attr:
        raise TurnkitError("INVALID_ARGUMENT", f"expected FILE.py:NAME or MODULE:NAME, got {spec!r}")
    module = load_module(target)
    try:
        return getattr(module, attr)
    except AttributeError:
        hint = did_you_mean(attr, (name for name in vars(module) if not name.startswith("_")))
        raise TurnkitError("NOT_FOUND", f"{target} has no attribute {attr!r}{hint}") from None
