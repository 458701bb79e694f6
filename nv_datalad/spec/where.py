"""The ``--where`` language: ``FIELD=VALUE`` words → the spec's filter terms, and back to git-annex.

The command line speaks in words (``map_type='Z map'``, ``number_of_subjects>=20``) that
:func:`parse_where` turns into the spec's filter terms, so ``nv-datalad get``, ``load(where=...)``
and the spec share one filter language (:mod:`nv_datalad.spec.filters`).
:func:`annex_equivalent` says the same selection as a plain ``git annex get --metadata`` line
for people who do not want this tool installed on every machine. Pure: no dataset access.

Where-expressions filter image records only; a field that exists only on collection records
(``DOI``) would be null on every image and silently match everything, so it is refused.
"""

from __future__ import annotations

import logging
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import yaml

from nv_datalad.errors import SpecError
from nv_datalad.records import ANNEX_METADATA_FIELDS
from nv_datalad.spec import filters

log = logging.getLogger(__name__)

#: Keys allowed in a ``field:{...}`` condition: the spec's operators and ``pattern``'s flags.
OPERATORS = frozenset({*filters.OPERATORS, "flags"})
_COMBINATORS = frozenset(filters.COMBINATORS)

#: Fields of NeuroVault's collection record that image records do not have (NEUROVAULT_API.md).
COLLECTION_ONLY_FIELDS = frozenset({
    "DOI", "preprint_DOI", "publication_status", "authors", "paper_url", "journal_name",
    "full_dataset_url", "download_url", "owner", "owner_name", "contributors",
    "number_of_images", "private", "doi_add_date", "communities",
})

#: ``FIELD OP VALUE``; two-character operators first so ``>=`` is not read as ``>``.
_EXPR = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*(>=|<=|!=|~=|=|>|<|:)\s*(.*?)\s*$", re.DOTALL)
_SYMBOLS = {">": "gt", ">=": "ge", "<": "lt", "<=": "le", "~=": "pattern"}
_INT = re.compile(r"^[-+]?\d+$")
_FLOAT = re.compile(r"^[-+]?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?$")
_NULL_WORDS = frozenset({"null", "none", "~"})
_GLOB_CHARS = re.compile(r"[*?\[\]]")

Where = Sequence[str] | Mapping[str, Any] | str | None


