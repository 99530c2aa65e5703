"""The package layers import only downwards: core <- learning <- runtime <- tools, and workers
between core and runtime. Read from the source (AST), so a function-local import counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

OURS = ("trainer", "workers")


def imports_of(path: Path) -> set[str]:
    """Every module of ours that a file imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {name for name in found if name.split(".")[0] in OURS}


def modules_under(package: str) -> list[Path]:
    return sorted((REPO_ROOT / package.replace(".", "/")).rglob("*.py"))


@pytest.mark.parametrize(
    ("package", "allowed"),
    [
        ("trainer.core", ("trainer.core",)),
        ("trainer.learning", ("trainer.core", "trainer.learning")),
        ("workers", ("trainer.core", "workers")),
        ("trainer.runtime", ("trainer.core", "trainer.learning", "trainer.runtime", "workers")),
        ("trainer.sweep", ("trainer.core", "trainer.runtime", "trainer.sweep")),
    ],
)
def test_a_layer_imports_only_the_layers_below_it(package: str, allowed: tuple[str, ...]) -> None:
    wrong = {
        f"{path.relative_to(REPO_ROOT)} imports {name}"
        for path in modules_under(package)
        for name in imports_of(path)
        if not name.startswith(allowed)
    }
    assert not wrong, sorted(wrong)


def test_only_the_runtime_imports_the_workers() -> None:
    outside = [p for p in modules_under("trainer") if "runtime" not in p.relative_to(REPO_ROOT).parts]
    wrong = [str(p.relative_to(REPO_ROOT)) for p in outside if any(n.startswith("workers") for n in imports_of(p))]
    assert not wrong
