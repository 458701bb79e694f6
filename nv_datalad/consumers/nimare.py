"""``nv-datalad export nimare``: one dataset version as the input of a NiMARE meta-analysis.

NiMARE's own NeuroVault converter reads one unpaginated page per collection from the live server
and knows no versions. This export reads the sidecars of one version from git instead, so a
meta-analysis can name the exact data it ran on (dataset id, tag, commit: recorded in every
contrast's metadata), and its image paths are relative to the dataset, so
``Dataset.update_path(root)`` (``Studyset.update_path``) opens them after ``datalad get``.

Grouping: one study per collection and one contrast per image, except that the images of a
collection sharing a ``contrast_definition`` with at most one map of each NiMARE type (the z,
t, beta, varcope and p of one contrast) are one contrast, so beta+varcope estimators see them
together. Two maps of one type under one definition (runs, subjects) cannot be paired
unambiguously: then each of those images stays its own contrast.

Nothing is dropped silently: an image NiMARE cannot use becomes an :class:`Unusable` with the
reason. NiMARE is an optional extra, imported only to build its objects.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nv_datalad.consumers.cite import Citation, citation
from nv_datalad.consumers.load import ImageEntry, entries, warn_changed_content
from nv_datalad.dataset import revision
from nv_datalad.errors import DatasetError, EnvironmentProblem
from nv_datalad.options import EXPORT_FORMATS
from nv_datalad.records import parse_id
from nv_datalad.spec.where import Where

if TYPE_CHECKING:  # NiMARE is an optional extra
    from nimare.dataset import Dataset
    from nimare.nimads import Studyset

log = logging.getLogger(__name__)

#: ``--format``: NiMARE's Dataset JSON (``Dataset(FILE)``) or a NIMADS studyset
#: (``Studyset(FILE)``, NiMARE >= 0.21).
INSTALL_HINT = "install it with pip install 'nv-datalad[nimare]'"

#: NeuroVault ``map_type`` -> NiMARE image type.
MAP_TYPES = {
    "Z map": "z",
    "T map": "t",
    "univariate-beta map": "beta",
    "variance": "varcope",
    "P map (given null hypothesis)": "p",
}
#: Map types that are not statistics at all, with the word the reason uses.
_NOT_STATISTICS = {"ROI/mask": "a mask", "parcellation": "a parcellation",
                   "anatomical": "an anatomical image"}
_SLUG = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class Unusable:
    """An image of the selection that is not in the export, and why."""

    image_id: int
    collection_id: int
    path: str
    reason: str


@dataclass(frozen=True)
class Contrast:
    """One NiMARE contrast: its maps as (NiMARE image type, dataset-relative path, image id)."""

    collection_id: int
    name: str
    label: str
    maps: tuple[tuple[str, str, int], ...]
    sample_size: int | None

    @property
    def study(self) -> str:
        return f"collection-{self.collection_id}"

    @property
    def images(self) -> dict[str, str]:
        return {kind: path for kind, path, _ in self.maps}

    @property
    def image_ids(self) -> tuple[int, ...]:
        return tuple(iid for _, _, iid in self.maps)


@dataclass
class NimareExport:
    """What one version exports: the contrasts, the images left out and the version facts."""

    root: Path
    cite: Citation
    where: Where
    contrasts: list[Contrast] = field(default_factory=list)
    unusable: list[Unusable] = field(default_factory=list)
    collections: dict[int, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def studies(self) -> list[str]:
        return list(dict.fromkeys(c.study for c in self.contrasts))

    @property
    def n_images(self) -> int:
        return sum(len(c.maps) for c in self.contrasts)

    @property
    def without_sample_size(self) -> list[int]:
        """Image ids whose contrast has no ``number_of_subjects``: estimators that weight by
        sample size (``Stouffers(use_sample_size=True)``, ``SampleSizeBasedLikelihood``) and
        t-to-z conversion cannot use them."""
        return [i for c in self.contrasts if c.sample_size is None for i in c.image_ids]

    def provenance(self) -> dict[str, Any]:
        """The version facts every contrast carries (flat keys: NiMARE makes them columns)."""
        return {
            "nv_datalad_dataset_id": self.cite.dataset_id,
            "nv_datalad_version": self.cite.version_label,
            "nv_datalad_tag": self.cite.version,
            "nv_datalad_commit": self.cite.commit,
        }

    def _metadata(self, contrast: Contrast) -> dict[str, Any]:
        cid = contrast.collection_id
        return {
            "sample_sizes": None if contrast.sample_size is None else [contrast.sample_size],
            "neurovault_collection_id": cid,
            "neurovault_image_ids": list(contrast.image_ids),
            "collection_name": self.collections.get(cid, {}).get("name"),
            **self.provenance(),
        }

    def dataset_dict(self) -> dict[str, Any]:
        """NiMARE's Dataset source: ``{study: {"contrasts": {name: {images, metadata}}}}``."""
        out: dict[str, Any] = {}
        for c in self.contrasts:
            study = out.setdefault(c.study, {"contrasts": {}})
            study["contrasts"][c.name] = {"images": c.images, "metadata": self._metadata(c)}
        return out

    def nimads_dict(self) -> dict[str, Any]:
        """A NIMADS studyset; its top-level ``nv_datalad`` key also lists the unusable images."""
        studies: dict[str, dict[str, Any]] = {}
        for c in self.contrasts:
            cid = c.collection_id
            record = self.collections.get(cid, {})
            study = studies.setdefault(c.study, {
                "id": c.study, "name": record.get("name"), "doi": record.get("DOI"),
                "authors": record.get("authors"), "publication": record.get("journal_name"),
                "metadata": {"neurovault_collection_id": cid, "url": record.get("url")},
                "analyses": [],
            })
            study["analyses"].append({
                "id": c.name, "name": c.label, "metadata": self._metadata(c),
                "images": [{"filename": path, "value_type": kind,
                            "metadata": {"neurovault_image_id": iid}}
                           for kind, path, iid in c.maps],
            })
        return {
            "id": f"{self.cite.dataset_id}@{self.cite.commit}",
            "name": f"{self.cite.name} {self.cite.version_label}",
            "description": self.cite.description,
            "nv_datalad": {**self.provenance(), "where": self.where,
                           "unusable": [vars(u) for u in self.unusable]},
            "studies": list(studies.values()),
        }

    def document(self, fmt: str) -> dict[str, Any]:
        if fmt == "dataset":
            return self.dataset_dict()
        if fmt == "nimads":
            return self.nimads_dict()
        raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}")


