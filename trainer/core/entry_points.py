"""`package.module:Name` entry points (custom envs, wrappers, encoders and cores): what one looks
like, and loading one. Imports no torch: the async vector env's subprocesses load it."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from types import ModuleType
from typing import Any

ENTRY_POINT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def load_entry_point(value: str, import_failed: Callable[[str, ImportError], Exception]) -> tuple[ModuleType, Any]:
    """Import the module of `module:name` and look the name up: (the module, its attribute or
    None). A module that does not import raises `import_failed(module name, error)`: each kind of
    entry point says so in its own words."""
    module_name, _, name = value.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise import_failed(module_name, exc) from None
    return module, getattr(module, name, None) if name.isidentifier() else None
