"""The spec's JSON Schema: the one description of the spec language.

Editors read it (``nv-datalad schema``) and the loader validates every spec with it, so the two
cannot disagree. The packaged ``schema.json`` is a template: the enums, the emulator's keyword
and the defaults come from :mod:`nv_datalad.options` when it is loaded, so a new mode or
interpolation is added in one place. Two checks no schema keyword can say are registered as
code: integers exclude booleans (JSON Schema counts ``1.0`` as an integer, YAML ``true`` is not
one either way), and the ``http-url`` format parses the URL (ports, credentials).
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
from jsonschema.protocols import Validator

from nv_datalad import options

_SCHEMA_FILE = Path(__file__).with_name("schema.json")

#: (JSON pointer as a path, keyword, value) filled into the template.
_FROM_OPTIONS: tuple[tuple[tuple[str | int, ...], str, Any], ...] = (
    (("properties", "server", "anyOf", 0), "const", options.EMBEDDED),
    (("properties", "server"), "default", options.DEFAULT_SERVER),
    (("properties", "max_images"), "default", options.DEFAULT_MAX_IMAGES),
    (("properties", "mode"), "enum", list(options.MODES)),
    (("properties", "mode"), "default", options.MODES[0]),
    (("properties", "content"), "enum", list(options.CONTENTS)),
    (("properties", "content"), "default", options.CONTENTS[0]),
    (("properties", "subdatasets"), "enum", list(options.SUBDATASETS)),
    (("properties", "subdatasets"), "default", options.SUBDATASETS[0]),
    (("$defs", "resample", "properties", "interpolation"), "enum", list(options.INTERPOLATIONS)),
    (("$defs", "resample", "properties", "interpolation"), "default",
     options.DEFAULT_INTERPOLATION),
    (("$defs", "resample", "properties", "voxel_size"), "default", options.DEFAULT_VOXEL_SIZE),
)


@functools.cache
def _document() -> Mapping[str, Any]:
    # Beside this module (package data), read by path: works for installs and checkouts alike.
    document = json.loads(_SCHEMA_FILE.read_text(encoding="utf-8"))
    for pointer, keyword, value in _FROM_OPTIONS:
        node = document
        for part in pointer:
            node = node[part]
        node[keyword] = value
    return document


def schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the spec language, for editors and tests."""
    return copy.deepcopy(dict(_document()))


#: Top-level keys in the documented order (the order ``spec_to_yaml`` writes them).
TOP_KEYS: tuple[str, ...] = tuple(_document()["properties"])


def http_url_problem(value: str) -> str | None:
    """Why ``value`` is not an absolute http(s) URL, or None when it is one."""
    if any(ch.isspace() for ch in value) or not value:
        return f"must be an http(s) URL without spaces, got {value!r}"
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return f"is not a valid URL: {value!r}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"must be an http:// or https:// URL, got {value!r}"
    if parts.username or parts.password:
        return "must not contain credentials"
    return None


def _check_http_url(value: object) -> bool:
    if not isinstance(value, str):
        return True  # the schema's "type" says what is wrong with it
    problem = http_url_problem(value)
    if problem:
        raise ValueError(problem)  # jsonschema keeps it as the error's cause: our message
    return True


def _is_integer(_checker: Any, value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@functools.cache
def _validator_class() -> type[Validator]:
    base = jsonschema.Draft202012Validator
    return jsonschema.validators.extend(
        base, type_checker=base.TYPE_CHECKER.redefine("integer", _is_integer)
    )


@functools.cache
def _format_checker() -> jsonschema.FormatChecker:
    checker = jsonschema.FormatChecker()  # every standard format (``regex`` for pattern)
    checker.checks("http-url", raises=ValueError)(_check_http_url)
    return checker


def conforms(value: object, fmt: str) -> bool:
    """Whether ``value`` passes the named format check (False also for a non-matching type)."""
    return _format_checker().conforms(value, fmt)


def validator(document: Mapping[str, Any] | None = None) -> Validator:
    """A validator for the spec schema (or for ``document``, a schema built from its parts)."""
    cls = _validator_class()
    return cls(_document() if document is None else document, format_checker=_format_checker())
