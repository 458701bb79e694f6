"""The dataset's generated README.md: what it is, what is inside, how to get and cite it.

A pure function of its inputs (no clock, no filesystem), so rebuilding a dataset that did not
change rewrites a byte-identical README and makes no commit.
"""

from __future__ import annotations

import json
import shlex
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from nv_datalad.citation import NEUROVAULT_REFERENCE, normalise_doi
from nv_datalad.dataset import layout
from nv_datalad.neurovault.records import normalise_nulls
from nv_datalad.records import PROVENANCE_KEY, parse_id
from nv_datalad.spec.where import annex_equivalent

NOT_GIVEN = "(not given)"
MAX_COLLECTION_ROWS = 50


def _cell(value: object) -> str:
    """Table cell text: one line, pipes escaped (server strings must not break the table)."""
    return " ".join(str(value).split()).replace("|", "\\|")


def count_by(images: Sequence[Mapping[str, Any]], field: str) -> list[tuple[str, int]]:
    """(value, count) pairs, most frequent first, ties by value; nulls as "(not given)"."""
    counts: Counter[str] = Counter()
    for record in images:
        value = normalise_nulls(record).get(field)
        counts[NOT_GIVEN if value is None else str(value)] += 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def _table(header: tuple[str, str], rows: Sequence[tuple[str, int]]) -> list[str]:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---:|"]
    lines += [f"| {_cell(value)} | {n} |" for value, n in rows]
    return lines


def _image_path(record: Mapping[str, Any]) -> str | None:
    """Dataset path of an image, from its integer ids (never from a server string)."""
    iid = parse_id(record.get("id", record.get("image_id")))
    cid = parse_id(record.get("collection_id"))
    if iid is None or cid is None:
        return None
    prov = record.get(PROVENANCE_KEY)
    recorded = prov.get("path") if isinstance(prov, Mapping) else record.get("path")
    ext = ".nii" if isinstance(recorded, str) and recorded.endswith(".nii") else ".nii.gz"
    return str(layout.image_file(cid, iid, ext))


def _example_map_type(images: Sequence[Mapping[str, Any]]) -> str:
    counts = [v for v, _ in count_by(images, "map_type") if v != NOT_GIVEN]
    return "Z map" if "Z map" in counts or not counts else counts[0]


def _collection_rows(
    images: Sequence[Mapping[str, Any]], collections: Sequence[Mapping[str, Any]]
) -> list[str]:
    per: Counter[int] = Counter()
    for record in images:
        cid = parse_id(record.get("collection_id"))
        if cid is not None:
            per[cid] += 1
    by_id = {}
    for c in collections:
        cid = parse_id(c.get("id", c.get("collection_id")))
        if cid is not None:
            by_id[cid] = normalise_nulls(c)
    lines = ["| collection | name | DOI | images |", "|---:|---|---|---:|"]
    ordered = sorted(per)
    for cid in ordered[:MAX_COLLECTION_ROWS]:
        rec = by_id.get(cid, {})
        doi = normalise_doi(rec.get("DOI"))
        lines.append(f"| {cid} | {_cell(rec.get('name') or '')} | "
                     f"{_cell(doi) if doi else ''} | {per[cid]} |")
    if len(ordered) > MAX_COLLECTION_ROWS:
        lines.append(f"\n… and {len(ordered) - MAX_COLLECTION_ROWS} more collections: see "
                     f"`{layout.COLLECTIONS_TSV}`.")
    return lines


def render_readme(
    spec_raw: Mapping[str, Any],
    version: str,
    dataset_id: str,
    images: Sequence[Mapping[str, Any]],
    collections: Sequence[Mapping[str, Any]],
    server: str,
) -> str:
    """README.md text. ``images`` are image records (API records or sidecars, each with
    ``id`` and ``collection_id``), ``collections`` the collection records of the dataset."""
    name = str(spec_raw.get("name") or "neurovault-dataset")
    description = " ".join(str(spec_raw.get("description") or "").split())
    ordered = sorted(images, key=lambda r: parse_id(r.get("id", r.get("image_id"))) or 0)
    n_coll = len({parse_id(r.get("collection_id")) for r in ordered} - {None})
    example = next((p for p in map(_image_path, ordered) if p), None) or \
        "neurovault/collection_<cid>/image_<iid>.nii.gz"
    map_type = _example_map_type(ordered)
    annex_line = annex_equivalent({"map_type": map_type})
    spec_yaml = yaml.safe_dump(dict(spec_raw), sort_keys=False, allow_unicode=True,
                               width=100).rstrip()

    out = [f"# {name}", ""]
    if description:
        out += [description, ""]
    out += [
        f"A [DataLad](https://www.datalad.org) dataset of {len(ordered)} statistical maps from "
        f"{n_coll} [NeuroVault](https://neurovault.org) collections, built by nv-datalad. "
        "Every image is a git-annex file whose NeuroVault URL is registered, so its content "
        "is fetched on demand and checked against its key; every image and collection has a "
        f"JSON metadata sidecar; `{layout.IMAGES_TSV}` and `{layout.COLLECTIONS_TSV}` list "
        "them for pandas. The layout matches nilearn's NeuroVault cache.",
        "",
        f"- version: `{version}` (git tag; history in `{layout.CHANGES}`)",
        f"- DataLad dataset id: `{dataset_id}`",
        f"- source: `{server}`",
        "",
        "## Get the data",
        "",
        "```bash",
        f"datalad clone <url-or-path-of-this-dataset> {name}",
        f"cd {name}",
        f"git checkout {version}                       # pin the version you cite",
        f"datalad get {example}",
        f"nv-datalad get -d . --where {shlex.quote(f'map_type={map_type}')}",
        *([f"{annex_line}   # the same with git-annex only"] if annex_line else []),
        "```",
        "",
        "## Use it in Python",
        "",
        "```python",
        "from nv_datalad import load",
        "",
        f'data = load(".", where={{"map_type": {json.dumps(map_type)}}}, get=True)',
        "data.images            # absolute paths, as nilearn.datasets.fetch_neurovault",
        "data.images_meta       # one metadata dict per image",
        "",
        "from nilearn.datasets import fetch_neurovault   # nilearn reads it too (after get)",
        'fetch_neurovault(mode="offline", data_dir=".")',
        "```",
        "",
        "## Contents",
        "",
        "### Map types",
        "",
        *_table(("map type", "images"), count_by(ordered, "map_type")),
        "",
        "### Modalities",
        "",
        *_table(("modality", "images"), count_by(ordered, "modality")),
        "",
        "### Analysis levels",
        "",
        *_table(("analysis level", "images"), count_by(ordered, "analysis_level")),
        "",
        "### Collections",
        "",
        *_collection_rows(ordered, collections),
        "",
        "## The spec",
        "",
        f"Selection and processing as declared in `{layout.SPEC_FILE}`:",
        "",
        "```yaml",
        spec_yaml,
        "```",
        "",
        "## How to cite",
        "",
        "Cite the exact version you used (dataset id, tag and commit), NeuroVault, and the "
        f"collections the maps come from; `{layout.CITATION}` has it all, and:",
        "",
        "```bash",
        "nv-datalad cite -d .                    # text",
        "nv-datalad cite -d . --format bibtex",
        f"nv-datalad cite -d . --version {version} --format cff",
        "```",
        "",
        f"NeuroVault: {NEUROVAULT_REFERENCE}",
        "",
    ]
    return "\n".join(out)
