"""Load and validate a dataset spec (YAML) into a frozen :class:`Spec`.

A bad spec must fail before anything is written, with one message that says where (file, line,
key path), what is wrong and how to fix it, e.g.
``spec.yaml:7 images.terms.map_type: unknown operator 'equals'; use one of: ...``.
So the YAML is loaded with a loader that remembers the line of every key, value and list item,
and every key and value is checked here; the filter operators are checked by compiling them
with :mod:`nv_datalad.filters`, so the validator and the evaluator cannot disagree.

Defaults are nilearn's (``max_images: 100``, its basic collection and image terms) so a spec
selects what ``fetch_neurovault`` would. The packaged JSON Schema (``spec.schema.json``)
describes the same language for editors; a test keeps the two from drifting.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn
from urllib.parse import urlsplit

import yaml

from nv_datalad.errors import SpecError
from nv_datalad.spec.filters import (
    BASIC_COLLECTION_TERMS,
    BASIC_IMAGE_TERMS,
    FilterError,
    Predicate,
    compile_terms,
    compile_where,
)

log = logging.getLogger(__name__)

DEFAULT_SERVER = "https://neurovault.org"
EMBEDDED = "embedded"
DEFAULT_MAX_IMAGES = 100
NEUROSYNTH_DECODE_URL = "https://neurosynth.org/api/decode/"
MODES = ("download_new", "overwrite", "offline")
CONTENTS = ("download", "register")
INTERPOLATIONS = ("continuous", "linear", "nearest")

TOP_KEYS = (
    "name",
    "description",
    "server",
    "max_images",
    "mode",
    "collections",
    "images",
    "content",
    "keep_content",
    "resample",
    "neurosynth",
    "archive",
)
COLLECTION_KEYS = ("ids", "terms")
IMAGE_KEYS = ("ids", "use_default_terms", "terms", "where")
RESAMPLE_KEYS = ("voxel_size", "interpolation", "target_affine", "target_shape")
NEUROSYNTH_KEYS = ("words", "vectorize", "url")

# The name becomes the default dataset directory and appears in README and citation, so it is
# one safe path component: no separators, no leading dot or dash.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

Path_ = tuple[str | int, ...]
_SCHEMA_FILE = Path(__file__).with_name("schema.json")


# --- YAML with line numbers -------------------------------------------------------------------


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


def _load_yaml(text: str, source: str) -> Any:
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
            f"not valid YAML: {_one_line(problem)}",
            source=source,
            line=mark.line + 1 if mark else None,
        ) from None
    except yaml.YAMLError as err:
        raise SpecError(f"not valid YAML: {_one_line(str(err))}", source=source) from None


def _plain(value: Any) -> Any:
    """LineDict/LineList → dict/list, recursively (for ``Spec.raw`` and the filters)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _one_line(text: str) -> str:
    return " ".join(text.split())


# --- the result -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResampleSpec:
    """Resampling of every image to one grid, as nilearn's ``resample=True`` (3 mm by default)."""

    voxel_size: float = 3.0
    interpolation: str = "continuous"
    target_affine: tuple[tuple[float, ...], ...] | None = None
    target_shape: tuple[int, int, int] | None = None


@dataclass(frozen=True)
class NeurosynthSpec:
    """Neurosynth words per image; ``url`` None means the server's natural decoder."""

    words: bool = False
    vectorize: bool = True
    url: str | None = None

    def resolve_url(self, server_url: str) -> str:
        """The decoder to ask: the real Neurosynth for neurovault.org, else the server's own
        ``/api/decode/`` (the emulator serves one) so tests never leave the machine."""
        if self.url is not None:
            return self.url
        if server_url.rstrip("/") == DEFAULT_SERVER:
            return NEUROSYNTH_DECODE_URL
        return server_url.rstrip("/") + "/api/decode/"


