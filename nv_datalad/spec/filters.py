"""The filter vocabulary of a spec: operators, their composition, and compiled predicates.

A researcher who knows ``nilearn.datasets.fetch_neurovault`` should be able to write the same
filters in YAML and get the same selection, so every operator mirrors one of nilearn's helper
classes (``NotNull``, ``IsIn``, ``Pattern``, ...) with the same verdict on the same value. The few
places where nilearn answers something no one could want (a missing value compared with a text
bound as the string ``"None"``, ``3.7 > 3`` being false, a crash on an odd value) are listed, with
examples, in ``docs/filters.md``; the property tests check the rest against nilearn itself.

Everything here is pure: compiling validates a condition once and returns a small function of
a value (or of a record) built from ``functools.partial`` over module-level functions, so
predicates pickle and can cross process boundaries. Records reach these predicates with null
placeholders ("", "None", "N/A", ...) already turned into ``None`` by the client.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Container, Mapping, Sequence
from functools import partial
from types import MappingProxyType
from typing import Any

Predicate = Callable[[Mapping[str, Any]], bool]
ValueCheck = Callable[[Any], bool]
PathPart = str | int

#: Operator names, each one key of a condition mapping. ``flags`` modifies ``pattern`` and the
#: combinators ``all`` / ``any`` / ``not`` compose conditions; neither is an operator.
OPERATORS: tuple[str, ...] = (
    "not_null",
    "is_null",
    "not_equal",
    "gt",
    "ge",
    "lt",
    "le",
    "in",
    "not_in",
    "contains",
    "not_contains",
    "pattern",
)
COMBINATORS: tuple[str, ...] = ("all", "any", "not")
PATTERN_FLAGS: Mapping[str, re.RegexFlag] = MappingProxyType(
    {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE, "a": re.ASCII}
)

#: nilearn's ``basic_collection_terms()``: skip collections without images.
BASIC_COLLECTION_TERMS: Mapping[str, Any] = MappingProxyType(
    {"number_of_images": MappingProxyType({"not_null": True})}
)
#: nilearn's ``basic_image_terms()``: unthresholded statistical maps in MNI space.
BASIC_IMAGE_TERMS: Mapping[str, Any] = MappingProxyType(
    {
        "not_mni": False,
        "is_thresholded": False,
        "map_type": MappingProxyType({"not_in": ("ROI/mask", "anatomical", "parcellation")}),
        "image_type": MappingProxyType({"not_equal": "atlas"}),
    }
)

_SCALAR_TYPES = (str, int, float, bool, type(None))


class FilterError(ValueError):
    """A condition cannot be compiled: unknown operator or unusable operand.

    ``path`` is where the problem sits inside the condition given to the compiler (keys and list
    indexes), so the spec loader can name the key path and find the YAML line; ``locate`` is the
    node whose line to show when it differs from ``path`` (the offending key of an unknown
    operator, which is not itself part of the reported key path).
    """

    def __init__(
        self,
        message: str,
        path: tuple[PathPart, ...] = (),
        locate: tuple[PathPart, ...] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.path = path
        self.locate = path if locate is None else locate


# --- evaluation: module-level functions so compiled predicates pickle ------------------------


def _always(_value: Any) -> bool:
    return True


def _equals(expected: Any, value: Any) -> bool:
    # nilearn's ResultFilter drops a record when ``expected != value`` (same thing for JSON).
    return expected == value


def _not_null(value: Any) -> bool:
    return bool(value)


def _is_null(value: Any) -> bool:
    return not bool(value)


def _not_equal(negated: Any, value: Any) -> bool:
    return negated != value


_NO_NUMBER = object()


def _as_comparable(value: Any, bound: Any) -> Any:
    """Cast ``value`` to the bound's kind as nilearn does, minus its accidents.

    Returns ``_NO_NUMBER`` when the value cannot be compared: that value fails the comparison.
    Differences from nilearn (documented): null, booleans and containers never compare with a
    text bound (nilearn compares ``str(None) == "None"``); with an integer bound a decimal value
    is compared as it is instead of being truncated (nilearn: ``int(3.7) == 3``) and a decimal
    string is read as a number instead of being refused; nothing raises.
    """
    if isinstance(bound, str):
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        return _NO_NUMBER
    if isinstance(bound, float):
        if isinstance(value, int | float):
            try:
                return float(value)
            except OverflowError:  # an int too large for a float compares exactly
                return value
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                return _NO_NUMBER
        return _NO_NUMBER
    # integer bound
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        for cast in (int, float):
            try:
                return cast(value)
            except ValueError:
                continue
    return _NO_NUMBER


def _order(compare: Callable[[Any, Any], bool], bound: Any, value: Any) -> bool:
    comparable = _as_comparable(value, bound)
    if comparable is _NO_NUMBER:
        return False
    return bool(compare(comparable, bound))


def _is_in(accepted: tuple[Any, ...], value: Any) -> bool:
    return value in accepted


def _not_in(rejected: tuple[Any, ...], value: Any) -> bool:
    return value not in rejected


def _holds(item: Any, value: Any) -> bool:
    """``item in value``, where an item that cannot be in the value (3 in "abc") is not in it."""
    try:
        return item in value
    except TypeError:
        return False


def _contains(items: tuple[Any, ...], value: Any) -> bool:
    return isinstance(value, Container) and all(_holds(item, value) for item in items)


def _not_contains(items: tuple[Any, ...], value: Any) -> bool:
    return isinstance(value, Container) and not any(_holds(item, value) for item in items)


def _matches(regex: re.Pattern[str], value: Any) -> bool:
    return isinstance(value, str) and regex.match(value) is not None


def _all_of(checks: tuple[ValueCheck, ...], value: Any) -> bool:
    return all(check(value) for check in checks)


def _any_of(checks: tuple[ValueCheck, ...], value: Any) -> bool:
    return any(check(value) for check in checks)


def _negation(check: Callable[[Any], bool], value: Any) -> bool:
    return not check(value)


def _field_check(field: str, check: ValueCheck, record: Mapping[str, Any]) -> bool:
    # A missing key compares as null, as in nilearn (``candidate.get(key)``).
    return check(record.get(field))


# --- compilation ------------------------------------------------------------------------------

_ORDER_COMPARISONS: Mapping[str, Callable[[Any, Any], bool]] = MappingProxyType(
    {"gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le}
)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, _SCALAR_TYPES)


def _choices() -> str:
    return ", ".join(OPERATORS + COMBINATORS)


def _scalar_list(name: str, operand: Any, path: tuple[PathPart, ...]) -> tuple[Any, ...]:
    if not isinstance(operand, Sequence) or isinstance(operand, str):
        raise FilterError(
            f"operator '{name}' needs a list of values, e.g. {{{name}: [a, b]}}; got {operand!r}",
            path,
        )
    for index, item in enumerate(operand):
        if not _is_scalar(item):
            raise FilterError(
                f"operator '{name}' takes plain values (text, numbers, true/false, null); "
                f"got {item!r}",
                (*path, index),
            )
    return tuple(operand)


def _compile_operator(
    name: str, operand: Any, flags: Any, path: tuple[PathPart, ...]
) -> ValueCheck:
    if name in ("not_null", "is_null"):
        if operand is not True:
            other = "is_null" if name == "not_null" else "not_null"
            raise FilterError(
                f"operator '{name}' takes only true; for the opposite use {{{other}: true}}",
                path,
            )
        return _not_null if name == "not_null" else _is_null
    if name == "not_equal":
        if not _is_scalar(operand):
            raise FilterError(
                f"operator 'not_equal' takes one plain value; got {operand!r} "
                "(for several values use not_in)",
                path,
            )
        return partial(_not_equal, operand)
    if name in _ORDER_COMPARISONS:
        if isinstance(operand, bool) or not isinstance(operand, int | float | str):
            raise FilterError(
                f"operator '{name}' needs a number or a text bound (quote dates); got {operand!r}",
                path,
            )
        return partial(_order, _ORDER_COMPARISONS[name], operand)
    if name == "in":
        return partial(_is_in, _scalar_list(name, operand, path))
    if name == "not_in":
        return partial(_not_in, _scalar_list(name, operand, path))
    if name in ("contains", "not_contains"):
        items = (operand,) if _is_scalar(operand) else _scalar_list(name, operand, path)
        return partial(_contains if name == "contains" else _not_contains, items)
    if name == "pattern":
        return partial(_matches, _compile_pattern(operand, flags, path))
    raise AssertionError(f"operator {name!r} has no implementation")  # pragma: no cover


def _compile_pattern(pattern: Any, flags: Any, path: tuple[PathPart, ...]) -> re.Pattern[str]:
    if not isinstance(pattern, str):
        raise FilterError(
            f"operator 'pattern' needs a regular expression text; got {pattern!r}", path
        )
    bits = 0
    if flags is not None:
        flags_path = (*path[:-1], "flags")
        if not isinstance(flags, str) or any(letter not in PATTERN_FLAGS for letter in flags):
            raise FilterError(
                f"operator 'pattern': flags must be letters among {''.join(PATTERN_FLAGS)} "
                f"(e.g. flags: i); got {flags!r}",
                flags_path,
            )
        for letter in flags:
            bits |= PATTERN_FLAGS[letter]
    try:
        return re.compile(pattern, bits)
    except re.error as err:
        raise FilterError(
            f"operator 'pattern': invalid regular expression {pattern!r}: {err}", path
        ) from err


def _compile_at(cond: Any, path: tuple[PathPart, ...]) -> ValueCheck:
    if _is_scalar(cond):
        return partial(_equals, cond)
    if isinstance(cond, Mapping):
        if not cond:
            raise FilterError(f"empty condition; use a value or one of: {_choices()}", path)
        checks: list[ValueCheck] = []
        for key, operand in cond.items():
            if key == "flags":
                if "pattern" not in cond:
                    raise FilterError("'flags' only goes with 'pattern'", (*path, key))
                continue
            if key in COMBINATORS:
                checks.append(_compile_combinator(key, operand, (*path, key)))
            elif key in OPERATORS:
                checks.append(_compile_operator(key, operand, cond.get("flags"), (*path, key)))
            else:
                raise FilterError(
                    f"unknown operator {key!r}; use one of: {_choices()}", path, (*path, key)
                )
        return checks[0] if len(checks) == 1 else partial(_all_of, tuple(checks))
    if isinstance(cond, Sequence):
        raise FilterError(
            f"a list is not a condition; for any of several values write {{in: {list(cond)!r}}}",
            path,
        )
    raise FilterError(f"unsupported condition {cond!r}", path)


def _branches(name: str, operand: Any, path: tuple[PathPart, ...]) -> Sequence[Any]:
    if not isinstance(operand, Sequence) or isinstance(operand, str) or not operand:
        raise FilterError(f"'{name}' needs a non-empty list of conditions; got {operand!r}", path)
    return operand


def _compile_combinator(name: str, operand: Any, path: tuple[PathPart, ...]) -> ValueCheck:
    if name == "not":
        return partial(_negation, _compile_at(operand, path))
    checks = tuple(
        _compile_at(branch, (*path, index))
        for index, branch in enumerate(_branches(name, operand, path))
    )
    return partial(_all_of if name == "all" else _any_of, checks)


def _compile_terms_at(terms: Any, path: tuple[PathPart, ...]) -> tuple[Predicate, ...]:
    if not isinstance(terms, Mapping):
        raise FilterError(f"terms must be a mapping of field: condition; got {terms!r}", path)
    checks = []
    for field, cond in terms.items():
        if not isinstance(field, str) or not field:
            raise FilterError(f"field names must be non-empty text; got {field!r}", (*path, field))
        checks.append(partial(_field_check, field, _compile_at(cond, (*path, field))))
    return tuple(checks)


def _compile_tree(tree: Any, path: tuple[PathPart, ...]) -> Predicate:
    if not isinstance(tree, Mapping) or not tree:
        raise FilterError(
            "a where clause is a non-empty mapping of field: condition, or all/any/not", path
        )
    checks: list[Predicate] = []
    for key, operand in tree.items():
        if key == "not":
            checks.append(partial(_negation, _compile_tree(operand, (*path, key))))
        elif key in ("all", "any"):
            branches = tuple(
                _compile_tree(branch, (*path, key, index))
                for index, branch in enumerate(_branches(key, operand, (*path, key)))
            )
            checks.append(partial(_all_of if key == "all" else _any_of, branches))
        else:
            checks.extend(_compile_terms_at({key: operand}, path))
    return checks[0] if len(checks) == 1 else partial(_all_of, tuple(checks))


def compile_condition(cond: Any) -> Callable[[Any], bool]:
    """Compile one field's condition into a function of that field's value.

    ``cond`` is a plain value (equality, as nilearn's ResultFilter does for plain values), a
    mapping of operators that must all hold, or ``all`` / ``any`` / ``not`` over conditions.
    Raises :class:`FilterError` naming the operator when the condition cannot mean anything.
    """
    return _compile_at(cond, ())


def compile_terms(terms: Mapping[str, Any]) -> Predicate:
    """Compile ``{field: condition}`` into a record predicate; every condition must hold."""
    return partial(_all_of, _compile_terms_at(terms, ()))


def compile_where(tree: Mapping[str, Any] | None) -> Predicate:
    """Compile a cross-field boolean tree (``all`` / ``any`` / ``not`` over ``{field: cond}``).

    ``None`` (no where clause) accepts every record. Inside a tree the keys ``all``, ``any`` and
    ``not`` always compose; every other key is a field name, and several keys must all hold.
    """
    if tree is None:
        return _always
    return _compile_tree(tree, ())
