"""Spec YAML that remembers where everything was written.

Every message about a bad spec names the line of the offending key or value, and the schema
validator only knows paths (``images.terms.map_type``), so the YAML is loaded into mappings and
lists that remember the line of each key, value and item; :func:`line_of` turns a path back
into a line. Duplicate keys are refused here because plain YAML silently keeps the last one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from nv_datalad.errors import SpecError

#: A position inside a document: mapping keys and list indexes, outermost first.
Path_ = tuple[Any, ...]


class LineDict(dict):
    """A mapping from YAML that remembers the (1-based) line of each key and value."""

    line: int = 1

    def __init__(self) -> None:
        super().__init__()
        self.key_lines: dict[Any, int] = {}
        self.value_lines: dict[Any, int] = {}


class LineList(list):
    """A sequence from YAML that remembers the (1-based) line of each item."""

    line: int = 1

    def __init__(self) -> None:
        super().__init__()
        self.item_lines: list[int] = []


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int, first: int):
        super().__init__(key)
        self.key, self.line, self.first = key, line, first


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that builds LineDict/LineList, refuses duplicate keys, and keeps dates as text.

    Dates stay text because records carry ISO-8601 strings and JSON (the schema) has no date
    type: ``add_date: {ge: 2020-01-01}`` then compares text with text.
    """


_LineLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> Any:
    result = LineDict()
    result.line = node.start_mark.line + 1
    yield result
    loader.flatten_mapping(node)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a key must be plain text", key_node.start_mark
            ) from None
        line = key_node.start_mark.line + 1
        if key in result:
            raise _DuplicateKey(key, line, result.key_lines[key])
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = line
        result.value_lines[key] = value_node.start_mark.line + 1


def _construct_sequence(loader: _LineLoader, node: yaml.SequenceNode) -> Any:
    result = LineList()
    result.line = node.start_mark.line + 1
    yield result
    for item in node.value:
        result.append(loader.construct_object(item, deep=True))
        result.item_lines.append(item.start_mark.line + 1)


_LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_sequence)


def load_yaml(text: str, source: str) -> Any:
    """The document as LineDict/LineList/scalars; bad YAML is a SpecError with its line."""
    try:
        return yaml.load(text, Loader=_LineLoader)  # a SafeLoader subclass
    except _DuplicateKey as dup:
        raise SpecError(
            f"duplicate key {dup.key!r} (first at line {dup.first}); keep one",
            source=source,
            line=dup.line,
            key=str(dup.key),
        ) from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        problem = " ".join(str(p) for p in (err.context, err.problem) if p)
        raise SpecError(
            f"not valid YAML: {one_line(problem)}",
            source=source,
            line=mark.line + 1 if mark else None,
        ) from None
    except yaml.YAMLError as err:
        raise SpecError(f"not valid YAML: {one_line(str(err))}", source=source) from None


def line_of(root: Any, path: Sequence[Any], at_key: bool = False) -> int:
    """The line of the value at ``path`` (of its key when ``at_key``).

    A path that leaves the document (a missing key) gives the line of the deepest node that
    exists, which is where the missing key belongs.
    """
    node = root
    line = getattr(root, "line", 1)
    for index, part in enumerate(path):
        last = index == len(path) - 1
        if isinstance(node, LineDict) and part in node:
            line = node.key_lines[part] if (last and at_key) else node.value_lines[part]
            node = node[part]
        elif isinstance(node, LineList) and isinstance(part, int) and 0 <= part < len(node):
            line = node.item_lines[part]
            node = node[part]
        else:
            break
    return line


def plain(value: Any) -> Any:
    """LineDict/LineList → dict/list, recursively (for ``Spec.raw`` and the filters)."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def one_line(text: str) -> str:
    """Messages are printed as one line each: collapse the whitespace a library put in."""
    return " ".join(text.split())