@dataclass(frozen=True)
class Spec:
    """A validated spec with nilearn's defaults filled in.

    ``collection_terms`` / ``image_terms`` are the effective terms (defaults merged,
    ``collection_id`` moved to the collection side as ``id``); ``raw`` is the document as the
    user wrote it, as plain data, with command-line overrides applied.
    """

    name: str
    description: str
    server: str
    max_images: int | None
    mode: str
    collection_ids: tuple[int, ...]
    image_ids: tuple[int, ...]
    collection_terms: Mapping[str, Any]
    image_terms: Mapping[str, Any]
    where: Mapping[str, Any] | None
    content: str
    keep_content: bool
    resample: ResampleSpec | None
    neurosynth: NeurosynthSpec
    archive: str | None
    source: str
    raw: Mapping[str, Any] = field(repr=False)

    @property
    def explicit(self) -> bool:
        """True on the ``fetch_neurovault_ids`` path: the spec lists collection or image ids."""
        return bool(self.collection_ids or self.image_ids)

    def collection_predicate(self) -> Predicate:
        """Which collection records to keep (on the explicit path: only filters the user wrote)."""
        return compile_terms(self.collection_terms)

    def image_predicate(self) -> Predicate:
        """Which image records to keep: the image terms AND the ``where`` tree.

        On the explicit path this is applied to the listed images too; restricting to the
        listed ids is the selection's job.
        """
        terms = compile_terms(self.image_terms)
        if self.where is None:
            return terms
        return _Both(terms, compile_where(self.where))

    def with_overrides(self, *, mode: str | None = None, server: str | None = None) -> Spec:
        """The same spec with command-line ``--mode`` / ``--server`` applied (and validated)."""
        raw = dict(self.raw)
        changes: dict[str, Any] = {}
        if mode is not None:
            changes["mode"] = raw["mode"] = _check_choice(
                mode, MODES, "mode", source="command line", key="--mode"
            )
        if server is not None:
            changes["server"] = raw["server"] = _check_server(
                server, source="command line", key="--server"
            )
        if not changes:
            return self
        return dataclasses.replace(self, raw=MappingProxyType(raw), **changes)


@dataclass(frozen=True)
class _Both:
    """Two predicates that must both hold (a class, so it pickles like the filters do)."""

    first: Predicate
    second: Predicate

    def __call__(self, record: Mapping[str, Any]) -> bool:
        return self.first(record) and self.second(record)


# --- validation helpers -----------------------------------------------------------------------


def _fmt_path(path: Path_) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _check_choice(value: Any, choices: Sequence[str], what: str, *, source: str, key: str) -> str:
    if not isinstance(value, str) or value not in choices:
        hint = _suggest(value, choices)
        raise SpecError(
            f"{what} must be one of: {', '.join(choices)}; got {value!r}{hint}",
            source=source,
            key=key,
        )
    return value


def _suggest(value: Any, choices: Sequence[str]) -> str:
    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _http_url_problem(value: Any) -> str | None:
    """Why ``value`` is not an absolute http(s) URL, or None when it is one."""
    if not isinstance(value, str):
        return f"must be an http(s) URL, got {value!r}"
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


def _check_server(value: Any, *, source: str, key: str) -> str:
    if value == EMBEDDED:
        return EMBEDDED
    problem = _http_url_problem(value)
    if problem:
        raise SpecError(
            f"{problem}; use https://neurovault.org, another NeuroVault's URL or '{EMBEDDED}'",
            source=source,
            key=key,
        )
    return value.rstrip("/")


