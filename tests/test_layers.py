"""The package layers import only downwards: core <- learning <- runtime <- tools, and workers
between core and runtime; and no modules import each other in a circle. Read from the source
(AST), so a function-local import counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

OURS = ("trainer", "workers")


def imports_of(path: Path, root: Path = REPO_ROOT) -> set[str]:
    """Every name of ours that a file imports, at any depth of its code, as dotted paths:
    `from a.b import c` gives `a.b.c` (a module, or a name in module `a.b`); relative imports are
    made absolute."""
    package = module_name(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the file's package, level - 1 packages up
                base = ".".join([*package[: len(package) - node.level + 1], *filter(None, [node.module])])
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] in OURS}


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules_under(package: str, root: Path = REPO_ROOT) -> list[Path]:
    return sorted((root / package.replace(".", "/")).rglob("*.py"))


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


def module_graph(root: Path = REPO_ROOT) -> dict[str, set[str]]:
    """Each module of ours (a package is its `__init__`) -> the modules of ours it imports: an
    imported name counts as the longest module it starts with."""
    paths = {module_name(path, root): path for package in OURS for path in modules_under(package, root)}

    def module_of(name: str) -> str | None:
        while name and name not in paths:
            name = name.rpartition(".")[0]
        return name or None

    return {
        name: {target for imported in imports_of(path, root) if (target := module_of(imported)) not in (None, name)}
        for name, path in paths.items()
    }


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None when there is none."""
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return None
        path.append(module)
        for imported in sorted(graph[module]):
            if circle := visit(imported):
                return circle
        path.pop()
        done.add(module)
        return None

    return next((circle for module in sorted(graph) if (circle := visit(module))), None)


def test_no_modules_import_each_other_in_a_circle() -> None:
    circle = find_circle(module_graph())
    assert circle is None, "import circle: " + " -> ".join(circle or [])


def test_a_circle_closed_inside_a_function_is_found(tmp_path: Path) -> None:
    """The shape of the old trainer/export.py <-> trainer/inference.py circle: imported at the top
    one way, inside a function the other way."""
    for package in OURS:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "trainer" / "export.py").write_text("from trainer.inference import load_policy\n")
    (tmp_path / "trainer" / "inference.py").write_text(
        "def load_policy(target):\n    from trainer.export import load_exported\n\n    return load_exported(target)\n"
    )
    assert find_circle(module_graph(tmp_path)) == ["trainer.export", "trainer.inference", "trainer.export"]
