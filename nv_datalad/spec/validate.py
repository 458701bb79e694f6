"""Spec text → :class:`Spec`, or one SpecError listing every problem with its line.

A bad spec must fail before anything is written, saying where (file, line, key path), what is
wrong and how to fix it, e.g. ``spec.yaml:7 images.terms.map_type: unknown operator 'equals';
use one of: ...``. The JSON Schema decides what is valid; the code here adds only what a schema
cannot say: filter conditions are compiled by :mod:`nv_datalad.spec.filters` (the evaluator
is the judge of its own language, and names the bad operator), an affine's last row is
[0, 0, 0, 1], numbers are finite, and ``collection_id`` does not contradict ``collections``.
Then nilearn's defaults are filled in (``max_images: 100``, its basic collection and image
terms) so a spec selects what ``fetch_neurovault`` would.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from nv_datalad import options
from nv_datalad.errors import SpecError
from nv_datalad.spec.filters import (
    BASIC_COLLECTION_TERMS,
    BASIC_IMAGE_TERMS,
    FilterError,
    compile_terms,
    compile_where,
)
from nv_datalad.spec.model import NeurosynthSpec, ResampleSpec, Spec, normalise_server
from nv_datalad.spec.problems import Problem, Translator, spec_error
from nv_datalad.spec.schema_doc import schema, validator
from nv_datalad.spec.yamlload import LineDict, Path_, line_of, load_yaml, one_line, plain

log = logging.getLogger(__name__)

#: The parts of a spec written in the filter language, and how to compile one entry of each.
_FILTERS: tuple[tuple[Path_, Callable[[Any], object]], ...] = (
    (("collections", "terms"), compile_terms),
    (("images", "terms"), compile_terms),
    (("images", "where"), compile_where),
)


def _section(doc: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = doc.get(key)
    return value if isinstance(value, Mapping) else {}


def _under(path: Path_, base: Path_) -> bool:
    return path[: len(base)] == base


def _filter_problems(
    doc: LineDict, base: Path_, compile_one: Callable[[Any], object]
) -> list[Problem]:
    """Compile each field (or where-branch) alone, so every bad one is reported."""
    tree = _section(doc, str(base[0])).get(base[1])
    entries = [{key: value} for key, value in tree.items()] if tree else [tree]
    problems = []
    for entry in entries:
        try:
            compile_one(entry)
        except FilterError as err:
            path, locate = (*base, *err.path), (*base, *err.locate)
            line = line_of(doc, locate, at_key=err.locate != err.path)
            problems.append(Problem(path, line, one_line(err.message)))
    return problems


def _resample_problems(doc: LineDict) -> list[Problem]:
    section = _section(doc, "resample")
    problems = []
    voxel = section.get("voxel_size")
    if isinstance(voxel, float) and not math.isfinite(voxel):
        path = ("resample", "voxel_size")
        problems.append(Problem(path, line_of(doc, path), f"must be a finite number; got {voxel}"))
    affine = section.get("target_affine")
    if affine is not None:
        path = ("resample", "target_affine")
        if not all(math.isfinite(x) for row in affine for x in row):
            problems.append(Problem(path, line_of(doc, path), "numbers must be finite"))
        elif [float(x) for x in affine[3]] != [0.0, 0.0, 0.0, 1.0]:
            last = (*path, 3)
            problems.append(Problem(last, line_of(doc, last),
                                    "the last row of an affine is [0, 0, 0, 1]"))
    return problems


def _contradiction(doc: LineDict) -> list[Problem]:
    """nilearn warns and selects nothing when collection_id and the collection's id differ."""
    image_terms = _section(_section(doc, "images"), "terms")
    collection_terms = _section(_section(doc, "collections"), "terms")
    if "collection_id" not in image_terms or "id" not in collection_terms:
        return []
    wanted, other = image_terms["collection_id"], collection_terms["id"]
    if plain(wanted) == plain(other):
        return []
    path = ("images", "terms", "collection_id")
    return [Problem(path, line_of(doc, path), f"collection_id {plain(wanted)!r} contradicts "
                    f"collections.terms.id {plain(other)!r}; keep one")]


#: Checks a schema cannot make, each run when the parts it reads have no problem yet.
_CHECKS: tuple[tuple[tuple[Path_, ...], Callable[[LineDict], list[Problem]]], ...] = (
    ((("resample",),), _resample_problems),
    ((("images", "terms"), ("collections", "terms")), _contradiction),
)