class _Validator:
    """Walks the loaded document; every failure names the key path and its YAML line."""

    def __init__(self, root: LineDict, source: str):
        self.root = root
        self.source = source

    def line(self, path: Path_, at_key: bool = False) -> int:
        node: Any = self.root
        line = self.root.line
        for index, part in enumerate(path):
            last = index == len(path) - 1
            if isinstance(node, LineDict) and part in node:
                line = node.key_lines[part] if (last and at_key) else node.value_lines[part]
                node = node[part]
            elif isinstance(node, LineList) and isinstance(part, int) and part < len(node):
                line = node.item_lines[part]
                node = node[part]
            else:
                break
        return line

    def fail(
        self, message: str, path: Path_, *, at_key: bool = False, locate: Path_ | None = None
    ) -> NoReturn:
        raise SpecError(
            _one_line(message),
            source=self.source,
            line=self.line(path if locate is None else locate, at_key=at_key),
            key=_fmt_path(path),
        )

    # generic shapes

    def mapping(self, value: Any, path: Path_, allowed: Sequence[str]) -> LineDict:
        if not isinstance(value, LineDict):
            self.fail(
                f"must be a mapping with keys among: {', '.join(allowed)}; got {value!r}", path
            )
        for key in value:
            if key not in allowed:
                hint = _suggest(key, allowed)
                self.fail(
                    f"unknown key {key!r}{hint}; allowed here: {', '.join(allowed)}",
                    (*path, key),
                    at_key=True,
                )
        return value

    def boolean(self, parent: LineDict, key: str, path: Path_, default: bool) -> bool:
        if key not in parent:
            return default
        value = parent[key]
        if not isinstance(value, bool):
            self.fail(f"must be true or false; got {value!r}", (*path, key))
        return value

    def choice(self, parent: LineDict, key: str, path: Path_, choices: Sequence[str]) -> str:
        value = parent.get(key, choices[0])
        if not isinstance(value, str) or value not in choices:
            self.fail(
                f"must be one of: {', '.join(choices)}; got {value!r}{_suggest(value, choices)}",
                (*path, key),
            )
        return value

    def ids(self, parent: LineDict, path: Path_, what: str) -> tuple[int, ...]:
        value = parent.get("ids")
        where = (*path, "ids")
        if value is None:
            return ()
        if not isinstance(value, LineList):
            self.fail(f"must be a list of {what} ids, e.g. [35, 1952]; got {value!r}", where)
        seen: dict[int, int] = {}
        for index, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, int) or item < 0:
                self.fail(f"{what} ids are non-negative integers; got {item!r}", (*where, index))
            if item in seen:
                self.fail(
                    f"{what} id {item} is listed twice (first as item {seen[item]}); keep one",
                    (*where, index),
                )
            seen[item] = index
        return tuple(value)

    def terms(self, parent: LineDict, path: Path_) -> dict[str, Any] | None:
        if "terms" not in parent:
            return None
        value = parent["terms"]
        where = (*path, "terms")
        if value is None:
            return {}
        if not isinstance(value, LineDict):
            self.fail(f"must be a mapping of field: condition; got {value!r}", where)
        try:
            compile_terms(value)
        except FilterError as err:
            self.filter_failure(err, where)
        return _plain(value)

    def filter_failure(self, err: FilterError, base: Path_) -> NoReturn:
        at_key = err.locate != err.path
        self.fail(err.message, (*base, *err.path), at_key=at_key, locate=(*base, *err.locate))


# --- sections ---------------------------------------------------------------------------------


def _check_name(v: _Validator, doc: LineDict) -> str:
    if "name" not in doc:
        v.fail("a spec needs a name (the dataset name), e.g. name: motor-zmaps", ("name",))
    name = doc["name"]
    if not isinstance(name, str) or not _NAME.match(name) or name.endswith("."):
        v.fail(
            f"{name!r} is not a usable dataset name: use up to 100 letters, digits, '.', '_' "
            "or '-', starting with a letter or digit (it becomes the dataset directory)",
            ("name",),
        )
    return name


def _check_max_images(v: _Validator, doc: LineDict) -> int | None:
    if "max_images" not in doc:
        return DEFAULT_MAX_IMAGES
    value = doc["max_images"]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        v.fail(f"must be a non-negative integer or null (no limit); got {value!r}", ("max_images",))
    return value


def _check_text(v: _Validator, doc: LineDict, key: str, default: str | None) -> str | None:
    if key not in doc or doc[key] is None:
        return default
    value = doc[key]
    if not isinstance(value, str):
        v.fail(f"must be text; got {value!r}", (key,))
    return value


def _check_archive(v: _Validator, doc: LineDict) -> str | None:
    value = _check_text(v, doc, "archive", None)
    if value is not None and not value.strip():
        v.fail("must name a sibling or special remote, or be null", ("archive",))
    return value