def _reason(meta: Mapping[str, Any]) -> str | None:
    """Why NiMARE cannot use this image (None: it can)."""
    map_type = meta.get("map_type")
    if meta.get("image_type") == "atlas":
        return "an atlas (labels, not a statistic map)"
    if map_type in _NOT_STATISTICS:
        return f"{_NOT_STATISTICS[map_type]} (map type {map_type!r}), not a statistic map"
    if map_type is None:
        return "no map type: NiMARE needs to know which statistic the map holds"
    if map_type not in MAP_TYPES:
        return f"map type {map_type!r} has no NiMARE image type"
    if meta.get("not_mni") is True:
        return "not in MNI space (not_mni: true); NiMARE assumes one space for all maps"
    return None


def _subjects(meta: Mapping[str, Any]) -> int | None:
    n = parse_id(meta.get("number_of_subjects"))
    return n if n else None


def _slug(text: str) -> str:
    return _SLUG.sub("-", text.lower()).strip("-") or "contrast"


def _pairable(images: Sequence[ImageEntry]) -> dict[int, tuple[str, list[ImageEntry]]]:
    """image id -> (definition, its group) for the groups that form one contrast: two or more
    maps of one collection sharing a ``contrast_definition``, no NiMARE type twice."""
    by_definition: dict[str, list[ImageEntry]] = defaultdict(list)
    for e in images:
        definition = e.meta.get("contrast_definition")
        if isinstance(definition, str) and definition.strip():
            by_definition[definition.strip()].append(e)
    out = {}
    for definition, group in by_definition.items():
        kinds = {MAP_TYPES[g.meta["map_type"]] for g in group}
        if len(group) > 1 and len(kinds) == len(group):
            out.update((g.image_id, (definition, group)) for g in group)
    return out


def _contrasts_of(collection_id: int, images: Sequence[ImageEntry]) -> list[Contrast]:
    """The contrasts of the usable images of one collection (in images.tsv order)."""
    paired = _pairable(images)
    out: list[Contrast] = []
    names: set[str] = set()
    for e in images:
        definition, group = paired.get(e.image_id, (None, [e]))
        if group[0] is not e:
            continue  # made with the first image of its group
        base = _slug(definition) if definition else f"image-{e.image_id}"
        name = next(n for n in (base, *(f"{base}-{k}" for k in range(2, len(images) + 2)))
                    if n not in names)
        names.add(name)
        sizes = sorted({n for n in (_subjects(g.meta) for g in group) if n is not None})
        if len(sizes) > 1:
            log.info("collection %d, contrast %s: number_of_subjects differ (%s); using the "
                     "smallest", collection_id, name, ", ".join(map(str, sizes)))
        out.append(Contrast(
            collection_id=collection_id, name=name,
            label=definition or str(e.meta.get("name") or name),
            maps=tuple((MAP_TYPES[g.meta["map_type"]], g.relpath, g.image_id) for g in group),
            sample_size=sizes[0] if sizes else None,
        ))
    return out