def problems_of(doc: Any) -> list[Problem]:
    """Every problem of a loaded document: the schema's, then the checks it cannot make."""
    found = Translator(doc, schema()).problems(validator())
    if not isinstance(doc, LineDict):
        return found
    for base, compile_one in _FILTERS:
        if not isinstance(_section(doc, str(base[0])).get(base[1]), Mapping):
            continue
        compiled = _filter_problems(doc, base, compile_one)
        if compiled:  # the evaluator's messages name the operator; the schema's are vaguer
            found = [p for p in found if not _under(p.path, base)] + compiled
    for bases, check in _CHECKS:
        if not any(_under(p.path, base) for p in found for base in bases):
            found += check(doc)
    return found


def _merge_defaults(defaults: Mapping[str, Any], user: Mapping[str, Any]) -> dict[str, Any]:
    merged = {key: plain(value) for key, value in defaults.items()}
    merged.update(user)
    return merged


def _terms(doc: Mapping[str, Any], explicit: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """Effective (collection, image) terms: nilearn's defaults merged, collection_id moved."""
    collections, images = _section(doc, "collections"), _section(doc, "images")
    user_collection = None if "terms" not in collections else plain(collections["terms"] or {})
    user_image = plain(images.get("terms") or {})
    if explicit:
        # fetch_neurovault_ids: no default terms; the user's own filters still apply.
        collection_terms, image_terms = user_collection or {}, dict(user_image)
    else:
        collection_terms = (_merge_defaults(BASIC_COLLECTION_TERMS, {})
                            if user_collection is None else user_collection)
        image_terms = (_merge_defaults(BASIC_IMAGE_TERMS, user_image)
                       if images.get("use_default_terms", True) else dict(user_image))
    # nilearn's ``_move_col_id``: collection_id is a collection filter, so the walk can ask
    # for that collection only.
    if "collection_id" in image_terms:
        collection_terms["id"] = image_terms.pop("collection_id")
    return collection_terms, image_terms


def _resample(value: Any) -> ResampleSpec | None:
    if value is None or value is False:
        return None
    if value is True:
        return ResampleSpec()
    affine, shape = value.get("target_affine"), value.get("target_shape")
    return ResampleSpec(
        voxel_size=float(value.get("voxel_size", options.DEFAULT_VOXEL_SIZE)),
        interpolation=value.get("interpolation", options.DEFAULT_INTERPOLATION),
        target_affine=None if affine is None else tuple(tuple(map(float, r)) for r in affine),
        target_shape=None if shape is None else (shape[0], shape[1], shape[2]),
    )


def build_spec(doc: LineDict, source: str) -> Spec:
    """The Spec of a document that has no problems, with nilearn's defaults."""
    collections, images = _section(doc, "collections"), _section(doc, "images")
    collection_ids = tuple(collections.get("ids") or ())
    image_ids = tuple(images.get("ids") or ())
    explicit = bool(collection_ids or image_ids)
    max_images = doc.get("max_images", options.DEFAULT_MAX_IMAGES)  # 0 stays 0
    if explicit:
        # fetch_neurovault_ids: no limit, as nilearn.
        if "max_images" in doc:
            log.info("%s: max_images is ignored when ids are listed", source)
        max_images = None
    collection_terms, image_terms = _terms(doc, explicit)
    neurosynth = _section(doc, "neurosynth")
    where = images.get("where")
    return Spec(
        name=doc["name"],
        description=doc.get("description") or "",
        server=normalise_server(doc.get("server", options.DEFAULT_SERVER)),
        max_images=max_images,
        mode=doc.get("mode", options.MODES[0]),
        collection_ids=collection_ids,
        image_ids=image_ids,
        collection_terms=MappingProxyType(collection_terms),
        image_terms=MappingProxyType(image_terms),
        where=None if where is None else plain(where),
        content=doc.get("content", options.CONTENTS[0]),
        keep_content=doc.get("keep_content", True),
        resample=_resample(doc.get("resample")),
        neurosynth=NeurosynthSpec(
            words=neurosynth.get("words", False),
            vectorize=neurosynth.get("vectorize", True),
            url=neurosynth.get("url"),
        ),
        archive=doc.get("archive"),
        subdatasets=doc.get("subdatasets", options.SUBDATASETS[0]),
        ria_store=_section(doc, "ria").get("store"),
        report=doc.get("report", False),
        source=source,
        raw=MappingProxyType(plain(doc)),
    )


def parse_spec(text: str, source: str = "<string>") -> Spec:
    """Validate spec text; raise :class:`SpecError` (file:line key.path: problem) if bad."""
    doc = load_yaml(text, source)
    problems = problems_of(doc)
    if problems:
        raise spec_error(problems, source)
    return build_spec(doc, source)


def load_spec(path: str | Path) -> Spec:
    """Read and validate a spec file; an unreadable file is a SpecError too (exit status 2)."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise SpecError(f"cannot read the spec: {one_line(reason)}", source=source) from None
    return parse_spec(text, source)