def _positive_number(v: _Validator, value: Any, path: Path_, what: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        v.fail(f"{what} must be a positive number (millimetres); got {value!r}", path)
    return float(value)


def _check_resample(v: _Validator, doc: LineDict) -> ResampleSpec | None:
    value = doc.get("resample")
    if value is None or value is False:
        return None
    if value is True:
        return ResampleSpec()
    path: Path_ = ("resample",)
    section = v.mapping(value, path, RESAMPLE_KEYS)
    voxel = 3.0
    if "voxel_size" in section:
        voxel = _positive_number(v, section["voxel_size"], (*path, "voxel_size"), "voxel_size")
    interpolation = v.choice(section, "interpolation", path, INTERPOLATIONS)
    affine = None
    if "target_affine" in section:
        if "voxel_size" in section:
            v.fail("give either voxel_size or target_affine, not both", (*path, "target_affine"))
        affine = _check_affine(v, section["target_affine"], (*path, "target_affine"))
    shape = None
    if "target_shape" in section:
        if affine is None:
            v.fail(
                "target_shape needs target_affine (the grid's origin and voxel size)",
                (*path, "target_shape"),
            )
        shape = _check_shape(v, section["target_shape"], (*path, "target_shape"))
    return ResampleSpec(voxel, interpolation, affine, shape)


def _check_affine(v: _Validator, value: Any, path: Path_) -> tuple[tuple[float, ...], ...]:
    def number(x: Any) -> bool:
        return not isinstance(x, bool) and isinstance(x, int | float) and math.isfinite(x)

    if not (
        isinstance(value, LineList)
        and len(value) == 4
        and all(isinstance(row, LineList) and len(row) == 4 for row in value)
        and all(number(x) for row in value for x in row)
    ):
        v.fail(f"must be a 4×4 matrix of numbers (4 rows of 4); got {_plain(value)!r}", path)
    if [float(x) for x in value[3]] != [0.0, 0.0, 0.0, 1.0]:
        v.fail("the last row of an affine is [0, 0, 0, 1]", (*path, 3))
    return tuple(tuple(float(x) for x in row) for row in value)


def _check_shape(v: _Validator, value: Any, path: Path_) -> tuple[int, int, int]:
    if not (
        isinstance(value, LineList)
        and len(value) == 3
        and all(not isinstance(x, bool) and isinstance(x, int) and x > 0 for x in value)
    ):
        v.fail(f"must be 3 positive integers, e.g. [61, 73, 61]; got {_plain(value)!r}", path)
    return (value[0], value[1], value[2])


def _check_neurosynth(v: _Validator, doc: LineDict) -> NeurosynthSpec:
    value = doc.get("neurosynth")
    if value is None:
        return NeurosynthSpec()
    path: Path_ = ("neurosynth",)
    section = v.mapping(value, path, NEUROSYNTH_KEYS)
    words = v.boolean(section, "words", path, False)
    vectorize = v.boolean(section, "vectorize", path, True)
    url = section.get("url")
    if url is not None:
        problem = _http_url_problem(url)
        if problem:
            v.fail(f"the Neurosynth decoder URL {problem}", (*path, "url"))
    return NeurosynthSpec(words, vectorize, url)


def _check_server_key(v: _Validator, doc: LineDict) -> str:
    if "server" not in doc:
        return DEFAULT_SERVER
    try:
        return _check_server(doc["server"], source=v.source, key="server")
    except SpecError as err:
        v.fail(err.problem, ("server",))


def _move_collection_id(
    v: _Validator, image_terms: dict[str, Any], collection_terms: dict[str, Any]
) -> None:
    """nilearn's ``_move_col_id``: ``collection_id`` in the image terms is a collection filter.

    Moving it lets the walk ask for that collection only. Contradictory ids (nilearn warns and
    keeps both, so nothing can match) are an error here.
    """
    if "collection_id" not in image_terms:
        return
    wanted = image_terms["collection_id"]
    if "id" in collection_terms and collection_terms["id"] != wanted:
        v.fail(
            f"collection_id {wanted!r} contradicts collections.terms.id "
            f"{collection_terms['id']!r}; keep one",
            ("images", "terms", "collection_id"),
        )
    collection_terms["id"] = image_terms.pop("collection_id")


def _merge_defaults(defaults: Mapping[str, Any], user: Mapping[str, Any]) -> dict[str, Any]:
    merged = {key: _plain(value) for key, value in defaults.items()}
    merged.update(user)
    return merged


def _validate(doc: Any, source: str) -> Spec:
    if doc is None:
        raise SpecError(
            "the spec is empty; it needs at least name: <dataset name>", source=source, line=1
        )
    if not isinstance(doc, LineDict):
        line = getattr(doc, "line", 1)
        raise SpecError(
            f"a spec is a mapping (name:, images:, ...); got {type(_plain(doc)).__name__}",
            source=source,
            line=line,
        )
    v = _Validator(doc, source)
    v.mapping(doc, (), TOP_KEYS)
    name = _check_name(v, doc)
    description = _check_text(v, doc, "description", "") or ""
    server = _check_server_key(v, doc)
    max_images = _check_max_images(v, doc)
    mode = v.choice(doc, "mode", (), MODES)
    content = v.choice(doc, "content", (), CONTENTS)
    keep_content = v.boolean(doc, "keep_content", (), True)

    collections = doc.get("collections")
    collections = LineDict() if collections is None else collections
    v.mapping(collections, ("collections",), COLLECTION_KEYS)
    images = doc.get("images")
    images = LineDict() if images is None else images
    v.mapping(images, ("images",), IMAGE_KEYS)

    collection_ids = v.ids(collections, ("collections",), "collection")
    image_ids = v.ids(images, ("images",), "image")
    user_collection_terms = v.terms(collections, ("collections",))
    user_image_terms = v.terms(images, ("images",)) or {}
    use_defaults = v.boolean(images, "use_default_terms", ("images",), True)
    where = None
    if images.get("where") is not None:
        try:
            compile_where(images["where"])
        except FilterError as err:
            v.filter_failure(err, ("images", "where"))
        where = _plain(images["where"])

    explicit = bool(collection_ids or image_ids)
    if explicit:
        # fetch_neurovault_ids: no default terms, no limit; the user's own filters still apply.
        if "max_images" in doc:
            log.info("%s: max_images is ignored when ids are listed", source)
        max_images = None
        collection_terms = user_collection_terms or {}
        image_terms = dict(user_image_terms)
    else:
        collection_terms = (
            _merge_defaults(BASIC_COLLECTION_TERMS, {})
            if user_collection_terms is None
            else user_collection_terms
        )
        image_terms = (
            _merge_defaults(BASIC_IMAGE_TERMS, user_image_terms)
            if use_defaults
            else dict(user_image_terms)
        )
    _move_collection_id(v, image_terms, collection_terms)

    return Spec(
        name=name,
        description=description,
        server=server,
        max_images=max_images,
        mode=mode,
        collection_ids=collection_ids,
        image_ids=image_ids,
        collection_terms=MappingProxyType(collection_terms),
        image_terms=MappingProxyType(image_terms),
        where=where,
        content=content,
        keep_content=keep_content,
        resample=_check_resample(v, doc),
        neurosynth=_check_neurosynth(v, doc),
        archive=_check_archive(v, doc),
        source=source,
        raw=MappingProxyType(_plain(doc)),
    )


# --- public API -------------------------------------------------------------------------------


def parse_spec(text: str, source: str = "<string>") -> Spec:
    """Validate spec text; raise :class:`SpecError` (file:line key.path: problem) if bad."""
    return _validate(_load_yaml(text, source), source)


def load_spec(path: str | Path) -> Spec:
    """Read and validate a spec file; an unreadable file is a SpecError too (exit status 2)."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise SpecError(f"cannot read the spec: {_one_line(reason)}", source=source) from None
    return parse_spec(text, source)


def spec_to_yaml(spec: Spec) -> str:
    """Canonical YAML of ``spec.raw``: top-level keys in the documented order, the rest as
    written. Loading it again gives an equal spec."""
    raw = copy.deepcopy(_plain(spec.raw))
    ordered = {key: raw[key] for key in TOP_KEYS if key in raw}
    return yaml.safe_dump(ordered, sort_keys=False, allow_unicode=True, default_flow_style=False)


def schema() -> dict[str, Any]:
    """The packaged JSON Schema (draft 2020-12) of the spec language, for editors and tests."""
    # Beside this module (package data), read by path: works for installs and checkouts alike.
    return json.loads(_SCHEMA_FILE.read_text(encoding="utf-8"))