def export(dataset: Path | str, where: Where = None, version: str | None = None, *,
           require_sample_size: bool = False) -> NimareExport:
    """The contrasts of ``dataset`` at ``version`` (default: the working tree) matching
    ``where``; no NiMARE needed. ``require_sample_size`` makes contrasts without
    ``number_of_subjects`` unusable instead of exported without ``sample_sizes``."""
    root = revision.ensure_repository(Path(dataset)).resolve()
    chosen = entries(root, version=version, where=where)
    if version is not None:
        warn_changed_content(root, revision.resolve(root, version), chosen, version)
    result = NimareExport(root=root, cite=citation(root, version), where=where)
    usable: dict[int, list[ImageEntry]] = defaultdict(list)
    for e in chosen:
        reason = _reason(e.meta)
        if reason is None:
            usable[e.collection_id].append(e)
            result.collections[e.collection_id] = e.collection
        else:
            result.unusable.append(Unusable(e.image_id, e.collection_id, e.relpath, reason))
    for cid, images in usable.items():
        for c in _contrasts_of(cid, images):
            if c.sample_size is None and require_sample_size:
                result.unusable += [
                    Unusable(iid, cid, path, "no number_of_subjects, and the export was asked "
                             "for sample sizes") for _, path, iid in c.maps]
            else:
                result.contrasts.append(c)
    return result


def _import_nimare() -> None:
    try:
        import nimare  # noqa: F401
    except ImportError as exc:
        raise EnvironmentProblem(f"NiMARE is not installed: {INSTALL_HINT}") from exc


def _check_not_empty(result: NimareExport) -> None:
    if not result.contrasts:
        raise DatasetError(
            f"no image of {result.root} (selection {result.where or 'all'}) can be used by "
            f"NiMARE: {len(result.unusable)} unusable image(s), e.g. "
            + "; ".join(f"image {u.image_id}: {u.reason}" for u in result.unusable[:3]))


def dataset_of(result: NimareExport, **dataset_kwargs: Any) -> Dataset:
    """A ``nimare.dataset.Dataset`` of the export, its paths resolved against the dataset."""
    _check_not_empty(result)
    _import_nimare()
    from nimare.dataset import Dataset

    with warnings.catch_warnings():  # asked for by name; NiMARE >= 0.21 calls it deprecated
        warnings.filterwarnings("ignore", message=".*nimare.dataset.Dataset is deprecated")
        dset = Dataset(result.dataset_dict(), **dataset_kwargs)
    dset.update_path(str(result.root))
    return dset


def studyset_of(result: NimareExport, **studyset_kwargs: Any) -> Studyset:
    """A ``nimare.nimads.Studyset``, NiMARE's format from 0.21 on, its relative paths resolved
    in the dataset."""
    _check_not_empty(result)
    _import_nimare()
    from nimare.nimads import Studyset

    return Studyset(result.nimads_dict(), basepath=str(result.root), **studyset_kwargs)


def to_nimare(dataset: Path | str, where: Where = None, version: str | None = None, *,
              require_sample_size: bool = False, **dataset_kwargs: Any) -> Dataset:
    """``export`` as a NiMARE Dataset (``dataset_kwargs``: ``target``, ``mask``)."""
    result = export(dataset, where, version, require_sample_size=require_sample_size)
    for u in result.unusable:
        log.warning("image %d (collection %d) not exported: %s", u.image_id, u.collection_id,
                    u.reason)
    return dataset_of(result, **dataset_kwargs)


def write(result: NimareExport, out: Path, fmt: str = EXPORT_FORMATS[0]) -> None:
    """Write the export as JSON, after NiMARE read it back (so the file is one it accepts)."""
    if fmt == "nimads":
        studyset_of(result)
    else:
        dataset_of(result)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(result.document(fmt), indent=1, sort_keys=True) + "\n",
                   encoding="utf-8")
    tmp.replace(out)


def summary_lines(result: NimareExport, out: Path, fmt: str) -> list[str]:
    """What the CLI prints: the counts and version, each unusable image, the next step."""
    loader = "Studyset" if fmt == "nimads" else "Dataset"
    lines = [f"wrote {out}: {len(result.studies)} studies, {len(result.contrasts)} contrasts, "
             f"{result.n_images} images of {result.cite.name} {result.cite.version_label} "
             f"(commit {result.cite.commit})"]
    lines += [f"not exported: image {u.image_id} (collection {u.collection_id}): {u.reason}"
              for u in result.unusable]
    missing = result.without_sample_size
    if missing:
        lines.append(f"no sample size (exported without sample_sizes) for {len(missing)} "
                     f"image(s): {', '.join(map(str, missing))}")
    lines.append(f"next: datalad get -d {result.root} <paths>, then in Python: "
                 f"{loader}('{out}').update_path('{result.root}')")
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``nv-datalad export nimare`` (``-d`` comes from the CLI)."""
    parser.add_argument("-o", "--output", required=True, metavar="FILE",
                        help="the JSON file to write")
    parser.add_argument("--where", action="append", metavar="EXPR",
                        help="only images whose metadata matches (as in `nv-datalad get`)")
    parser.add_argument("--version", dest="at", metavar="TAG",
                        help="tag or commit (default: the working tree)")
    parser.add_argument("--format", choices=EXPORT_FORMATS, default=EXPORT_FORMATS[0],
                        help="dataset: nimare.dataset.Dataset(FILE); nimads: "
                             "nimare.nimads.Studyset(FILE); default: %(default)s")
    parser.add_argument("--require-sample-size", action="store_true",
                        help="leave out contrasts without number_of_subjects (for estimators "
                             "that weight by sample size)")
