"""Schema violations in words a researcher can act on, each with the line it sits on.

jsonschema reports every violation with the path of the value (``images.terms.map_type``) and
the keyword that failed (``enum``, ``type``, ``additionalProperties``); its own messages quote
the schema ("'x' is not one of [...]"). Here each violation becomes a :class:`Problem`: the key
path, the YAML line (from :mod:`nv_datalad.spec.yamlload`) and ``problem; how to fix`` built
from the schema itself: the enum's values, the expected type, the allowed keys, and the
schema's ``title`` / ``examples`` / ``x-fix`` annotations. All problems of a spec are reported
together, one per line, as datalad-next does.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jsonschema.exceptions import ValidationError
from jsonschema.protocols import Validator

from nv_datalad.errors import SpecError
from nv_datalad.spec.schema_doc import conforms, schema, validator
from nv_datalad.spec.yamlload import Path_, line_of, one_line, plain

#: Schema keywords (of those the spec schema uses) that hold child schemas: whether the next
#: schema-path part names the child, and whether stepping in moves one level down the value.
_NAMED_CHILDREN = {"properties": True, "anyOf": False, "oneOf": False, "allOf": False}
_CHILDREN = {"items": True, "additionalProperties": True, "not": False}


@dataclass(frozen=True)
class Problem:
    """One violation: where (key path, YAML line) and what to do about it."""

    path: Path_
    line: int | None
    message: str


def fmt_path(path: Path_) -> str:
    """``("images", "ids", 2)`` → ``images.ids[2]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def suggest(value: Any, choices: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for a near miss, else nothing."""
    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def spec_error(problems: Sequence[Problem], source: str) -> SpecError:
    """One problem: ``file:line key: problem; fix``. Several: a count, then one per line."""
    ordered = sorted(problems, key=lambda p: (p.line or 0, fmt_path(p.path)))
    errors = [SpecError(p.message, source=source, line=p.line, key=fmt_path(p.path))
              for p in ordered]
    if len(errors) == 1:
        return errors[0]
    listing = "\n".join(f"  {err}" for err in errors)
    return SpecError(f"{len(errors)} problems\n{listing}", source=source)


def _show(value: Any) -> str:
    text = repr(plain(value))
    return text if len(text) <= 80 else text[:77] + "..."


def _alternatives(words: Iterable[str]) -> str:
    unique = list(dict.fromkeys(words))
    return unique[0] if len(unique) == 1 else ", ".join(unique[:-1]) + " or " + unique[-1]


def _fixed_size(schema: Mapping[str, Any]) -> int | None:
    size = schema.get("minItems")
    return size if size is not None and size == schema.get("maxItems") else None


class Translator:
    """Turns the jsonschema errors of one document into Problems."""

    def __init__(self, document: Any, root_schema: Mapping[str, Any]):
        self.document = document
        self.root = root_schema

    def problems(self, checker: Validator) -> list[Problem]:
        """Every violation of the document, each said once, in schema order."""
        found: dict[tuple[Path_, str], Problem] = {}
        for error in checker.iter_errors(self.document):
            for problem in self._translate(error, {}):
                found.setdefault((problem.path, problem.message), problem)
        return list(found.values())

    # --- schema reading --------------------------------------------------------------------

    def _deref(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        while "$ref" in schema:
            node: Any = self.root
            for part in schema["$ref"].removeprefix("#/").split("/"):
                node = node[part]
            schema = node
        return schema

    def expected(self, schema: Mapping[str, Any], plural: bool = False) -> str:
        """What the schema accepts, in words: ``a list of 3 positive integers``."""
        schema = self._deref(schema)
        if "const" in schema:
            return repr(schema["const"])
        if "enum" in schema:
            return "one of: " + ", ".join(map(str, schema["enum"]))
        if "anyOf" in schema:
            return _alternatives(self.expected(branch, plural) for branch in schema["anyOf"])
        types = schema.get("type")
        if types is None:
            return "values" if plural else "a value"
        types = [types] if isinstance(types, str) else types
        return _alternatives(self._noun(kind, schema, plural) for kind in types)

    def _noun(self, kind: str, schema: Mapping[str, Any], plural: bool) -> str:
        if kind in ("integer", "number"):
            low = schema.get("minimum")
            adjective = "non-negative " if low == 0 else ""
            if (low == 1 and kind == "integer") or schema.get("exclusiveMinimum") == 0:
                adjective = "positive "
            word = f"{adjective}{kind}"
            if plural:
                return word + "s"
            return ("an " if word[0] in "aeiou" else "a ") + word
        if kind == "array":
            return self._list_noun(schema, plural)
        nouns = {"string": ("text", "texts"), "boolean": ("true or false", "true or false"),
                 "null": ("null", "null"), "object": ("a mapping", "mappings")}
        return nouns[kind][plural]

    def _list_noun(self, schema: Mapping[str, Any], plural: bool) -> str:
        head = "lists" if plural else "a list"
        items = schema.get("items")
        if not isinstance(items, Mapping):
            return head
        size, inner = _fixed_size(schema), self._deref(items)
        inner_size = _fixed_size(inner) if inner.get("type") == "array" else None
        if size and inner_size and isinstance(inner.get("items"), Mapping):
            return (f"{'' if plural else 'a '}{size}×{inner_size} matrix"
                    f"{'es' if plural else ''} of {self.expected(inner['items'], True)}")
        count = f"{size} " if size else ""
        return f"{head} of {count}{self.expected(items, True)}"

    def _whole_value(self, error: ValidationError) -> tuple[Path_, Mapping[str, Any]] | None:
        """A fixed-size list (an affine, a shape) is one value: blame it, not one item."""
        parts, node, depth, index = list(error.absolute_schema_path), self.root, 0, 0
        while index < len(parts) and isinstance(node, Mapping):
            part = parts[index]
            if part not in node and "$ref" in node:
                node = self._deref(node)
                continue
            if part == "items" and node.get("type") == "array" and _fixed_size(node):
                return tuple(error.absolute_path)[:depth], node
            if part in _NAMED_CHILDREN and index + 1 < len(parts):
                node = node[part][parts[index + 1]]
                depth += _NAMED_CHILDREN[part]
                index += 2
            elif part in _CHILDREN:
                node = node[part]
                depth += _CHILDREN[part]
                index += 1
            else:
                return None
        return None

    def _value_at(self, path: Path_) -> Any:
        node = self.document
        for part in path:
            node = node[part]
        return node

    # --- errors to problems ----------------------------------------------------------------

    def _problem(self, path: Path_, message: str, fix: str | None, at_key: bool = False) -> Problem:
        text = f"{message}; {fix}" if fix else message
        return Problem(path, line_of(self.document, path, at_key=at_key), text)

    def _translate(self, error: ValidationError, inherited: Mapping[str, str]) -> list[Problem]:
        """``inherited``: the ``title`` / ``x-fix`` of the anyOf this error is a branch of."""
        schema = error.schema if isinstance(error.schema, Mapping) else {}
        hints = {**inherited, **{k: schema[k] for k in ("title", "x-fix") if k in schema}}
        fix = hints.get("x-fix")
        path, value, kind = tuple(error.absolute_path), error.instance, error.validator
        if kind in ("anyOf", "oneOf"):
            branch = self._fitting_branch(error)
            if branch is not None:
                return [p for sub in branch for p in self._translate(sub, hints)]
            return [self._problem(path, f"must be {self.expected(schema)}; got {_show(value)}",
                                  fix)]
        whole = self._whole_value(error)
        if whole is not None:
            where, container = whole
            got = _show(self._value_at(where))
            return [self._problem(where, f"must be {self.expected(container)}; got {got}",
                                  container.get("x-fix", fix))]
        if kind == "additionalProperties":
            allowed = list(schema.get("properties", {}))
            return [
                self._problem((*path, key), f"unknown key {key!r}{suggest(key, allowed)}",
                              f"allowed here: {', '.join(allowed)}", at_key=True)
                for key in value if key not in allowed
            ]
        if kind in ("required", "dependentRequired", "not"):
            return self._missing_or_extra(error, path, schema)
        if kind == "uniqueItems":
            return self._duplicates(path, value)
        if kind == "enum":
            choices = [str(c) for c in error.validator_value]
            what = next((p for p in reversed(path) if isinstance(p, str)), "value")
            return [self._problem(path, f"unknown {what} {_show(value)}{suggest(value, choices)}",
                                  f"use one of: {', '.join(choices)}")]
        if kind == "format" and error.cause is not None:
            return [self._problem(path, str(error.cause), fix)]
        if kind == "pattern":
            fmt = schema.get("format")
            if fmt and not conforms(value, fmt):
                return []  # the format's own message says more
            what = hints.get("title") or next((p for p in reversed(path) if isinstance(p, str)),
                                               "value")
            return [self._problem(path, f"{_show(value)} is not a usable {what}", fix)]
        if kind == "type" and not path:
            if value is None:
                return [self._problem(path, "the spec is empty", "it needs at least name: "
                                      "<dataset name>")]
            return [self._problem(path, "a spec is a mapping (name:, images:, ...); got "
                                  f"{type(plain(value)).__name__}", None)]
        if len(path) > 1 and isinstance(path[-1], int) and isinstance(path[-2], str):
            plural = self.expected(schema, plural=True)
            return [self._problem(path, f"{path[-2]} are {plural}; got {_show(value)}", fix)]
        if kind in ("type", "const", "minimum", "maximum", "exclusiveMinimum",
                    "exclusiveMaximum", "minItems", "maxItems", "minLength", "maxLength"):
            return [self._problem(path, f"must be {self.expected(schema)}; got {_show(value)}",
                                  fix or self._example(schema))]
        return [self._problem(path, one_line(error.message), fix)]

    def _example(self, schema: Mapping[str, Any]) -> str | None:
        examples = schema.get("examples")
        return f"e.g. {_show(examples[0])}" if examples else None

    def _fitting_branch(self, error: ValidationError) -> list[ValidationError] | None:
        """The errors of the one anyOf branch the value was evidently meant for, if any.

        A branch the value does not even have the type (or the constant) of was not meant;
        when exactly one branch remains, its errors are the useful ones.
        """
        branches: dict[Any, list[ValidationError]] = {}
        for sub in error.context:
            branches.setdefault(sub.relative_schema_path[0], []).append(sub)
        meant = [
            errors for errors in branches.values()
            if not any(not e.relative_path and e.validator in ("type", "const", "enum")
                       for e in errors)
        ]
        return meant[0] if len(meant) == 1 else None

    def _missing_or_extra(
        self, error: ValidationError, path: Path_, schema: Mapping[str, Any]
    ) -> list[Problem]:
        value, rule = error.instance, error.validator_value
        if error.validator == "required":
            owner = "a spec" if not path else fmt_path(path)
            out = []
            for key in (k for k in rule if k not in value):
                child = schema.get("properties", {}).get(key, {})
                title = f" ({child['title']})" if "title" in child else ""
                example = f"e.g. {key}: {child['examples'][0]}" if "examples" in child else None
                out.append(self._problem((*path, key), f"{owner} needs a {key}{title}", example))
            return out
        if error.validator == "dependentRequired":
            return [
                self._problem((*path, key), f"{key} needs {' and '.join(needs)} too", None)
                for key, needs in rule.items()
                if key in value and any(n not in value for n in needs)
            ]
        if isinstance(rule, Mapping) and set(rule) == {"required"}:
            *first, last = rule["required"]
            return [self._problem((*path, last), f"give either {', '.join(first)} or {last}, "
                                  "not both", None)]
        return [self._problem(path, one_line(error.message), None)]

    def _duplicates(self, path: Path_, items: Sequence[Any]) -> list[Problem]:
        seen: dict[Any, int] = {}
        out = []
        for index, item in enumerate(items):
            key = repr(plain(item))
            if key in seen:
                out.append(self._problem((*path, index), f"{_show(item)} is listed twice "
                                         f"(first as item {seen[key]})", "keep one"))
            seen.setdefault(key, index)
        return out


def check_value(key: str, value: Any, *, source: str, label: str) -> Any:
    """Check one top-level value against its schema (``--mode``, ``--server`` overrides)."""
    root = schema()
    sub = {"type": "object", "properties": {key: root["properties"][key]},
           "$defs": root["$defs"]}
    problems = Translator({key: value}, sub).problems(validator(sub))
    if problems:
        raise SpecError(problems[0].message, source=source, key=label)
    return value
