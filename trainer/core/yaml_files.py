"""Reading the user's YAML files (the config, a sweep's search space): every problem is one line
naming the file, and a key given twice in one mapping is refused instead of silently replaced."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from trainer.core.errors import ConfigError, UserError


def read_yaml(path: str | Path, what: str = "config file", error: type[UserError] = ConfigError) -> Any:
    """The YAML document in the file at `path` (None when it is empty). Every problem is one
    `error` naming `what` and the path: not found, a directory, not UTF-8 text, a YAML error (its
    reason and line), or a key given twice in one mapping (the second would silently replace the
    first). The config and a sweep's search space are read with it."""
    path = Path(path)
    if path.is_dir():
        examples = sorted(path.glob("*.yaml")) or sorted(path.glob("*.yml"))
        hint = f"give one of its YAML files, e.g. {examples[0]}" if examples else "give the path of a YAML file"
        raise error(f"{what} {path} is a directory, not a file; {hint}")
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        if b"\0" in data:
            raise error(f"{what} {path} is not a text (YAML) file") from None
        raise error(
            f"{what} {path} is not UTF-8 (byte 0x{data[exc.start]:02x} on line {line}); save it as UTF-8"
        ) from None
    return parse_yaml(text, f"{what} {path}", error)


def parse_yaml(text: str, source: str, error: type[UserError] = ConfigError) -> Any:
    """`yaml.safe_load(text)`, but a key given twice in one mapping, at any depth, is an `error`
    naming the key and both lines, and a YAML error gives its reason and line. `source` starts
    each message (`config file configs/x.yaml`)."""
    try:
        return _load_refusing_duplicates(text, source, error)
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: a tagged scalar that is not one (`!!int x`)
        raise error(f"{source} is not valid YAML{_yaml_problem(exc, text)}") from None


def _load_refusing_duplicates(text: str, source: str, error: type[UserError]) -> Any:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        duplicate = _duplicate_key(loader, node, "", set())
        if duplicate is not None:
            key, first, second = duplicate
            lines = f"line {first}" if first == second else f"lines {first} and {second}"
            raise error(
                f"{source}: key {key} is given twice ({lines}), and the second would replace the first; keep one"
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _duplicate_key(loader: yaml.SafeLoader, node: yaml.Node, path: str, seen: set[int]) -> tuple[str, int, int] | None:
    """The first key given twice in one mapping under `node`: (dotted key, first line, second line)."""
    if id(node) in seen:  # an alias of a node already checked (or a recursive one)
        return None
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        children = [(f"{path}[{i}]", child) for i, child in enumerate(node.value)]
    elif isinstance(node, yaml.MappingNode):
        lines: dict[Any, int] = {}
        children = []
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = loader.construct_object(key_node)
                name = f"{path}.{key}" if path else str(key)
                line = key_node.start_mark.line + 1
                if key in lines:
                    return name, lines[key], line
                lines[key] = line
                children.append((name, value_node))
            else:  # `<<: *defaults` merges keys that the mapping's own may override
                children.append((path, value_node))
    else:
        return None
    for child_path, child in children:
        found = _duplicate_key(loader, child, child_path, seen)
        if found is not None:
            return found
    return None


def _yaml_problem(exc: Exception, text: str) -> str:
    """` at line N: <yaml's reason>`, with a hint for a tab (YAML indents with spaces only)."""
    mark = getattr(exc, "problem_mark", None)
    line, reason = (mark.line + 1 if mark else None), getattr(exc, "problem", None)
    if isinstance(exc, yaml.reader.ReaderError):  # an unprintable character: a position, no mark
        line = text[: exc.position].count("\n") + 1
        reason = f"character U+{exc.character:04X}: {exc.reason}"
    elif not isinstance(exc, yaml.YAMLError):
        reason = str(exc)
    if "'\\t'" in (reason or ""):
        reason += " (YAML indents with spaces, not tabs)"
    return (f" at line {line}" if line else "") + (f": {reason}" if reason else "")