def _scalar(text: str) -> Any:
    """A command-line value as a YAML-like scalar: quoted text stays text; otherwise ints,
    floats, true/false and null are recognised (not YAML 1.1's yes/no or dates, which would
    turn a map name like ``no`` or a date string into something else)."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    low = text.lower()
    if low in _NULL_WORDS:
        return None
    if low in ("true", "false"):
        return low == "true"
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    return text


def _operator_mapping(field: str, text: str, expr: str) -> Any:
    """``field:{in: [a, b]}`` — the right-hand side is YAML/JSON: a scalar or one operator."""
    try:
        value = yaml.safe_load(text) if text else None
    except yaml.YAMLError as err:
        raise SpecError(f"cannot parse {expr!r}: {err.__class__.__name__} in the YAML value",
                        key=field) from err
    if value is None:
        raise SpecError(f"{expr!r}: missing condition after ':'; e.g. {field}:{{in: [a, b]}}",
                        key=field)
    if isinstance(value, Mapping):
        unknown = sorted(str(k) for k in value if k not in OPERATORS)
        if unknown or not value:
            raise SpecError(
                f"{expr!r}: unknown operator {', '.join(unknown) or '(none)'}; "
                f"use one of {', '.join(sorted(OPERATORS))}", key=field)
        return dict(value)
    if isinstance(value, list):
        raise SpecError(f"{expr!r}: a list needs an operator, e.g. {field}:{{in: {value}}}",
                        key=field)
    return value


def parse_where(expr: str) -> tuple[str, Any]:
    """One ``--where`` word -> ``(field, condition)`` in the spec's filter language.

    ``map_type='Z map'`` / ``map_type=Z map`` -> ``("map_type", "Z map")`` (equality);
    ``number_of_subjects>=20`` -> ``{"ge": 20}``; ``>``, ``<``, ``<=``, ``!=``;
    ``name~=(?i).*motor`` -> ``{"pattern": ...}``; ``field=null`` -> ``{"is_null": True}``,
    ``field!=null`` -> ``{"not_null": True}``; ``field:{in: [a, b]}`` -> ``{"in": ["a", "b"]}``.
    """
    if not isinstance(expr, str):
        raise SpecError(f"--where expects text like FIELD=VALUE, got {expr!r}")
    m = _EXPR.match(expr)
    if not m:
        raise SpecError(
            f"cannot parse {expr!r}: expected FIELD=VALUE, FIELD!=VALUE, FIELD>=NUMBER, "
            "FIELD~=REGEX or FIELD:{operator: value}, e.g. map_type='Z map'")
    field, op, text = m.group(1), m.group(2), m.group(3)
    if op == ":":
        return field, _operator_mapping(field, text, expr)
    if text == "":
        raise SpecError(f"{expr!r}: empty value; write {field}=null to select missing values",
                        key=field)
    value = _scalar(text)
    if op == "=":
        return field, ({"is_null": True} if value is None else value)
    if op == "!=":
        return field, ({"not_null": True} if value is None else {"not_equal": value})
    if value is None:
        raise SpecError(f"{expr!r}: null can only be compared with = or !=", key=field)
    if op == "~=":
        pattern = text[1:-1] if isinstance(value, str) and text[0] in "'\"" else text
        try:
            re.compile(pattern)
        except re.error as err:
            raise SpecError(f"{expr!r}: invalid regular expression: {err}", key=field) from err
        return field, {"pattern": pattern}
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise SpecError(f"{expr!r}: {op} needs a number or a text bound", key=field)
    return field, {_SYMBOLS[op]: value}


def _as_items(where: Where) -> list[str] | Mapping[str, Any]:
    if where is None:
        return []
    if isinstance(where, str):
        return [where]
    if isinstance(where, Mapping):
        return where
    if isinstance(where, Sequence):
        for item in where:
            if not isinstance(item, str):
                raise SpecError(f"--where items must be text like FIELD=VALUE, got {item!r}")
        return list(where)
    raise SpecError(f"where must be a mapping of terms or a list of FIELD=VALUE, got {where!r}")


def _refuse_collection_fields(tree: Any) -> None:
    """Walk a where tree (all/any/not over fields) and refuse collection-only field names."""
    if isinstance(tree, Sequence) and not isinstance(tree, str):
        for branch in tree:
            _refuse_collection_fields(branch)
        return
    if not isinstance(tree, Mapping):
        return
    for key, value in tree.items():
        if key in _COMBINATORS:
            _refuse_collection_fields(value)
        elif key in COLLECTION_ONLY_FIELDS:
            raise SpecError(
                f"{key} is a collection field; nv-datalad get --where filters image fields "
                "(use the spec's collections.terms to select collections)")


def where_tree(where: Where) -> Mapping[str, Any] | None:
    """The spec-language form of ``where``: a terms mapping, or ``{"all": [...]}`` when the
    same field is constrained twice (``n>=10`` and ``n<=40``); None means "everything"."""
    items = _as_items(where)
    if isinstance(items, Mapping):
        tree = dict(items) if items else None
    elif not items:
        tree = None
    else:
        pairs = [parse_where(expr) for expr in items]
        fields = [f for f, _ in pairs]
        tree = dict(pairs) if len(set(fields)) == len(fields) else {
            "all": [{f: v} for f, v in pairs]}
    _refuse_collection_fields(tree)
    return tree


def compile_filter(where: Where) -> Callable[[Mapping[str, Any]], bool]:
    """A predicate over (null-normalised) image records, built by ``nv_datalad.spec.filters``."""
    tree = where_tree(where)
    try:
        return filters.compile_where(tree)
    except filters.FilterError as err:
        key = ".".join(str(p) for p in err.path)
        raise SpecError(f"where: {err.message}", key=key) from err


def _annex_condition(field: str, cond: Any) -> list[str] | str:
    """``git annex`` matching options for one condition, or the reason it cannot be said."""
    if field not in ANNEX_METADATA_FIELDS:
        return f"{field} is not recorded in the git-annex metadata"

    def eq(value: Any) -> list[str] | str:
        if isinstance(value, float) or value is None or \
                not isinstance(value, str | int | bool):
            return f"{field}={value!r} cannot be matched exactly by a git-annex glob"
        text = str(value)
        if _GLOB_CHARS.search(text):
            return f"{field}={text!r} contains glob characters"
        return ["--metadata", f"{field}={text}"]

    if not isinstance(cond, Mapping):
        return eq(cond)
    if len(cond) != 1:
        return f"{field}: {dict(cond)} combines operators"
    (op, value), = cond.items()
    if op in ("not_null", "is_null"):
        present = bool(value) == (op == "not_null")
        return ["--metadata", f"{field}=*"] if present else ["--not", "--metadata", f"{field}=*"]
    if op == "not_equal":
        inner = eq(value)
        return inner if isinstance(inner, str) else ["--not", *inner]
    if op in ("gt", "ge", "lt", "le"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{field} {op} {value!r}: git-annex compares numbers only"
        sym = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}[op]
        return ["--metadata", f"{field}{sym}{value}"]
    if op in ("in", "not_in") and isinstance(value, Sequence) and not isinstance(value, str) \
            and value:
        parts: list[str] = []
        for i, v in enumerate(value):
            one = eq(v)
            if isinstance(one, str):
                return one
            parts += (["--or"] if i else []) + one
        group = ["-(", *parts, "-)"]
        return group if op == "in" else ["--not", *group]
    return f"{field}: operator {op} has no git-annex equivalent"


def explain_annex_equivalent(where: Where) -> tuple[str | None, str]:
    """(``git annex get ...`` line or None, note). Run the line in the dataset's root.

    git-annex matches metadata globs case-insensitively, and only fields listed in
    ``records.ANNEX_METADATA_FIELDS`` are recorded, so some selections have no equivalent.
    """
    tree = where_tree(where)
    if tree is None:
        return "git annex get .", "no condition: every annexed file"
    if any(k in _COMBINATORS for k in tree) and set(tree) != {"all"}:
        return None, "any/not trees have no git annex --metadata equivalent"
    conditions = tree["all"] if set(tree) == {"all"} else [{f: v} for f, v in tree.items()]
    args: list[str] = []
    for cond in conditions:
        if not isinstance(cond, Mapping) or len(cond) != 1 or next(iter(cond)) in _COMBINATORS:
            return None, "nested conditions have no git annex --metadata equivalent"
        (field, value), = cond.items()
        one = _annex_condition(field, value)
        if isinstance(one, str):
            return None, one
        args += one
    line = "git annex get " + " ".join(shlex.quote(a) for a in args)
    return line, "run it in the dataset root; git-annex matches values case-insensitively"


def annex_equivalent(where: Where) -> str | None:
    """The equivalent ``git annex get --metadata ...`` line, or None when there is none."""
    line, note = explain_annex_equivalent(where)
    if line is None:
        log.info("no git-annex equivalent: %s", note)
    return line
