"""Read a declaration file: YAML → `Declaration`, or a DeclarationError naming the file and line.

YAML is composed into nodes first, so every key and list item keeps the line it came from; pydantic's
and the cross-checks' error paths are then mapped back to those lines. Duplicate keys, which plain
YAML loading silently overwrites, are errors here. Nothing in this module touches the database.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Hashable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path as FilePath
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from inventory.checks import Path, Problem, check, dotted
from inventory.errors import InventoryError
from inventory.schemas import Declaration

DEMO = "demo.yaml"
PRODUCTION = "production.yaml"


@dataclass(frozen=True)
class Located:
    """A problem with the line (1-based) it was found on, when known."""

    line: int | None
    message: str


class DeclarationError(InventoryError):
    """The declaration cannot be used; `problems` lists every one found, each with its line."""

    def __init__(self, source: str, problems: list[Located]) -> None:
        self.source = source
        self.problems = sorted(problems, key=lambda p: (p.line or 0))
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        return [
            f"{self.source}:{problem.line}: {problem.message}"
            if problem.line
            else f"{self.source}: {problem.message}"
            for problem in self.problems
        ]


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: dict[Hashable, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key '{key}' (first at line {seen[key]})",
                    key_node.start_mark,
                )
            if isinstance(key, Hashable):
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def node_positions(node: yaml.Node, path: Path, lines: dict[Path, int]) -> None:
    """Record the line of every key and item under `node`; a key's own line wins over its value's."""
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                child = (*path, key_node.value)
                lines.setdefault(child, key_node.start_mark.line + 1)
                node_positions(value_node, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            node_positions(item, (*path, index), lines)


def line_of(path: Path, lines: dict[Path, int]) -> int | None:
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return None


def _known_prefix(path: Path, lines: dict[Path, int]) -> Path:
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return path[:end]
    return ()


def model_at(path: Path, root: type[BaseModel] = Declaration) -> type[BaseModel] | None:
    """The model found at `path` under `root` (skipping list indexes), to list its allowed keys."""
    model: type[BaseModel] = root
    for part in path:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        inner = _find_model(field.annotation)
        if inner is None:
            return None
        model = inner
    return model


def _find_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
        for arg in typing.get_args(annotation):
            found = _find_model(arg)
            if found is not None:
                return found
    return None


_SCALAR_TYPES = {"string_type", "bool_type", "int_type", "float_type"}


def _message(error: ErrorDetails) -> str:
    loc: Path = tuple(error["loc"])
    if error["type"] == "extra_forbidden":
        parent = model_at(loc[:-1])
        allowed = f" (allowed: {', '.join(parent.model_fields)})" if parent else ""
        where = f" in {dotted(loc[:-1])}" if loc[:-1] else ""
        return f"unknown key '{loc[-1]}'{where}{allowed}"
    if error["type"] == "missing":
        where = f"{dotted(loc[:-1])}: " if loc[:-1] else ""
        return f"{where}missing required key '{loc[-1]}'"
    if "settings" in loc[:-1] and error["type"] in _SCALAR_TYPES:
        # A setting's value is a union: name the allowed kinds instead of the first member's complaint.
        key = loc[: loc.index("settings") + 2]
        return f"{dotted(key)}: a setting must be a string, a number or true/false (got {error['input']!r})"
    text = error["msg"].removeprefix("Value error, ")
    if error["type"] not in ("value_error", "model_type") and not isinstance(error["input"], dict | list):
        text += f" (got {error['input']!r})"
    return f"{dotted(loc)}: {text}"


def _from_validation(error: ValidationError, lines: dict[Path, int]) -> list[Located]:
    found: dict[Path, Located] = {}
    for detail in error.errors():
        loc: Path = tuple(detail["loc"])
        # A union (e.g. a setting's value) fails once per member: report the first, once.
        key = _known_prefix(loc, lines) if detail["type"] not in ("extra_forbidden", "missing") else loc
        found.setdefault(key, Located(line_of(loc, lines), _message(detail)))
    return list(found.values())


def yaml_problem(error: yaml.MarkedYAMLError) -> Located:
    # The problem mark is where the parser gave up; the context mark (e.g. an unclosed "{") is often
    # the line to fix, so name both.
    mark = error.problem_mark or error.context_mark
    text = f"invalid YAML: {error.problem or error.context}"
    if error.context and error.problem and error.context_mark:
        text += f" ({error.context} that starts at line {error.context_mark.line + 1})"
    return Located(mark.line + 1 if mark else None, text)


def load_text(text: str, source: str = "<declaration>") -> Declaration:
    """Parse and validate a declaration; DeclarationError with every problem and its line otherwise."""
    try:
        # The reader checks the characters when it is made: a control character fails here already.
        loader = StrictLoader(text)
    except yaml.YAMLError as error:
        raise DeclarationError(source, [Located(None, f"invalid YAML: {error}")]) from None
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as error:
        raise DeclarationError(source, [yaml_problem(error)]) from None
    except yaml.YAMLError as error:
        raise DeclarationError(source, [Located(None, f"invalid YAML: {error}")]) from None
    finally:
        loader.dispose()

    if node is None:
        # Applying an empty declaration would remove everything: never do that by accident.
        raise DeclarationError(source, [Located(1, "the file is empty; a declaration starts with 'sites:'")])
    if not isinstance(data, dict):
        raise DeclarationError(
            source, [Located(node.start_mark.line + 1, "the top level must be a mapping with keys "
                             f"{', '.join(Declaration.model_fields)}")]
        )
    lines: dict[Path, int] = {}
    node_positions(node, (), lines)
    try:
        declaration = Declaration.model_validate(data)
    except ValidationError as error:
        raise DeclarationError(source, _from_validation(error, lines)) from None
    problems: list[Problem] = check(declaration)
    if problems:
        raise DeclarationError(
            source, [Located(line_of(p.path, lines), f"{dotted(p.path)}: {p.message}") for p in problems]
        )
    return declaration


def load_file(path: str | FilePath) -> Declaration:
    path = FilePath(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DeclarationError(str(path), [Located(None, f"cannot read the file: {error}")]) from None
    return load_text(text, str(path))


def sample_path(name: str = DEMO) -> FilePath:
    """The path of an embedded sample declaration (demo.yaml: the default; production.yaml)."""
    return FilePath(str(resources.files("inventory") / "samples" / name))


def load_sample(name: str = DEMO) -> Declaration:
    return load_file(sample_path(name))
